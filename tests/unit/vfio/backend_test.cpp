// Backend-specific rules: type1 container/group, iommufd objects, and the errors each gives.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "base/mapping.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/iommufd.h"
#include "vfio/type1.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;

namespace {

constexpr const char* kBdf = "0000:00:03.0";

Mapping buffer(size_t size) {
    return Mapping::map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "test").value();
}

TEST(Type1, InfoCapabilityChain) {
    SimHost host;
    host.addDevice({});
    auto b = Type1Backend::open(host, host.paths()).value();
    // Before any group: GET_INFO has no IOMMU driver to go to.
    EXPECT_EQ(b->info().error().code(), EINVAL);
    auto dev = b->openDevice(kBdf);
    ASSERT_TRUE(dev.ok()) << dev.error().describe();
    auto info = b->info().value();
    EXPECT_EQ(info.pageSizes, 0x40201000u);
    ASSERT_EQ(info.iovaRanges.size(), 2u);  // the MSI window is carved out
    EXPECT_EQ(info.iovaRanges[0].last, 0xfedfffffu);
    EXPECT_EQ(info.iovaRanges[1].start, 0xfef00000u);
    EXPECT_EQ(info.iovaRanges[1].last, (1ull << 48) - 1);
    ASSERT_TRUE(info.dmaAvail.has_value());
    EXPECT_EQ(*info.dmaAvail, 65535u);
    EXPECT_TRUE(info.migrationCap);
    auto buf = buffer(0x4000);
    ASSERT_TRUE(b->mapDma(0x10000, 0x4000, buf.data(), true).ok());
    EXPECT_EQ(b->info()->dmaAvail.value(), 65534u);
}

TEST(Type1, RequiresType1v2) {
    SimHostConfig cfg;
    cfg.type1v2 = false;
    SimHost host(cfg);
    auto b = Type1Backend::open(host, host.paths());
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.error().what().find("VFIO_TYPE1v2_IOMMU"), std::string::npos);
    EXPECT_EQ(host.openFdCount(), 0u);
}

TEST(Type1, GroupNotViableNamesTheOffendingDevice) {
    SimHost host;
    host.addDevice({});
    host.addGroupPeer("0000:00:03.1", 7, "snd_hda_intel");
    auto b = Type1Backend::open(host, host.paths()).value();
    auto dev = b->openDevice(kBdf);
    ASSERT_FALSE(dev.ok());
    EXPECT_EQ(dev.error().code(), EPERM);
    EXPECT_NE(dev.error().what().find("0000:00:03.1 (bound to snd_hda_intel)"), std::string::npos)
        << dev.error().describe();
    b.reset();
    EXPECT_EQ(host.openFdCount(), 0u);
}

TEST(Type1, PciStubPeerKeepsGroupViableAndGroupsShareTheContainer) {
    SimHost host;
    host.addDevice({});
    host.addGroupPeer("0000:00:03.1", 7, "pci-stub");
    SimDeviceConfig second;
    second.bdf = "0000:00:05.0";
    second.group = 9;
    host.addDevice(second);
    auto b = Type1Backend::open(host, host.paths()).value();
    auto d1 = b->openDevice(kBdf);
    ASSERT_TRUE(d1.ok()) << d1.error().describe();
    auto d2 = b->openDevice("00:05.0");  // short BDF form
    ASSERT_TRUE(d2.ok()) << d2.error().describe();
    EXPECT_EQ(b->groupCount(), 2u);
    auto buf = buffer(0x2000);
    ASSERT_TRUE(b->mapDma(0x200000, 0x2000, buf.data(), true).ok());
    // Both devices DMA through the one container.
    uint8_t x = 0x5a;
    EXPECT_TRUE(host.dmaWrite(*host.device(kBdf), 0x200000, &x, 1));
    EXPECT_TRUE(host.dmaWrite(*host.device("0000:00:05.0"), 0x200001, &x, 1));
    EXPECT_EQ(buf.data()[0], 0x5a);
    EXPECT_EQ(buf.data()[1], 0x5a);
}

