// The PCI core (config space masks, root with 0xCF8/0xCFC and ECAM, BAR allocator) and the VFIO
// passthrough device against the simulated host, with fake guest-mapper / MSI / INTx services that
// record what the device asks for. Both VFIO backends.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "base/event_fd.h"
#include "devices/bus.h"
#include "devices/pci/bar_allocator.h"
#include "devices/pci/config_space.h"
#include "devices/pci/pci_root.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/common/forwarding_host.h"
#include "tests/common/log_capture.h"
#include "tests/common/passthrough_fakes.h"
#include "tests/hostsim/sim_host.h"
#include "tests/unit/devices/passthrough_fixture.h"
#include "vfio/backend.h"

using namespace conduit;
using namespace conduit::devices;
using namespace conduit::devices::pci;
using conduit::devices::vfio_pci::IrqMode;
using conduit::test::LogCapture;
using conduit::test::signalled;

namespace {

void drain(int fd) {
    uint64_t v;
    while (signalled(fd) && ::read(fd, &v, 8) == 8) {}
}

// Counts VFIO_DEVICE_SET_IRQS on the way to the simulated host.
struct CountingHost final : test::ForwardingHost {
    size_t setIrqs = 0;
    using ForwardingHost::ForwardingHost;
    Result<int> ioctl(int fd, unsigned long req, uintptr_t arg) override {
        if (req == VFIO_DEVICE_SET_IRQS) ++setIrqs;
        return ForwardingHost::ioctl(fd, req, arg);
    }
};

}  // namespace

// ------------------------------------------------------------------ core

TEST(PciConfigSpace, EmulatedBitsAndWriteMasks) {
    ConfigSpace c;
    c.set16(0x04, 0x0000);
    c.emulate(0x04, 2, 0x0007);     // low three bits from the shadow
    c.allowWrite(0x04, 2, 0x0006);  // of which the guest may change two
    std::array<uint8_t, 2> dev{0xff, 0xff};
    c.mergeRead(0x04, dev);
    EXPECT_EQ(dev[0], 0xf8);  // emulated bits 0-2 come from the shadow (0)
    EXPECT_EQ(dev[1], 0xff);
    const std::array<uint8_t, 2> w{0xff, 0xff};
    c.applyWrite(0x04, w);
    EXPECT_EQ(c.get16(0x04), 0x0006);  // bit 0 is read-only
    EXPECT_TRUE(c.fullyEmulated(0x04, 0) );
    EXPECT_FALSE(c.fullyEmulated(0x04, 2));
}

TEST(PciRoot, HostBridgeThroughPortsAndEcam) {
    PciRoot root;
    auto ports = root.configPorts();
    auto ecam = root.ecam();
    auto out32 = [&](uint64_t off, uint32_t v) { ports->write(off, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4)); };
    auto in = [&](uint64_t off, size_t n) {
        uint32_t v = 0;
        ports->read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
        return v;
    };
    out32(0, 0x80000000u);  // 00:00.0 reg 0
    EXPECT_EQ(in(4, 4), 0x00081b36u);
    EXPECT_EQ(in(6, 1), 0x08u);        // byte at 0xCFE = device id low byte
    EXPECT_EQ(in(6, 2), 0x0008u);
    out32(0, 0x80000008u);
    EXPECT_EQ(in(4, 4) >> 8, 0x060000u);  // class: host bridge
    out32(0, 0x80000000u | (5 << 11));  // 00:05.0: absent
    EXPECT_EQ(in(4, 4), 0xffffffffu);
    out32(0, 0x00000000u);              // enable bit clear
    EXPECT_EQ(in(4, 4), 0xffffffffu);
    // A byte write to 0xCF8 does not latch the address.
    out32(0, 0x80000000u);
    uint8_t b = 0x10;
    ports->write(0, std::span<const uint8_t>(&b, 1));
    EXPECT_EQ(in(0, 4), 0x80000000u);
    uint32_t v = 0;
    ecam->read(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    EXPECT_EQ(v, 0x00081b36u);
    ecam->read(1 << 15, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    EXPECT_EQ(v, 0xffffffffu);
    ecam->read(1 << 20, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));  // bus 1
    EXPECT_EQ(v, 0xffffffffu);
}

TEST(PciBarAllocator, NaturallyAlignedAndSkipsReserved) {
    BarAllocator a("mmio32", {0xc0000000, 0x20000000});
    a.exclude({0xc0000000, 0x100000});  // e.g. a reserved IOVA range reported by the IOMMU
    EXPECT_EQ(a.allocate(0x100000, "a").value(), 0xc0100000u);
    EXPECT_EQ(a.allocate(0x1000, "b").value(), 0xc0200000u);
    EXPECT_EQ(a.allocate(0x400000, "c").value(), 0xc0400000u);
    EXPECT_FALSE(a.allocate(0x3000, "odd").ok());
    EXPECT_FALSE(a.allocate(0x40000000, "huge").ok());
}

