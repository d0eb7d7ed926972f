#include "vmm/vcpu.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "vmm/kvm.h"

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

Result<uint64_t> Vcpu::getOneReg(uint64_t id) const {
    const uint64_t size = 1ull << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT);
    if (size > sizeof(uint64_t))
        return Error(fmt::format("KVM_GET_ONE_REG on {}: register {:#x} is wider than 64 bits", name_, id), EINVAL);
    uint64_t value = 0;
    kvm_one_reg reg{id, reinterpret_cast<uint64_t>(&value)};
    TRY(KVM_IOCTL(fd(), KVM_GET_ONE_REG, &reg, name_, fmt::format("register {:#x}", id)));
    return value;  // little-endian: a narrower register fills the low bytes
}

Result<void> Vcpu::setOneReg(uint64_t id, uint64_t value) {
    const uint64_t size = 1ull << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT);
    if (size > sizeof(uint64_t))
        return Error(fmt::format("KVM_SET_ONE_REG on {}: register {:#x} is wider than 64 bits", name_, id), EINVAL);
    kvm_one_reg reg{id, reinterpret_cast<uint64_t>(&value)};
    TRY(KVM_IOCTL(fd(), KVM_SET_ONE_REG, &reg, name_, fmt::format("register {:#x} = {:#x}", id, value)));
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
Result<void> Vcpu::runOnce() {
    if (::ioctl(fd(), KVM_RUN, 0) < 0) return Error::fromErrno(fmt::format("KVM_RUN on {}", name_));
    return success();
}

}  // namespace conduit::vmm
