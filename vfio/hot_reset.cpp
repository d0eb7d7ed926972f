#include "vfio/hot_reset.h"

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "vfio/uapi_compat.h"

namespace conduit::vfio {

std::string HotResetDevice::bdf() const {
    return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", segment, bus, devfn >> 3, devfn & 7);
}

bool HotResetInfo::devIdForm() const { return flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID; }
bool HotResetInfo::allOwned() const { return devIdForm() && (flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED); }

Result<HotResetPlan> planHotReset(const HotResetInfo& info, const std::string& self, const HotResetOwner& owner,
                                  OpenSiblings siblings) {
    const std::string what = "VFIO_DEVICE_PCI_HOT_RESET " + self;
    if (info.devices.empty())
        return Error(what + ": VFIO_DEVICE_GET_PCI_HOT_RESET_INFO lists no function to reset", ENODEV);
    HotResetPlan plan;
    plan.devIdForm = info.devIdForm();
    for (const auto& d : info.devices) {
        const std::string bdf = d.bdf();
        plan.affected.push_back(bdf);
        const bool isSelf = bdf == self;
        if (plan.devIdForm) {
            if (isSelf) continue;
            if (d.devId == uint32_t(VFIO_PCI_DEVID_NOT_OWNED))
                return Error(fmt::format("{}: the reset would also reset {}, which this VM does not own (bound to "
                                         "another driver or another iommufd); assign it to this VM or unbind it",
                                         what, bdf),
                             EPERM);
        } else if (!owner.ownedGroupFd(d.groupId)) {
            return Error(fmt::format("{}: the reset would also reset {} in IOMMU group {}, which this VM does not "
                                     "own; assign a device of that group to this VM",
                                     what, bdf, d.groupId),
                         EPERM);
        }
        if (!isSelf && siblings == OpenSiblings::Refuse && owner.deviceOpen(bdf))
            return Error(fmt::format("{}: the reset would also reset {}, which this VM drives; it is not reset "
                                     "behind its driver's back",
                                     what, bdf),
                         EBUSY);
    }
    // The flag says the same as the per-device ids; trust neither alone.
    if (plan.devIdForm && !info.allOwned())
        return Error(what + ": the kernel does not report every affected function as owned "
                            "(VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED clear)",
                     EPERM);
    if (!plan.devIdForm) {
        for (const auto& d : info.devices) {
            const int fd = *owner.ownedGroupFd(d.groupId);  // every group was checked above
            if (std::find(plan.groupFds.begin(), plan.groupFds.end(), fd) == plan.groupFds.end())
                plan.groupFds.push_back(fd);
        }
    }
    return plan;
}

}  // namespace conduit::vfio
