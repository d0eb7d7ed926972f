// VfioPciDevice against what the kernel really does in three places the simulated host now models:
// a BAR smaller than a page that vfio-pci lets us mmap (its whole host page; KVM takes whole
// pages only), a host short of MSI/MSI-X vectors (VFIO_DEVICE_SET_IRQS returns the smaller count
// and enables nothing), and what the guest sees of a 4 KiB config space with extended
// capabilities and of an expansion ROM.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <algorithm>
#include <cstring>

#include "devices/bus.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/common/forwarding_host.h"
#include "tests/common/log_capture.h"
#include "tests/hostsim/sim_host.h"
#include "tests/unit/devices/passthrough_fixture.h"
#include "vfio/backend.h"

using namespace conduit;
using namespace conduit::devices;
using namespace conduit::devices::pci;
using conduit::devices::vfio_pci::IrqMode;

namespace {

constexpr const char* kBdf = test::kDeviceBdf;

// Some other device's range on the MMIO bus.
struct OtherDevice final : BusDevice {
    std::string name() const override { return "other device"; }
    void read(uint64_t, std::span<uint8_t> d) override { std::fill(d.begin(), d.end(), 0); }
    void write(uint64_t, std::span<const uint8_t>) override {}
};

// Passes every call to the simulated host, except that the nth VFIO_DEVICE_SET_IRQS enabling
// MSI-X answers `answer` itself (a host whose vector supply changes between two calls).
struct ScriptedHost final : test::ForwardingHost {
    unsigned nth = 0, seen = 0;
    int answer = 0;
    using ForwardingHost::ForwardingHost;
    Result<int> ioctl(int fd, unsigned long req, uintptr_t arg) override {
        if (req == VFIO_DEVICE_SET_IRQS) {
            auto* s = reinterpret_cast<const vfio_irq_set*>(arg);
            if (s->index == VFIO_PCI_MSIX_IRQ_INDEX && (s->flags & VFIO_IRQ_SET_DATA_EVENTFD) && ++seen == nth) return answer;
        }
        return ForwardingHost::ioctl(fd, req, arg);
    }
};

// The device alone on the simulated host, behind a ScriptedHost. The fakes' KVM refuses a memslot
// that is not page-aligned (EINVAL), as KVM_SET_USER_MEMORY_REGION does: why a sub-page BAR is
// mapped as its whole host page or not at all (item 1).
class KernelBehaviour : public test::PassthroughFixture {
protected:
    void open(hostsim::SimDeviceConfig cfg = {}, hostsim::SimHostConfig host = {}) {
        cfg.bdf = kBdf;
        sim = std::make_unique<hostsim::SimHost>(host);
        sim->addDevice(cfg);
        scripted = std::make_unique<ScriptedHost>(*sim);
        ASSERT_NO_FATAL_FAILURE(openBackend(*scripted));
        createDevice(kBdf);
    }
    void TearDown() override {
        PassthroughFixture::TearDown();
        scripted.reset();
    }
    hostsim::SimDevice& simDev() { return *sim->device(kBdf); }
    std::vector<std::pair<uint64_t, uint64_t>> busRanges() {
        std::vector<std::pair<uint64_t, uint64_t>> out;
        for (auto& e : mmio.entries()) out.push_back({e.base, e.size});
        return out;
    }