// ------------------------------------------------------------------ passthrough device

// The device and a peer in another IOMMU group (test::simHostWithPeer), behind a CountingHost.
class PassthroughDevice : public test::PassthroughFixture {
protected:
    static constexpr const char* kBdf = test::kDeviceBdf;
    static constexpr const char* kPeer = test::kPeerBdf;
    static constexpr const char* kSibling = "0000:01:00.1";  // on kBdf's bus, when `sibling` is set

    void open(hostsim::SimDeviceConfig cfg = {}) {
        sim = test::simHostWithPeer(cfg);
        if (sibling) {
            sibling->bdf = kSibling;
            sim->addDevice(*sibling);
        }
        baseFds = sim->openFdCount();
        host = std::make_unique<CountingHost>(*sim);
        ASSERT_NO_FATAL_FAILURE(openBackend(*host));
        auto p = backend->openDevice(kPeer);  // a second device in the address space for P2P
        ASSERT_TRUE(p.ok()) << p.error().describe();
        peerDev = std::move(p).value();
        baseMappings = sim->dmaMappingCount();
        createDevice(kBdf);
    }
    // kBdf without a function reset (with PCIe capabilities, so the guest can still ask for an FLR),
    // and kSibling, another function on its bus, in IOMMU group `siblingGroup`.
    void openWithoutFunctionReset(unsigned siblingGroup, bool siblingHasReset) {
        hostsim::SimDeviceConfig c;
        c.pcieCaps = true;
        c.resetSupported = false;
        sibling = hostsim::SimDeviceConfig{};
        sibling->group = siblingGroup;
        sibling->resetSupported = siblingHasReset;
        open(c);
    }
    // A device with a function reset the guest can ask for (PCIe capabilities), in use: decoding,
    // MSI-X on. What a guest FLR takes down.
    void openInUseWithFlr() {
        hostsim::SimDeviceConfig c;
        c.pcieCaps = true;
        open(c);
        enableDecode();
        programMsixEntries(2);
        cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        ASSERT_EQ(device->irqMode(), IrqMode::Msix);
    }
    // The guest sets Initiate Function Level Reset in the PCIe capability (at 0x70).
    void guestFlr() { cfgWrite(0x70 + PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR, 2); }
    void TearDown() override {
        device.reset();
        peerDev.reset();
        PassthroughFixture::TearDown();
        host.reset();
    }

    // The guest writes PMCSR's power state (3: D3hot) in the sim's PM capability (SimDeviceConfig::pmCap).
    void setPowerState(uint32_t state) {
        constexpr uint32_t kPm = 0xc0;
        cfgWrite(kPm + PCI_PM_CTRL, state, 2);
        EXPECT_EQ(cfgRead(kPm + PCI_PM_CTRL, 2) & PCI_PM_CTRL_STATE_MASK, state);
    }
    // The peer's DMA to BAR2 (at kBar2Address) + `offset` lands there, without a fault.
    void expectPeerDmaLands(uint32_t offset, uint32_t word) {
        sim->clearDmaFaults();
        EXPECT_TRUE(sim->dmaWrite(*sim->device(kPeer), kBar2Address + offset, &word, 4));
        EXPECT_EQ(std::memcmp(sim->device(kBdf)->barMemory(2) + offset, &word, 4), 0);
        EXPECT_TRUE(sim->dmaFaults().empty());
    }

    std::vector<uint64_t> busBases() {
        std::vector<uint64_t> out;
        for (auto& e : mmio.entries()) out.push_back(e.base);
        return out;
    }

    std::unique_ptr<CountingHost> host;
    std::unique_ptr<vfio::VfioDevice> peerDev;
    size_t baseFds = 0, baseMappings = 0;
    std::optional<hostsim::SimDeviceConfig> sibling;  // another function on kBdf's bus (not opened)
};

