// Revocation of VFIO BAR dma-bufs and of their iommufd mappings, as Linux does it
// (drivers/vfio/pci/vfio_pci_dmabuf.c, vfio_pci_config.c, vfio_pci_core.c,
// drivers/iommu/iommufd/pages.c). A dma-buf is revoked while its device's memory decode is off and
// around every reset; IOMMU_IOAS_MAP_FILE of a revoked one is ENODEV; a mapped one that gets
// revoked is unmapped from the IOMMU for good (DMA to it faults) while its IOAS area stays until
// IOAS_UNMAP. Observed through the vfio API and the simulated IOMMU (dmaWrite, dmaFaults).
//
// The rig: two edu functions on bus 01 (a bus with a hot reset), both opened through one iommufd
// backend. A's DMA is the peer-to-peer traffic; B's memory BAR (BAR2) is exported.
#include <gtest/gtest.h>

#include <cstring>

#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

namespace conduit::hostsim {
namespace {

using vfio::HostFd;
using vfio::VfioDevice;

constexpr const char* kA = "0000:01:00.0";
constexpr const char* kB = "0000:01:00.1";
constexpr uint64_t kBufLen = 0x10000;
constexpr uint64_t kP2p = 0xc0000000;   // where B's BAR2 slice is mapped
constexpr uint64_t kOther = 0xd0000000;  // a second, free IOVA
constexpr uint16_t kMemory = 0x0002;     // PCI_COMMAND_MEMORY
constexpr uint64_t kPmcsr = 0xc4;        // PCI_PM_CTRL of the sim's PM capability (SimDeviceConfig::pmCap)

class DmaBufRevoke : public ::testing::Test {
protected:
    explicit DmaBufRevoke(bool pmCap = false) {
        SimDeviceConfig a;
        a.bdf = kA;
        a.group = 10;
        host.addDevice(a);
        SimDeviceConfig b;
        b.bdf = kB;
        b.group = 11;
        b.pmCap = pmCap;
        host.addDevice(b);
        auto be = vfio::openBackend(host, vfio::BackendKind::Iommufd, host.paths());
        EXPECT_TRUE(be.ok()) << be.error().describe();
        if (!be.ok()) return;
        backend = std::move(be).value();
        devA = open(kA);
        devB = open(kB);
    }
    void SetUp() override { ASSERT_TRUE(devA && devB); }
    std::unique_ptr<VfioDevice> open(const char* bdf) {
        auto d = backend->openDevice(bdf);
        EXPECT_TRUE(d.ok()) << d.error().describe();
        return d.ok() ? std::move(d).value() : nullptr;
    }
    HostFd exportBar2(VfioDevice& d) {
        auto fd = d.exportDmaBuf(VFIO_PCI_BAR2_REGION_INDEX, 0, kBufLen);
        EXPECT_TRUE(fd.ok()) << fd.error().describe();
        return fd.ok() ? std::move(fd).value() : HostFd();
    }
    Result<void> map(uint64_t iova, const HostFd& buf) { return backend->mapFile(iova, kBufLen, buf.get(), 0, true); }
    // A fresh export of `d`'s BAR2 slice, mapped at `iova`.
    HostFd exportAndMap(VfioDevice& d, uint64_t iova) {
        HostFd buf = exportBar2(d);
        auto m = map(iova, buf);
        EXPECT_TRUE(m.ok()) << m.error().describe();
        return buf;
    }
    void unmap(uint64_t iova) {
        auto u = backend->unmapDma(iova, kBufLen);
        EXPECT_TRUE(u.ok()) << u.error().describe();
    }
    void expectMapError(uint64_t iova, const HostFd& buf, int err) {
        auto m = map(iova, buf);
        ASSERT_FALSE(m.ok()) << "mapped at " << std::hex << iova;
        EXPECT_EQ(m.error().code(), err) << m.error().describe();
    }
    void setMemory(VfioDevice& d, bool on) {
        const uint16_t cmd = d.readConfigObj<uint16_t>(0x04).value();
        ASSERT_TRUE(d.writeConfigObj<uint16_t>(0x04, on ? cmd | kMemory : cmd & ~kMemory).ok());
    }
    // A's DMA of one word to `iova`: whether it landed in `owner`'s BAR2 at `offset`, with no fault.
    bool lands(uint64_t iova, const char* owner, uint32_t offset, uint32_t word) {
        host.clearDmaFaults();
        if (!host.dmaWrite(*host.device(kA), iova + offset, &word, 4)) return false;
        uint32_t got = 0;
        std::memcpy(&got, host.device(owner)->barMemory(2) + offset, 4);
        return got == word && host.dmaFaults().empty();
    }
    // A's DMA to `iova` faults as not present and leaves `owner`'s BAR2 untouched.
    void expectFault(uint64_t iova, const char* owner, uint32_t offset) {
        host.clearDmaFaults();
        uint32_t before = 0, after = 0, word = 0xdeadbeef;
        std::memcpy(&before, host.device(owner)->barMemory(2) + offset, 4);
        EXPECT_FALSE(host.dmaWrite(*host.device(kA), iova + offset, &word, 4));
        std::memcpy(&after, host.device(owner)->barMemory(2) + offset, 4);
        EXPECT_EQ(after, before) << "nothing reached the BAR";
        ASSERT_EQ(host.dmaFaults().size(), 1u);
        EXPECT_EQ(host.dmaFaults()[0].kind, DmaFaultKind::NotPresent);
        EXPECT_EQ(host.dmaFaults()[0].iova, iova + offset);
        EXPECT_EQ(host.dmaFaults()[0].vtdReason, 5) << "as any unmapped IOVA";
    }

