#include "vfio/inventory.h"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vfio/sysfs.h"

namespace conduit::vfio {

namespace {
// Base class 0x06 (bridge device) by subclass, as the PCI Code and ID Assignment spec names them:
// a q35 host has a host bridge (0x0600) and an ISA bridge (0x0601), neither a PCI-to-PCI bridge.
std::string bridgeName(uint32_t classCode) {
    switch ((classCode >> 8) & 0xff) {
        case 0x00: return "host bridge";
        case 0x01: return "ISA bridge";
        case 0x02: return "EISA bridge";
        case 0x03: return "MCA bridge";
        case 0x04: return "PCI bridge";
        case 0x05: return "PCMCIA bridge";
        case 0x06: return "NuBus bridge";
        case 0x07: return "CardBus bridge";
        case 0x08: return "RACEway bridge";
        case 0x09: return "PCI bridge (semi-transparent)";
        case 0x0a: return "InfiniBand-to-PCI bridge";
    }
    return "bridge";
}
}  // namespace

Result<std::vector<PciDeviceInfo>> scanPciDevices(const std::filesystem::path& sysfsRoot) {
    return scanPciDevices(realHost(), sysfsRoot);
}

Result<std::vector<PciDeviceInfo>> scanPciDevices(HostInterface& host, const std::filesystem::path& sysfsRoot) {
    HostPaths paths;
    paths.sysfs = sysfsRoot;
    Sysfs sysfs(host, paths);
    auto names = TRY_CTX(host.listDirectory(sysfsRoot / "bus/pci/devices"), "listing PCI devices");
    std::sort(names.begin(), names.end());
    std::vector<PciDeviceInfo> out;
    for (auto& bdf : names) {
        PciDeviceInfo info;
        info.bdf = bdf;
        info.vendor = static_cast<uint16_t>(sysfs.readHex(bdf, "vendor").value_or(0));
        info.device = static_cast<uint16_t>(sysfs.readHex(bdf, "device").value_or(0));
        info.classCode = sysfs.readHex(bdf, "class").value_or(0);
        info.driver = sysfs.driver(bdf);
        if (auto cdev = sysfs.vfioCdev(bdf)) info.vfioDev = "/dev/vfio/devices/" + std::filesystem::path(*cdev).filename().string();
        auto group = sysfs.iommuGroup(bdf);
        std::vector<std::string> blockers;
        if (group) {
            info.iommuGroup = *group;
            if (auto members = sysfs.groupMembers(*group)) {
                for (auto& m : *members) {
                    if (m.bdf == bdf) continue;
                    info.groupPeers.push_back(m.bdf);
                    if (!Sysfs::driverKeepsGroupViable(m.driver))
                        blockers.push_back(fmt::format("{} (bound to {})", m.bdf, m.driver));
                }
            }
        }
        const bool isBridge = (info.classCode >> 16) == 0x06;
        if (!group) {
            info.reason = "no IOMMU group (IOMMU disabled or absent)";
        } else if (isBridge) {
            info.reason = bridgeName(info.classCode);
        } else if (info.driver != "vfio-pci") {
            info.reason = info.driver.empty() ? "not bound to vfio-pci (no driver)"
                                              : fmt::format("bound to {}, not vfio-pci", info.driver);
        } else if (!blockers.empty()) {
            std::string list;
            for (auto& b : blockers) list += (list.empty() ? "" : ", ") + b;
            info.reason = fmt::format("IOMMU group {} is not viable: {}", *group, list);
        } else {
            info.assignable = true;
        }
        out.push_back(std::move(info));
    }
    return out;
}

HostSummary summarizeHost(HostInterface& host, const HostPaths& paths, std::optional<uint64_t> memlockBytes, bool memlockExempt) {
    HostSummary h;
    if (auto groups = host.listDirectory(paths.sysfs / "kernel/iommu_groups")) h.iommuGroups = static_cast<unsigned>(groups->size());
    h.vfioContainer = host.exists(paths.dev / "vfio/vfio");
    h.iommufd = host.exists(paths.dev / "iommu");
    h.vfioPciDriver = host.exists(paths.sysfs / "bus/pci/drivers/vfio-pci");
    h.kvm = host.exists(paths.dev / "kvm");
    h.memlockBytes = memlockBytes;
    h.memlockExempt = memlockExempt;
    if (h.iommuGroups == 0)
        h.fixes.push_back("turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d/AMD-Vi in the firmware)");
    if (!h.vfioPciDriver) h.fixes.push_back("load vfio-pci (modprobe vfio-pci)");
    if (!h.vfioContainer && !h.iommufd) h.fixes.push_back("no /dev/vfio/vfio or /dev/iommu: load vfio and iommufd (modprobe vfio-pci iommufd)");
    if (!h.kvm) h.fixes.push_back("no /dev/kvm: load kvm_intel or kvm_amd");
    // 64 MiB is far below any guest's RAM; the common default (8 MiB) certainly is.
    if (h.memlockBytes && *h.memlockBytes < (64ull << 20) && !h.memlockExempt)
        h.fixes.push_back(fmt::format("raise the memory-lock limit to at least the guest's RAM (ulimit -l; now {} KiB)", *h.memlockBytes >> 10));
    return h;
}

namespace {
std::string yesNo(bool b) { return b ? "yes" : "no"; }
std::string memlockText(const HostSummary& h) {
    if (!h.memlockBytes) return "unlimited";
    return fmt::format("{} MiB{}", *h.memlockBytes >> 20, h.memlockExempt ? " (not enforced: CAP_IPC_LOCK)" : "");
}
// The class as the kernel's sysfs `class` file has it: base class, subclass, programming interface.
std::string classText(uint32_t classCode) { return fmt::format("{:06x}", classCode & 0xffffff); }
}  // namespace

std::string renderInventory(const HostSummary& host, const std::vector<PciDeviceInfo>& devices, bool json) {
    if (json) {
        nlohmann::json arr = nlohmann::json::array();
        for (auto& d : devices) {
            nlohmann::json j;
            j["bdf"] = d.bdf;
            j["vendor"] = fmt::format("{:04x}", d.vendor);
            j["device"] = fmt::format("{:04x}", d.device);
            j["class"] = classText(d.classCode);
            j["iommu_group"] = d.iommuGroup ? nlohmann::json(*d.iommuGroup) : nlohmann::json(nullptr);
            j["driver"] = d.driver.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.driver);
            j["vfio_dev"] = d.vfioDev.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.vfioDev);
            j["group_peers"] = d.groupPeers;
            j["assignable"] = d.assignable;
            if (!d.assignable) j["reason"] = d.reason;
            arr.push_back(std::move(j));
        }
        nlohmann::json h;
        h["iommu_groups"] = host.iommuGroups;
        h["vfio_container"] = host.vfioContainer;
        h["iommufd"] = host.iommufd;
        h["vfio_pci_loaded"] = host.vfioPciDriver;
        h["kvm"] = host.kvm;
        h["memlock_bytes"] = host.memlockBytes ? nlohmann::json(*host.memlockBytes) : nlohmann::json(nullptr);
        h["memlock_enforced"] = !host.memlockExempt;
        h["fixes"] = host.fixes;
        nlohmann::json out;
        out["host"] = std::move(h);
        out["devices"] = std::move(arr);
        return out.dump(2) + "\n";
    }
    std::string s = fmt::format("host: IOMMU {}, /dev/vfio/vfio {}, /dev/iommu {}, vfio-pci {}, /dev/kvm {}, memlock {}",
                                host.iommuGroups ? fmt::format("on ({} groups)", host.iommuGroups) : std::string("off"),
                                yesNo(host.vfioContainer), yesNo(host.iommufd), host.vfioPciDriver ? "loaded" : "not loaded",
                                yesNo(host.kvm), memlockText(host));
    for (size_t i = 0; i < host.fixes.size(); ++i) s += (i ? "; " : " - to fix: ") + host.fixes[i];
    s += "\n";
    s += fmt::format("{:<13} {:<9} {:<6} {:<5} {:<14} {:<24} {}\n", "BDF", "ID", "CLASS", "GROUP", "DRIVER", "VFIO-DEV",
                     "ASSIGNABLE");
    for (auto& d : devices)
        s += fmt::format("{:<13} {:04x}:{:04x} {:<6} {:<5} {:<14} {:<24} {}\n", d.bdf, d.vendor, d.device, classText(d.classCode),
                         d.iommuGroup ? std::to_string(*d.iommuGroup) : "-", d.driver.empty() ? "-" : d.driver,
                         d.vfioDev.empty() ? "-" : d.vfioDev, d.assignable ? "yes" : "no: " + d.reason);
    if (devices.empty()) s += "(no PCI devices)\n";
    return s;
}

}  // namespace conduit::vfio
