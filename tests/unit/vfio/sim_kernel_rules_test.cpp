// The simulated host against rules read from the kernel's source (Linux 6.x), where it used to be
// laxer or different: VFIO_DEVICE_SET_IRQS validation (vfio_set_irqs_validate_and_prepare(),
// vfio_pci_set_irqs_ioctl() and its INTx/MSI handlers), VFIO_IRQ_INFO_NORESIZE
// (vfio_pci_ioctl_get_irq_info()), a host short of MSI/MSI-X vectors (vfio_msi_enable()),
// IOMMU_IOAS_MAP of a BAR mmap (pin_user_pages() refuses VM_PFNMAP), mmap of a sub-page BAR
// (vfio_pci_probe_mmaps(), vfio_pci_core_mmap()), a 4 KiB config space and the expansion ROM
// (vfio_pci_ioctl_get_region_info(), vfio_pci_bar_rw()).
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <sys/mman.h>

#include <cstring>

#include <fmt/format.h>

#include "tests/hostsim/bringup.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/uapi_compat.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;

namespace {

constexpr const char* kBdf = "0000:00:03.0";

// VFIO_DEVICE_SET_IRQS exactly as given (no wrapper deciding what is sensible).
Result<int> setIrqs(SimHost& host, int fd, uint32_t flags, uint32_t index, uint32_t start, uint32_t count,
                    std::vector<uint8_t> data = {}) {
    std::vector<uint8_t> buf(sizeof(vfio_irq_set) + data.size());
    auto* s = reinterpret_cast<vfio_irq_set*>(buf.data());
    s->argsz = static_cast<uint32_t>(buf.size());
    s->flags = flags;
    s->index = index;
    s->start = start;
    s->count = count;
    if (!data.empty()) std::memcpy(buf.data() + sizeof(vfio_irq_set), data.data(), data.size());
    return host.ioctl(fd, VFIO_DEVICE_SET_IRQS, reinterpret_cast<uintptr_t>(s));
}
std::vector<uint8_t> fdBytes(std::initializer_list<int32_t> fds) {
    std::vector<uint8_t> out(fds.size() * 4);
    size_t i = 0;
    for (int32_t fd : fds) std::memcpy(&out[4 * i++], &fd, 4);
    return out;
}
int errnoOf(const Result<int>& r) { return r.ok() ? 0 : r.error().code(); }

constexpr uint32_t kNone = VFIO_IRQ_SET_DATA_NONE, kBool = VFIO_IRQ_SET_DATA_BOOL, kEventfd = VFIO_IRQ_SET_DATA_EVENTFD;
constexpr uint32_t kMask = VFIO_IRQ_SET_ACTION_MASK, kUnmask = VFIO_IRQ_SET_ACTION_UNMASK, kTrigger = VFIO_IRQ_SET_ACTION_TRIGGER;

class SimKernelRules : public ::testing::TestWithParam<BackendKind> {
protected:
    void open(SimHostConfig hc = {}, SimDeviceConfig dc = {}) {
        dc.bdf = kBdf;
        host = std::make_unique<SimHost>(hc);
        host->addDevice(dc);
        auto r = bringUp(*host, GetParam(), host->paths(), kBdf, up);
        ASSERT_TRUE(r.ok()) << r.error().describe();
    }
    int fd() const { return up.device->fd(); }
    SimDevice& dev() { return *host->device(kBdf); }
    void TearDown() override { up.teardown(); }
    std::unique_ptr<SimHost> host;
    BringUp up;
};

// vfio_pci_set_intx_mask() / _unmask(): INTx on, start 0 and count exactly 1, or EINVAL; a mask
// eventfd is not implemented (ENOTTY). The range check of vfio_set_irqs_validate_and_prepare()
// comes first for every action.
TEST_P(SimKernelRules, IntxMaskAndUnmaskTakeExactlyVectorZero) {
    open();
    // INTx is not on yet (bringUp armed MSI-X): masking it is EINVAL.
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kMask, VFIO_PCI_INTX_IRQ_INDEX, 0, 1)), EINVAL);
    ASSERT_TRUE(up.device->disableIrq(VFIO_PCI_MSIX_IRQ_INDEX).ok());
    auto trig = EventFd::create().value();
    int32_t tfd = trig.fd();
    ASSERT_TRUE(up.device->setIrqEventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, std::span(&tfd, 1)).ok());
    ASSERT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));

    for (uint32_t action : {kMask, kUnmask}) {
        SCOPED_TRACE(action == kMask ? "mask" : "unmask");
        EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | action, VFIO_PCI_INTX_IRQ_INDEX, 0, 0)), EINVAL) << "count 0";
        EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kBool | action, VFIO_PCI_INTX_IRQ_INDEX, 0, 0)), EINVAL) << "count 0, bool";
        EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | action, VFIO_PCI_INTX_IRQ_INDEX, 0, 2)), EINVAL) << "count 2";
        EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | action, VFIO_PCI_INTX_IRQ_INDEX, 1, 0)), EINVAL) << "start 1";
        EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | action, VFIO_PCI_INTX_IRQ_INDEX, 1, 1)), EINVAL) << "start 1";
    }
    EXPECT_FALSE(dev().intxMasked()) << "no refused call had an effect";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kEventfd | kMask, VFIO_PCI_INTX_IRQ_INDEX, 0, 1, fdBytes({tfd}))), ENOTTY);
    // The one accepted form: start 0, count 1.
    EXPECT_TRUE(setIrqs(*host, fd(), kNone | kMask, VFIO_PCI_INTX_IRQ_INDEX, 0, 1).ok());
    EXPECT_TRUE(dev().intxMasked());
    EXPECT_TRUE(setIrqs(*host, fd(), kBool | kUnmask, VFIO_PCI_INTX_IRQ_INDEX, 0, 1, {1}).ok());
    EXPECT_FALSE(dev().intxMasked());
    // The INTx trigger takes count 1 too; count 0 with DATA_NONE disables it.
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kBool | kTrigger, VFIO_PCI_INTX_IRQ_INDEX, 0, 0)), EINVAL);
    EXPECT_TRUE(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_INTX_IRQ_INDEX, 0, 0).ok());
    EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_NUM_IRQS));
}