TEST(Type1, MapErrorsFollowTheKernel) {
    SimHostConfig cfg;
    cfg.dmaEntryLimit = 2;
    SimHost host(cfg);
    host.addDevice({});
    auto b = Type1Backend::open(host, host.paths()).value();
    auto dev = b->openDevice(kBdf).value();
    auto buf = buffer(0x10000);
    ASSERT_TRUE(b->mapDma(0x100000, 0x4000, buf.data(), true).ok());
    auto overlap = b->mapDma(0x102000, 0x4000, buf.data(), true);
    EXPECT_EQ(overlap.error().code(), EEXIST);
    EXPECT_NE(overlap.error().what().find("VFIO_IOMMU_MAP_DMA iova [0x102000, 0x106000)"), std::string::npos);
    EXPECT_EQ(b->mapDma(0x200800, 0x1000, buf.data(), true).error().code(), EINVAL);   // unaligned
    EXPECT_EQ(b->mapDma(0xfee00000, 0x1000, buf.data(), true).error().code(), EINVAL);  // MSI window
    ASSERT_TRUE(b->mapDma(0x300000, 0x1000, buf.data(), false).ok());
    EXPECT_EQ(b->mapDma(0x400000, 0x1000, buf.data(), true).error().code(), ENOSPC);  // dma_avail exhausted
    EXPECT_EQ(b->unmapDma(0x101000, 0x1000).error().code(), EINVAL);  // v2: no bisecting
    // Read-only mapping: device writes fault, reads work.
    uint8_t v = 1;
    EXPECT_FALSE(host.dmaWrite(*host.device(kBdf), 0x300000, &v, 1));
    EXPECT_TRUE(host.dmaRead(*host.device(kBdf), 0x300000, &v, 1));
    ASSERT_TRUE(b->unmapDma(0x100000, 0x4000).ok());
    ASSERT_TRUE(b->unmapDma(0x300000, 0x1000).ok());
    EXPECT_EQ(host.dmaMappingCount(), 0u);
}

TEST(Type1, DeviceOutsideAnyGroupOrWithoutIommu) {
    SimHost host;
    auto b = Type1Backend::open(host, host.paths()).value();
    auto dev = b->openDevice("0000:00:09.0");
    ASSERT_FALSE(dev.ok());
    // Checked in sysfs before any group lookup (reliability finding F5).
    EXPECT_NE(dev.error().what().find("PCI device 0000:00:09.0 does not exist"), std::string::npos) << dev.error().what();
    EXPECT_FALSE(b->openDevice("not-a-bdf").ok());
}

