#include "vmm/arch/x86_64/kvm_x86.h"

#include <cerrno>

#include <fmt/format.h>

#include "base/log.h"
#include "vmm/kvm_uapi.h"

namespace conduit::vmm::x86 {

namespace {

kvm_irq_routing_entry irqchipEntry(uint32_t gsi, uint32_t chip, uint32_t pin) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_IRQCHIP;
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    return e;
}

}  // namespace

const std::vector<unsigned>& requiredCapabilities() {
    static const std::vector<unsigned> caps = {KVM_CAP_IRQCHIP, KVM_CAP_PIT2, KVM_CAP_SET_TSS_ADDR,
                                               KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_EXT_CPUID};
    return caps;
}

Result<std::vector<kvm_cpuid_entry2>> supportedCpuid(const Kvm& kvm) {
    // KVM_GET_SUPPORTED_CPUID answers E2BIG while the buffer is too small (and this host's KVM
    // answers EINVAL for 64 entries): start at KVM_MAX_CPUID_ENTRIES (256) and grow on E2BIG.
    for (unsigned n = 256;; n *= 2) {
        auto buf = uapi::flexBuffer<kvm_cpuid_entry2>(n, nullptr, n);
        auto r = kvmIoctl(kvm.fd(), kGetSupportedCpuid, buf.data(), "KVM_GET_SUPPORTED_CPUID", kvm.path(),
                          fmt::format("{} entries", n));
        if (!r) {
            if (r.error().code() == E2BIG && n < 4096) continue;
            return std::move(r).error();
        }
        return uapi::flexEntries<kvm_cpuid_entry2>(buf);
    }
}

Result<void> setIdentityMapAddr(Vm& vm, uint64_t gpa) {
    uint64_t addr = gpa;
    TRY(KVM_IOCTL(vm.fd(), KVM_SET_IDENTITY_MAP_ADDR, &addr, "vm", fmt::format("{:#x}", gpa)));
    return success();
}

Result<void> setTssAddr(Vm& vm, uint64_t gpa) {
    TRY(KVM_IOCTL(vm.fd(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(gpa), "vm", fmt::format("{:#x}", gpa)));
    return success();
}

IrqchipRoutes irqchipRoutes() {
    IrqchipRoutes routes;
    for (uint32_t gsi = 0; gsi < kIoApicPins; ++gsi) {
        routes.entries.push_back(irqchipEntry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        if (gsi < 16)
            routes.entries.push_back(irqchipEntry(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8));
    }
    routes.firstMsiGsi = kIoApicPins;
    return routes;
}

Result<void> createIrqchip(Vm& vm) {
    if (vm.hasIrqchip()) return Error("KVM_CREATE_IRQCHIP on vm: irqchip already created", EEXIST);
    TRY(KVM_IOCTL(vm.fd(), KVM_CREATE_IRQCHIP, 0, "vm"));
    return vm.enableIrqRouting(irqchipRoutes());
}

Result<void> createPit2(Vm& vm) {
    // KVM answers ENOENT without the irqchip; say why instead.
    if (!vm.hasIrqchip()) return Error("KVM_CREATE_PIT2 on vm: the in-kernel irqchip must be created first", ENOENT);
    kvm_pit_config config{};
    config.flags = KVM_PIT_SPEAKER_DUMMY;  // port 0x61 answered by KVM, no speaker emulation needed
    TRY(KVM_IOCTL(vm.fd(), KVM_CREATE_PIT2, &config, "vm"));
    return success();
}

Result<kvm_regs> getRegs(const Vcpu& vcpu) {
    kvm_regs r{};
    TRY(KVM_IOCTL(vcpu.fd(), KVM_GET_REGS, &r, vcpu.name()));
    return r;
}
Result<void> setRegs(Vcpu& vcpu, const kvm_regs& regs) {
    TRY(KVM_IOCTL(vcpu.fd(), KVM_SET_REGS, const_cast<kvm_regs*>(&regs), vcpu.name()));
    return success();
}
Result<kvm_sregs> getSregs(const Vcpu& vcpu) {
    kvm_sregs s{};
    TRY(KVM_IOCTL(vcpu.fd(), KVM_GET_SREGS, &s, vcpu.name()));
    return s;
}
Result<void> setSregs(Vcpu& vcpu, const kvm_sregs& sregs) {
    TRY(KVM_IOCTL(vcpu.fd(), KVM_SET_SREGS, const_cast<kvm_sregs*>(&sregs), vcpu.name()));
    return success();
}
Result<kvm_fpu> getFpu(const Vcpu& vcpu) {
    kvm_fpu f{};
    TRY(KVM_IOCTL(vcpu.fd(), KVM_GET_FPU, &f, vcpu.name()));
    return f;
}
Result<void> setFpu(Vcpu& vcpu, const kvm_fpu& fpu) {
    TRY(KVM_IOCTL(vcpu.fd(), KVM_SET_FPU, const_cast<kvm_fpu*>(&fpu), vcpu.name()));
    return success();
}
Result<void> setCpuid(Vcpu& vcpu, const std::vector<kvm_cpuid_entry2>& entries) {
    auto buf = uapi::flexBuffer(static_cast<uint32_t>(entries.size()), entries.data(), entries.size());
    TRY(kvmIoctl(vcpu.fd(), kSetCpuid2, buf.data(), "KVM_SET_CPUID2", vcpu.name(),
                 fmt::format("{} entries", entries.size())));
    return success();
}
Result<kvm_lapic_state> getLapic(const Vcpu& vcpu) {
    kvm_lapic_state l{};
    TRY(KVM_IOCTL(vcpu.fd(), KVM_GET_LAPIC, &l, vcpu.name()));
    return l;
}
Result<void> setLapic(Vcpu& vcpu, const kvm_lapic_state& lapic) {
    TRY(KVM_IOCTL(vcpu.fd(), KVM_SET_LAPIC, const_cast<kvm_lapic_state*>(&lapic), vcpu.name()));
    return success();
}

}  // namespace conduit::vmm::x86