// vfio_set_irqs_validate_and_prepare(): start must lie inside the index even with count 0, and
// start + count must not pass its end; exactly one data type; vfio_pci_set_irqs_ioctl(): no
// handler for no (or several) actions is ENOTTY; an index that is not on cannot be disabled.
TEST_P(SimKernelRules, TriggersOutsideTheIndexAndMalformedFlagsAreRefused) {
    open();  // MSI-X on with its 8 vectors (bringUp)
    auto e = EventFd::create().value();
    const int32_t efd = e.fd();
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kEventfd | kTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 6, 4, fdBytes({efd, efd, efd, efd}))),
              EINVAL) << "start + count beyond the 8 vectors";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 8, 0)), EINVAL)
        << "start at the end, count 0";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 9, 0)), EINVAL);
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 1, UINT32_MAX)), EINVAL)
        << "count + start overflows";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kBool | kTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, {1})), EINVAL)
        << "two data types";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1)), ENOTTY) << "no action";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kMask | kUnmask, VFIO_PCI_INTX_IRQ_INDEX, 0, 1)), ENOTTY)
        << "two actions";
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kMask, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1)), ENOTTY)
        << "MSI-X has no mask handler";
    // Disabling an index that is not the active one: vfio_pci_set_msi_trigger() /
    // vfio_pci_set_intx_trigger() only disable their own.
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_MSI_IRQ_INDEX, 0, 0)), EINVAL);
    EXPECT_EQ(errnoOf(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_INTX_IRQ_INDEX, 0, 0)), EINVAL);
    EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX)) << "nothing above changed the state";
    // Loopback trigger of a vector inside the index still works.
    EXPECT_TRUE(setIrqs(*host, fd(), kNone | kTrigger, VFIO_PCI_MSIX_IRQ_INDEX, 7, 1).ok());
    EXPECT_EQ(up.msix[7].consume(), 1u);
}

