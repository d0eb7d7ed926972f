#include "vmm/arch/x86_64/cpu_state.h"

namespace conduit::vmm::x86 {

kvm_segment flatCode64(uint16_t selector, uint8_t dpl) {
    kvm_segment s{};
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = kSegTypeCodeXrAccessed;
    s.present = 1;
    s.dpl = dpl;
    s.db = 0;  // must be 0 when L=1
    s.s = 1;
    s.l = 1;
    s.g = 1;
    return s;
}

kvm_segment flatData(uint16_t selector, uint8_t dpl) {
    kvm_segment s{};
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = kSegTypeDataRwAccessed;
    s.present = 1;
    s.dpl = dpl;
    s.db = 1;
    s.s = 1;
    s.l = 0;
    s.g = 1;
    return s;
}

kvm_segment tss64(uint16_t selector, uint64_t base, uint32_t limit) {
    kvm_segment s{};
    s.base = base;
    s.limit = limit;
    s.selector = selector;
    s.type = kSegTypeTss64Busy;
    s.present = 1;
    s.dpl = 0;
    s.s = 0;
    s.g = 0;
    return s;
}

namespace {

// Fields shared by both descriptor sizes: limit 15:0, base 23:0, access byte, limit 19:16, flags,
// base 31:24 (Intel SDM vol. 3, 3.4.5).
uint64_t lowQuadword(const kvm_segment& seg) {
    uint32_t limit = seg.g ? (seg.limit >> 12) : seg.limit;
    uint64_t base = seg.base & 0xffffffffull;
    uint64_t d = 0;
    d |= uint64_t(limit & 0xffff);
    d |= (base & 0xffffff) << 16;
    d |= uint64_t(seg.type & 0xf) << 40;
    d |= uint64_t(seg.s & 1) << 44;
    d |= uint64_t(seg.dpl & 3) << 45;
    d |= uint64_t(seg.present & 1) << 47;
    d |= uint64_t((limit >> 16) & 0xf) << 48;
    d |= uint64_t(seg.avl & 1) << 52;
    d |= uint64_t(seg.l & 1) << 53;
    d |= uint64_t(seg.db & 1) << 54;
    d |= uint64_t(seg.g & 1) << 55;
    d |= ((base >> 24) & 0xff) << 56;
    return d;
}

kvm_segment realModeSegment(uint16_t selector, uint8_t type) {
    kvm_segment s{};
    s.selector = selector;
    s.base = uint64_t(selector) << 4;
    s.limit = 0xffff;
    s.type = type;
    s.present = 1;
    s.s = 1;
    return s;
}

}  // namespace

uint64_t encodeDescriptor(const kvm_segment& seg) { return lowQuadword(seg); }

std::array<uint64_t, 2> encodeSystemDescriptor(const kvm_segment& seg) {
    return {lowQuadword(seg), seg.base >> 32};
}

kvm_sregs longModeSregs(const kvm_segment& code, const kvm_segment& data, const kvm_segment& tr, uint64_t gdtBase,
                        uint16_t gdtLimit, uint64_t pml4, unsigned vcpuIndex) {
    kvm_sregs sr{};
    sr.apic_base = resetApicBase(vcpuIndex);
    sr.cs = code;
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss = data;
    sr.tr = tr;
    // An unusable (null) LDT: present=0 marks it unusable for KVM.
    sr.ldt = {};
    sr.ldt.type = kSegTypeLdt;
    sr.ldt.unusable = 1;
    sr.gdt.base = gdtBase;
    sr.gdt.limit = gdtLimit;
    sr.idt.base = 0;
    sr.idt.limit = 0;  // the guest installs its own IDT before enabling interrupts
    sr.cr0 = kCr0LongMode;
    sr.cr3 = pml4;
    sr.cr4 = kCr4LongMode;
    sr.efer = kEferLongMode;
    return sr;
}

uint64_t resetApicBase(unsigned vcpuIndex) {
    constexpr uint64_t kApicGlobalEnable = 1ull << 11;
    constexpr uint64_t kApicBsp = 1ull << 8;
    return 0xFEE00000ull | kApicGlobalEnable | (vcpuIndex == 0 ? kApicBsp : 0);
}

kvm_sregs resetSregs(unsigned vcpuIndex) {
    kvm_sregs sr{};
    sr.apic_base = resetApicBase(vcpuIndex);
    sr.cs = realModeSegment(0xf000, kSegTypeCodeXrAccessed);
    sr.cs.base = 0xffff0000;  // the reset alias: CS base is not selector << 4 until the first far jump
    sr.ds = sr.es = sr.fs = sr.gs = sr.ss = realModeSegment(0, kSegTypeDataRwAccessed);
    sr.tr = {};
    sr.tr.limit = 0xffff;
    sr.tr.type = kSegTypeTss64Busy;  // "busy 32-bit TSS", what KVM's own reset uses
    sr.tr.present = 1;
    sr.ldt = {};
    sr.ldt.limit = 0xffff;
    sr.ldt.type = kSegTypeLdt;
    sr.ldt.present = 1;
    sr.gdt.limit = 0xffff;
    sr.idt.limit = 0xffff;
    sr.cr0 = kCr0Reset;
    return sr;
}

kvm_regs resetRegs() {
    kvm_regs r{};
    r.rip = 0xfff0;
    r.rflags = kRflagsReserved;
    return r;
}

}  // namespace conduit::vmm::x86