TEST(Iommufd, ObjectsRangesAndLifetimes) {
    SimHost host;
    host.addDevice({});
    auto b = IommufdBackend::open(host, host.paths()).value();
    // Fresh IOAS: the full range.
    auto fresh = b->iovaRanges().value();
    ASSERT_EQ(fresh.size(), 1u);
    EXPECT_EQ(fresh[0].last, ~0ull);
    auto dev = b->openDevice(kBdf);
    ASSERT_TRUE(dev.ok()) << dev.error().describe();
    // Attached: narrowed by the MSI window and the 48-bit aperture.
    auto ranges = b->iovaRanges().value();
    ASSERT_EQ(ranges.size(), 2u);
    EXPECT_EQ(ranges[0].last, 0xfedfffffu);
    EXPECT_EQ(ranges[1].last, (1ull << 48) - 1);
    EXPECT_EQ(b->limits()->alignment, 4096u);
    auto buf = buffer(0x4000);
    auto resv = b->mapDma(0xfee00000, 0x1000, buf.data(), true);
    EXPECT_EQ(resv.error().code(), EADDRINUSE);
    ASSERT_TRUE(b->mapDma(0x100000, 0x4000, buf.data(), true).ok());
    EXPECT_EQ(b->mapDma(0x100000, 0x1000, buf.data(), true).error().code(), EEXIST);
    EXPECT_EQ(b->unmapDma(0x101000, 0x1000).error().code(), ENOENT);  // would cut an area
    // The IOAS is busy while a device is attached.
    EXPECT_EQ(b->destroy(b->ioasId(), "IOAS").error().code(), EBUSY);
    auto devId = b->devId(kBdf).value();
    auto hw = b->hwInfo(devId).value();
    EXPECT_EQ(hw.dataType, uint32_t(IOMMU_HW_INFO_TYPE_INTEL_VTD));
    EXPECT_EQ(hw.data.size(), sizeof(iommu_hw_info_vtd));
    {
        auto parent = b->allocHwpt(devId, IOMMU_HWPT_ALLOC_NEST_PARENT);
        ASSERT_TRUE(parent.ok()) << parent.error().describe();
        iommu_hwpt_vtd_s1 s1{};
        auto nested = b->allocNestedHwpt(devId, parent->id(), IOMMU_HWPT_DATA_VTD_S1,
                                         std::span(reinterpret_cast<const uint8_t*>(&s1), sizeof s1));
        ASSERT_TRUE(nested.ok()) << nested.error().describe();
        // The parent is referenced by the nested HWPT.
        EXPECT_EQ(b->destroy(parent->id(), "parent").error().code(), EBUSY);
        auto bad = b->allocNestedHwpt(devId, parent->id(), IOMMU_HWPT_DATA_ARM_SMMUV3,
                                      std::span(reinterpret_cast<const uint8_t*>(&s1), 16));
        EXPECT_EQ(bad.error().code(), EOPNOTSUPP);
        size_t objs = host.iommufdObjectCount();
        nested->reset();
        EXPECT_EQ(host.iommufdObjectCount(), objs - 1);
    }
    ASSERT_TRUE(b->unmapDma(0x100000, 0x4000).ok());
    dev->reset();
    b.reset();
    EXPECT_EQ(host.iommufdObjectCount(), 0u);
    EXPECT_EQ(host.openFdCount(), 0u);
}

TEST(Iommufd, NoNestingOnThisIommu) {
    SimHostConfig cfg;
    cfg.nesting = false;
    SimHost host(cfg);
    host.addDevice({});
    auto b = IommufdBackend::open(host, host.paths()).value();
    auto dev = b->openDevice(kBdf).value();
    auto parent = b->allocHwpt(*b->devId(kBdf), IOMMU_HWPT_ALLOC_NEST_PARENT);
    ASSERT_FALSE(parent.ok());
    EXPECT_EQ(parent.error().code(), EOPNOTSUPP);
    EXPECT_NE(parent.error().what().find("IOMMU_HWPT_ALLOC"), std::string::npos);
}

TEST(Iommufd, AttachRefusedWhenAMappingCoversAReservedRegion) {
    SimHost host;
    host.addDevice({});
    auto b = IommufdBackend::open(host, host.paths()).value();
    auto buf = buffer(0x1000);
    ASSERT_TRUE(b->mapDma(0xfee00000, 0x1000, buf.data(), true).ok());  // fine while nothing is attached
    auto dev = b->openDevice(kBdf);
    ASSERT_FALSE(dev.ok());
    EXPECT_EQ(dev.error().code(), EADDRINUSE);
    EXPECT_NE(dev.error().what().find("VFIO_DEVICE_ATTACH_IOMMUFD_PT"), std::string::npos);
    ASSERT_TRUE(b->unmapDma(0xfee00000, 0x1000).ok());
    EXPECT_TRUE(b->openDevice(kBdf).ok());
}

TEST(Iommufd, NoCdevGivesAClearError) {
    SimHostConfig cfg;
    cfg.cdev = false;
    SimHost host(cfg);
    host.addDevice({});
    auto b = IommufdBackend::open(host, host.paths()).value();
    auto dev = b->openDevice(kBdf);
    ASSERT_FALSE(dev.ok());
    EXPECT_NE(dev.error().what().find("CONFIG_VFIO_DEVICE_CDEV"), std::string::npos);
}

