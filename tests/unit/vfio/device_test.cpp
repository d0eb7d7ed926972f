// One device brought up through either backend (same VfioOps seam), then driven like a driver would:
// edu registers through the trapped BAR, the mmapped memory BAR, DMA through the simulated IOMMU
// with MSI-X / MSI / INTx delivery, reset.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>

#include <cstring>

#include "tests/hostsim/bringup.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/iommufd.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;

namespace {

constexpr const char* kBdf = "0000:00:03.0";

uint32_t rd32(VfioDevice& d, uint64_t off) {
    uint32_t v = 0;
    auto r = d.readRegion(0, off, std::span(reinterpret_cast<uint8_t*>(&v), 4));
    EXPECT_TRUE(r.ok()) << r.error().describe();
    return v;
}
void wr32(VfioDevice& d, uint64_t off, uint32_t v) {
    auto r = d.writeRegion(0, off, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
    EXPECT_TRUE(r.ok()) << r.error().describe();
}
void wr64(VfioDevice& d, uint64_t off, uint64_t v) {
    auto r = d.writeRegion(0, off, std::span(reinterpret_cast<const uint8_t*>(&v), 8));
    EXPECT_TRUE(r.ok()) << r.error().describe();
}
uint64_t pending(const EventFd& e) { return e.consume(); }

class DeviceTest : public ::testing::TestWithParam<BackendKind> {
protected:
    void SetUp() override {
        host.addDevice({});
        auto r = bringUp(host, GetParam(), host.paths(), kBdf, up);
        ASSERT_TRUE(r.ok()) << r.error().describe();
    }
    SimHost host;
    BringUp up;
};

TEST_P(DeviceTest, BackendIsTheOneAskedFor) {
    EXPECT_EQ(up.backend->kind(), GetParam());
    EXPECT_EQ(up.device->name(), kBdf);
    EXPECT_TRUE(up.device->isPci());
    EXPECT_TRUE(up.device->canReset());
}

TEST_P(DeviceTest, ConfigSpaceAndEduRegisters) {
    auto& d = *up.device;
    EXPECT_EQ(d.readConfigObj<uint16_t>(0).value(), 0x1234);
    EXPECT_EQ(d.readConfigObj<uint16_t>(2).value(), 0x11e8);
    EXPECT_EQ(rd32(d, 0x00), 0x010000edu);
    wr32(d, 0x04, 0x12345678);
    EXPECT_EQ(rd32(d, 0x04), ~0x12345678u);
    wr32(d, 0x08, 10);
    EXPECT_EQ(rd32(d, 0x08), 3628800u);
    // BAR sizing through the config region works as on hardware.
    ASSERT_TRUE(d.writeConfigObj<uint32_t>(0x10, 0xffffffff).ok());
    EXPECT_EQ(d.readConfigObj<uint32_t>(0x10).value(), 0xfff00000u);  // 1 MiB, 32-bit, non-prefetchable
}

TEST_P(DeviceTest, RegionInfoCapabilitiesAndMmap) {
    auto& d = *up.device;
    auto bar0 = d.regionInfo(0).value();
    EXPECT_EQ(bar0.size, 1u << 20);
    EXPECT_FALSE(bar0.mmappable());  // trapped register BAR
    auto bar2 = d.regionInfo(2).value();
    EXPECT_TRUE(bar2.mmappable());
    EXPECT_TRUE(bar2.msixMappable);
    EXPECT_FALSE(bar2.hasSparseCap);
    ASSERT_EQ(up.barMaps.size(), 1u);
    // A write through the mmap is the device's memory: visible via pread of the region.
    std::memcpy(up.barMaps[0].data() + 0x100, "conduit", 8);
    char back[8] = {};
    ASSERT_TRUE(d.readRegion(2, 0x100, std::span(reinterpret_cast<uint8_t*>(back), 8)).ok());
    EXPECT_STREQ(back, "conduit");
    EXPECT_EQ(std::memcmp(host.device(kBdf)->barMemory(2) + 0x100, "conduit", 8), 0);
    // mmap of the trapped BAR is refused.
    auto bad = d.mapRegion(0, 0, 4096, PROT_READ);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().what().find("not mmappable"), std::string::npos);
}

TEST_P(DeviceTest, DmaRoundTripThroughTheIommuWithMsix) {
    auto& d = *up.device;
    uint8_t* buf = up.dmaBuffer.data();
    for (int i = 0; i < 4096; ++i) buf[i] = static_cast<uint8_t>(i * 7 + 3);
    // RAM -> edu buffer, irq when done.
    wr64(d, 0x80, up.dmaIova);
    wr64(d, 0x88, 0x40000);
    wr64(d, 0x90, 4096);
    wr64(d, 0x98, 0x1 | 0x4);
    EXPECT_EQ(pending(up.msix[0]), 1u);
    EXPECT_EQ(rd32(d, 0x24), 0x100u);
    wr32(d, 0x64, 0x100);
    // edu buffer -> RAM at +0x8000.
    wr64(d, 0x80, 0x40000);
    wr64(d, 0x88, up.dmaIova + 0x8000);
    wr64(d, 0x90, 4096);
    wr64(d, 0x98, 0x1 | 0x2 | 0x4);
    EXPECT_EQ(pending(up.msix[0]), 1u);
    EXPECT_EQ(std::memcmp(buf, buf + 0x8000, 4096), 0);
    EXPECT_TRUE(host.dmaFaults().empty());
    // Vector 5 through the sim's extra register.
    wr32(d, 0x70, 5);
    EXPECT_EQ(pending(up.msix[5]), 1u);
    EXPECT_EQ(pending(up.msix[0]), 0u);
}

TEST_P(DeviceTest, DmaToUnmappedIovaIsAFaultAndWritesOnlyMappedPages) {
    auto& d = *up.device;
    std::memset(up.dmaBuffer.data(), 0xaa, up.dmaBuffer.size());
    wr64(d, 0x80, 0x40000);
    wr64(d, 0x88, up.dmaIova + up.dmaBuffer.size() - 2048);  // straddles the end of the mapping
    wr64(d, 0x90, 4096);
    wr64(d, 0x98, 0x1 | 0x2);
    ASSERT_EQ(host.dmaFaults().size(), 1u);
    EXPECT_EQ(host.dmaFaults()[0].iova, up.dmaIova + up.dmaBuffer.size());
    EXPECT_TRUE(host.dmaFaults()[0].write);
    // Page by page, as the real IOMMU: the mapped half lands (edu's buffer is zero), nothing else.
    for (size_t i = 0; i < up.dmaBuffer.size(); ++i)
        ASSERT_EQ(up.dmaBuffer.data()[i], i < up.dmaBuffer.size() - 2048 ? 0xaa : 0x00) << i;
    // After unmapping, the same IOVA faults too.
    ASSERT_TRUE(up.backend->unmapDma(up.dmaIova, up.dmaBuffer.size()).ok());
    up.dmaMapped = false;
    wr64(d, 0x88, up.dmaIova);
    wr64(d, 0x98, 0x1 | 0x2);
    EXPECT_EQ(host.dmaFaults().size(), 2u);
}

TEST_P(DeviceTest, MsiAndIntxWithResample) {
    auto& d = *up.device;
    // Another index while MSI-X is on: the kernel refuses (vfio_pci_set_msi_trigger()).
    auto msi = EventFd::create().value();
    int32_t fd = msi.fd();
    auto clash = d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, std::span(&fd, 1));
    ASSERT_FALSE(clash.ok());
    EXPECT_EQ(clash.error().code(), EINVAL);
    EXPECT_NE(clash.error().what().find("VFIO_DEVICE_SET_IRQS"), std::string::npos);
    ASSERT_TRUE(d.disableIrq(VFIO_PCI_MSIX_IRQ_INDEX).ok());
    ASSERT_TRUE(d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, std::span(&fd, 1)).ok());
    wr32(d, 0x60, 1);  // edu: raise
    EXPECT_EQ(msi.consume(), 1u);
    wr32(d, 0x64, 1);
    // MSI mask is not a VFIO operation (ENOTTY); masking is done in the KVM route.
    EXPECT_EQ(d.maskIrq(VFIO_PCI_MSI_IRQ_INDEX, 0).error().code(), ENOTTY);
    ASSERT_TRUE(d.disableIrq(VFIO_PCI_MSI_IRQ_INDEX).ok());

    // INTx: trigger + resample eventfd. The line automasks when it fires.
    auto trig = EventFd::create().value(), resample = EventFd::create().value();
    int32_t tfd = trig.fd(), rfd = resample.fd();
    ASSERT_TRUE(d.setIrqEventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, std::span(&tfd, 1)).ok());
    ASSERT_TRUE(d.setUnmaskEventfd(VFIO_PCI_INTX_IRQ_INDEX, 0, rfd).ok());
    wr32(d, 0x60, 1);
    EXPECT_EQ(trig.consume(), 1u);
    auto* sim = host.device(kBdf);
    EXPECT_TRUE(sim->intxMasked());
    wr32(d, 0x60, 2);  // still masked: no second signal
    EXPECT_EQ(trig.consume(), 0u);
    // Guest EOI -> KVM writes the resample eventfd -> unmask; the line is still asserted: fires again.
    ASSERT_TRUE(resample.signal().ok());
    host.pump();
    EXPECT_EQ(trig.consume(), 1u);
    // Acknowledge (line low), then resample: unmasked and quiet.
    wr32(d, 0x64, 3);
    ASSERT_TRUE(resample.signal().ok());
    host.pump();
    EXPECT_FALSE(sim->intxMasked());
    EXPECT_EQ(trig.consume(), 0u);
    ASSERT_TRUE(d.disableIrq(VFIO_PCI_INTX_IRQ_INDEX).ok());
}

