// PCI hot reset: a secondary-bus or slot reset through VFIO, for functions without a function
// reset of their own (a GPU and its audio function sharing a bus, a device whose FLR is quirked
// off). It resets every function below the bus or slot, so the kernel lets it happen only when the
// caller owns all of them (vfio_pci_dev_set_hot_reset()). Two forms:
//   group form   (type1; the device fd came from VFIO_GROUP_GET_DEVICE_FD):
//                VFIO_DEVICE_GET_PCI_HOT_RESET_INFO lists each affected function's IOMMU group,
//                and VFIO_DEVICE_PCI_HOT_RESET takes the fd of every one of those groups;
//   dev-id form  (a device cdev bound to an iommufd): the info has VFIO_PCI_HOT_RESET_FLAG_DEV_ID
//                and lists iommufd device ids instead (VFIO_PCI_DEVID_OWNED: not bound, but in a
//                group this iommufd owns; VFIO_PCI_DEVID_NOT_OWNED: someone else's), with
//                FLAG_DEV_ID_OWNED when every one is owned; the reset takes a zero-length fd array.
// The kernel answers a reset it will not do with a bare EINVAL. Conduit plans first, from the
// info, as QEMU's vfio_pci_hot_reset() does, and names the function that stands in the way.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace conduit::vfio {

// One function the reset reaches.
struct HotResetDevice {
    uint32_t groupId = 0;  // group form: its IOMMU group
    uint32_t devId = 0;    // dev-id form: its iommufd device id, VFIO_PCI_DEVID_OWNED or _NOT_OWNED
    uint16_t segment = 0;
    uint8_t bus = 0;
    uint8_t devfn = 0;
    std::string bdf() const;  // "0000:01:00.1"
};

struct HotResetInfo {
    uint32_t flags = 0;  // VFIO_PCI_HOT_RESET_FLAG_*
    std::vector<HotResetDevice> devices;
    bool devIdForm() const;
    bool allOwned() const;  // dev-id form only: VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED
};

// What the backend that opened a device knows about what this VM holds (the backends implement
// it; a VfioDevice asks the one that opened it).
class HotResetOwner {
public:
    virtual ~HotResetOwner() = default;
    // The fd of IOMMU group `group` when this backend holds it (type1: attached to its container).
    virtual std::optional<int> ownedGroupFd(unsigned group) const = 0;
    // Whether `bdf` is open through this backend, i.e. a function this VM drives.
    virtual bool deviceOpen(const std::string& bdf) const = 0;
};

// Other functions of this VM that the reset would reach. At start nothing has driven them yet, so
// they may be reset along (QEMU's machine reset resets them together too). When a guest resets one
// function, its siblings' drivers would see their device reset underneath them: refused.
enum class OpenSiblings { Refuse, ResetToo };

struct HotResetPlan {
    std::vector<int32_t> groupFds;      // group form: one per affected group; dev-id form: empty
    std::vector<std::string> affected;  // every function the reset reaches, `self` included
    bool devIdForm = false;
};

// Checks, without any ioctl, whether `self` may be hot reset and what the reset must be given.
// EPERM: a function the reset reaches is not owned; EBUSY: it is a sibling in use and `siblings`
// is Refuse; ENODEV: the info names no function at all.
Result<HotResetPlan> planHotReset(const HotResetInfo& info, const std::string& self, const HotResetOwner& owner,
                                  OpenSiblings siblings);

}  // namespace conduit::vfio