TEST_P(PassthroughDevice, ResetAtStartAndHeaderPassthrough) {
    open();
    EXPECT_EQ(sim->device(kBdf)->resetCount(), 2u) << "the kernel's at open, then Conduit's";
    EXPECT_EQ(device->stats().resets, 1u);
    EXPECT_EQ(cfgRead(0), 0x11e81234u);
    EXPECT_EQ(cfgRead(PCI_INTERRUPT_PIN, 1), 1u);
    EXPECT_EQ(cfgRead(PCI_INTERRUPT_LINE, 1), 17u);
    cfgWrite(PCI_INTERRUPT_LINE, 5, 1);  // emulated, writable
    EXPECT_EQ(cfgRead(PCI_INTERRUPT_LINE, 1), 5u);
    cfgWrite(PCI_INTERRUPT_PIN, 3, 1);   // read-only
    EXPECT_EQ(cfgRead(PCI_INTERRUPT_PIN, 1), 1u);
    // COMMAND reaches the device (bus mastering is what its DMA engine checks).
    cfgWrite(PCI_COMMAND, PCI_COMMAND_MASTER, 2);
    EXPECT_EQ(sim->device(kBdf)->command() & PCI_COMMAND_MASTER, PCI_COMMAND_MASTER);
    EXPECT_EQ(cfgRead(PCI_COMMAND, 2) & PCI_COMMAND_MASTER, PCI_COMMAND_MASTER);
}

TEST_P(PassthroughDevice, BarSizing) {
    open();
    cfgWrite(PCI_BASE_ADDRESS_0, 0xffffffff);
    EXPECT_EQ(cfgRead(PCI_BASE_ADDRESS_0), 0xfff00000u);  // 1 MiB, 32-bit, not prefetchable
    cfgWrite(PCI_BASE_ADDRESS_1, 0xffffffff);
    EXPECT_EQ(cfgRead(PCI_BASE_ADDRESS_1), 0u);           // absent
    cfgWrite(PCI_BASE_ADDRESS_2, 0xffffffff);
    cfgWrite(PCI_BASE_ADDRESS_3, 0xffffffff);
    EXPECT_EQ(cfgRead(PCI_BASE_ADDRESS_2), 0xfff0000cu);  // 1 MiB, 64-bit, prefetchable
    EXPECT_EQ(cfgRead(PCI_BASE_ADDRESS_3), 0xffffffffu);
    cfgWrite(PCI_ROM_ADDRESS, 0xffffffff);
    EXPECT_EQ(cfgRead(PCI_ROM_ADDRESS), 0u);              // no ROM
    // Sizing with decode on never maps the sizing pattern.
    cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(mmio.entries().empty());
}

TEST_P(PassthroughDevice, BarEnableMapsAreasTrapsRestAndP2P) {
    open();
    cfgWrite(PCI_BASE_ADDRESS_0, 0xc0000000);
    cfgWrite(PCI_BASE_ADDRESS_2, 0xc0100000);
    EXPECT_TRUE(mapper.live.empty()) << "decode is off";
    cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    // BAR2: everything but the MSI-X table/PBA pages is a guest mapping; the rest is trapped.
    ASSERT_EQ(mapper.live.size(), 1u);
    EXPECT_EQ(mapper.live.begin()->first, 0xc0100000u);
    EXPECT_EQ(mapper.live.begin()->second.size, 0xfe000u);
    EXPECT_THAT(busBases(), ::testing::ElementsAre(0xc0000000u, 0xc01fe000u));
    // The trapped register BAR forwards to the device: edu ident and liveness.
    EXPECT_EQ(mmioRead(0xc0000000), 0x010000edu);
    mmioWrite(0xc0000004, 0x12345678);
    EXPECT_EQ(mmioRead(0xc0000004), ~0x12345678u);
    // The guest mapping is the device's BAR memory.
    static_cast<uint8_t*>(mapper.live.begin()->second.host)[0x10] = 0x5a;
    EXPECT_EQ(sim->device(kBdf)->barMemory(2)[0x10], 0x5a);
    // P2P: the BAR area is in the IOMMU at its guest address; the peer's DMA reaches it.
    EXPECT_EQ(sim->dmaMappingCount(), baseMappings + 1);
    uint32_t word = 0xfeedf00d;
    ASSERT_TRUE(sim->dmaWrite(*sim->device(kPeer), 0xc0100100, &word, 4));
    EXPECT_EQ(std::memcmp(sim->device(kBdf)->barMemory(2) + 0x100, &word, 4), 0);
    auto s = device->stats();
    EXPECT_EQ(s.memslots, 1u);
    EXPECT_EQ(s.p2pMappings, 1u);
    EXPECT_EQ(s.trappedRanges, 2u);
    EXPECT_EQ(s.trappedReads[0], 2u);
}