    void setPowerState(VfioDevice& d, uint16_t state) {
        ASSERT_TRUE(d.writeConfigObj<uint16_t>(kPmcsr, state).ok());
        EXPECT_EQ(d.readConfigObj<uint16_t>(kPmcsr).value() & 0x3, state);
    }

    SimHost host;
    std::unique_ptr<vfio::VfioBackend> backend;
    std::unique_ptr<VfioDevice> devA, devB;
};

// vfio_pci_core_feature_dma_buf(): priv->revoked = !__vfio_pci_memory_enabled(); the export
// succeeds. iopt_map_dmabuf() -> vfio_pci_dma_buf_attach(): a revoked buf is ENODEV, checked
// before the IOVA (iopt_map_file_pages() makes the pages before iopt_map_common()).
TEST_F(DmaBufRevoke, ExportedWithDecodeOffTheBufIsRevokedAndMapFileIsEnodev) {
    setMemory(*devB, false);
    HostFd buf = exportBar2(*devB);
    ASSERT_TRUE(buf.valid()) << "the export itself succeeds";
    const size_t before = host.dmaMappingCount();
    expectMapError(kP2p, buf, ENODEV);
    EXPECT_EQ(host.dmaMappingCount(), before) << "nothing was mapped";
    // Over an IOVA that is taken the revoked buf is still ENODEV, not EEXIST.
    HostFd bufA = exportAndMap(*devA, kOther);
    expectMapError(kOther, buf, ENODEV);
    // Decode on un-revokes the buf (vfio_basic_config_write() -> vfio_pci_dma_buf_move(false)),
    // and each MAP_FILE is a new attachment: the same fd maps now.
    setMemory(*devB, true);
    ASSERT_TRUE(map(kP2p, buf).ok());
    EXPECT_TRUE(lands(kP2p, kB, 0x40, 0x11223344));
}

// vfio_basic_config_write(): clearing COMMAND.MEMORY revokes; iopt_revoke_notify() unmaps the area
// from the domain and marks its pages revoked, but the area stays in the IOAS; setting MEMORY
// again un-revokes the buf, not the area (iopt_revoke_notify() returns early for revoked pages).
TEST_F(DmaBufRevoke, ClearingMemoryKillsTheMappingForGoodButTheAreaStays) {
    HostFd buf = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x100, 0xfeedf00d));
    const size_t mapped = host.dmaMappingCount();

    setMemory(*devB, false);
    expectFault(kP2p, kB, 0x200);
    EXPECT_EQ(host.dmaMappingCount(), mapped) << "the IOAS area is still allocated";
    // A buf exported now is revoked (decode off): ENODEV before the IOVA is even looked at.
    HostFd fresh = exportBar2(*devB);
    expectMapError(kP2p, fresh, ENODEV);

