// StreamBinding: what the virtual SMMUv3 asks of the host for the streams it fronts. The device
// model (devices/smmuv3/virtual_smmu.h) owns the guest-visible state (registers, queues, the
// guest's stream table in guest memory); the binding owns the host side: in the product, per
// physical SMMU, the iommufd nesting objects (vIOMMU, vDEVICEs, nested HWPTs, vEVENTQ) of
// vmm/viommu.h; in the unit tests, a recorder.
//
// The vSMMU calls it on a vCPU thread, from inside an MMIO write (CR0, GBPA, CMDQ_PROD), never with
// its own lock held across the call; events travel the other way through
// VirtualSmmu::deliverEvents().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "vfio/smmuv3.h"

namespace conduit::devices::smmuv3 {

using vfio::smmuv3::Command;
using vfio::smmuv3::Event;
using vfio::smmuv3::Ste;

class StreamBinding {
public:
    virtual ~StreamBinding() = default;

    // The guest StreamIDs that belong to assigned devices (their requester ids on the virtual
    // PCIe bus). Only these reach the host; STEs of other streams are the guest's own business.
    virtual std::vector<uint32_t> streams() const = 0;

    // Stream `sid` must now translate as `ste` says. `ste` holds only the bits the kernel accepts
    // for nesting (vfio::smmuv3::kSte{0,1}NestingAllowed): {0, 0} is abort, V|Cfg=bypass is bypass,
    // V|Cfg=S1 carries the guest's CD table pointer. The binding allocates a nested HWPT for it,
    // attaches the device by replacement and frees the previous one. An error leaves the previous
    // configuration in place; the vSMMU reports it to the guest as C_BAD_STE.
    virtual Result<void> setStream(uint32_t sid, const Ste& ste) = 0;

    // The invalidation commands the guest queued since its last CMD_SYNC (TLBI_NH_*, TLBI_NSNH_ALL,
    // CFGI_CD(_ALL), ATC_INV; StreamIDs are guest StreamIDs), in guest order, sent to the host in one
    // go. `*done` is how many were handled; on an error the command at index `*done` failed and the
    // vSMMU stops the queue there (CONS.ERR = CERROR_ILL, GERROR.CMDQ_ERR).
    virtual Result<void> invalidate(std::span<const Command> commands, uint32_t* done) = 0;
};

}  // namespace conduit::devices::smmuv3
