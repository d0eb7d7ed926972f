// `conduit devices`: the host's PCI devices with their IOMMU group, bound driver, VFIO cdev and
// whether each can be assigned to a VM (and why not), read from sysfs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "vfio/host_interface.h"

namespace conduit::vfio {

struct PciDeviceInfo {
    std::string bdf;
    uint16_t vendor = 0;
    uint16_t device = 0;
    uint32_t classCode = 0;
    std::optional<unsigned> iommuGroup;
    std::string driver;               // "" when unbound
    std::string vfioDev;              // "/dev/vfio/devices/vfioN" or ""
    std::vector<std::string> groupPeers;  // other devices of the same group
    bool assignable = false;
    std::string reason;               // why not (empty when assignable)
};

// Reads <sysfsRoot>/bus/pci/devices. Devices sorted by BDF.
Result<std::vector<PciDeviceInfo>> scanPciDevices(const std::filesystem::path& sysfsRoot);
// Same, through a HostInterface (the simulated host in tests).
Result<std::vector<PciDeviceInfo>> scanPciDevices(HostInterface& host, const std::filesystem::path& sysfsRoot);

// A table for humans, or a JSON array (one object per device) when json is true.
std::string renderInventory(const std::vector<PciDeviceInfo>& devices, bool json);

}  // namespace conduit::vfio