TEST_P(PassthroughDevice, BarRelocationMovesSlotTrapAndDmaMapping) {
    open();
    enableDecode();
    cfgWrite(PCI_BASE_ADDRESS_2, 0xc0400000);  // moved while decoding (Linux would disable first; both work)
    ASSERT_EQ(mapper.live.size(), 1u);
    EXPECT_EQ(mapper.live.begin()->first, 0xc0400000u);
    EXPECT_THAT(busBases(), ::testing::ElementsAre(0xc0000000u, 0xc04fe000u));
    EXPECT_EQ(sim->dmaMappingCount(), baseMappings + 1);
    uint32_t word = 0x600df00d;
    EXPECT_TRUE(sim->dmaWrite(*sim->device(kPeer), 0xc0400200, &word, 4));
    EXPECT_EQ(std::memcmp(sim->device(kBdf)->barMemory(2) + 0x200, &word, 4), 0);
    sim->clearDmaFaults();
    EXPECT_FALSE(sim->dmaWrite(*sim->device(kPeer), 0xc0100200, &word, 4)) << "the old address is unmapped";
    EXPECT_EQ(sim->dmaFaults().size(), 1u);
    EXPECT_EQ(device->stats().relocations, 1u);
    // Decode off: everything goes.
    cfgWrite(PCI_COMMAND, 0, 2);
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(mmio.entries().empty());
    EXPECT_EQ(sim->dmaMappingCount(), baseMappings);
}

// The guest puts the device in D3hot and back in D0 through the PM capability (the sim's, at 0xc0).
// vfio-pci revokes the device's dma-bufs at D3hot (vfio_pm_config_write() ->
// vfio_lock_and_set_power_state()) and iommufd's mapping of a revoked buf stays dead after D0
// (iopt_revoke_notify()): P2P must be mapped afresh at D0 for the peer's DMA to land.
TEST_P(PassthroughDevice, P2PSurvivesD3hotAndBackToD0) {
    hostsim::SimDeviceConfig c;
    c.pmCap = true;
    open(c);
    enableDecode();
    ASSERT_EQ(cfgRead(PCI_CAPABILITY_LIST, 1), 0xc0u) << "the PM capability is passed through";
    ASSERT_EQ(device->stats().p2pMappings, 1u);
    setPowerState(3);  // D3hot
    EXPECT_EQ(device->stats().p2pMappings, 0u) << "the P2P mapping is down while in D3hot";
    setPowerState(0);  // D0
    EXPECT_EQ(device->stats().p2pMappings, 1u);
    EXPECT_EQ(sim->dmaMappingCount(), baseMappings + 1);
    expectPeerDmaLands(0x300, 0x0dd0beef);
}

// A BAR the guest enables while the device is in D3hot (whose dma-buf vfio-pci would export
// revoked: MAP_FILE ENODEV) is DMA-mapped when the device is back in D0.
TEST_P(PassthroughDevice, P2PForABarEnabledInD3hotIsMappedAtD0) {
    hostsim::SimDeviceConfig c;
    c.pmCap = true;
    open(c);
    setPowerState(3);  // D3hot
    enableDecode();
    EXPECT_EQ(mapper.live.size(), 1u) << "the BAR is a guest mapping";
    EXPECT_EQ(device->stats().p2pMappings, 0u);
    setPowerState(0);  // D0
    EXPECT_EQ(device->stats().p2pMappings, 1u);
    expectPeerDmaLands(0x400, 0x5eed5eed);
}

TEST_P(PassthroughDevice, SparseMmapWithoutMsixMappable) {
    hostsim::SimDeviceConfig c;
    c.msixMappable = false;
    c.bars[2].sparseAreas = {{0, 0xfe000}};
    open(c);
    enableDecode();
    ASSERT_EQ(mapper.live.size(), 1u);
    EXPECT_EQ(mapper.live.begin()->second.size, 0xfe000u);
    EXPECT_THAT(busBases(), ::testing::ElementsAre(0xc0000000u, 0xc01fe000u));
}