TEST_P(DeviceTest, ResetAndHotResetInfo) {
    auto& d = *up.device;
    wr32(d, 0x08, 5);
    ASSERT_EQ(rd32(d, 0x08), 120u);
    unsigned before = host.device(kBdf)->resetCount();
    ASSERT_TRUE(d.reset().ok());
    EXPECT_EQ(host.device(kBdf)->resetCount(), before + 1);
    EXPECT_EQ(rd32(d, 0x08), 0u);
    // 00:03.0 sits on the root bus, which has no secondary bus reset (pci_probe_reset_bus() fails):
    // the kernel has no hot reset to describe.
    auto info = d.hotResetInfo();
    ASSERT_FALSE(info.ok());
    EXPECT_EQ(info.error().code(), ENODEV) << info.error().describe();
}

// Behind a bridge (bus 1) the hot reset is described in the form of how the device was opened:
// group ids for a group-opened device (type1), iommufd device ids with FLAG_DEV_ID for a cdev
// (iommufd). The old expectation of a group id on iommufd was the 6.4 answer, not the kernel's.
TEST_P(DeviceTest, HotResetInfoIsInTheFormOfTheOpen) {
    SimHost bridged;
    SimDeviceConfig c;
    c.bdf = "0000:01:00.0";
    c.group = 9;
    bridged.addDevice(c);
    BringUp b;
    ASSERT_TRUE(bringUp(bridged, GetParam(), bridged.paths(), c.bdf, b).ok());
    auto info = b.device->hotResetInfo();
    ASSERT_TRUE(info.ok()) << info.error().describe();
    ASSERT_EQ(info->devices.size(), 1u);
    EXPECT_EQ(info->devices[0].bdf(), c.bdf);
    EXPECT_EQ(info->devices[0].bus, 1);
    EXPECT_EQ(info->devices[0].devfn, 0);
    if (GetParam() == BackendKind::Type1) {
        EXPECT_EQ(info->flags, 0u);
        EXPECT_FALSE(info->devIdForm());
        EXPECT_EQ(info->devices[0].groupId, 9u);
    } else {
        EXPECT_EQ(info->flags, uint32_t(VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED));
        EXPECT_TRUE(info->allOwned());
        auto devId = static_cast<IommufdBackend&>(*b.backend).devId(c.bdf);
        ASSERT_TRUE(devId.has_value());
        EXPECT_EQ(info->devices[0].devId, *devId);
        EXPECT_EQ(info->devices[0].groupId, 0u) << "no group id in the dev-id form";
    }
}

