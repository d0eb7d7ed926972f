// arm64 vCPU set-up on raw fds (built for aarch64 only): KVM_ARM_VCPU_INIT with PSCI 0.2, the
// boot registers of booting.rst, and MPIDR_EL1 for the device tree's cpu nodes.
//
// The boot vCPU starts at the kernel's entry with x0 = the DTB, x1-x3 = 0, EL1h with D, A, I, F
// masked (MMU and caches are off after KVM_ARM_VCPU_INIT). Secondaries are created powered off
// (KVM_ARM_VCPU_POWER_OFF): KVM starts them on the guest's PSCI CPU_ON with the entry and context
// the guest gives, so nothing else is set on them.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "base/result.h"

namespace conduit::vmm::arm64 {

// KVM_ARM_PREFERRED_TARGET on the VM fd: the target every vCPU is initialised with.
Result<kvm_vcpu_init> preferredTarget(int vmFd);

// KVM_ARM_VCPU_INIT: PSCI 0.2 for all; powered off unless `boot`.
Result<void> initVcpu(int vcpuFd, unsigned index, const kvm_vcpu_init& target, bool boot);

// PC = entry, X0 = dtb, X1..X3 = 0, PSTATE = EL1h | DAIF.
Result<void> setBootRegisters(int vcpuFd, unsigned index, uint64_t entry, uint64_t dtb);

// MPIDR_EL1 as KVM gives it to this vCPU (valid after initVcpu).
Result<uint64_t> readMpidr(int vcpuFd, unsigned index);

// The vCPU's PC, for messages ("<unknown: ...>" when it cannot be read).
Result<uint64_t> readPc(int vcpuFd);

// KVM_GET_ONE_REG / KVM_SET_ONE_REG for a 64-bit register.
Result<uint64_t> getOneReg(int vcpuFd, uint64_t id, const char* name);
Result<void> setOneReg(int vcpuFd, uint64_t id, uint64_t value, const char* name);

}  // namespace conduit::vmm::arm64