    std::unique_ptr<ScriptedHost> scripted;
};

// ------------------------------------------------------------------ item 1: sub-page BARs

hostsim::SimDeviceConfig withSubPageBar4() {
    hostsim::SimDeviceConfig c;
    c.bars[4] = hostsim::BarConfig{hostsim::BarKind::Memory, 0x100, false, false, true, {}};
    return c;
}

// Placed page-aligned, the BAR is its host page as one memslot; the rest of the guest page is
// claimed on the bus so nothing decoded there later hides under the memslot.
TEST_P(KernelBehaviour, SubPageBarPlacedPageAlignedIsItsHostPage) {
    open(withSubPageBar4());
    enableDecode();
    cfgWrite(PCI_BASE_ADDRESS_4, 0xc0200000);
    ASSERT_EQ(device->activeBar(4), 0xc0200000u) << "the BAR is on";
    ASSERT_EQ(mapper.live.count(0xc0200000), 1u);
    EXPECT_EQ(mapper.live[0xc0200000].size, 0x1000u) << "the whole page";
    // The memslot is the device's BAR.
    static_cast<uint8_t*>(mapper.live[0xc0200000].host)[0x20] = 0xa5;
    EXPECT_EQ(simDev().barMemory(4)[0x20], 0xa5);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200100, 0xf00}))
        << "the rest of the page is claimed";
    EXPECT_THAT(device->trappedAreas(4), ::testing::SizeIs(1));
    auto s = device->stats();
    EXPECT_EQ(s.memslots, 2u) << "BAR2 below its MSI-X pages, and BAR4's page";
    EXPECT_EQ(s.trappedRanges, 2u) << "BAR0 and BAR2's MSI-X pages; BAR4 is not trapped";
    // Another range in the rest of that page is refused by the bus, naming the claim.
    auto other = mmio.insert(std::make_shared<OtherDevice>(), 0xc0200800, 0x100);
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.error().describe().find("BAR4 rest of its page"), std::string::npos) << other.error().describe();
    // P2P: type1 maps the page through its PFNMAP path; iommufd has no way (the dma-buf must lie
    // within the BAR, and IOAS_MAP of an mmap is EFAULT).
    EXPECT_EQ(s.p2pMappings, GetParam() == vfio::BackendKind::Type1 ? 2u : 1u);
    // Decode off: memslot and claim go.
    cfgWrite(PCI_COMMAND, 0, 2);
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(mmio.entries().empty());
}

// Anywhere else the BAR is trapped whole and reaches the device through the region.
TEST_P(KernelBehaviour, SubPageBarNotPageAlignedIsTrappedAndMovesBetweenTheTwo) {
    open(withSubPageBar4());
    enableDecode();
    cfgWrite(PCI_BASE_ADDRESS_4, 0xc0200100);
    ASSERT_EQ(device->activeBar(4), 0xc0200100u) << "the BAR is on";
    EXPECT_EQ(mapper.live.count(0xc0200000), 0u);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200100, 0x100}));
    mmioWrite(0xc0200140, 0x12345678);
    EXPECT_EQ(std::memcmp(simDev().barMemory(4) + 0x40, "\x78\x56\x34\x12", 4), 0);
    simDev().barMemory(4)[0xfc] = 0x3c;
    EXPECT_EQ(mmioRead(0xc02001fc, 1), 0x3cu);
    EXPECT_EQ(device->stats().trappedReads[4], 1u);
    // Moved to a page boundary: the page replaces the trap; and back.
    cfgWrite(PCI_BASE_ADDRESS_4, 0xc0300000);
    EXPECT_EQ(mapper.live.count(0xc0300000), 1u);
    EXPECT_THAT(busRanges(), ::testing::Not(::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200100, 0x100})));
    cfgWrite(PCI_BASE_ADDRESS_4, 0xc0300200);  // naturally aligned (0x100), not page-aligned
    EXPECT_EQ(mapper.live.count(0xc0300000), 0u);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0300200, 0x100}));
    EXPECT_THAT(busRanges(), ::testing::Not(::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0300100, 0xf00})));
    EXPECT_EQ(device->stats().relocations, 2u);
}

// Page-aligned, but something already decodes in the rest of the page: trapped.
TEST_P(KernelBehaviour, SubPageBarWhosePageIsSharedIsTrapped) {
    open(withSubPageBar4());
    ASSERT_TRUE(mmio.insert(std::make_shared<OtherDevice>(), 0xc0200800, 0x100).ok());
    enableDecode();
    cfgWrite(PCI_BASE_ADDRESS_4, 0xc0200000);
    ASSERT_EQ(device->activeBar(4), 0xc0200000u);
    EXPECT_EQ(mapper.live.count(0xc0200000), 0u) << "a memslot would hide the other range";
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200000, 0x100}));
    simDev().barMemory(4)[0] = 0x77;
    EXPECT_EQ(mmioRead(0xc0200000, 1), 0x77u);
}

// ------------------------------------------------------------------ item 2: fewer host vectors