TEST_P(DeviceTest, TeardownLeavesNothing) {
    up.teardown();
    EXPECT_EQ(host.openFdCount(), 0u);
    EXPECT_EQ(host.mmapCount(), 0u);
    EXPECT_EQ(host.dmaMappingCount(), 0u);
    EXPECT_EQ(host.iommufdObjectCount(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, DeviceTest, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](auto& info) { return std::string(backendKindName(info.param)); });

TEST(DeviceSparse, MsixTableExcludedWhenNotMappable) {
    SimHost host;
    SimDeviceConfig cfg;
    cfg.msixMappable = false;
    host.addDevice(cfg);
    BringUp up;
    ASSERT_TRUE(bringUp(host, BackendKind::Type1, host.paths(), kBdf, up).ok());
    auto bar2 = up.device->regionInfo(2).value();
    EXPECT_FALSE(bar2.msixMappable);
    ASSERT_TRUE(bar2.hasSparseCap);
    ASSERT_EQ(bar2.sparseAreas.size(), 1u);  // table at 0xfe000 and PBA at 0xff000: one area below
    EXPECT_EQ(bar2.sparseAreas[0].offset, 0u);
    EXPECT_EQ(bar2.sparseAreas[0].size, 0xfe000u);
    EXPECT_EQ(up.barMaps.size(), 1u);
    // mmap over the table is refused by the sim (stricter than the kernel, on purpose).
    EXPECT_FALSE(up.device->mapRegion(2, 0xfe000, 0x1000, PROT_READ).ok());
}

// A BAR mapping of 2 MiB or more starts where vfio-pci can use huge pages for it: its address is
// congruent to its offset in the BAR modulo 2 MiB (1 GiB from 1 GiB up), and the mapping works.
TEST(DeviceMmap, LargeBarMappingsAreAlignedForHugePages) {
    SimHost host;
    SimDeviceConfig cfg;
    cfg.bars[2].size = 8u << 20;
    cfg.msixTableOffset = 0x7fe000;
    cfg.msixPbaOffset = 0x7ff000;
    host.addDevice(cfg);
    BringUp up;
    ASSERT_TRUE(bringUp(host, BackendKind::Iommufd, host.paths(), kBdf, up).ok());
    const size_t before = host.openFdCount();
    for (uint64_t offset : {0ull, 0x1000ull, 0x200000ull}) {
        for (int i = 0; i < 4; ++i) {  // more than one, so a lucky first address proves nothing
            auto m = up.device->mapRegion(2, offset, 4u << 20, PROT_READ | PROT_WRITE);
            ASSERT_TRUE(m.ok()) << m.error().describe();
            EXPECT_EQ((reinterpret_cast<uintptr_t>(m->data()) - offset) % (2u << 20), 0u) << std::hex << offset;
            m->data()[0] = 0x5a;
            m->data()[(4u << 20) - 1] = 0xa5;
            auto again = up.device->mapRegion(2, offset, 0x1000, PROT_READ);
            ASSERT_TRUE(again.ok());
            EXPECT_EQ(again->data()[0], 0x5a) << "both mappings show the same BAR bytes";
        }
    }
    auto small = up.device->mapRegion(2, 0x1000, 0x10000, PROT_READ);
    ASSERT_TRUE(small.ok()) << "a mapping under 2 MiB is placed wherever mmap puts it";
    EXPECT_EQ(host.openFdCount(), before);
}

TEST(DeviceP2P, DmaBufMappedWithMapFileLetsOneDeviceWriteAnothersBar) {
    SimHost host;
    host.addDevice({});
    SimDeviceConfig b;
    b.bdf = "0000:00:04.0";
    b.group = 8;
    host.addDevice(b);
    BringUp a;
    ASSERT_TRUE(bringUp(host, BackendKind::Iommufd, host.paths(), kBdf, a).ok());
    auto devB = a.backend->openDevice("0000:00:04.0");
    ASSERT_TRUE(devB.ok()) << devB.error().describe();
    auto dmabuf = (*devB)->exportDmaBuf(2, 0, 0x10000);
    ASSERT_TRUE(dmabuf.ok()) << dmabuf.error().describe();
    const uint64_t p2pIova = 0xc0000000;
    ASSERT_TRUE(a.backend->mapFile(p2pIova, 0x10000, dmabuf->get(), 0, true).ok());
    // Device A's edu DMA writes its buffer into device B's BAR2.
    auto& d = *a.device;
    wr32(d, 0x40000, 0xfeedf00d);
    wr64(d, 0x80, 0x40000);
    wr64(d, 0x88, p2pIova + 0x20);
    wr64(d, 0x90, 4);
    wr64(d, 0x98, 0x1 | 0x2);
    uint32_t got;
    std::memcpy(&got, host.device("0000:00:04.0")->barMemory(2) + 0x20, 4);
    EXPECT_EQ(got, 0xfeedf00du);
    ASSERT_TRUE(a.backend->unmapDma(p2pIova, 0x10000).ok());
    dmabuf->reset();
    devB->reset();
    a.teardown();
    EXPECT_EQ(host.openFdCount(), 0u);
    EXPECT_EQ(host.iommufdObjectCount(), 0u);
}

TEST(DeviceP2P, Type1MapsTheBarMmap) {
    SimHost host;
    host.addDevice({});
    SimDeviceConfig b;
    b.bdf = "0000:00:04.0";
    b.group = 8;
    host.addDevice(b);
    BringUp a;
    ASSERT_TRUE(bringUp(host, BackendKind::Type1, host.paths(), kBdf, a).ok());
    auto devB = a.backend->openDevice("0000:00:04.0");
    ASSERT_TRUE(devB.ok()) << devB.error().describe();
    auto map = (*devB)->mapRegion(2, 0, 0x10000, PROT_READ | PROT_WRITE);
    ASSERT_TRUE(map.ok());
    EXPECT_EQ(a.backend->mapFile(0xc0000000, 0x10000, 0, 0, true).error().code(), EOPNOTSUPP);
    ASSERT_TRUE(a.backend->mapDma(0xc0000000, 0x10000, map->data(), true).ok());
    auto& d = *a.device;
    wr32(d, 0x40000, 0x600dcafe);
    wr64(d, 0x80, 0x40000);
    wr64(d, 0x88, 0xc0000010);
    wr64(d, 0x90, 4);
    wr64(d, 0x98, 0x1 | 0x2);
    uint32_t got;
    std::memcpy(&got, host.device("0000:00:04.0")->barMemory(2) + 0x10, 4);
    EXPECT_EQ(got, 0x600dcafeu);
    ASSERT_TRUE(a.backend->unmapDma(0xc0000000, 0x10000).ok());
}

}  // namespace
