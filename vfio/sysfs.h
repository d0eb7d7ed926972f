// What sysfs says about PCI devices and IOMMU groups, read through the HostInterface.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "vfio/host_interface.h"

namespace conduit::vfio {

struct ReservedRegion {
    uint64_t start = 0;
    uint64_t last = 0;  // inclusive, as sysfs prints it
    std::string type;   // "msi", "direct", "reserved", "direct-relaxable"
};

// A device of an IOMMU group and the driver it is bound to ("" when none).
struct GroupMember {
    std::string bdf;
    std::string driver;
};

class Sysfs {
public:
    Sysfs(HostInterface& host, HostPaths paths) : host_(host), paths_(std::move(paths)) {}

    const HostPaths& paths() const { return paths_; }
    std::filesystem::path deviceDir(const std::string& bdf) const { return paths_.sysfs / "bus/pci/devices" / bdf; }

    // Whether sysfs has the PCI device `bdf` (canonical form).
    bool deviceExists(const std::string& bdf) const;
    // The device whose VFIO cdev is /dev/vfio/devices/vfio<index> (its <dev>/vfio-dev/vfio<index>
    // exists): the reverse of vfioCdev(). ENODEV when none has it.
    Result<std::string> deviceWithCdev(unsigned index) const;
    // The IOMMU group number of a device; an error names the device when it has none (no IOMMU).
    Result<unsigned> iommuGroup(const std::string& bdf) const;
    // "" when no driver is bound.
    std::string driver(const std::string& bdf) const;
    // Before any VFIO call, what sysfs already says against assigning `bdf` (both backends): the
    // device does not exist (ENODEV), is not bound to vfio-pci or a vfio-pci variant driver
    // (ENODEV), or shares its IOMMU group with a device bound to a host driver (EPERM, naming it).
    // The kernel would refuse these too, but with ENOENT on a group node or EBUSY from
    // VFIO_DEVICE_BIND_IOMMUFD, which do not say what to fix.
    Result<void> checkAssignable(const std::string& bdf) const;
    // The members keeping `group` from VFIO: "0000:00:05.1 (bound to snd_hda_intel), ..."; empty
    // when none (or when sysfs cannot tell).
    std::string groupCulprits(unsigned group) const;
    Result<std::vector<GroupMember>> groupMembers(unsigned group) const;
    // /sys/kernel/iommu_groups/N/reserved_regions.
    Result<std::vector<ReservedRegion>> reservedRegions(unsigned group) const;
    // /dev/vfio/devices/vfioN for the device, from <dev>/vfio-dev/vfioN; error when the kernel has
    // no VFIO cdev for it (CONFIG_VFIO_DEVICE_CDEV off, or not bound to vfio-pci).
    Result<std::string> vfioCdev(const std::string& bdf) const;
    std::optional<uint32_t> readHex(const std::string& bdf, const char* attribute) const;

    // Drivers under which a group member does not make the group unviable: vfio-pci and its
    // variants, pci-stub, pcieport (bridges) and no driver at all. These are the drivers that set
    // driver_managed_dma (or have no DMA), see iommu_device_use_default_domain() in
    // drivers/iommu/iommu.c.
    static bool driverKeepsGroupViable(const std::string& driver);

private:
    HostInterface& host_;
    HostPaths paths_;
};

// Canonical "0000:00:03.0"; accepts "00:03.0" too. Error on anything else.
Result<std::string> normalizeBdf(const std::string& bdf);

}  // namespace conduit::vfio
