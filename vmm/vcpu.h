// One KVM vCPU: its fd, its mmapped kvm_run, and state accessors. Not thread-safe by itself: the
// vCPU's own thread runs it; other threads only touch kvm_run->immediate_exit (see VcpuRunner).
// Note (KVM vcpu mutex): any vCPU ioctl from another thread blocks while KVM_RUN is in progress.
#pragma once

#include <linux/kvm.h>

#include <memory>
#include <string>
#include <vector>

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

    Result<kvm_regs> getRegs() const;
    Result<void> setRegs(const kvm_regs& regs);
    Result<kvm_sregs> getSregs() const;
    Result<void> setSregs(const kvm_sregs& sregs);
    Result<kvm_fpu> getFpu() const;
    Result<void> setFpu(const kvm_fpu& fpu);
    Result<void> setCpuid(const std::vector<kvm_cpuid_entry2>& entries);
    Result<kvm_mp_state> getMpState() const;
    Result<void> setMpState(uint32_t state);
    Result<kvm_lapic_state> getLapic() const;
    Result<void> setLapic(const kvm_lapic_state& lapic);

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
