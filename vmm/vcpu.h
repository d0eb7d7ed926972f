// One KVM vCPU: its fd, its mmapped kvm_run, and the state accessors every architecture has
// (KVM_GET/SET_ONE_REG, the MP state). Architecture-specific state (x86's regs, sregs, CPUID,
// LAPIC, FPU) is reached through fd() by vmm/arch/<arch>/. Not thread-safe by itself: the vCPU's
// own thread runs it; other threads only touch kvm_run->immediate_exit (see VcpuRunner).
// Note (KVM vcpu mutex): any vCPU ioctl from another thread blocks while KVM_RUN is in progress.
#pragma once

#include <linux/kvm.h>

#include <memory>
#include <string>

#include "base/mapping.h"
#include "base/result.h"
#include "base/unique_fd.h"

namespace conduit::vmm {

class Vcpu {
public:
    // KVM_CREATE_VCPU `index` on `vmFd`, then mmap of its kvm_run (`mmapSize` from the Kvm).
    static Result<std::unique_ptr<Vcpu>> create(int vmFd, unsigned index, size_t mmapSize);

    unsigned index() const { return index_; }
    const std::string& name() const { return name_; }  // "vcpu0"
    int fd() const { return fd_.get(); }
    kvm_run* run() const { return reinterpret_cast<kvm_run*>(mapping_.data()); }

    // KVM_GET_ONE_REG / KVM_SET_ONE_REG of a register of up to 64 bits (`id` carries its size,
    // KVM_REG_SIZE_U32/U64; smaller ones are zero-extended).
    Result<uint64_t> getOneReg(uint64_t id) const;
    Result<void> setOneReg(uint64_t id, uint64_t value);
    // KVM_GET/SET_MP_STATE (x86 INIT/SIPI states; arm64 PSCI power state).
    Result<kvm_mp_state> getMpState() const;
    Result<void> setMpState(uint32_t state);

    // One KVM_RUN. EINTR (a kick, or immediate_exit) and EAGAIN come back as Errors carrying that
    // errno; the caller decides (the run loop retries both).
    Result<void> runOnce();

private:
    Vcpu(unsigned index, UniqueFd fd, Mapping mapping);

    unsigned index_;
    std::string name_;
    UniqueFd fd_;
    Mapping mapping_;
};

}  // namespace conduit::vmm