// vfio_pci_ioctl_get_irq_info(): NORESIZE on MSI always, on MSI-X only without dynamic MSI-X
// (vdev->has_dyn_msix); without it a vector beyond those allocated at enable is EINVAL
// (vfio_msi_alloc_irq() -> pci_irq_vector()), with it the vector is allocated.
TEST_P(SimKernelRules, NoresizeFollowsDynamicMsix) {
    for (bool dyn : {true, false}) {
        SCOPED_TRACE(dyn ? "dynamic MSI-X" : "no dynamic MSI-X");
        SimHostConfig hc;
        hc.dynamicMsix = dyn;
        open(hc);
        auto msi = up.device->irqInfo(VFIO_PCI_MSI_IRQ_INDEX);
        auto msix = up.device->irqInfo(VFIO_PCI_MSIX_IRQ_INDEX);
        auto intx = up.device->irqInfo(VFIO_PCI_INTX_IRQ_INDEX);
        ASSERT_TRUE(msi.ok() && msix.ok() && intx.ok());
        EXPECT_TRUE(msi->flags & VFIO_IRQ_INFO_NORESIZE);
        EXPECT_EQ(bool(msix->flags & VFIO_IRQ_INFO_NORESIZE), !dyn);
        EXPECT_FALSE(intx->flags & VFIO_IRQ_INFO_NORESIZE);
        EXPECT_TRUE(intx->flags & VFIO_IRQ_INFO_AUTOMASKED);
        // Enable MSI-X with 2 vectors, then add vector 5 while it is on.
        ASSERT_TRUE(up.device->disableIrq(VFIO_PCI_MSIX_IRQ_INDEX).ok());
        auto a = EventFd::create().value(), b = EventFd::create().value();
        const int32_t two[] = {a.fd(), a.fd()};
        ASSERT_TRUE(up.device->setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, two).ok());
        EXPECT_EQ(dev().allocatedVectors(), 2u);
        const int32_t five = b.fd();
        auto add = up.device->setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 5, std::span(&five, 1));
        if (dyn) {
            ASSERT_TRUE(add.ok()) << add.error().describe();
            EXPECT_EQ(dev().allocatedVectors(), 3u);
            ASSERT_TRUE(up.device->triggerIrq(VFIO_PCI_MSIX_IRQ_INDEX, 5, 1).ok());
            EXPECT_EQ(b.consume(), 1u);
        } else {
            ASSERT_FALSE(add.ok());
            EXPECT_EQ(add.error().code(), EINVAL) << add.error().describe();
            EXPECT_EQ(dev().allocatedVectors(), 2u);
        }
        EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX)) << "MSI-X stays on";
        up.teardown();
    }
}

// vfio_msi_enable(): pci_alloc_irq_vectors(1, nvec) giving fewer than asked frees them and the
// ioctl returns that count (nothing enabled); none at all is ENOSPC.
TEST_P(SimKernelRules, FewerHostVectorsEnableNothingAndReturnTheCount) {
    SimDeviceConfig dc;
    dc.hostIrqVectors = 3;
    dc.msiVectors = 4;
    host = std::make_unique<SimHost>();
    dc.bdf = kBdf;
    host->addDevice(dc);
    auto r = bringUp(*host, GetParam(), host->paths(), kBdf, up);
    ASSERT_FALSE(r.ok()) << "bringUp arms all 8 MSI-X vectors";
    EXPECT_EQ(r.error().code(), ENOSPC) << r.error().describe();
    EXPECT_NE(r.error().describe().find("the host has only 3 of the 8 vectors asked for"), std::string::npos)
        << r.error().describe();
    EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_NUM_IRQS));
    up.teardown();

    dc.msixVectors = 0;  // bringUp arms nothing then
    host = std::make_unique<SimHost>();
    host->addDevice(dc);
    ASSERT_TRUE(bringUp(*host, GetParam(), host->paths(), kBdf, up).ok());
    std::vector<EventFd> evs;
    std::vector<int32_t> fds;
    for (int i = 0; i < 4; ++i) {
        evs.push_back(EventFd::create().value());
        fds.push_back(evs.back().fd());
    }
    // The raw answer: the count, and nothing enabled.
    auto raw = setIrqs(*host, fd(), kEventfd | kTrigger, VFIO_PCI_MSI_IRQ_INDEX, 0, 4, fdBytes({fds[0], fds[1], fds[2], fds[3]}));
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(*raw, 3);
    EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_NUM_IRQS));
    EXPECT_EQ(dev().allocatedVectors(), 0u);
    auto n = up.device->enableVectors(VFIO_PCI_MSI_IRQ_INDEX, fds);
    ASSERT_TRUE(n.ok()) << n.error().describe();
    EXPECT_EQ(*n, 3u);
    EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_NUM_IRQS));
    n = up.device->enableVectors(VFIO_PCI_MSI_IRQ_INDEX, std::span(fds).first(3));
    ASSERT_TRUE(n.ok()) << n.error().describe();
    EXPECT_EQ(*n, 3u);
    EXPECT_EQ(dev().activeIrqIndex(), uint32_t(VFIO_PCI_MSI_IRQ_INDEX));
    EXPECT_EQ(dev().allocatedVectors(), 3u);
    ASSERT_TRUE(up.device->disableIrq(VFIO_PCI_MSI_IRQ_INDEX).ok());
    up.teardown();

    dc.hostIrqVectors = 0;
    host = std::make_unique<SimHost>();
    host->addDevice(dc);
    ASSERT_TRUE(bringUp(*host, GetParam(), host->paths(), kBdf, up).ok());
    auto none = up.device->enableVectors(VFIO_PCI_MSI_IRQ_INDEX, std::span(fds).first(1));
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().code(), ENOSPC);
}