// A host without dynamic MSI-X (NORESIZE set) gets every vector at enable, so a shortage shows there.
static hostsim::SimHostConfig noDynamicMsix() {
    hostsim::SimHostConfig h;
    h.dynamicMsix = false;
    return h;
}

TEST_P(KernelBehaviour, MsixWithFewerHostVectorsRunsWithWhatTheHostOffers) {
    test::LogCapture logs;
    hostsim::SimDeviceConfig c;
    c.hostIrqVectors = 4;  // the device has 8
    open(c, noDynamicMsix());
    enableDecode();
    programMsixEntries(8);
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX)) << "MSI-X is on at the device";
    EXPECT_EQ(simDev().allocatedVectors(), 4u);
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    auto s = device->stats();
    EXPECT_EQ(s.vectors, 4u);
    EXPECT_EQ(s.setIrqsCalls, 5u) << "INTx trigger and resample at start, INTx off, MSI-X refused, MSI-X with 4";
    ASSERT_EQ(msi.live.size(), 4u);
    EXPECT_EQ(msi.live[3]->msg, (MsiMessage{0xfee00000, 0x43}));
    const std::string text = logs.all();
    EXPECT_NE(text.find("00:01.0: MSI-X: VFIO_DEVICE_SET_IRQS: the host has 4 of the 8 vectors the guest enabled; "
                        "running with 4 (vectors 4 to 7 will not fire)"),
              std::string::npos)
        << text;
    // Vector 3 fires through its route; the entries beyond have none and changing them is harmless.
    mmioWrite(0xc0000070, 3);
    EXPECT_TRUE(test::signalled(msi.live[3]->eventFd()));
    mmioWrite(tableAddr() + 16 * 6 + 8, 0x99);
    mmioWrite(tableAddr() + 16 * 6 + 12, 1);
    EXPECT_EQ(msi.live.size(), 4u);
    EXPECT_EQ(mmioRead(tableAddr() + 0x1000) & 0xf0, 0u) << "no pending bit for a vector without a route";
    // Off and on again: same outcome, INTx in between.
    cfgWrite(kMsix + PCI_MSIX_FLAGS, 0, 2);
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_EQ(simDev().allocatedVectors(), 4u);
    EXPECT_EQ(device->stats().vectors, 4u);
}

TEST_P(KernelBehaviour, MsiWithFewerHostVectorsRunsWithWhatTheHostOffers) {
    test::LogCapture logs;
    hostsim::SimDeviceConfig c;
    c.msiVectors = 4;
    c.msixVectors = 0;
    c.hostIrqVectors = 2;
    open(c);
    enableDecode();
    cfgWrite(kMsi + PCI_MSI_ADDRESS_LO, 0xfee00000);
    cfgWrite(kMsi + PCI_MSI_ADDRESS_HI, 0);
    cfgWrite(kMsi + PCI_MSI_DATA_64, 0x60, 2);
    cfgWrite(kMsi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | (2 << 4), 2);  // the guest enables 4
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_MSI_IRQ_INDEX));
    EXPECT_EQ(simDev().allocatedVectors(), 2u);
    EXPECT_EQ(device->irqMode(), IrqMode::Msi);
    EXPECT_EQ(device->stats().vectors, 2u);
    ASSERT_EQ(msi.live.size(), 2u);
    EXPECT_EQ(msi.live[0]->msg, (MsiMessage{0xfee00000, 0x60}));
    EXPECT_EQ(msi.live[1]->msg, (MsiMessage{0xfee00000, 0x61}));
    EXPECT_NE(logs.all().find("MSI: VFIO_DEVICE_SET_IRQS: the host has 2 of the 4 vectors the guest enabled"),
              std::string::npos)
        << logs.all();
    mmioWrite(0xc0000070, 1);
    EXPECT_TRUE(test::signalled(msi.live[1]->eventFd()));
}

