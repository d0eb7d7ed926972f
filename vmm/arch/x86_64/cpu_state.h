// x86 CPU state building blocks shared by every boot path: control-register bits, segment
// descriptors (GDT entries) built from the same kvm_segment values that go into kvm_sregs, and the
// two starting states we use (64-bit long mode and the architectural reset state).
//
// Building the GDT from the kvm_segment values (and not from hand-written magic numbers) keeps the
// in-memory descriptors and the hidden segment state KVM loads identical: the guest's first iretq
// or interrupt re-reads CS/SS from the GDT and must find what it already runs with.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>

namespace conduit::vmm::x86 {

// CR0 / CR4 / EFER bits (Intel SDM vol. 3, 2.5; AMD APM vol. 2, 3.1).
inline constexpr uint64_t kCr0Pe = 1ull << 0;
inline constexpr uint64_t kCr0Mp = 1ull << 1;
inline constexpr uint64_t kCr0Et = 1ull << 4;
inline constexpr uint64_t kCr0Ne = 1ull << 5;
inline constexpr uint64_t kCr0Wp = 1ull << 16;
inline constexpr uint64_t kCr0Am = 1ull << 18;
inline constexpr uint64_t kCr0Nw = 1ull << 29;
inline constexpr uint64_t kCr0Cd = 1ull << 30;
inline constexpr uint64_t kCr0Pg = 1ull << 31;
inline constexpr uint64_t kCr0Reset = kCr0Cd | kCr0Nw | kCr0Et;  // 0x60000010
inline constexpr uint64_t kCr0LongMode = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Am | kCr0Pg;

inline constexpr uint64_t kCr4Pae = 1ull << 5;
inline constexpr uint64_t kCr4Pge = 1ull << 7;
inline constexpr uint64_t kCr4Osfxsr = 1ull << 9;
inline constexpr uint64_t kCr4Osxmmexcpt = 1ull << 10;
inline constexpr uint64_t kCr4LongMode = kCr4Pae | kCr4Pge | kCr4Osfxsr | kCr4Osxmmexcpt;

inline constexpr uint64_t kEferSce = 1ull << 0;
inline constexpr uint64_t kEferLme = 1ull << 8;
inline constexpr uint64_t kEferLma = 1ull << 10;
inline constexpr uint64_t kEferLongMode = kEferSce | kEferLme | kEferLma;

inline constexpr uint64_t kRflagsReserved = 0x2;  // bit 1 always reads as 1

// Segment descriptor type values (S=1: code/data; S=0: system).
inline constexpr uint8_t kSegTypeDataRwAccessed = 0x3;
inline constexpr uint8_t kSegTypeCodeXrAccessed = 0xb;
inline constexpr uint8_t kSegTypeTss64Available = 0x9;
inline constexpr uint8_t kSegTypeTss64Busy = 0xb;
inline constexpr uint8_t kSegTypeLdt = 0x2;

// Flat 4 GiB segments as KVM wants them in kvm_sregs (limit in bytes, g=1).
kvm_segment flatCode64(uint16_t selector, uint8_t dpl);  // L=1, D=0
kvm_segment flatData(uint16_t selector, uint8_t dpl);    // D/B=1
// A 64-bit TSS (S=0, busy as after LTR), byte-granular limit.
kvm_segment tss64(uint16_t selector, uint64_t base, uint32_t limit);

// The 8-byte GDT descriptor of a code/data segment (S=1). Base bits above 31 are ignored, as the
// hardware does for these descriptors.
uint64_t encodeDescriptor(const kvm_segment& seg);
// The 16-byte GDT descriptor of a system segment (S=0) in long mode (TSS, LDT): two quadwords.
std::array<uint64_t, 2> encodeSystemDescriptor(const kvm_segment& seg);

// Long-mode sregs: CS = code, DS/ES/FS/GS/SS = data, TR = tr, GDTR = {gdtBase, gdtLimit},
// IDTR limit 0 (the guest loads its own), CR3 = pml4, CR0/CR4/EFER as kCr*LongMode / kEferLongMode.
// apic_base is the reset value for vCPU `vcpuIndex` (resetApicBase): a zero apic_base would make
// KVM_SET_SREGS disable the local APIC.
kvm_sregs longModeSregs(const kvm_segment& code, const kvm_segment& data, const kvm_segment& tr, uint64_t gdtBase,
                        uint16_t gdtLimit, uint64_t pml4, unsigned vcpuIndex);

// The architectural reset state (what KVM gives a new vCPU): CS selector 0xf000 base 0xffff0000,
// IP 0xfff0, CR0 0x60000010, everything else flat real mode. Used for APs that wait for INIT/SIPI,
// and as the base of the real-mode payload state.
kvm_sregs resetSregs(unsigned vcpuIndex);

// IA32_APIC_BASE at reset: the xAPIC at 0xFEE00000, globally enabled, BSP flag on vCPU 0 only.
uint64_t resetApicBase(unsigned vcpuIndex);
kvm_regs resetRegs();

}  // namespace conduit::vmm::x86
