// The in-kernel GICv3 and its ITS (KVM_CREATE_DEVICE), on a raw VM fd. Built for aarch64 only.
//
// Order (KVM's rules): create() may run before or after the vCPUs exist; finalize() must run
// after every vCPU has been created (KVM_DEV_ARM_VGIC_CTRL_INIT sizes the redistributors from
// them and no vCPU can be added afterwards) and before the first KVM_RUN.
// Teardown: the device fds are closed with this object; the VM keeps the devices alive anyway
// (KVM devices live as long as their VM), so dropping it before the Vm is harmless.
#pragma once

#include <cstdint>
#include <optional>

#include "base/result.h"
#include "base/unique_fd.h"
#include "memory/address_range.h"

namespace conduit::vmm::arm64 {

struct GicConfig {
    memory::AddressRange distributor;        // 64 KiB
    uint64_t redistributorBase = 0;          // one contiguous region, 128 KiB per vCPU
    std::optional<uint64_t> itsBase;         // 128 KiB; none = no ITS (no MSIs)
    uint32_t spis = 64;                      // SPIs (KVM's nr_irqs adds the 32 private ones)
};

class KvmGic {
public:
    // KVM_CREATE_DEVICE VGIC_V3 (+ VGIC_ITS), the addresses and the interrupt count.
    static Result<KvmGic> create(int vmFd, const GicConfig& config);

    // KVM_DEV_ARM_VGIC_CTRL_INIT on the GIC, then on the ITS.
    Result<void> finalize();

    bool hasIts() const { return its_.valid(); }
    int gicFd() const { return gic_.get(); }
    int itsFd() const { return its_.get(); }

private:
    KvmGic(UniqueFd gic, UniqueFd its) : gic_(std::move(gic)), its_(std::move(its)) {}
    UniqueFd gic_;
    UniqueFd its_;
};

}  // namespace conduit::vmm::arm64