    setMemory(*devB, true);
    expectFault(kP2p, kB, 0x200);  // the un-revoke restores nothing
    expectMapError(kP2p, fresh, EEXIST);  // the dead area still holds its IOVA
    // The old fd itself is un-revoked: a new MAP_FILE of it works elsewhere.
    ASSERT_TRUE(map(kOther, buf).ok());
    EXPECT_TRUE(lands(kOther, kB, 0x300, 0x0badcafe));
    expectFault(kP2p, kB, 0x300);

    // IOAS_UNMAP frees the dead area; a fresh export mapped there lands again.
    unmap(kP2p);
    EXPECT_EQ(host.dmaMappingCount(), mapped) << "the dead area went, the kOther one came";
    HostFd again = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x400, 0x5a5a1234));
}

// A COMMAND write that leaves MEMORY set (bus mastering toggled) touches no dma-buf.
TEST_F(DmaBufRevoke, CommandWritesThatKeepMemoryOnLeaveTheMappingAlone) {
    HostFd buf = exportAndMap(*devB, kP2p);
    const uint16_t cmd = devB->readConfigObj<uint16_t>(0x04).value();
    ASSERT_TRUE(cmd & kMemory);
    ASSERT_TRUE(devB->writeConfigObj<uint16_t>(0x04, cmd | 0x0004).ok());
    ASSERT_TRUE(devB->writeConfigObj<uint16_t>(0x04, cmd & ~0x0004).ok());
    EXPECT_TRUE(lands(kP2p, kB, 0x80, 0x13572468));
}

// vfio_pci_ioctl_reset(): revoked before pci_try_reset_function(), un-revoked after only if memory
// is enabled. The mapping dies either way.
TEST_F(DmaBufRevoke, DeviceResetRevokesTheMappedBufs) {
    HostFd buf = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x10, 0xa1b2c3d4));
    ASSERT_TRUE(devB->reset().ok());
    ASSERT_TRUE(devB->readConfigObj<uint16_t>(0x04).value() & kMemory) << "the reset restored COMMAND";
    expectFault(kP2p, kB, 0x20);
    expectMapError(kP2p, buf, EEXIST);  // the dead area is still there
    // Memory is enabled after the reset, so the buf itself is usable again.
    ASSERT_TRUE(map(kOther, buf).ok());
    EXPECT_TRUE(lands(kOther, kB, 0x30, 0x01020304));
    // Unmap + re-export + map: DMA lands at the old address again.
    unmap(kP2p);
    HostFd fresh = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x40, 0x05060708));

    // With decode off, the reset leaves every buf revoked.
    setMemory(*devB, false);
    unmap(kOther);
    ASSERT_TRUE(devB->reset().ok());
    expectMapError(kOther, buf, ENODEV);
}

// vfio_pci_dev_set_hot_reset(): every function of the dev_set has its bufs revoked before
// pci_reset_bus(), and un-revoked after when it is open with memory enabled.
TEST_F(DmaBufRevoke, HotResetRevokesTheBufsOfEveryAffectedFunction) {
    HostFd bufB = exportAndMap(*devB, kP2p);
    HostFd bufA = exportAndMap(*devA, kOther);
    EXPECT_TRUE(lands(kP2p, kB, 0x10, 0x11111111));
    EXPECT_TRUE(lands(kOther, kA, 0x10, 0x22222222));
    auto plan = devB->planHotReset(vfio::OpenSiblings::ResetToo);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    ASSERT_EQ(plan->affected.size(), 2u);
    ASSERT_TRUE(devB->hotReset(*plan).ok());
    expectFault(kP2p, kB, 0x20);
    expectFault(kOther, kA, 0x20);  // the other function on the bus lost its mapping too
    // Both areas stay until unmapped; both bufs (open, memory on) map again afterwards.
    expectMapError(kP2p, bufB, EEXIST);
    unmap(kP2p);
    unmap(kOther);
    ASSERT_TRUE(map(kP2p, bufB).ok());
    ASSERT_TRUE(map(kOther, bufA).ok());
    EXPECT_TRUE(lands(kP2p, kB, 0x30, 0x33333333));
    EXPECT_TRUE(lands(kOther, kA, 0x30, 0x44444444));
}

