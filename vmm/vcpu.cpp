#include "vmm/vcpu.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vmm/kvm.h"
#include "vmm/kvm_uapi.h"

namespace conduit::vmm {

Vcpu::Vcpu(unsigned index, UniqueFd fd, Mapping mapping)
    : index_(index), name_(fmt::format("vcpu{}", index)), fd_(std::move(fd)), mapping_(std::move(mapping)) {}

Result<std::unique_ptr<Vcpu>> Vcpu::create(int vmFd, unsigned index, size_t mmapSize) {
    int fd = TRY(KVM_IOCTL(vmFd, KVM_CREATE_VCPU, static_cast<unsigned long>(index), "vm", fmt::format("id {}", index)));
    UniqueFd owned(fd);
    auto mapping = TRY(Mapping::map(mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, owned.get(), 0,
                                    fmt::format("kvm_run of vcpu{}", index)));
    return std::unique_ptr<Vcpu>(new Vcpu(index, std::move(owned), std::move(mapping)));
}

Result<kvm_regs> Vcpu::getRegs() const {
    kvm_regs r{};
    TRY(KVM_IOCTL(fd(), KVM_GET_REGS, &r, name_));
    return r;
}
Result<void> Vcpu::setRegs(const kvm_regs& regs) {
    TRY(KVM_IOCTL(fd(), KVM_SET_REGS, const_cast<kvm_regs*>(&regs), name_));
    return success();
}
Result<kvm_sregs> Vcpu::getSregs() const {
    kvm_sregs s{};
    TRY(KVM_IOCTL(fd(), KVM_GET_SREGS, &s, name_));
    return s;
}
Result<void> Vcpu::setSregs(const kvm_sregs& sregs) {
    TRY(KVM_IOCTL(fd(), KVM_SET_SREGS, const_cast<kvm_sregs*>(&sregs), name_));
    return success();
}
Result<kvm_fpu> Vcpu::getFpu() const {
    kvm_fpu f{};
    TRY(KVM_IOCTL(fd(), KVM_GET_FPU, &f, name_));
    return f;
}
Result<void> Vcpu::setFpu(const kvm_fpu& fpu) {
    TRY(KVM_IOCTL(fd(), KVM_SET_FPU, const_cast<kvm_fpu*>(&fpu), name_));
    return success();
}

Result<void> Vcpu::setCpuid(const std::vector<kvm_cpuid_entry2>& entries) {
    auto buf = uapi::flexBuffer(static_cast<uint32_t>(entries.size()), entries.data(), entries.size());
    TRY(kvmIoctl(fd(), uapi::kSetCpuid2, buf.data(), "KVM_SET_CPUID2", name_, fmt::format("{} entries", entries.size())));
    return success();
}

Result<kvm_mp_state> Vcpu::getMpState() const {
    kvm_mp_state s{};
    TRY(KVM_IOCTL(fd(), KVM_GET_MP_STATE, &s, name_));
    return s;
}
Result<void> Vcpu::setMpState(uint32_t state) {
    kvm_mp_state s{state};
    TRY(KVM_IOCTL(fd(), KVM_SET_MP_STATE, &s, name_, fmt::format("mp_state {}", state)));
    return success();
}
Result<kvm_lapic_state> Vcpu::getLapic() const {
    kvm_lapic_state l{};
    TRY(KVM_IOCTL(fd(), KVM_GET_LAPIC, &l, name_));
    return l;
}
Result<void> Vcpu::setLapic(const kvm_lapic_state& lapic) {
    TRY(KVM_IOCTL(fd(), KVM_SET_LAPIC, const_cast<kvm_lapic_state*>(&lapic), name_));
    return success();
}

Result<void> Vcpu::runOnce() {
    if (::ioctl(fd(), KVM_RUN, 0) < 0) return Error::fromErrno(fmt::format("KVM_RUN on {}", name_));
    return success();
}

}  // namespace conduit::vmm
