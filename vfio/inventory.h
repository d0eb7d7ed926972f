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

// What the host offers device assignment as a whole, for the line above the device table: each
// missing piece with what to do about it.
struct HostSummary {
    unsigned iommuGroups = 0;      // entries of <sysfs>/kernel/iommu_groups: 0 = IOMMU off or absent
    bool vfioContainer = false;    // <dev>/vfio/vfio (type1 backend)
    bool iommufd = false;          // <dev>/iommu (iommufd backend)
    bool vfioPciDriver = false;    // <sysfs>/bus/pci/drivers/vfio-pci (vfio-pci loaded)
    bool kvm = false;              // <dev>/kvm
    std::optional<uint64_t> memlockBytes;  // RLIMIT_MEMLOCK (soft); nothing = unlimited
    bool memlockExempt = false;            // the caller has CAP_IPC_LOCK: VFIO does not enforce the limit
    std::vector<std::string> fixes;        // "what to fix", in the order of the fields above
};

// `memlockBytes` is the caller's RLIMIT_MEMLOCK (nothing when unlimited): type1 and iommufd pin all
// of guest RAM against it unless the caller has CAP_IPC_LOCK (`memlockExempt`).
HostSummary summarizeHost(HostInterface& host, const HostPaths& paths, std::optional<uint64_t> memlockBytes, bool memlockExempt);

// A table for humans, headed by one line about the host; or, when json is true, a JSON object
// {"host": {...}, "devices": [...]} (one object per device).
std::string renderInventory(const HostSummary& host, const std::vector<PciDeviceInfo>& devices, bool json);

}  // namespace conduit::vfio