// vfio_pci_probe_mmaps(): a BAR smaller than a page at the start of a host page is mmappable;
// vfio_pci_core_mmap() allows up to PAGE_ALIGN(BAR size), so the mmap is the whole page.
TEST_P(SimKernelRules, SubPageBarMapsItsWholePage) {
    SimDeviceConfig dc;
    dc.bars[4] = BarConfig{BarKind::Memory, 0x100, false, false, true, {}};
    open({}, dc);
    auto info = up.device->regionInfo(VFIO_PCI_BAR4_REGION_INDEX);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->size, 0x100u);
    EXPECT_TRUE(info->mmappable());
    {
        auto page = up.device->mapRegion(VFIO_PCI_BAR4_REGION_INDEX, 0, 4096, PROT_READ | PROT_WRITE);
        ASSERT_TRUE(page.ok()) << page.error().describe();
        page->data()[0x10] = 0x5a;
        uint8_t b = 0;
        ASSERT_TRUE(up.device->readRegion(VFIO_PCI_BAR4_REGION_INDEX, 0x10, std::span(&b, 1)).ok());
        EXPECT_EQ(b, 0x5a);
        EXPECT_FALSE(up.device->mapRegion(VFIO_PCI_BAR4_REGION_INDEX, 0, 8192, PROT_READ).ok()) << "past the page";
        EXPECT_FALSE(up.device->readRegion(VFIO_PCI_BAR4_REGION_INDEX, 0x100, std::span(&b, 1)).ok()) << "past the BAR";
        // The kernel itself refuses a length past PAGE_ALIGN(BAR size) (vfio_pci_core_mmap()).
        auto raw = host->mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd(), off_t(info->offset));
        ASSERT_FALSE(raw.ok());
        EXPECT_EQ(raw.error().code(), EINVAL);
    }
    // A host BAR that does not start a page is not mmappable at all.
    up.teardown();
    dc.bars[4].mmappable = false;
    open({}, dc);
    EXPECT_FALSE(up.device->regionInfo(VFIO_PCI_BAR4_REGION_INDEX)->mmappable());
}

// pin_user_pages() refuses a VM_PFNMAP vma on every kernel: IOMMU_IOAS_MAP of a BAR's mmap is
// EFAULT (iommufd maps BARs only through a dma-buf); type1 pins it through its PFNMAP path.
TEST(SimKernelRulesIommu, IoasMapOfABarMmapIsEfaultOnEveryKernel) {
    for (auto kernel : {HostKernel::Newer, HostKernel::Linux6_12}) {
        for (auto kind : {BackendKind::Iommufd, BackendKind::Type1}) {
            SCOPED_TRACE(fmt::format("{} kernel, {}", kernel == HostKernel::Newer ? "newer" : "6.12", backendKindName(kind)));
            SimHostConfig hc;
            hc.kernel = kernel;
            SimHost host(hc);
            host.addDevice({});
            BringUp up;
            ASSERT_TRUE(bringUp(host, kind, host.paths(), kBdf, up).ok());
            ASSERT_FALSE(up.barMaps.empty());
            const size_t before = host.dmaMappingCount();
            auto r = up.backend->mapDma(0xc0000000, 0x10000, up.barMaps.front().data(), true);
            if (kind == BackendKind::Type1) {
                EXPECT_TRUE(r.ok()) << r.error().describe();
                EXPECT_EQ(host.dmaMappingCount(), before + 1);
                continue;
            }
            ASSERT_FALSE(r.ok());
            EXPECT_EQ(r.error().code(), EFAULT) << r.error().describe();
            EXPECT_EQ(host.dmaMappingCount(), before);
            // Guest RAM (anonymous memory) still maps.
            EXPECT_TRUE(up.backend->mapDma(0xd0000000, up.dmaBuffer.size(), up.dmaBuffer.data(), true).ok());
            EXPECT_TRUE(up.backend->unmapDma(0xd0000000, up.dmaBuffer.size()).ok());
        }
    }
}

