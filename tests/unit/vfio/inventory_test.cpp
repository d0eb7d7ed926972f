// `conduit devices` over sysfs trees built in a temporary directory.
#include "vfio/inventory.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "tests/hostsim/sim_host.h"

using namespace conduit;
using namespace conduit::vfio;
namespace fs = std::filesystem;

namespace {

class TempSysfs {
public:
    TempSysfs() {
        char t[] = "/tmp/conduit-inv-XXXXXX";
        root_ = ::mkdtemp(t);
        fs::create_directories(root_ / "bus/pci/devices");
    }
    ~TempSysfs() { fs::remove_all(root_); }
    void device(const std::string& bdf, const std::string& cls, std::optional<unsigned> group, const std::string& driver,
                bool cdev = false) {
        auto d = root_ / "bus/pci/devices" / bdf;
        fs::create_directories(d);
        std::ofstream(d / "vendor") << "0x8086\n";
        std::ofstream(d / "device") << "0x1234\n";
        std::ofstream(d / "class") << cls << "\n";
        if (group) {
            auto g = root_ / "kernel/iommu_groups" / std::to_string(*group) / "devices";
            fs::create_directories(g);
            fs::create_symlink("../../../../bus/pci/devices/" + bdf, g / bdf);
            fs::create_symlink("../../../../kernel/iommu_groups/" + std::to_string(*group), d / "iommu_group");
        }
        if (!driver.empty()) {
            fs::create_directories(root_ / "bus/pci/drivers" / driver);
            fs::create_symlink("../../../../bus/pci/drivers/" + driver, d / "driver");
        }
        if (cdev) fs::create_directories(d / "vfio-dev/vfio0");
    }
    const fs::path& root() const { return root_; }

private:
    fs::path root_;
};

TEST(Inventory, AssignabilityAndReasons) {
    TempSysfs s;
    s.device("0000:00:00.0", "0x060000", 0, "");                  // host bridge
    s.device("0000:00:02.0", "0x030000", std::nullopt, "i915");    // no IOMMU group
    s.device("0000:00:03.0", "0x00ff00", 3, "vfio-pci", true);     // assignable
    s.device("0000:00:04.0", "0x020000", 4, "e1000e");             // wrong driver
    s.device("0000:01:00.0", "0x010802", 5, "vfio-pci", true);     // group shared with a driver-bound device
    s.device("0000:01:00.1", "0x040300", 5, "snd_hda_intel");
    auto devs = scanPciDevices(s.root());
    ASSERT_TRUE(devs.ok()) << devs.error().describe();
    ASSERT_EQ(devs->size(), 6u);
    auto& v = *devs;
    EXPECT_EQ(v[0].reason, "host bridge");
    EXPECT_FALSE(v[1].iommuGroup.has_value());
    EXPECT_NE(v[1].reason.find("no IOMMU group"), std::string::npos);
    EXPECT_TRUE(v[2].assignable);
    EXPECT_EQ(v[2].vfioDev, "/dev/vfio/devices/vfio0");
    EXPECT_EQ(v[2].iommuGroup.value(), 3u);
    EXPECT_FALSE(v[3].assignable);
    EXPECT_EQ(v[3].reason, "bound to e1000e, not vfio-pci");
    EXPECT_FALSE(v[4].assignable);
    EXPECT_NE(v[4].reason.find("0000:01:00.1 (bound to snd_hda_intel)"), std::string::npos) << v[4].reason;
    ASSERT_EQ(v[4].groupPeers.size(), 1u);

    const HostSummary host;
    auto all = nlohmann::json::parse(renderInventory(host, v, true));
    auto& j = all["devices"];
    ASSERT_EQ(j.size(), 6u);
    EXPECT_EQ(j[2]["bdf"], "0000:00:03.0");
    EXPECT_EQ(j[2]["assignable"], true);
    EXPECT_EQ(j[2]["iommu_group"], 3);
    EXPECT_EQ(j[2]["driver"], "vfio-pci");
    EXPECT_TRUE(j[1]["iommu_group"].is_null());
    EXPECT_EQ(j[3]["reason"], "bound to e1000e, not vfio-pci");
    auto table = renderInventory(host, v, false);
    EXPECT_NE(table.find("0000:00:03.0"), std::string::npos);
    EXPECT_NE(table.find("no: bound to e1000e"), std::string::npos);
}

// Bridges are not assignable and are named by subclass (a q35 host's 00:00.0 and 00:1f.0 are a
// host and an ISA bridge, not PCI bridges).
TEST(Inventory, BridgesAreLabelledBySubclass) {
    TempSysfs s;
    s.device("0000:00:00.0", "0x060000", 0, "");
    s.device("0000:00:1c.0", "0x060400", 1, "pcieport");
    s.device("0000:00:1f.0", "0x060100", 2, "lpc_ich");
    s.device("0000:00:1f.1", "0x068000", 3, "vfio-pci");
    auto devs = scanPciDevices(s.root());
    ASSERT_TRUE(devs.ok()) << devs.error().describe();
    ASSERT_EQ(devs->size(), 4u);
    auto& v = *devs;
    EXPECT_EQ(v[0].reason, "host bridge");
    EXPECT_EQ(v[1].reason, "PCI bridge");
    EXPECT_EQ(v[2].reason, "ISA bridge");
    EXPECT_EQ(v[3].reason, "bridge");  // 0x0680, "other bridge", even when bound to vfio-pci
    for (auto& d : v) EXPECT_FALSE(d.assignable) << d.bdf;
    auto table = renderInventory(HostSummary{}, v, false);
    EXPECT_NE(table.find("no: ISA bridge"), std::string::npos) << table;
    EXPECT_NE(table.find("no: host bridge"), std::string::npos) << table;
}

// The class is the sysfs `class` file's six digits (base class, subclass, programming interface)
// in the table and in JSON alike: an NVMe (010802) and an xHCI controller (0c0330) are told apart
// only by the last two.
TEST(Inventory, ClassHasTheSameSixDigitsInTextAndJson) {
    TempSysfs s;
    s.device("0000:00:04.0", "0x010802", 4, "vfio-pci");
    auto devs = scanPciDevices(s.root()).value();
    auto table = renderInventory(HostSummary{}, devs, false);
    EXPECT_NE(table.find("0000:00:04.0  8086:1234 010802 4 "), std::string::npos) << table;
    auto j = nlohmann::json::parse(renderInventory(HostSummary{}, devs, true));
    EXPECT_EQ(j["devices"][0]["class"], "010802");
}

// The line above the table: what the host has for device assignment, and what to fix.
TEST(Inventory, HostSummarySaysWhatIsMissingAndWhatToDo) {
    TempSysfs s;
    auto dev = s.root() / "dev";
    fs::create_directories(dev);
    HostSummary bare = summarizeHost(realHost(), {s.root(), dev}, 8ull << 20, false);
    EXPECT_EQ(bare.iommuGroups, 0u);
    auto line = renderInventory(bare, {}, false);
    EXPECT_EQ(line.substr(0, line.find('\n')),
              "host: IOMMU off, /dev/vfio/vfio no, /dev/iommu no, vfio-pci not loaded, /dev/kvm no, memlock 8 MiB - to fix: "
              "turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d/AMD-Vi in the firmware); "
              "load vfio-pci (modprobe vfio-pci); no /dev/vfio/vfio or /dev/iommu: load vfio and iommufd (modprobe "
              "vfio-pci iommufd); no /dev/kvm: load kvm_intel or kvm_amd; raise the memory-lock limit to at least the "
              "guest's RAM (ulimit -l; now 8192 KiB)");

    s.device("0000:00:03.0", "0x020000", 3, "vfio-pci");
    fs::create_directories(dev / "vfio");
    std::ofstream(dev / "vfio/vfio") << "";
    std::ofstream(dev / "iommu") << "";
    std::ofstream(dev / "kvm") << "";
    HostSummary ready = summarizeHost(realHost(), {s.root(), dev}, std::nullopt, false);
    EXPECT_TRUE(ready.fixes.empty());
    line = renderInventory(ready, {}, false);
    EXPECT_EQ(line.substr(0, line.find('\n')),
              "host: IOMMU on (1 groups), /dev/vfio/vfio yes, /dev/iommu yes, vfio-pci loaded, /dev/kvm yes, memlock unlimited");
    auto j = nlohmann::json::parse(renderInventory(summarizeHost(realHost(), {s.root(), dev}, 8ull << 20, true), {}, true));
    EXPECT_EQ(j["host"]["memlock_enforced"], false);
    EXPECT_TRUE(j["host"]["fixes"].empty()) << j.dump();
}

TEST(Inventory, SimulatedHostTree) {
    hostsim::SimHost host;
    host.addDevice({});
    host.addGroupPeer("0000:00:03.1", 7, "snd_hda_intel");
    auto devs = scanPciDevices(host, host.paths().sysfs).value();
    ASSERT_EQ(devs.size(), 2u);
    EXPECT_FALSE(devs[0].assignable);
    EXPECT_EQ(devs[0].vfioDev, "/dev/vfio/devices/vfio0");
}

TEST(Inventory, MissingSysfsIsAnError) {
    auto r = scanPciDevices("/nonexistent-sysfs");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("listing PCI devices"), std::string::npos);
}

TEST(Inventory, RealSysfsDoesNotFail) {
    // This machine's /sys (no VFIO here); it must still list without error.
    auto r = scanPciDevices("/sys");
    if (!fs::exists("/sys/bus/pci/devices")) GTEST_SKIP() << "no PCI sysfs";
    ASSERT_TRUE(r.ok()) << r.error().describe();
}

}  // namespace