TEST_P(PassthroughDevice, CapabilityChainFiltered) {
    hostsim::SimDeviceConfig c;
    c.pcieCaps = true;  // MSI 0x40 -> MSI-X 0x60 -> SSVID 0xb0 -> PCIe 0x70
    open(c);
    EXPECT_TRUE(cfgRead(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
    std::vector<uint32_t> chain, ids;
    for (uint32_t at = cfgRead(PCI_CAPABILITY_LIST, 1); at; at = cfgRead(at + 1, 1)) {
        chain.push_back(at);
        ids.push_back(cfgRead(at, 1));
        ASSERT_LT(chain.size(), 10u);
    }
    EXPECT_THAT(chain, ::testing::ElementsAre(0x40u, 0x60u, 0x70u));
    EXPECT_THAT(ids, ::testing::ElementsAre(PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, PCI_CAP_ID_EXP));
}

// On Conduit's root bus there is no PCIe link: an endpoint is shown as a root-complex integrated
// endpoint (type 9) whose link registers read 0 and ignore writes (QEMU does the same).
TEST_P(PassthroughDevice, PcieEndpointIsARootComplexIntegratedEndpointWithoutALink) {
    hostsim::SimDeviceConfig c;
    c.pcieCaps = true;
    open(c);
    ASSERT_EQ(sim->device(kBdf)->configByte(0x82), 0x11) << "the simulated endpoint has a link";
    EXPECT_EQ((cfgRead(0x70 + PCI_EXP_FLAGS, 2) & PCI_EXP_FLAGS_TYPE) >> 4, unsigned{PCI_EXP_TYPE_RC_END});
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_FLAGS, 2) & PCI_EXP_FLAGS_VERS, 2u) << "the version stays the device's";
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_LNKCAP), 0u);
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_LNKSTA, 2), 0u);
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_LNKCAP2), 0u);
    cfgWrite(0x70 + PCI_EXP_LNKCTL, PCI_EXP_LNKCTL_ASPMC | PCI_EXP_LNKCTL_RL, 2);
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_LNKCTL, 2), 0u);
    EXPECT_EQ(sim->device(kBdf)->configByte(0x80), 0) << "a link-control write reached the device";
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_DEVCAP) & PCI_EXP_DEVCAP_FLR, unsigned{PCI_EXP_DEVCAP_FLR}) << "DEVCAP is the device's";
}

TEST_P(PassthroughDevice, MsixMaskingEditsRoutesWithoutSetIrqs) {
    open();
    enableDecode();
    EXPECT_EQ(device->irqMode(), IrqMode::Intx);
    programMsixEntries(2);  // unmasked
    const size_t before = host->setIrqs;
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    EXPECT_EQ(host->setIrqs, before + 3) << "INTx off, MSI-X on with vector 0, then vector 1: the two in use";
    ASSERT_EQ(msi.live.size(), 2u) << "routes for the 2 unmasked entries of 8 (the others are masked at reset)";
    EXPECT_EQ(sim->device(kBdf)->allocatedVectors(), 2u);
    EXPECT_EQ(msi.live[1]->msg, (MsiMessage{0xfee00000, 0x41}));
    EXPECT_FALSE(msi.live[0]->masked());
    EXPECT_EQ(sim->device(kBdf)->activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX));

    const size_t armed = host->setIrqs;
    mmioWrite(tableAddr() + 12, 1);  // mask vector 0
    EXPECT_TRUE(msi.live[0]->masked());
    mmioWrite(0xc0000070, 0);        // the device fires vector 0 while masked
    EXPECT_TRUE(signalled(msi.live[0]->eventFd()));
    EXPECT_EQ(mmioRead(tableAddr() + 0x1000) & 1, 1u) << "PBA shows vector 0 pending";
    mmioWrite(tableAddr() + 12, 0);  // unmask: delivered
    EXPECT_FALSE(msi.live[0]->masked());
    EXPECT_EQ(msi.live[0]->delivered, 1u);
    EXPECT_EQ(mmioRead(tableAddr() + 0x1000) & 1, 0u);
    // Function mask masks every vector, again by route.
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);
    EXPECT_TRUE(msi.live[1]->masked());
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_FALSE(msi.live[1]->masked());
    EXPECT_EQ(host->setIrqs, armed) << "no VFIO_DEVICE_SET_IRQS for masking";
    // Re-targeting an entry updates its route.
    mmioWrite(tableAddr() + 16 + 8, 0x51);
    EXPECT_EQ(msi.live[1]->msg.data, 0x51u);
    // Disable: MSI-X off, INTx back.
    cfgWrite(kMsix + PCI_MSIX_FLAGS, 0, 2);
    EXPECT_EQ(device->irqMode(), IrqMode::Intx);
    EXPECT_TRUE(msi.live.empty());
    EXPECT_EQ(sim->device(kBdf)->activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
}