// When the retry fails too, the error names the ioctl and both counts and INTx is back on.
// Dynamic MSI-X (the simulated host's default, NORESIZE clear): the host is asked for a vector as
// the guest unmasks its entry, so a shortage costs only the vectors beyond it, each said in the log.
TEST_P(KernelBehaviour, DynamicMsixAsksTheHostForEachVectorAsTheGuestUnmasksIt) {
    test::LogCapture logs;
    hostsim::SimDeviceConfig c;
    c.hostIrqVectors = 4;  // the device has 8
    open(c);
    enableDecode();
    const auto calls = device->stats().setIrqsCalls;
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);  // as Linux enables it
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX));
    EXPECT_EQ(simDev().allocatedVectors(), 1u) << "MSI-X on at the host with vector 0 only, no eventfd";
    EXPECT_TRUE(msi.live.empty()) << "no route for an entry the guest has not unmasked";
    EXPECT_EQ(device->stats().setIrqsCalls, calls + 2) << "INTx off, MSI-X on";
    programMsixEntries(5);  // unmasks 0..4 one by one, function still masked
    EXPECT_EQ(simDev().allocatedVectors(), 4u);
    ASSERT_EQ(msi.live.size(), 4u) << "vector 4 got no host interrupt";
    EXPECT_TRUE(msi.live[3]->masked()) << "the function mask still holds";
    EXPECT_EQ(device->stats().setIrqsCalls, calls + 2 + 5) << "one SET_IRQS per vector unmasked";
    EXPECT_EQ(device->stats().vectors, 4u);
    EXPECT_NE(logs.all().find("00:01.0: MSI-X vector 4: the host gave it no interrupt: VFIO_DEVICE_SET_IRQS 0000:01:00.0"),
              std::string::npos)
        << logs.all();
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_FALSE(msi.live[3]->masked());
    mmioWrite(0xc0000070, 3);
    EXPECT_TRUE(test::signalled(msi.live[3]->eventFd()));
    // Masking and unmasking a vector in use again asks the host nothing.
    const auto armed = device->stats().setIrqsCalls;
    mmioWrite(tableAddr() + 16 * 2 + 12, 1);
    mmioWrite(tableAddr() + 16 * 2 + 12, 0);
    EXPECT_EQ(device->stats().setIrqsCalls, armed);
    // Off: every vector back to the host, INTx on.
    cfgWrite(kMsix + PCI_MSIX_FLAGS, 0, 2);
    EXPECT_EQ(simDev().allocatedVectors(), 0u);
    EXPECT_TRUE(msi.live.empty());
    EXPECT_EQ(device->irqMode(), IrqMode::Intx);
}

TEST_P(KernelBehaviour, MsixRetryThatFailsIsAnErrorAndIntxIsBackOn) {
    hostsim::SimDeviceConfig c;
    c.hostIrqVectors = 4;
    {
        // The host offers 4 of 8, then the retry with 4 is refused outright.
        test::LogCapture logs;
        open(c, noDynamicMsix());
        enableDecode();
        sim->failIoctl(VFIO_DEVICE_SET_IRQS, EBUSY, 3);  // INTx off, MSI-X with 8, the retry
        cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        EXPECT_EQ(device->irqMode(), IrqMode::Intx);
        EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
        EXPECT_TRUE(msi.live.empty());
        EXPECT_NE(logs.all().find("00:01.0: enabling MSI-X: retry with the 4 of 8 vectors the host offered: "
                                  "VFIO_DEVICE_SET_IRQS 0000:01:00.0 MSI-X enable with eventfds for vectors 0..4: "
                                  "Device or resource busy (EBUSY)"),
                  std::string::npos)
            << logs.all();
        TearDown();
    }
    {
        // The host offers 4 of 8, then 2 of those 4.
        test::LogCapture logs;
        open(c, noDynamicMsix());
        enableDecode();
        scripted->nth = 2;
        scripted->answer = 2;
        cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        EXPECT_EQ(device->irqMode(), IrqMode::Intx);
        EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
        EXPECT_NE(logs.all().find("00:01.0: enabling MSI-X: VFIO_DEVICE_SET_IRQS 0000:01:00.0 MSI-X: the host offered 4 "
                                  "of 8 vectors, then 2 of those 4 on the retry: No space left on device (ENOSPC)"),
                  std::string::npos)
            << logs.all();
        TearDown();
    }
    {
        // No vector at all: ENOSPC from the first call.
        test::LogCapture logs;
        c.hostIrqVectors = 0;
        open(c, noDynamicMsix());
        enableDecode();
        cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        EXPECT_EQ(device->irqMode(), IrqMode::Intx);
        EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
        EXPECT_NE(logs.all().find("00:01.0: enabling MSI-X: VFIO_DEVICE_SET_IRQS 0000:01:00.0 MSI-X enable with eventfds "
                                  "for vectors 0..8: No space left on device (ENOSPC)"),
                  std::string::npos)
            << logs.all();
    }
}

