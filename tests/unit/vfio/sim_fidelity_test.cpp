// The simulated host against what the real kernel did under QEMU (docs/testing.md, "Differences
// between the simulated host and the real kernel"): each test pins one behaviour the real run showed.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>

#include "base/mapping.h"
#include "tests/hostsim/bringup.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/iommufd.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;

namespace {

constexpr const char* kBdf = "0000:00:03.0";
constexpr uint64_t kEduBuf = 0x40000;
constexpr uint64_t kIova = 0x100000;     // bringUp() maps its 64 KiB DMA buffer here
constexpr uint64_t kBufSize = 0x10000;

void wr32(VfioDevice& d, uint64_t off, uint32_t v) {
    auto r = d.writeRegion(0, off, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
    ASSERT_TRUE(r.ok()) << r.error().describe();
}
void wr64(VfioDevice& d, uint64_t off, uint64_t v) {
    auto r = d.writeRegion(0, off, std::span(reinterpret_cast<const uint8_t*>(&v), 8));
    ASSERT_TRUE(r.ok()) << r.error().describe();
}
// edu DMA through its registers: toRam copies the device buffer to `iova`, else `iova` to the buffer.
void eduDma(VfioDevice& d, uint64_t iova, uint32_t count, bool toRam) {
    wr64(d, 0x80, toRam ? kEduBuf : iova);
    wr64(d, 0x88, toRam ? iova : kEduBuf);
    wr64(d, 0x90, count);
    wr64(d, 0x98, toRam ? 0x3 : 0x1);
}
void fillEduBuffer(VfioDevice& d, uint32_t pattern) {
    for (uint32_t off = 0; off < 4096; off += 4) wr32(d, kEduBuf + off, pattern);
}

class SimFidelity : public ::testing::TestWithParam<BackendKind> {
protected:
    void open(SimHostConfig hc = {}, SimDeviceConfig dc = {}) {
        host = std::make_unique<SimHost>(hc);
        host->addDevice(dc);
        auto r = bringUp(*host, GetParam(), host->paths(), kBdf, up);
        ASSERT_TRUE(r.ok()) << r.error().describe();
    }
    void TearDown() override { up.teardown(); }
    std::unique_ptr<SimHost> host;
    BringUp up;
};

// Difference 2 (docs/testing.md): a DMA straddling the end of a mapping writes the pages before
// the first unmapped one, then faults at the first unmapped IOVA.
TEST_P(SimFidelity, DmaStraddlingTheEndOfAMappingWritesTheMappedPagesThenFaults) {
    open();
    auto& d = *up.device;
    uint8_t* buf = up.dmaBuffer.data();
    std::memset(buf, 0xc5, kBufSize);
    fillEduBuffer(d, 0x3c3c3c3c);
    const uint64_t end = kIova + kBufSize;
    eduDma(d, end - 2048, 4096, true);
    for (uint64_t i = 0; i < 2048; ++i) ASSERT_EQ(buf[kBufSize - 2048 + i], 0x3c) << "mapped byte " << i;
    for (uint64_t i = 0; i < kBufSize - 2048; ++i) ASSERT_EQ(buf[i], 0xc5) << "byte " << i << " below the DMA";
    ASSERT_EQ(host->dmaFaults().size(), 1u);
    const auto& f = host->dmaFaults()[0];
    EXPECT_EQ(f.iova, end) << "the first failing IOVA";
    EXPECT_EQ(f.size, 2048u);
    EXPECT_TRUE(f.write);
    EXPECT_EQ(f.kind, DmaFaultKind::NotPresent);

    // Page granular, not byte granular: a transfer starting in an unmapped page moves nothing, even
    // where it later reaches mapped pages.
    host->clearDmaFaults();
    std::memset(buf, 0xc5, kBufSize);
    eduDma(d, kIova - 2048, 4096, true);
    for (uint64_t i = 0; i < kBufSize; ++i) ASSERT_EQ(buf[i], 0xc5) << "byte " << i;
    ASSERT_EQ(host->dmaFaults().size(), 1u);
    EXPECT_EQ(host->dmaFaults()[0].iova, kIova - 2048);
    EXPECT_EQ(host->dmaFaults()[0].size, 4096u);

    // Wholly unmapped: nothing moves.
    host->clearDmaFaults();
    eduDma(d, 0x40000000, 4096, true);
    for (uint64_t i = 0; i < kBufSize; ++i) ASSERT_EQ(buf[i], 0xc5) << "byte " << i;
    ASSERT_EQ(host->dmaFaults().size(), 1u);
    EXPECT_EQ(host->dmaFaults()[0].iova, 0x40000000u);

    // Reads too: the mapped pages reach the device buffer, the rest of it keeps its old contents.
    host->clearDmaFaults();
    std::memset(buf + kBufSize - 4096, 0x5a, 4096);
    fillEduBuffer(d, 0x11111111);
    eduDma(d, end - 1024, 4096, false);
    ASSERT_EQ(host->dmaFaults().size(), 1u);
    EXPECT_EQ(host->dmaFaults()[0].iova, end);
    EXPECT_FALSE(host->dmaFaults()[0].write);
    uint32_t w;
    for (uint32_t off = 0; off < 4096; off += 4) {
        auto rr = d.readRegion(0, kEduBuf + off, std::span(reinterpret_cast<uint8_t*>(&w), 4));
        ASSERT_TRUE(rr.ok());
        ASSERT_EQ(w, off < 1024 ? 0x5a5a5a5au : 0x11111111u) << "device buffer offset " << off;
    }
}

// Difference 1: the real edu's BAR0 is mmappable; "register_bar_mmap" models it.
TEST_P(SimFidelity, RegisterBarIsMmappableOnlyWhenAsked) {
    open();
    auto info = up.device->regionInfo(VFIO_PCI_BAR0_REGION_INDEX);
    ASSERT_TRUE(info.ok());
    EXPECT_FALSE(info->mmappable()) << "default: pt_edu's BAR0 stays trapped";
    EXPECT_TRUE(up.device->mmapAreas(VFIO_PCI_BAR0_REGION_INDEX)->empty());
    EXPECT_FALSE(up.device->mapRegion(VFIO_PCI_BAR0_REGION_INDEX, 0, 4096, PROT_READ).ok());
    up.teardown();

    SimDeviceConfig dc;
    dc.registerBarMmap = true;
    open({}, dc);
    info = up.device->regionInfo(VFIO_PCI_BAR0_REGION_INDEX);
    ASSERT_TRUE(info.ok());
    EXPECT_TRUE(info->mmappable());
    EXPECT_FALSE(info->hasSparseCap);
    auto areas = up.device->mmapAreas(VFIO_PCI_BAR0_REGION_INDEX);
    ASSERT_TRUE(areas.ok());
    ASSERT_EQ(areas->size(), 1u);
    EXPECT_EQ((*areas)[0].offset, 0u);
    EXPECT_EQ((*areas)[0].size, 1u << 20);
    auto m = up.device->mapRegion(VFIO_PCI_BAR0_REGION_INDEX, 0, 1 << 20, PROT_READ | PROT_WRITE);
    ASSERT_TRUE(m.ok()) << m.error().describe();
    // The register model stays reachable through the device fd.
    wr32(*up.device, 0x04, 0x12345678);
    uint32_t v = 0;
    ASSERT_TRUE(up.device->readRegion(0, 0x04, std::span(reinterpret_cast<uint8_t*>(&v), 4)).ok());
    EXPECT_EQ(v, ~0x12345678u);
}

// Difference 4: no reset method (edu on q35's root bus).
TEST_P(SimFidelity, DeviceWithoutResetMethodClearsTheFlagAndRefusesReset) {
    open();
    EXPECT_TRUE(up.device->canReset());
    EXPECT_EQ(host->device(kBdf)->resetCount(), 1u) << "vfio_pci_core_enable() resets the device at open";
    EXPECT_TRUE(up.device->reset().ok());
    EXPECT_EQ(host->device(kBdf)->resetCount(), 2u);
    up.teardown();

    SimDeviceConfig dc;
    dc.resetSupported = false;
    open({}, dc);
    EXPECT_FALSE(up.device->canReset());
    // The kernel's answer to the ioctl itself: vfio_pci_ioctl_reset() returns -EINVAL when
    // !reset_works (not ENOTTY).
    auto raw = host->ioctl(up.device->fd(), VFIO_DEVICE_RESET, 0);
    ASSERT_FALSE(raw.ok());
    EXPECT_EQ(raw.error().code(), EINVAL) << raw.error().describe();
    // Conduit does not issue it: it sees the flag clear and refuses, naming the ioctl and device.
    const size_t ioctls = host->ioctlCount();
    auto r = up.device->reset();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(host->ioctlCount(), ioctls);
    EXPECT_NE(r.error().describe().find("VFIO_DEVICE_RESET"), std::string::npos) << r.error().describe();
    EXPECT_NE(r.error().describe().find(kBdf), std::string::npos) << r.error().describe();
    EXPECT_EQ(host->device(kBdf)->resetCount(), 0u);
}

// Difference 8, as the kernel does it: opening the device enables it (vfio_pci_core_enable():
// pci_clear_master(), pci_enable_device() turns memory decode on, a function reset, then
// pci_save_state()), and every reset it does for a user restores the config state it saved just
// before (pci_try_reset_function(): pci_dev_save_and_disable() / pci_dev_restore()). COMMAND and
// the BARs read after a reset as they did before it; only the device's own registers are reset.
// (Under QEMU the guest read COMMAND and BAR0 0 after its FLR because Conduit clears decode before
// the reset, as QEMU's vfio_pci_pre_reset() does, and zeroes its emulated BARs: not the kernel.)
TEST_P(SimFidelity, OpenEnablesDecodeAndResetRestoresTheSavedConfigState) {
    auto hc = SimHostConfig{};
    host = std::make_unique<SimHost>(hc);
    host->addDevice({});
    EXPECT_EQ(host->device(kBdf)->command(), 0) << "not enabled before anyone opens it";
    auto backend = openBackend(*host, GetParam(), host->paths());
    ASSERT_TRUE(backend.ok());
    auto dev = (*backend)->openDevice(kBdf);
    ASSERT_TRUE(dev.ok()) << dev.error().describe();
    auto& d = **dev;
    EXPECT_EQ(d.readConfigObj<uint16_t>(0x04).value() & 0x7, 0x2) << "memory decode on, bus mastering off";
    EXPECT_EQ(host->device(kBdf)->resetCount(), 1u) << "reset once at open";

    ASSERT_TRUE(d.writeConfigObj<uint16_t>(0x04, 0x0006).ok());      // MEM + MASTER
    ASSERT_TRUE(d.writeConfigObj<uint32_t>(0x10, 0xc0000000).ok());  // BAR0 address
    uint32_t five = 5, fact = 0;
    ASSERT_TRUE(d.writeRegion(0, 0x08, std::span(reinterpret_cast<const uint8_t*>(&five), 4)).ok());
    const uint32_t bar0 = d.readConfigObj<uint32_t>(0x10).value();
    ASSERT_EQ(bar0 & ~0xfu, 0xc0000000u);
    ASSERT_TRUE(d.reset().ok());
    EXPECT_EQ(d.readConfigObj<uint16_t>(0x04).value(), 0x0006) << "COMMAND as saved before the reset";
    EXPECT_EQ(d.readConfigObj<uint32_t>(0x10).value(), bar0) << "BAR0 as saved before the reset";
    ASSERT_TRUE(d.readRegion(0, 0x08, std::span(reinterpret_cast<uint8_t*>(&fact), 4)).ok());
    EXPECT_EQ(fact, 0u) << "the device's registers are reset";
    EXPECT_EQ(d.readConfigObj<uint16_t>(0x00).value(), 0x1234);

    // The last close resets it and restores the state saved at open: decode on, mastering off.
    dev->reset();
    EXPECT_EQ(host->device(kBdf)->command() & 0x7, 0x2);
    EXPECT_EQ(host->device(kBdf)->resetCount(), 3u);
}

// Difference 6: the fault says why, as VT-d's fault reason does.
TEST_P(SimFidelity, FaultsRecordTheReasonAndEveryFaultIsKept) {
    open();
    auto& d = *up.device;
    auto ro = Mapping::map(0x1000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "read-only DMA page");
    ASSERT_TRUE(ro.ok());
    std::memset(ro->data(), 0xee, 0x1000);
    ASSERT_TRUE(up.backend->mapDma(0x200000, 0x1000, ro->data(), false).ok());
    fillEduBuffer(d, 0x3c3c3c3c);

    eduDma(d, 0x200000, 256, true);   // write to a read-only page
    eduDma(d, 0x300000, 256, true);   // write to nothing
    eduDma(d, 0x300000, 256, false);  // read of nothing
    eduDma(d, 0x200000, 256, false);  // read of the read-only page: fine
    ASSERT_EQ(host->dmaFaults().size(), 3u) << "every fault is recorded, none is coalesced";
    const auto& f = host->dmaFaults();
    EXPECT_EQ(f[0].kind, DmaFaultKind::WriteToReadOnly);
    EXPECT_EQ(f[0].vtdReason, 5);
    EXPECT_EQ(f[1].kind, DmaFaultKind::NotPresent);
    EXPECT_EQ(f[1].vtdReason, 5) << "VT-d reports an unmapped write as 'PTE Write access is not set'";
    EXPECT_EQ(f[2].kind, DmaFaultKind::NotPresent);
    EXPECT_EQ(f[2].vtdReason, 6);
    EXPECT_FALSE(f[2].write);
    for (unsigned i = 0; i < 0x1000; ++i) ASSERT_EQ(static_cast<uint8_t*>(ro->data())[i], 0xee);
    ASSERT_TRUE(up.backend->unmapDma(0x200000, 0x1000).ok());

    // Bus mastering off: the device issues nothing, so the IOMMU reports nothing.
    host->clearDmaFaults();
    ASSERT_TRUE(d.writeConfigObj<uint16_t>(0x04, 0).ok());
    eduDma(d, kIova, 256, true);
    ASSERT_EQ(host->dmaFaults().size(), 1u);
    EXPECT_EQ(host->dmaFaults()[0].kind, DmaFaultKind::BusMasterDisabled);
    EXPECT_EQ(host->dmaFaults()[0].vtdReason, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, SimFidelity, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](const auto& info) { return info.param == BackendKind::Type1 ? "type1" : "iommufd"; });

// Difference 5: Linux 6.12 has no VFIO dma-buf export and no IOAS_MAP_FILE, and (as every kernel)
// cannot IOAS_MAP a BAR's mmap (VM_PFNMAP): iommufd P2P is refused; type1 still maps it through the
// PFNMAP path. Newer kernels map the BAR through a dma-buf only.
TEST(SimFidelityKernel, Linux612RefusesIommufdP2pMappingsOfBars) {
    for (auto kernel : {HostKernel::Newer, HostKernel::Linux6_12}) {
        SCOPED_TRACE(kernel == HostKernel::Newer ? "newer" : "6.12");
        SimHostConfig hc;
        hc.kernel = kernel;
        SimHost host(hc);
        host.addDevice({});
        BringUp up;
        ASSERT_TRUE(bringUp(host, BackendKind::Iommufd, host.paths(), kBdf, up).ok());
        ASSERT_FALSE(up.barMaps.empty());
        auto& bar = up.barMaps.front();  // BAR2, the memory BAR
        const size_t before = host.dmaMappingCount();
        auto buf = up.device->exportDmaBuf(VFIO_PCI_BAR2_REGION_INDEX, 0, 0x10000);
        auto vaddr = up.backend->mapDma(0xc0000000, 0x10000, bar.data(), true);
        if (kernel == HostKernel::Newer) {
            ASSERT_TRUE(buf.ok()) << buf.error().describe();
            auto f = up.backend->mapFile(0xd0000000, 0x10000, buf->get(), 0, true);
            EXPECT_TRUE(f.ok()) << f.error().describe();
            ASSERT_FALSE(vaddr.ok()) << "pin_user_pages() refuses a PFNMAP vma on every kernel";
            EXPECT_EQ(vaddr.error().code(), EFAULT) << vaddr.error().describe();
            EXPECT_EQ(host.dmaMappingCount(), before + 1);
            continue;
        }
        ASSERT_FALSE(buf.ok());
        EXPECT_EQ(buf.error().code(), ENOTTY) << buf.error().describe();
        EXPECT_NE(buf.error().describe().find("DMA_BUF"), std::string::npos) << buf.error().describe();
        ASSERT_FALSE(vaddr.ok());
        EXPECT_EQ(vaddr.error().code(), EFAULT) << vaddr.error().describe();
        // A memfd is not a dma-buf, but IOAS_MAP_FILE does not exist on 6.12 at all.
        auto f = up.backend->mapFile(0xd0000000, 0x1000, up.device->fd(), 0, true);
        ASSERT_FALSE(f.ok());
        EXPECT_EQ(f.error().code(), ENOTTY) << f.error().describe();
        EXPECT_EQ(host.dmaMappingCount(), before) << "a refused mapping leaves nothing behind";
        // Guest RAM (anonymous memory) still maps: only PFNMAP vmas are refused.
        EXPECT_TRUE(host.dmaMappingCount() > 0);
        // No P2P mapping means a peer DMA to the BAR's IOVA faults as not present.
        auto* dev = host.device(kBdf);
        uint8_t b[16] = {};
        EXPECT_FALSE(host.dmaWrite(*dev, 0xc0000000, b, sizeof b));
        ASSERT_FALSE(host.dmaFaults().empty());
        EXPECT_EQ(host.dmaFaults().back().kind, DmaFaultKind::NotPresent);
    }
    // type1 on 6.12: MAP_DMA of the BAR mmap works (vaddr_get_pfns() follows VM_PFNMAP).
    SimHostConfig hc;
    hc.kernel = HostKernel::Linux6_12;
    SimHost host(hc);
    host.addDevice({});
    BringUp up;
    ASSERT_TRUE(bringUp(host, BackendKind::Type1, host.paths(), kBdf, up).ok());
    auto r = up.backend->mapDma(0xc0000000, 0x10000, up.barMaps.front().data(), true);
    EXPECT_TRUE(r.ok()) << r.error().describe();
    if (r.ok()) {
        EXPECT_TRUE(up.backend->unmapDma(0xc0000000, 0x10000).ok());
    }
}

// Difference 7: without vfio_iommu_type1 loaded, VFIO_CHECK_EXTENSION(TYPE1v2) is 0; Conduit's
// error names the missing IOMMU backend.
TEST(SimFidelityKernel, MissingType1BackendIsNamedInTheError) {
    SimHostConfig hc;
    hc.type1v2 = false;
    SimHost host(hc);
    host.addDevice({});
    auto b = openBackend(host, BackendKind::Type1, host.paths());
    ASSERT_FALSE(b.ok());
    const std::string msg = b.error().describe();
    EXPECT_NE(msg.find("VFIO_TYPE1v2_IOMMU"), std::string::npos) << msg;
    EXPECT_NE(msg.find("does not offer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("iommufd"), std::string::npos) << msg << " (the alternative backend)";
    // With the backend present the same call works: the error is about the backend, nothing else.
    SimHost ok;
    ok.addDevice({});
    auto b2 = openBackend(ok, BackendKind::Type1, ok.paths());
    EXPECT_TRUE(b2.ok()) << b2.error().describe();
}

}  // namespace