// On the root bus the function's messages carry its requester id (bus << 8 | devfn) as their
// device id (what a GICv3 ITS needs); off it they carry none (the tests above).
TEST_P(PassthroughDevice, MessagesCarryTheRequesterIdOnceTheRootPlacedTheFunction) {
    open();
    enableDecode();
    PciRoot root;
    auto devfn = root.addDevice(device, 3);
    ASSERT_TRUE(devfn.ok()) << devfn.error().describe();
    ASSERT_EQ(*devfn, 0x18);
    programMsixEntries(2);
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    ASSERT_EQ(msi.live.size(), 2u);
    EXPECT_EQ(msi.live[1]->msg, (MsiMessage{0xfee00000, 0x41, 0x18}));
    mmioWrite(tableAddr() + 8, 0x50);  // re-targeted: still from 00:03.0
    EXPECT_EQ(msi.live[0]->msg, (MsiMessage{0xfee00000, 0x50, 0x18}));
    cfgWrite(kMsix + PCI_MSIX_FLAGS, 0, 2);
    cfgWrite(kMsi + PCI_MSI_ADDRESS_LO, 0xfee00000);
    cfgWrite(kMsi + PCI_MSI_DATA_64, 0x60, 2);
    cfgWrite(kMsi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE, 2);
    ASSERT_EQ(msi.live.size(), 1u);
    EXPECT_EQ(msi.live[0]->msg, (MsiMessage{0xfee00000, 0x60, 0x18})) << "MSI too";
    root.removeDevice(*devfn);
}

TEST_P(PassthroughDevice, MsiMultipleVectorsPerVectorMask) {
    open();
    enableDecode();
    EXPECT_EQ((cfgRead(kMsi + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_QMASK) >> 1, 2u) << "4 vectors capable";
    cfgWrite(kMsi + PCI_MSI_ADDRESS_LO, 0xfee00000);
    cfgWrite(kMsi + PCI_MSI_ADDRESS_HI, 0);
    cfgWrite(kMsi + PCI_MSI_DATA_64, 0x60, 2);
    cfgWrite(kMsi + PCI_MSI_MASK_64, 0x4);  // vector 2 masked
    const size_t before = host->setIrqs;
    cfgWrite(kMsi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | (2 << 4), 2);  // 4 vectors
    EXPECT_EQ(device->irqMode(), IrqMode::Msi);
    EXPECT_EQ(host->setIrqs, before + 2);
    ASSERT_EQ(msi.live.size(), 4u);
    for (unsigned v = 0; v < 4; ++v) EXPECT_EQ(msi.live[v]->msg, (MsiMessage{0xfee00000, 0x60 + v}));
    EXPECT_TRUE(msi.live[2]->masked());
    EXPECT_FALSE(msi.live[1]->masked());
    const size_t armed = host->setIrqs;
    mmioWrite(0xc0000070, 2);  // fire vector 2 (masked)
    EXPECT_EQ(cfgRead(kMsi + PCI_MSI_MASK_64 + 4), 0x4u) << "pending bits";
    cfgWrite(kMsi + PCI_MSI_MASK_64, 0x1);
    EXPECT_FALSE(msi.live[2]->masked());
    EXPECT_TRUE(msi.live[0]->masked());
    EXPECT_EQ(msi.live[2]->delivered, 1u);
    EXPECT_EQ(host->setIrqs, armed);
    // Switching to MSI-X disables MSI first.
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    EXPECT_EQ(sim->device(kBdf)->activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX));
    // MSI-X off again (as a guest that shuts down): INTx now, but the stats keep the peak.
    cfgWrite(kMsix + PCI_MSIX_FLAGS, 0, 2);
    const auto st = device->stats();
    EXPECT_EQ(st.irqMode, IrqMode::Intx);
    EXPECT_EQ(st.vectors, 0u);
    EXPECT_EQ(st.peakIrqMode, IrqMode::Msix);
    EXPECT_EQ(st.peakVectors, 4u) << "MSI's 4 vectors";
}

TEST_P(PassthroughDevice, IntxResampleUnmasksDevice) {
    open();
    enableDecode();
    ASSERT_EQ(device->irqMode(), IrqMode::Intx);
    ASSERT_NE(intx.last, nullptr);
    EXPECT_EQ(intx.last->gsi(), 17u);
    auto* sd = sim->device(kBdf);
    mmioWrite(0xc0000060, 1);  // edu: raise interrupt
    EXPECT_TRUE(signalled(intx.last->triggerFd()));
    EXPECT_TRUE(sd->intxMasked()) << "automasked";
    drain(intx.last->triggerFd());
    // EOI while still asserted: KVM signals the resample fd, VFIO unmasks, the line fires again.
    ASSERT_TRUE(EventFd(UniqueFd(::dup(intx.last->resampleFd()))).signal().ok());
    sim->pump();
    EXPECT_TRUE(signalled(intx.last->triggerFd()));
    drain(intx.last->triggerFd());
    // The guest acks the device, then EOIs: unmasked and quiet.
    mmioWrite(0xc0000064, 1);
    ASSERT_TRUE(EventFd(UniqueFd(::dup(intx.last->resampleFd()))).signal().ok());
    sim->pump();
    EXPECT_FALSE(sd->intxMasked());
    EXPECT_FALSE(signalled(intx.last->triggerFd()));
}