// ------------------------------------------------------------------ item 10: extended caps, ROM

// Extended capabilities: those Conduit supports stay (AER, vendor-specific, DSN), the others are
// unlinked (ACS, ATS); a hidden first one leaves a null capability at 0x100 pointing on.
TEST_P(KernelBehaviour, ExtendedCapabilitiesAreFilteredAndRelinked) {
    hostsim::SimDeviceConfig c;
    c.pcieCaps = true;
    std::vector<uint8_t> aer(0x44, 0);
    aer[0x08 - 4] = 0x30;  // uncorrectable error mask: a recognisable byte
    c.extCaps = {{PCI_EXT_CAP_ID_ACS, 1, 0x100, {0x1f, 0x00, 0x00, 0x00}},
                 {PCI_EXT_CAP_ID_ERR, 2, 0x140, aer},
                 {PCI_EXT_CAP_ID_ATS, 1, 0x190, {0x20, 0x00, 0x00, 0x00}},
                 {PCI_EXT_CAP_ID_VNDR, 1, 0x1a0, {0x01, 0x00, 0x01, 0x01}},
                 {PCI_EXT_CAP_ID_DSN, 1, 0x1c0, {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}}};
    open(c);
    EXPECT_EQ(device->configSize(), 4096u);
    EXPECT_THAT(device->extendedCapabilities(), ::testing::ElementsAre(0x140, 0x1a0, 0x1c0));
    // The chain as the guest walks it (pci_find_ext_capability()).
    std::vector<std::pair<uint32_t, uint32_t>> chain;  // (offset, id)
    for (uint32_t at = 0x100; at;) {
        const uint32_t h = cfgRead(at);
        chain.push_back({at, PCI_EXT_CAP_ID(h)});
        at = PCI_EXT_CAP_NEXT(h);
        ASSERT_LT(chain.size(), 10u);
    }
    EXPECT_THAT(chain, ::testing::ElementsAre(std::pair<uint32_t, uint32_t>{0x100, 0},  // null capability
                                              std::pair<uint32_t, uint32_t>{0x140, PCI_EXT_CAP_ID_ERR},
                                              std::pair<uint32_t, uint32_t>{0x1a0, PCI_EXT_CAP_ID_VNDR},
                                              std::pair<uint32_t, uint32_t>{0x1c0, PCI_EXT_CAP_ID_DSN}));
    EXPECT_EQ(cfgRead(0x100), 0x14000000u) << "ID 0, version 0, next 0x140";
    EXPECT_EQ(cfgRead(0x140), 0x1a020001u) << "AER keeps its version; next rewritten from 0x190 to 0x1a0";
    EXPECT_EQ(cfgRead(0x1a0), 0x1c01000bu);
    EXPECT_EQ(cfgRead(0x1c0), 0x00010003u) << "the last one ends the chain";
    // The kept capabilities' registers are the device's.
    EXPECT_EQ(cfgRead(0x140 + PCI_ERR_UNCOR_MASK), 0x30u);
    EXPECT_EQ(cfgRead(0x1c0 + 4), 0x44332211u);
    EXPECT_EQ(cfgRead(0x1a0 + 4), 0x01010001u);
    // A header write changes nothing the guest sees (read-only, and the next pointer emulated).
    cfgWrite(0x140, 0xffffffff);
    EXPECT_EQ(cfgRead(0x140), 0x1a020001u);

    // First capability kept: 0x100 is it, with its next pointer rewritten past the hidden one.
    TearDown();
    c.extCaps = {{PCI_EXT_CAP_ID_ERR, 2, 0x100, aer},
                 {PCI_EXT_CAP_ID_ACS, 1, 0x148, {0x1f, 0, 0, 0}},
                 {PCI_EXT_CAP_ID_VNDR, 1, 0x160, {0x01, 0x00, 0x01, 0x01}}};
    open(c);
    EXPECT_THAT(device->extendedCapabilities(), ::testing::ElementsAre(0x100, 0x160));
    EXPECT_EQ(cfgRead(0x100), 0x16020001u);
    EXPECT_EQ(cfgRead(0x160), 0x0001000bu);
    EXPECT_EQ(cfgRead(0x100 + PCI_ERR_UNCOR_MASK), 0x30u);
}

