// The x86-only KVM calls, on the generic Vm and Vcpu objects (through their fds): the VM-wide
// set-up before vCPUs (identity map, TSS, PIC + IOAPIC irqchip with its default routes, PIT2),
// the host's supported CPUID, and per-vCPU state (regs, sregs, FPU, CPUID, LAPIC). Only
// vmm/arch/x86_64/ and x86 tests use these.
#pragma once

#include <linux/kvm.h>

#include <vector>

#include "base/result.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/irq_routing.h"
#include "vmm/kvm.h"
#include "vmm/kvm_uapi.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

namespace conduit::vmm::x86 {

// The CPUID ioctls with the C layout of struct kvm_cpuid2 (vmm/kvm_uapi.h says why).
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, uapi::FlexHeader);  // KVM_GET_SUPPORTED_CPUID
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, uapi::FlexHeader);           // KVM_SET_CPUID2

// The KVM capabilities the x86 platform relies on beyond Kvm::requiredCapabilities().
const std::vector<unsigned>& requiredCapabilities();
// KVM_GET_SUPPORTED_CPUID (grown until the host's table fits).
Result<std::vector<kvm_cpuid_entry2>> supportedCpuid(const Kvm& kvm);

// ---- the VM, before vCPUs ----
Result<void> setIdentityMapAddr(Vm& vm, uint64_t gpa = kIdentityMapAddr);
Result<void> setTssAddr(Vm& vm, uint64_t gpa = kTssAddr);
// The routes KVM installs with KVM_CREATE_IRQCHIP (kvm_setup_default_irq_routing): GSIs 0-15 on
// both the PIC and the IOAPIC (ISA IRQs reach whichever the guest has enabled), 16-23 on the
// IOAPIC only; MSI GSIs from 24.
IrqchipRoutes irqchipRoutes();
inline constexpr uint32_t kIoApicPins = 24;
// KVM_CREATE_IRQCHIP (PIC + IOAPIC + a LAPIC per vCPU), then the Vm's routing table.
Result<void> createIrqchip(Vm& vm);
// KVM_CREATE_PIT2; refused with a clear message when the irqchip does not exist yet.
Result<void> createPit2(Vm& vm);

// ---- vCPU state ----
Result<kvm_regs> getRegs(const Vcpu& vcpu);
Result<void> setRegs(Vcpu& vcpu, const kvm_regs& regs);
Result<kvm_sregs> getSregs(const Vcpu& vcpu);
Result<void> setSregs(Vcpu& vcpu, const kvm_sregs& sregs);
Result<kvm_fpu> getFpu(const Vcpu& vcpu);
Result<void> setFpu(Vcpu& vcpu, const kvm_fpu& fpu);
Result<void> setCpuid(Vcpu& vcpu, const std::vector<kvm_cpuid_entry2>& entries);
Result<kvm_lapic_state> getLapic(const Vcpu& vcpu);
Result<void> setLapic(Vcpu& vcpu, const kvm_lapic_state& lapic);

}  // namespace conduit::vmm::x86