TEST_P(PassthroughDevice, GuestFlrResetsDevice) {
    ASSERT_NO_FATAL_FAILURE(openInUseWithFlr());
    const unsigned resets = sim->device(kBdf)->resetCount();
    guestFlr();
    EXPECT_EQ(sim->device(kBdf)->resetCount(), resets + 1);
    EXPECT_EQ(device->irqMode(), IrqMode::Intx);
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(mmio.entries().empty());
    EXPECT_EQ(cfgRead(PCI_COMMAND, 2) & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), 0u);
    EXPECT_EQ(cfgRead(PCI_BASE_ADDRESS_0), 0u);
    EXPECT_EQ(cfgRead(0x70 + PCI_EXP_DEVCTL, 2) & PCI_EXP_DEVCTL_BCR_FLR, 0u);
}

// ------------------------------------------------------------------ reset (issue 14)

// The kernel opens the device with memory decode on (pci_enable_device()); Conduit turns decode and
// bus mastering off before anything else, so BARs placed by firmware stay dark until the guest sets
// COMMAND.MEM (docs/config.md), and what the guest reads is what the device decodes.
TEST_P(PassthroughDevice, DecodeIsOffUntilTheGuestTurnsItOn) {
    open();
    const uint16_t off = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    EXPECT_EQ(sim->device(kBdf)->command() & off, 0) << "the device decodes nothing";
    EXPECT_EQ(cfgRead(PCI_COMMAND, 2) & off, 0u) << "the guest reads that";
    device->programBar(0, 0xc0000000);  // firmware's placement before the guest runs
    device->programBar(2, 0xc0100000);
    EXPECT_FALSE(device->activeBar(0));
    EXPECT_FALSE(device->activeBar(2));
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(mmio.entries().empty());
    EXPECT_EQ(sim->dmaMappingCount(), baseMappings) << "no P2P mapping of a dark BAR";
    cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    EXPECT_EQ(mapper.live.size(), 1u);
    EXPECT_EQ(sim->device(kBdf)->command() & off, PCI_COMMAND_MEMORY);
}