// The PASID capability a device behind the vSMMU gets (issue 13): built from the host's
// max_pasid_log2 and EXEC/PRIV, linked at the end of the chain, its control register the guest's.
TEST_P(KernelBehaviour, PasidCapabilityForTheVsmmu) {
    hostsim::SimDeviceConfig c;
    c.pcieCaps = true;
    std::vector<uint8_t> aer(0x44, 0);
    c.extCaps = {{PCI_EXT_CAP_ID_ERR, 2, 0x100, aer},
                 {PCI_EXT_CAP_ID_DSN, 1, 0x1c0, {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}}};
    open(c);
    EXPECT_FALSE(device->pasidCapability());
    ASSERT_TRUE(device->addPasidCapability(5, /*exec=*/true, /*priv=*/false).ok());
    ASSERT_EQ(device->pasidCapability(), 0xff8);
    EXPECT_THAT(device->extendedCapabilities(), ::testing::ElementsAre(0x100, 0x1c0, 0xff8));
    EXPECT_EQ(cfgRead(0x1c0), 0xff810003u) << "DSN now points on to PASID";
    EXPECT_EQ(cfgRead(0xff8), 0x0001001bu) << "PASID, version 1, last";
    EXPECT_EQ(cfgRead(0xff8 + PCI_PASID_CAP, 2), 0x0502u) << "Max PASID Width 5, Exec";
    EXPECT_EQ(cfgRead(0xff8 + PCI_PASID_CTRL, 2), 0u);
    // The guest enables PASID with every bit: Priv is not supported, so it stays clear.
    cfgWrite(0xff8 + PCI_PASID_CTRL, PCI_PASID_CTRL_ENABLE | PCI_PASID_CTRL_EXEC | PCI_PASID_CTRL_PRIV, 2);
    EXPECT_EQ(cfgRead(0xff8 + PCI_PASID_CTRL, 2), uint32_t(PCI_PASID_CTRL_ENABLE | PCI_PASID_CTRL_EXEC));
    EXPECT_EQ(device->pasidControl(), PCI_PASID_CTRL_ENABLE | PCI_PASID_CTRL_EXEC);
    EXPECT_EQ(simDev().configByte(0xff8 + PCI_PASID_CTRL), 0) << "nothing reaches the function";
    cfgWrite(0xff8 + PCI_PASID_CAP, 0xffff, 2);  // read-only
    EXPECT_EQ(cfgRead(0xff8 + PCI_PASID_CAP, 2), 0x0502u);
    // A function-level reset clears the enable.
    ASSERT_TRUE(device->functionLevelReset().ok());
    EXPECT_EQ(device->pasidControl(), 0u);
    EXPECT_EQ(device->addPasidCapability(5, true, false).error().code(), EEXIST);

    // A function with its own PASID capability (vfio-pci hides it from a real guest's view, the
    // sim shows it): ours takes its place, limited to what the function says (width 8, Exec).
    TearDown();
    c.extCaps = {{PCI_EXT_CAP_ID_ERR, 2, 0x100, aer}, {PCI_EXT_CAP_ID_PASID, 1, 0x148, {0x02, 0x08, 0x00, 0x00}}};
    open(c);
    EXPECT_THAT(device->extendedCapabilities(), ::testing::ElementsAre(0x100));
    ASSERT_TRUE(device->addPasidCapability(20, true, true).ok());
    EXPECT_EQ(device->pasidCapability(), 0x148);
    EXPECT_EQ(cfgRead(0x100), 0x14820001u);
    EXPECT_EQ(cfgRead(0x148), 0x0001001bu);
    EXPECT_EQ(cfgRead(0x148 + PCI_PASID_CAP, 2), 0x0802u);

    // Conventional config space: no room for an extended capability.
    TearDown();
    open(hostsim::SimDeviceConfig{});
    EXPECT_EQ(device->addPasidCapability(5, true, true).error().code(), EOPNOTSUPP);
    EXPECT_FALSE(device->pasidCapability());
}