// vfio_pci_dev_set_hot_reset() revokes each owned function as it walks the dev_set; a function
// it then finds unowned ends the walk with EINVAL and no reset, and the functions already walked
// are un-revoked, but their mapped areas are not restored.
TEST_F(DmaBufRevoke, AHotResetRefusedForAnUnownedFunctionStillKillsTheMappingsWalkedBeforeIt) {
    host.addGroupPeer("0000:01:00.2", 12, "vfio-pci");  // on the bus, bound to vfio-pci, not ours
    HostFd buf = exportAndMap(*devB, kP2p);
    const unsigned resets = host.device(kB)->resetCount();
    vfio_pci_hot_reset req{};
    req.argsz = sizeof req;
    auto raw = host.ioctl(devB->fd(), VFIO_DEVICE_PCI_HOT_RESET, reinterpret_cast<uintptr_t>(&req));
    ASSERT_FALSE(raw.ok());
    EXPECT_EQ(raw.error().code(), EINVAL);
    EXPECT_EQ(host.device(kB)->resetCount(), resets) << "nothing was reset";
    expectFault(kP2p, kB, 0x10);
    unmap(kP2p);
    ASSERT_TRUE(map(kP2p, buf).ok()) << "the buf itself was un-revoked";
    EXPECT_TRUE(lands(kP2p, kB, 0x10, 0x76543210));
}

// vfio_pci_core_close_device() -> vfio_pci_dma_buf_cleanup(): the device's bufs are revoked and
// detached, so they stay revoked even when the device is opened again.
TEST_F(DmaBufRevoke, TheLastCloseRevokesTheBufsForGood) {
    HostFd buf = exportAndMap(*devB, kP2p);
    devB.reset();
    expectFault(kP2p, kB, 0x10);
    unmap(kP2p);
    devB = open(kB);
    ASSERT_TRUE(devB);
    ASSERT_TRUE(devB->readConfigObj<uint16_t>(0x04).value() & kMemory);
    expectMapError(kP2p, buf, ENODEV);
    HostFd fresh = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x10, 0x600dd00d));
}

// B with a PCI PM capability.
class DmaBufRevokePm : public DmaBufRevoke {
protected:
    DmaBufRevokePm() : DmaBufRevoke(true) {}
};

// vfio_pm_config_write() -> vfio_lock_and_set_power_state(): PMCSR to D3hot revokes the bufs
// (memory is not enabled in D3hot: __vfio_pci_memory_enabled()), back to D0 with decode on
// un-revokes them, but the mapped area stays dead (iopt_revoke_notify()) until unmapped.
TEST_F(DmaBufRevokePm, D3hotKillsTheMappingForGoodAndD0DoesNotBringItBack) {
    ASSERT_EQ(host.device(kB)->configByte(0x34), kPmcsr - 4) << "the PM capability heads the list";
    ASSERT_EQ(host.device(kB)->configByte(kPmcsr - 4), 0x01);  // PCI_CAP_ID_PM
    HostFd buf = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x10, 0x12345678));

    setPowerState(*devB, 3);  // D3hot
    ASSERT_TRUE(devB->readConfigObj<uint16_t>(0x04).value() & kMemory) << "COMMAND keeps MEMORY";
    expectFault(kP2p, kB, 0x20);
    // A buf exported in D3hot is born revoked: the export works, MAP_FILE is ENODEV.
    HostFd fresh = exportBar2(*devB);
    expectMapError(kOther, fresh, ENODEV);

    setPowerState(*devB, 0);  // D0
    expectFault(kP2p, kB, 0x20);  // the un-revoke restores nothing
    expectMapError(kP2p, fresh, EEXIST);  // the dead area still holds its IOVA
    unmap(kP2p);
    HostFd again = exportAndMap(*devB, kP2p);
    EXPECT_TRUE(lands(kP2p, kB, 0x30, 0x0d0e0a0d));
}

// Back to D0 with decode off leaves the bufs revoked; decode on then un-revokes them.
TEST_F(DmaBufRevokePm, D0WithDecodeOffLeavesTheBufsRevoked) {
    HostFd buf = exportBar2(*devB);
    setPowerState(*devB, 3);
    setMemory(*devB, false);
    setPowerState(*devB, 0);
    expectMapError(kP2p, buf, ENODEV);
    setMemory(*devB, true);
    ASSERT_TRUE(map(kP2p, buf).ok());
    EXPECT_TRUE(lands(kP2p, kB, 0x40, 0x600dcafe));
}

}  // namespace
}  // namespace conduit::hostsim