// A PCIe function's config region is 4 KiB (pdev->cfg_size) and carries its extended capabilities.
TEST_P(SimKernelRules, ExtendedConfigSpaceIsFourKibWithTheCapabilityChain) {
    SimDeviceConfig dc;
    dc.pcieCaps = true;
    dc.extCaps = {{PCI_EXT_CAP_ID_ERR, 2, 0x100, std::vector<uint8_t>(0x44, 0)},
                  {PCI_EXT_CAP_ID_VNDR, 1, 0x150, {0x34, 0x12, 0x01, 0x00}}};
    open({}, dc);
    auto info = up.device->regionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->size, 4096u);
    EXPECT_EQ(up.device->readConfigObj<uint32_t>(0x100).value(), 0x15020001u) << "AER v2, next 0x150";
    EXPECT_EQ(up.device->readConfigObj<uint32_t>(0x150).value(), 0x0001000bu) << "vendor-specific, last";
    EXPECT_EQ(up.device->readConfigObj<uint32_t>(0x154).value(), 0x00011234u);
    EXPECT_EQ(up.device->readConfigObj<uint32_t>(0xffc).value(), 0u);
    up.teardown();
    open();
    EXPECT_EQ(up.device->regionInfo(VFIO_PCI_CONFIG_REGION_INDEX)->size, 256u) << "conventional by default";
}

// The expansion ROM region: the ROM BAR's size, READ only, when pci_map_rom() finds an image
// (55 AA and "PCIR"); reads past the image fill with 0xff (vfio_pci_bar_rw()); writes are EINVAL
// (vfio_pci_rw()). Without a valid image the region's size is 0.
TEST_P(SimKernelRules, RomRegionHoldsTheImageAndIsReadOnly) {
    SimDeviceConfig dc;
    dc.rom.assign(1024, 0);
    dc.rom[0] = 0x55, dc.rom[1] = 0xaa, dc.rom[2] = 2;  // 2 x 512 bytes
    dc.rom[0x18] = 0x40;                                 // PCIR at 0x40
    std::memcpy(&dc.rom[0x40], "PCIR", 4);
    dc.rom[0x40 + 16] = 2;     // image length: 2 x 512
    dc.rom[0x40 + 21] = 0x80;  // last image
    dc.rom[0x200] = 0xc3;
    dc.romBarSize = 0x8000;
    open({}, dc);
    auto info = up.device->regionInfo(VFIO_PCI_ROM_REGION_INDEX);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->size, 0x8000u);
    EXPECT_EQ(info->flags, uint32_t(VFIO_REGION_INFO_FLAG_READ));
    uint32_t w = 0;
    ASSERT_TRUE(up.device->readRegion(VFIO_PCI_ROM_REGION_INDEX, 0, std::span(reinterpret_cast<uint8_t*>(&w), 4)).ok());
    EXPECT_EQ(w, 0x0002aa55u);
    ASSERT_TRUE(up.device->readRegion(VFIO_PCI_ROM_REGION_INDEX, 0x200, std::span(reinterpret_cast<uint8_t*>(&w), 4)).ok());
    EXPECT_EQ(w, 0x000000c3u);
    ASSERT_TRUE(up.device->readRegion(VFIO_PCI_ROM_REGION_INDEX, 0x7ffc, std::span(reinterpret_cast<uint8_t*>(&w), 4)).ok());
    EXPECT_EQ(w, 0xffffffffu) << "past the image";
    // The region is not writable; the kernel refuses the write itself too.
    EXPECT_FALSE(up.device->writeRegion(VFIO_PCI_ROM_REGION_INDEX, 0, std::span(reinterpret_cast<uint8_t*>(&w), 4)).ok());
    auto raw = host->pwrite(fd(), &w, 4, off_t(info->offset));
    ASSERT_FALSE(raw.ok());
    EXPECT_EQ(raw.error().code(), EINVAL);
    up.teardown();

    dc.rom[0] = 0;  // no signature: pci_map_rom() fails, no ROM
    open({}, dc);
    EXPECT_EQ(up.device->regionInfo(VFIO_PCI_ROM_REGION_INDEX)->size, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, SimKernelRules, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](const auto& info) { return info.param == BackendKind::Type1 ? "type1" : "iommufd"; });

}  // namespace