// The expansion ROM: the ROM BAR sizes as the region's size, decodes only with its enable bit and
// memory decode, reads the ROM's bytes (0xff past the image) and ignores writes.
TEST_P(KernelBehaviour, RomBarSizesEnablesAndReadsTheRom) {
    hostsim::SimDeviceConfig c;
    c.rom.assign(2048, 0);
    for (size_t i = 0; i < c.rom.size(); ++i) c.rom[i] = static_cast<uint8_t>(i * 13 + 1);
    c.rom[0] = 0x55, c.rom[1] = 0xaa, c.rom[2] = 4;
    c.rom[0x18] = 0x1c, c.rom[0x19] = 0;  // PCIR at 0x1c
    std::memcpy(&c.rom[0x1c], "PCIR", 4);
    c.rom[0x1c + 16] = 4, c.rom[0x1c + 17] = 0;  // 4 x 512 bytes
    c.rom[0x1c + 21] = 0x80;                     // last image
    c.romBarSize = 0x10000;
    open(c);
    EXPECT_EQ(device->romSize(), 0x10000u);
    // Sizing: all ones (enable clear) reads back the size mask.
    cfgWrite(PCI_ROM_ADDRESS, PCI_ROM_ADDRESS_MASK);
    EXPECT_EQ(cfgRead(PCI_ROM_ADDRESS), 0xffff0000u);
    cfgWrite(PCI_ROM_ADDRESS, 0xc0400000);
    EXPECT_EQ(cfgRead(PCI_ROM_ADDRESS), 0xc0400000u);
    enableDecode();
    EXPECT_FALSE(device->activeBar(kRomBar)) << "enable bit clear";
    cfgWrite(PCI_ROM_ADDRESS, 0xc0400000 | PCI_ROM_ADDRESS_ENABLE);
    EXPECT_EQ(cfgRead(PCI_ROM_ADDRESS), 0xc0400001u);
    ASSERT_EQ(device->activeBar(kRomBar), 0xc0400000u);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0400000, 0x10000}));
    EXPECT_EQ(mmioRead(0xc0400000, 2), 0xaa55u);
    uint32_t want;
    std::memcpy(&want, &c.rom[0x123 & ~3u], 4);
    EXPECT_EQ(mmioRead(0xc0400000 + (0x123 & ~3u)), want);
    EXPECT_EQ(mmioRead(0xc0400000 + 0x7ff, 1), c.rom[0x7ff]);
    EXPECT_EQ(mmioRead(0xc0400000 + 0x800), 0xffffffffu) << "past the image";
    EXPECT_EQ(mmioRead(0xc0400000 + 0xfffc), 0xffffffffu);
    mmioWrite(0xc0400010, 0);  // dropped
    EXPECT_EQ(mmioRead(0xc0400010, 1), c.rom[0x10]);
    EXPECT_EQ(device->stats().trappedWrites[kRomBar], 1u);
    // Memory decode off, or enable bit clear: the ROM is gone from the bus.
    cfgWrite(PCI_COMMAND, 0, 2);
    EXPECT_FALSE(device->activeBar(kRomBar));
    cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    EXPECT_EQ(device->activeBar(kRomBar), 0xc0400000u);
    cfgWrite(PCI_ROM_ADDRESS, 0xc0400000);
    EXPECT_FALSE(device->activeBar(kRomBar));
    EXPECT_THAT(busRanges(), ::testing::Not(::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0400000, 0x10000})));
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelBehaviour, ::testing::Values(vfio::BackendKind::Type1, vfio::BackendKind::Iommufd),
                         [](const auto& info) { return std::string(vfio::backendKindName(info.param)); });

}  // namespace