// A guest FLR whose VFIO_DEVICE_RESET fails: the kernel left the device as it was, so Conduit
// puts back what it had taken down (decode, BAR mappings, MSI-X) and says so with ioctl and errno.
TEST_P(PassthroughDevice, FailedGuestFlrLeavesWhatTheGuestSeesAsItWas) {
    ASSERT_NO_FATAL_FAILURE(openInUseWithFlr());
    const auto slots = mapper.live.size();
    const auto ranges = busBases();
    const size_t dma = sim->dmaMappingCount();
    const unsigned resets = sim->device(kBdf)->resetCount();
    LogCapture logs;
    sim->failIoctl(VFIO_DEVICE_RESET, EIO);
    guestFlr();
    EXPECT_EQ(sim->device(kBdf)->resetCount(), resets);
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    EXPECT_EQ(sim->device(kBdf)->activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX));
    EXPECT_EQ(msi.live.size(), 2u) << "the two vectors in use";
    EXPECT_TRUE(cfgRead(kMsix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_ENABLE);
    EXPECT_EQ(mapper.live.size(), slots);
    EXPECT_EQ(busBases(), ranges);
    EXPECT_EQ(sim->dmaMappingCount(), dma);
    EXPECT_EQ(cfgRead(PCI_COMMAND, 2) & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), unsigned(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
    EXPECT_EQ(sim->device(kBdf)->command() & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    EXPECT_NE(logs.all().find("00:01.0: guest FLR: failed, the device and what the guest sees are as before: "
                              "VFIO_DEVICE_RESET 0000:01:00.0: Input/output error (EIO)"),
              std::string::npos)
        << logs.all();
    // The device still works: vectors are delivered, and a later FLR goes through.
    sim->clearInjectedFaults();
    mmioWrite(tableAddr() + 12, 0);
    mmioWrite(0xc0000070, 0);
    EXPECT_EQ(msi.live[0]->delivered + (signalled(msi.live[0]->eventFd()) ? 1 : 0), 1u);
    guestFlr();
    EXPECT_EQ(sim->device(kBdf)->resetCount(), resets + 1);
    EXPECT_EQ(device->irqMode(), IrqMode::Intx);
    EXPECT_TRUE(mapper.live.empty());
}

// No function reset, and a hot reset would reach a function in a group this VM does not hold:
// the FLR is refused before anything is touched.
TEST_P(PassthroughDevice, GuestFlrWithoutAnyResetIsRefusedWithNothingChanged) {
    LogCapture logs;
    openWithoutFunctionReset(9, /*siblingHasReset=*/true);
    EXPECT_EQ(device->stats().resets, 0u);
    enableDecode();
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    const auto slots = mapper.live.size();
    const size_t setIrqs = host->setIrqs;
    guestFlr();
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    EXPECT_EQ(host->setIrqs, setIrqs) << "interrupts were not touched";
    EXPECT_EQ(mapper.live.size(), slots);
    EXPECT_EQ(sim->device(kBdf)->command() & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    const std::string why = GetParam() == vfio::BackendKind::Type1
                                ? "the reset would also reset 0000:01:00.1 in IOMMU group 9, which this VM does not own; "
                                  "assign a device of that group to this VM"
                                : "the reset would also reset 0000:01:00.1, which this VM does not own (bound to another "
                                  "driver or another iommufd); assign it to this VM or unbind it";
    EXPECT_NE(logs.all().find("00:01.0: not reset at start: no function reset (VFIO_DEVICE_FLAGS_RESET clear), and no "
                              "hot reset: VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0: " + why + ": Operation not permitted (EPERM)"),
              std::string::npos)
        << logs.all();
    EXPECT_NE(logs.all().find("00:01.0: guest FLR: refused, nothing was changed: no function reset "
                              "(VFIO_DEVICE_FLAGS_RESET clear), and no hot reset: VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0: " +
                              why + ": Operation not permitted (EPERM)"),
              std::string::npos)
        << logs.all();
}

// No function reset (a GPU + audio pair): the hot reset takes its place at start and on the guest's
// FLR, and resets the other function of the bus too (here in the same group, not driven by the VM).
TEST_P(PassthroughDevice, NoFunctionResetMeansAHotResetAtStartAndOnGuestFlr) {
    openWithoutFunctionReset(7, /*siblingHasReset=*/false);
    EXPECT_EQ(device->stats().resets, 1u);
    EXPECT_EQ(sim->device(kBdf)->resetCount(), 1u);
    EXPECT_EQ(sim->device(kSibling)->resetCount(), 1u);
    enableDecode();
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    guestFlr();
    EXPECT_EQ(device->stats().resets, 2u);
    EXPECT_EQ(sim->device(kBdf)->resetCount(), 2u);
    EXPECT_EQ(sim->device(kSibling)->resetCount(), 2u);
    EXPECT_EQ(device->irqMode(), IrqMode::Intx);
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_EQ(cfgRead(PCI_COMMAND, 2) & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), 0u);
    EXPECT_EQ(sim->device(kBdf)->command() & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER), 0);
}

// The other function is driven by this VM: the guest's FLR of one must not reset the other.
TEST_P(PassthroughDevice, GuestFlrDoesNotHotResetAFunctionTheVmDrives) {
    openWithoutFunctionReset(7, /*siblingHasReset=*/false);
    auto other = backend->openDevice(kSibling);
    ASSERT_TRUE(other.ok()) << other.error().describe();
    enableDecode();
    const unsigned resets = sim->device(kSibling)->resetCount();
    LogCapture logs;
    guestFlr();
    EXPECT_EQ(sim->device(kSibling)->resetCount(), resets);
    EXPECT_EQ(mapper.live.size(), 1u) << "nothing was changed";
    EXPECT_NE(logs.all().find("00:01.0: guest FLR: refused, nothing was changed: no function reset "
                              "(VFIO_DEVICE_FLAGS_RESET clear), and no hot reset: VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0: "
                              "the reset would also reset 0000:01:00.1, which this VM drives; it is not reset behind its "
                              "driver's back: Device or resource busy (EBUSY)"),
              std::string::npos)
        << logs.all();
    device.reset();
    other->reset();
}

TEST_P(PassthroughDevice, TeardownLeavesNothing) {
    open();
    enableDecode();
    cfgWrite(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    ASSERT_GT(sim->mmapCount(), 0u);
    device.reset();
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(msi.live.empty());
    EXPECT_EQ(intx.live, 0);
    EXPECT_TRUE(mmio.entries().empty());
    EXPECT_EQ(sim->mmapCount(), 0u);
    EXPECT_EQ(sim->dmaMappingCount(), baseMappings);
    EXPECT_EQ(sim->device(kBdf)->activeIrqIndex(), uint32_t(VFIO_PCI_NUM_IRQS));
    peerDev.reset();
    backend.reset();
    EXPECT_EQ(sim->openFdCount(), baseFds);
    EXPECT_EQ(sim->iommufdObjectCount(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, PassthroughDevice, ::testing::Values(vfio::BackendKind::Type1, vfio::BackendKind::Iommufd),
                         [](const auto& info) { return std::string(vfio::backendKindName(info.param)); });
