#include "vmm/arch/arm64/kvm_vcpu.h"

#include <asm/kvm.h>
#include <sys/ioctl.h>

#include <cstddef>

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

namespace {

// A core register's id: its offset in struct kvm_regs, in 32-bit words.
constexpr uint64_t coreReg(size_t offset) {
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset / sizeof(uint32_t));
}
constexpr uint64_t kRegPc = coreReg(offsetof(kvm_regs, regs.pc));
constexpr uint64_t kRegPstate = coreReg(offsetof(kvm_regs, regs.pstate));
constexpr uint64_t regX(unsigned n) { return coreReg(offsetof(kvm_regs, regs.regs) + n * sizeof(uint64_t)); }
constexpr uint64_t kRegMpidr = ARM64_SYS_REG(3, 0, 0, 0, 5);  // MPIDR_EL1: op0 3, op1 0, CRn 0, CRm 0, op2 5

// PSTATE at entry: EL1 using SP_EL1 (EL1h), debug, SError, IRQ and FIQ masked.
constexpr uint64_t kPsrModeEl1h = 0x5;
constexpr uint64_t kPsrF = 1 << 6, kPsrI = 1 << 7, kPsrA = 1 << 8, kPsrD = 1 << 9;
constexpr uint64_t kBootPstate = kPsrModeEl1h | kPsrF | kPsrI | kPsrA | kPsrD;
static_assert(kBootPstate == 0x3c5);

}  // namespace

Result<uint64_t> getOneReg(int vcpuFd, uint64_t id, const char* name) {
    uint64_t v = 0;
    kvm_one_reg r{id, reinterpret_cast<uint64_t>(&v)};
    if (::ioctl(vcpuFd, KVM_GET_ONE_REG, &r) < 0)
        return Error::fromErrno(fmt::format("KVM_GET_ONE_REG {} ({:#x})", name, id));
    return v;
}

Result<void> setOneReg(int vcpuFd, uint64_t id, uint64_t value, const char* name) {
    kvm_one_reg r{id, reinterpret_cast<uint64_t>(&value)};
    if (::ioctl(vcpuFd, KVM_SET_ONE_REG, &r) < 0)
        return Error::fromErrno(fmt::format("KVM_SET_ONE_REG {} = {:#x} ({:#x})", name, value, id));
    return success();
}

Result<kvm_vcpu_init> preferredTarget(int vmFd) {
    kvm_vcpu_init init{};
    if (::ioctl(vmFd, KVM_ARM_PREFERRED_TARGET, &init) < 0) return Error::fromErrno("KVM_ARM_PREFERRED_TARGET");
    return init;
}

Result<void> initVcpu(int vcpuFd, unsigned index, const kvm_vcpu_init& target, bool boot) {
    kvm_vcpu_init init = target;
    init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
    if (!boot) init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF;
    if (::ioctl(vcpuFd, KVM_ARM_VCPU_INIT, &init) < 0)
        return Error::fromErrno(fmt::format("KVM_ARM_VCPU_INIT vcpu{} (target {}, features {:#x})", index, init.target,
                                            init.features[0]));
    return success();
}

Result<void> setBootRegisters(int vcpuFd, unsigned index, uint64_t entry, uint64_t dtb) {
    auto ctx = fmt::format("vcpu{} boot registers", index);
    TRY_CTX(setOneReg(vcpuFd, kRegPstate, kBootPstate, "pstate"), ctx);
    TRY_CTX(setOneReg(vcpuFd, regX(0), dtb, "x0"), ctx);
    for (unsigned n = 1; n <= 3; ++n) TRY_CTX(setOneReg(vcpuFd, regX(n), 0, "x1..x3"), ctx);
    TRY_CTX(setOneReg(vcpuFd, kRegPc, entry, "pc"), ctx);
    return success();
}

Result<uint64_t> readMpidr(int vcpuFd, unsigned index) {
    return TRY_CTX(getOneReg(vcpuFd, kRegMpidr, "MPIDR_EL1"), fmt::format("vcpu{}", index));
}

Result<uint64_t> readPc(int vcpuFd) { return getOneReg(vcpuFd, kRegPc, "pc"); }

}  // namespace conduit::vmm::arm64