TEST(Backend, AutoPicksIommufdWhenPresentElseType1) {
    {
        SimHost host;
        auto b = openBackend(host, BackendKind::Auto, host.paths());
        ASSERT_TRUE(b.ok());
        EXPECT_EQ((*b)->kind(), BackendKind::Iommufd);
    }
    {
        SimHostConfig cfg;
        cfg.iommufd = false;
        SimHost host(cfg);
        auto b = openBackend(host, BackendKind::Auto, host.paths());
        ASSERT_TRUE(b.ok());
        EXPECT_EQ((*b)->kind(), BackendKind::Type1);
    }
}

TEST(SimHostRules, ArgszTooSmallAndUnknownFlags) {
    SimHost host;
    host.addDevice({});
    auto b = Type1Backend::open(host, host.paths()).value();
    auto dev = b->openDevice(kBdf).value();
    vfio_region_info ri{};
    ri.argsz = 8;  // below offsetofend(offset)
    EXPECT_EQ(host.ioctl(dev->fd(), VFIO_DEVICE_GET_REGION_INFO, reinterpret_cast<uintptr_t>(&ri)).error().code(),
              EINVAL);
    // argsz exactly the struct: the chain does not fit, argsz says what is needed, cap_offset 0.
    ri = {};
    ri.argsz = sizeof ri;
    ri.index = 2;
    ASSERT_TRUE(host.ioctl(dev->fd(), VFIO_DEVICE_GET_REGION_INFO, reinterpret_cast<uintptr_t>(&ri)).ok());
    EXPECT_TRUE(ri.flags & VFIO_REGION_INFO_FLAG_CAPS);
    EXPECT_GT(ri.argsz, sizeof ri);
    EXPECT_EQ(ri.cap_offset, 0u);
    vfio_irq_set set{};
    set.argsz = sizeof set;
    set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;  // two data types
    set.index = VFIO_PCI_MSIX_IRQ_INDEX;
    EXPECT_EQ(host.ioctl(dev->fd(), VFIO_DEVICE_SET_IRQS, reinterpret_cast<uintptr_t>(&set)).error().code(), EINVAL);
    // A raw container: MAP_DMA before SET_IOMMU has no driver (EINVAL); SET_IOMMU without a group: EINVAL.
    int c = host.open((host.paths().dev / "vfio/vfio").string(), 0).value();
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof map;
    EXPECT_EQ(host.ioctl(c, VFIO_IOMMU_MAP_DMA, reinterpret_cast<uintptr_t>(&map)).error().code(), EINVAL);
    EXPECT_EQ(host.ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU).error().code(), EINVAL);
    EXPECT_EQ(host.ioctl(c, 0x3b00 | 0x7f, 0).error().code(), EINVAL);
    host.close(c);
    // Unknown MAP_DMA flags on a working container.
    auto buf = buffer(0x1000);
    EXPECT_TRUE(b->mapDma(0x100000, 0x1000, buf.data(), true).ok());
}

TEST(SimHostRules, IommufdSizeRules) {
    SimHost host;
    auto fd = host.open((host.paths().dev / "iommu").string(), 0).value();
    struct {
        iommu_ioas_alloc a;
        uint32_t extra;
    } big{};
    big.a.size = sizeof big;
    EXPECT_TRUE(host.ioctl(fd, IOMMU_IOAS_ALLOC, reinterpret_cast<uintptr_t>(&big)).ok());  // larger, zero tail: ok
    big.extra = 1;
    EXPECT_EQ(host.ioctl(fd, IOMMU_IOAS_ALLOC, reinterpret_cast<uintptr_t>(&big)).error().code(), E2BIG);
    iommu_ioas_alloc small{};
    small.size = 4;
    EXPECT_EQ(host.ioctl(fd, IOMMU_IOAS_ALLOC, reinterpret_cast<uintptr_t>(&small)).error().code(), EINVAL);
    iommu_destroy d{sizeof d, 99};
    EXPECT_EQ(host.ioctl(fd, IOMMU_DESTROY, reinterpret_cast<uintptr_t>(&d)).error().code(), ENOENT);
    host.close(fd);
    EXPECT_EQ(host.iommufdObjectCount(), 0u);
}

}  // namespace
