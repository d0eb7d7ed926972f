#include "vfio/sysfs.h"

#include <cstdio>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "base/printable.h"

namespace conduit::vfio {

namespace {
std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
    size_t i = 0;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    return s.substr(i);
}
}  // namespace

Result<std::string> normalizeBdf(const std::string& bdf) {
    static const std::regex full("^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\\.[0-7]$");
    static const std::regex shortForm("^[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\\.[0-7]$");
    std::string lower = bdf;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (std::regex_match(lower, full)) return lower;
    if (std::regex_match(lower, shortForm)) return "0000:" + lower;
    return Error(fmt::format("'{}' is not a PCI address (expected DDDD:BB:DD.F)", printable(bdf)), EINVAL);
}

Result<unsigned> Sysfs::iommuGroup(const std::string& bdf) const {
    auto link = host_.readLink(deviceDir(bdf) / "iommu_group");
    if (!link)
        return Error(fmt::format("PCI device {} has no IOMMU group (is the IOMMU enabled?)", bdf),
                     link.error().code());
    std::string name = link->filename().string();
    try {
        return static_cast<unsigned>(std::stoul(name));
    } catch (...) {
        return Error(fmt::format("PCI device {}: iommu_group link '{}' has no group number", bdf, link->string()),
                     EINVAL);
    }
}

std::string Sysfs::driver(const std::string& bdf) const {
    auto link = host_.readLink(deviceDir(bdf) / "driver");
    return link ? link->filename().string() : std::string();
}

Result<void> Sysfs::checkAssignable(const std::string& bdf) const {
    if (!host_.exists(deviceDir(bdf)))
        return Error(fmt::format("PCI device {} does not exist ({} missing)", bdf, deviceDir(bdf).string()), ENODEV);
    const std::string drv = driver(bdf);
    if (drv.empty() || drv == "pci-stub" || drv == "pcieport" || !driverKeepsGroupViable(drv))
        return Error(fmt::format("PCI device {} is {}, not to vfio-pci (bind it to vfio-pci first)", bdf,
                                 drv.empty() ? "bound to no driver" : "bound to " + drv),
                     ENODEV);
    if (auto group = iommuGroup(bdf)) {
        const std::string culprits = groupCulprits(*group);
        if (!culprits.empty())
            return Error(fmt::format("IOMMU group {} is not viable: {} must be unbound or bound to vfio-pci", *group,
                                     culprits),
                         EPERM);
    }
    return success();
}

std::string Sysfs::groupCulprits(unsigned group) const {
    std::string culprits;
    if (auto members = groupMembers(group)) {
        for (auto& m : *members)
            if (!driverKeepsGroupViable(m.driver))
                culprits += fmt::format("{}{} (bound to {})", culprits.empty() ? "" : ", ", m.bdf, m.driver);
    }
    return culprits;
}

Result<std::vector<GroupMember>> Sysfs::groupMembers(unsigned group) const {
    auto dir = paths_.sysfs / "kernel/iommu_groups" / std::to_string(group) / "devices";
    auto names = TRY_CTX(host_.listDirectory(dir), fmt::format("IOMMU group {}", group));
    std::sort(names.begin(), names.end());
    std::vector<GroupMember> members;
    for (auto& n : names) members.push_back({n, driver(n)});
    return members;
}

Result<std::vector<ReservedRegion>> Sysfs::reservedRegions(unsigned group) const {
    auto path = paths_.sysfs / "kernel/iommu_groups" / std::to_string(group) / "reserved_regions";
    if (!host_.exists(path)) return std::vector<ReservedRegion>{};
    auto text = TRY_CTX(host_.readFile(path), fmt::format("IOMMU group {}", group));
    std::vector<ReservedRegion> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        line = trim(line);
        if (line.empty()) continue;
        std::istringstream ls(line);
        std::string a, b, type;
        ls >> a >> b >> type;
        try {
            out.push_back({std::stoull(a, nullptr, 16), std::stoull(b, nullptr, 16), type});
        } catch (...) {
            return Error(fmt::format("{}: cannot parse line '{}'", path.string(), line), EINVAL);
        }
    }
    return out;
}

Result<std::string> Sysfs::vfioCdev(const std::string& bdf) const {
    auto dir = deviceDir(bdf) / "vfio-dev";
    auto names = host_.listDirectory(dir);
    if (!names)
        return Error(fmt::format("PCI device {} has no VFIO device cdev ({} missing: not bound to vfio-pci, "
                                 "or kernel without CONFIG_VFIO_DEVICE_CDEV)",
                                 bdf, dir.string()),
                     ENODEV);
    for (auto& n : *names)
        if (n.rfind("vfio", 0) == 0) return (paths_.dev / "vfio/devices" / n).string();
    return Error(fmt::format("PCI device {}: {} lists no vfioN node", bdf, dir.string()), ENODEV);
}

std::optional<uint32_t> Sysfs::readHex(const std::string& bdf, const char* attribute) const {
    auto text = host_.readFile(deviceDir(bdf) / attribute);
    if (!text) return std::nullopt;
    try {
        return static_cast<uint32_t>(std::stoul(trim(*text), nullptr, 16));
    } catch (...) {
        return std::nullopt;
    }
}

bool Sysfs::driverKeepsGroupViable(const std::string& driver) {
    return driver.empty() || driver == "pci-stub" || driver == "pcieport" || driver.rfind("vfio", 0) == 0 ||
           driver.find("vfio-pci") != std::string::npos || driver.find("vfio_pci") != std::string::npos;
}

bool Sysfs::deviceExists(const std::string& bdf) const { return host_.exists(deviceDir(bdf)); }

Result<std::string> Sysfs::deviceWithCdev(unsigned index) const {
    const std::string node = fmt::format("vfio{}", index);
    const auto devices = paths_.sysfs / "bus/pci/devices";
    auto list = TRY(host_.listDirectory(devices));
    for (auto& bdf : list)
        if (host_.exists(devices / bdf / "vfio-dev" / node)) return bdf;
    return Error(fmt::format("no PCI device has the VFIO cdev {} (is it bound to vfio-pci, with "
                             "CONFIG_VFIO_DEVICE_CDEV?)",
                             node),
                 ENODEV);
}

}  // namespace conduit::vfio
