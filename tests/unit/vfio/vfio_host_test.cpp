// Host selection is injected: the product's factory knows only the kernel's VFIO; the simulated
// host comes from tests/hostsim's factory, and the sysfs walk that resolves a VFIO cdev to a device
// is vfio::Sysfs's, on whichever host.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/hostsim/vmm_hosts.h"
#include <fmt/format.h>

#include "vfio/sysfs.h"
#include "vmm/vfio_host.h"

using namespace conduit;
using ::testing::HasSubstr;

namespace {

vmm::VfioHostConfig simulatedConfig() {
    vmm::VfioHostConfig c;
    c.kind = vmm::VfioHostConfig::Kind::Simulated;
    vmm::SimulatedDeviceConfig d;
    d.bdf = "0000:01:00.0";
    d.group = 10;
    c.devices.push_back(d);
    return c;
}

}  // namespace

TEST(VfioHost, TheProductFactoryOpensOnlyTheKernel) {
    auto hosts = vmm::kernelVfioHosts();
    auto real = hosts(vmm::VfioHostConfig{});
    ASSERT_TRUE(real.ok()) << real.error().describe();
    EXPECT_TRUE((*real)->isKernel());
    EXPECT_EQ((*real)->name(), "real");
    EXPECT_EQ((*real)->paths().sysfs, "/sys");
    auto sim = hosts(simulatedConfig());
    ASSERT_FALSE(sim.ok());
    EXPECT_THAT(sim.error().describe(), HasSubstr("this binary has no simulated VFIO host"));
    EXPECT_EQ(sim.error().code(), ENOTSUP);
}

TEST(VfioHost, TheTestFactoryOpensTheSimulatedHostAndSysfsResolvesItsCdevs) {
    auto host = hostsim::simulatedVfioHosts()(simulatedConfig());
    ASSERT_TRUE(host.ok()) << host.error().describe();
    EXPECT_FALSE((*host)->isKernel());
    EXPECT_EQ((*host)->name(), "simulated");
    const vfio::Sysfs sysfs((*host)->interface(), (*host)->paths());
    EXPECT_TRUE(sysfs.deviceExists("0000:01:00.0"));
    EXPECT_FALSE(sysfs.deviceExists("0000:05:00.0"));
    auto cdev = sysfs.vfioCdev("0000:01:00.0");
    ASSERT_TRUE(cdev.ok()) << cdev.error().describe();
    const unsigned index = static_cast<unsigned>(std::stoul(cdev->substr(cdev->rfind("vfio") + 4)));
    auto bdf = sysfs.deviceWithCdev(index);
    ASSERT_TRUE(bdf.ok()) << bdf.error().describe();
    EXPECT_EQ(*bdf, "0000:01:00.0");
    auto none = sysfs.deviceWithCdev(index + 100);
    ASSERT_FALSE(none.ok());
    EXPECT_THAT(none.error().describe(), HasSubstr(fmt::format("no PCI device has the VFIO cdev vfio{}", index + 100)));
    EXPECT_EQ(none.error().code(), ENODEV);
    nlohmann::json stats;
    (*host)->addStats(stats);
    EXPECT_TRUE(stats["dma_faults"].is_array());
}
