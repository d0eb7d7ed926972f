// The whole nested chain as a guest driver drives it, against the simulated host's nested SMMU
// (tests/hostsim/sim_smmu_walk.h): the guest programs the VirtualSmmu through its MMIO registers
// and writes its stream table, CD tables and AArch64 stage-1 page tables into guest memory; the
// model forwards STEs and invalidations through NestedSmmuBinding to the host; the simulated
// device then DMAs (with and without a PASID, and its MSI) and the bytes land, or the fault comes
// back into the guest's EVTQ through the vEVENTQ, the binding's event thread and deliverEvents().
#include <gtest/gtest.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/common/passthrough_fakes.h"
#include "tests/hostsim/vmm_hosts.h"
#include "tests/unit/viommu/vsmmu_e2e_fixture.h"
#include "vmm/config.h"
#include "vmm/virtual_iommu.h"

using namespace conduit;
using namespace conduit::hostsim;
using namespace conduit::vmm::test;
using conduit::test::FakeVmm;

namespace {

constexpr uint8_t kPasidWidth = 8;  // the device's Max PASID Width; the host SMMU has SSIDSIZE 16
constexpr uint64_t kMsiWindow = 0x08000000;
constexpr uint64_t kVa = kRam + 0x500000;  // a stage-1 VA that is also a RAM IPA: bypass would land there
constexpr uint64_t kPageA = kRam + 0x300000, kPageB = kRam + 0x301000;
constexpr uint64_t kTables = kRam + 0x200000;  // CD tables and page tables from here on
constexpr uint64_t pasidPage(uint32_t pasid) { return kRam + 0x310000 + pasid * 0x1000; }

// An SMMUv3 host with substreams (SSIDSIZE 16, 2-level CD tables) and the arm64 host's MSI
// window, and an edu with a PASID capability (EXEC and PRIV, width 8).
SimHostConfig pasidHost() {
    auto c = smmuHost();
    c.smmuIdr[0] |= 1u << 19;                                         // CD2L
    c.smmuIdr[1] |= 16u << vfio::smmuv3::kIdr1SsidSizeShift;          // SSIDSIZE 16
    c.reserved = {{kMsiWindow, kMsiWindow + 0xfffff, "msi"}};
    return c;
}
SimDeviceConfig pasidDevice() {
    SimDeviceConfig d;
    d.pcieCaps = true;
    d.extCaps = {{0x1b, 1, 0x100, {uint8_t(0x06), kPasidWidth, 0, 0}}};
    return d;
}

class VsmmuGuestDma : public VsmmuEndToEnd {
protected:
    VsmmuGuestDma() : VsmmuEndToEnd(pasidHost(), pasidDevice()) {}

    // The guest attaches its stage-1 domain: STE, CFGI_STE, CMD_SYNC.
    void attach(const Ste& ste) {
        writeSte(kSid, ste);
        issue({cfgiSte(kSid), cmdSync()});
        ASSERT_TRUE(host.nestedDomainOf(sim())) << "the STE did not reach the host";
    }
    bool write32(uint64_t va, uint32_t value, std::optional<uint32_t> pasid = std::nullopt) {
        return host.dmaWrite(sim(), va, &value, 4, pasid);
    }
    uint32_t at(uint64_t ipa) { return mem.readObj<uint32_t>(ipa).value(); }
    // The probe, then one CD (ASID `asid`, no substreams) whose tables map `va` to `ipa`, and the
    // stream attached to it.
    GuestStage1 probeWithOneCd(uint16_t asid, uint64_t va, uint64_t ipa) {
        probeLikeLinux();
        GuestStage1 s1(mem, nextTable);
        s1.map(va, ipa);
        s1.writeCd(kTables, asid);
        attach(s1Ste(kTables));
        return s1;
    }
    // The guest's event record `index`: its id, StreamID and SubstreamID.
    void expectEvent(uint32_t index, uint8_t id, std::optional<uint32_t> ssid = std::nullopt) {
        const Event e = guestEvent(index);
        EXPECT_EQ(v::field(e[0], v::kEvt0Id), id) << "event " << index;
        EXPECT_EQ(v::field(e[0], v::kEvt0Sid), kSid) << "event " << index << ": not the guest StreamID";
        EXPECT_EQ((e[0] & walk::kEvt0Ssv) != 0, ssid.has_value()) << "event " << index;
        if (ssid) {
            EXPECT_EQ(v::field(e[0], walk::kEvt0Ssid), *ssid) << "event " << index;
        }
    }

    uint64_t nextTable = kTables + 0x10000;  // the first 64 KiB hold the CD tables
};

}  // namespace

// 1: no PASID, S1CDMax 0: the DMA to a stage-1 VA lands in the page the guest's tables name, not
// at the IPA equal to the VA (stage 2 alone) nor in the neighbouring page.
TEST_F(VsmmuGuestDma, DmaWithoutAPasidLandsWhereTheGuestsStage1Says) {
    GuestStage1 s1 = probeWithOneCd(1, kVa, kPageA);
    s1.map(kVa + 0x1000, kPageB);
    ASSERT_TRUE(write32(kVa + 0x10, 0xa5a5a5a5)) << (host.dmaFaults().empty() ? "" : host.dmaFaults()[0].reason);
    ASSERT_TRUE(write32(kVa + 0x1020, 0x5a5a5a5a));
    EXPECT_EQ(at(kPageA + 0x10), 0xa5a5a5a5u);
    EXPECT_EQ(at(kPageB + 0x20), 0x5a5a5a5au);
    EXPECT_EQ(at(kPageB + 0x10), 0u);
    EXPECT_EQ(at(kVa + 0x10), 0u) << "stage 1 was bypassed";
    EXPECT_EQ(r32(reg::kEvtqProd) & 0xff, 0u);
}

// 2, linear CD table: the guest sees SSIDSIZE = the device's PASID width; S1CDMax 3 (8 CDs);
// PASIDs 1 and 5 through their own CDs (ASIDs, tables) into their own pages; PASID 8 is beyond
// S1CDMax: C_BAD_SUBSTREAMID in the guest's EVTQ with the guest StreamID and the SubstreamID.
TEST_F(VsmmuGuestDma, PasidDmaThroughALinearCdTable) {
    EXPECT_EQ(v::field(smmu->idrs()[1], reg::kIdr1SsidSize), kPasidWidth);
    probeLikeLinux();
    for (uint32_t pasid : {1u, 5u}) {
        GuestStage1 s1(mem, nextTable);
        s1.map(kVa, pasidPage(pasid));
        s1.writeCd(kTables + 64 * pasid, static_cast<uint16_t>(pasid));
    }
    attach(s1Ste(kTables, 3));
    ASSERT_TRUE(write32(kVa, 0x11, 1));
    ASSERT_TRUE(write32(kVa, 0x55, 5));
    EXPECT_EQ(at(pasidPage(1)), 0x11u);
    EXPECT_EQ(at(pasidPage(5)), 0x55u);
    EXPECT_EQ(at(pasidPage(0)), 0u);
    EXPECT_EQ(at(kVa), 0u);

    const int edges = evtqIrq.edges;
    EXPECT_FALSE(write32(kVa, 0x88, 8));
    ASSERT_EQ(waitEvents(1), 1u);
    expectEvent(0, v::kEvtCBadSubstreamId, 8);
    EXPECT_EQ(waitEdges(evtqIrq, edges + 1), edges + 1);
    EXPECT_EQ(at(pasidPage(0)), 0u);
}

// 2, 2-level CD table (S1Fmt 1: 4 KiB leaf tables of 64 CDs), S1CDMax 8: PASID 1 (L1 0, CD 1) and
// 69 (L1 1, CD 5) in their own pages; PASID 130 under an invalid L1CD is C_BAD_SUBSTREAMID.
TEST_F(VsmmuGuestDma, PasidDmaThroughATwoLevelCdTable) {
    probeLikeLinux();
    const uint64_t l1 = kTables, leaf0 = kTables + 0x1000, leaf1 = kTables + 0x2000;
    ASSERT_TRUE(mem.writeObj(l1, std::array<uint64_t, 4>{leaf0 | walk::kL1cdV, leaf1 | walk::kL1cdV, 0, 0}).ok());
    for (uint32_t pasid : {1u, 69u}) {
        GuestStage1 s1(mem, nextTable);
        s1.map(kVa, pasidPage(pasid % 64));
        s1.writeCd((pasid < 64 ? leaf0 : leaf1) + 64 * (pasid % 64), static_cast<uint16_t>(pasid));
    }
    Ste ste = s1Ste(l1, 8);
    ste[0] |= v::prep(v::kSte0S1Fmt, walk::kS1Fmt2Lvl4K);
    attach(ste);
    ASSERT_TRUE(write32(kVa + 4, 0x01, 1));
    ASSERT_TRUE(write32(kVa + 4, 0x45, 69));
    EXPECT_EQ(at(pasidPage(1) + 4), 0x01u);
    EXPECT_EQ(at(pasidPage(5) + 4), 0x45u);
    EXPECT_FALSE(write32(kVa, 1, 130));
    ASSERT_EQ(waitEvents(1), 1u);
    expectEvent(0, v::kEvtCBadSubstreamId, 130);
}

// 3: the guest moves a PTE. Without a TLBI the device keeps the old page (the SMMU's TLB); the
// guest's TLBI_NH_VA + CMD_SYNC is one IOMMU_HWPT_INVALIDATE and the next DMA goes to the new page.
TEST_F(VsmmuGuestDma, APteChangeTakesEffectAfterTheGuestsTlbi) {
    GuestStage1 s1 = probeWithOneCd(3, kVa, kPageA);
    ASSERT_TRUE(write32(kVa, 1));
    EXPECT_EQ(at(kPageA), 1u);

    s1.map(kVa, kPageB);
    ASSERT_TRUE(write32(kVa, 2));
    EXPECT_EQ(at(kPageA), 2u) << "no TLBI yet: the cached translation is used";
    EXPECT_EQ(at(kPageB), 0u);

    CallLog log;
    issue({tlbiVa(3, kVa), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_INVALIDATE"}));
    EXPECT_EQ(r32(reg::kCmdqCons) & reg::kCmdqConsErr, 0u);
    ASSERT_TRUE(write32(kVa, 3));
    EXPECT_EQ(at(kPageB), 3u);
    EXPECT_EQ(at(kPageA), 2u);
}

// 4: DMA to a VA the guest never mapped: F_TRANSLATION in the guest's EVTQ (guest StreamID, the
// VA in word 2) with the eventq interrupt pulsed.
TEST_F(VsmmuGuestDma, AnUnmappedVaIsFTranslationInTheGuestsEvtq) {
    probeWithOneCd(4, kVa, kPageA);  // maps kVa only: kVa + 0x3000 stays unmapped
    const int edges = evtqIrq.edges;
    EXPECT_FALSE(write32(kVa + 0x3000, 1));
    ASSERT_EQ(waitEvents(1), 1u);
    expectEvent(0, v::kEvtFTranslation);
    EXPECT_EQ(guestEvent(0)[2], kVa + 0x3000);
    EXPECT_EQ(waitEdges(evtqIrq, edges + 1), edges + 1);
    EXPECT_EQ(smmu->stats().eventsDelivered, 1u);
}

// 5: the device's MSI is a write to the host's doorbell (0x08000040) through the guest's stage 1:
// with the window identity-mapped the interrupt arrives; once the guest unmaps it (and invalidates
// through its CMDQ) the interrupt is lost and F_TRANSLATION at 0x08000040 reaches the guest.
TEST_F(VsmmuGuestDma, TheMsiDoorbellNeedsTheGuestsIdentityMap) {
    GuestStage1 s1 = probeWithOneCd(5, kMsiWindow, kMsiWindow);
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    const int32_t fds[1] = {efd};
    ASSERT_TRUE(device->setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds).ok());
    auto fired = [&] {
        uint64_t n = 0;
        return ::read(efd, &n, 8) == 8 ? n : 0;
    };
    sim().regWrite(0x70, 0, 4);  // sim extension: fire MSI-X vector 0
    EXPECT_EQ(fired(), 1u);
    EXPECT_EQ(r32(reg::kEvtqProd) & 0xff, 0u);

    s1.unmap(kMsiWindow);
    issue({tlbiVa(5, kMsiWindow), cmdSync()});
    sim().regWrite(0x70, 0, 4);
    EXPECT_EQ(fired(), 0u);
    ASSERT_EQ(waitEvents(1), 1u);
    expectEvent(0, v::kEvtFTranslation);
    EXPECT_EQ(guestEvent(0)[2], kMsiWindow + 0x40);
    ::close(efd);
}

// 6: the iommufd calls each guest action costs, in order, on a host with substreams. What the
// binding must do and the kernel expects (docs/vsmmu.md): attach by replacement, then destroy the
// HWPT no longer attached; invalidations batched into one IOMMU_HWPT_INVALIDATE per CMD_SYNC;
// CFGI_STE and CMD_SYNC themselves never reach the host; teardown puts the device back on the
// IOAS before it destroys children before parents.
TEST_F(VsmmuGuestDma, TheIommufdCallsOfEachGuestAction) {
    CallLog log(&host);
    // Enable (arm_smmu_device_reset()): CR0 = 0 attaches GBPA's bypass, the TLBI_NSNH_ALL is
    // forwarded, SMMUEN turns the stream's (invalid) STE into the shared abort HWPT.
    probeLikeLinux();
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_HWPT_INVALIDATE", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));

    // CFGI_STE to S1 with a PASID table (S1CDMax 3): a nested HWPT for the vSTE, attached.
    GuestStage1 s1(mem, nextTable);
    s1.map(kVa, kPageA);
    s1.writeCd(kTables + 64, 7);
    attach(s1Ste(kTables, 3));
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));
    EXPECT_EQ(host.nestedDomainOf(sim())->ste, s1Ste(kTables, 3));
    ASSERT_TRUE(write32(kVa, 1, 1));

    // Unmap with a PASID: TLBIs and a CFGI_CD, one CMD_SYNC: one IOMMU_HWPT_INVALIDATE. A CMD_SYNC
    // with nothing before it costs nothing.
    const size_t issued = host.smmuCommandsIssued().size();
    issue({tlbiVa(7, kVa), tlbiVa(7, kVa + 0x1000),
           cmd(v::kOpCfgiCd, v::prep(v::kCfgi0Sid, kSid) | v::prep(v::kCfgi0Ssid, 1), v::kCfgi1Leaf),
           cmd(v::kOpTlbiNhAsid, v::prep(v::kTlbi0Asid, 7)), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_INVALIDATE"}));
    EXPECT_EQ(host.smmuCommandsIssued().size(), issued + 4);
    issue({cmdSync()});
    EXPECT_EQ(log.take(), Calls{});

    // CFGI_STE to another CD table: the new HWPT attached by replacement, then the old destroyed.
    attach(s1Ste(kTables + 0x1000, 3));
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_DESTROY"}));
    EXPECT_EQ(log.destroyed(), Calls{"nested-s1"});

    // CFGI_STE to abort (Config abort): the shared abort HWPT, the S1 one destroyed; then bypass:
    // the shared bypass HWPT, nothing to destroy.
    writeSte(kSid, {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgAbort), 0});
    issue({cfgiSte(kSid), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_DESTROY"}));
    EXPECT_EQ(log.destroyed(), Calls{"nested-s1"});
    EXPECT_FALSE(write32(kVa, 2, 1));
    writeSte(kSid, {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgBypass), 0});
    issue({cfgiSte(kSid), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));

    // Teardown.
    teardown();
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT",  // the device back on the IOAS
                                 "IOMMU_DESTROY",                  // its vDEVICE
                                 "IOMMU_DESTROY", "IOMMU_DESTROY",  // the shared abort and bypass HWPTs
                                 "IOMMU_DESTROY",                  // the vEVENTQ
                                 "IOMMU_DESTROY",                  // the vIOMMU
                                 "IOMMU_DESTROY"}));               // the NEST_PARENT HWPT
    EXPECT_EQ(log.destroyed(), (Calls{"vdevice", "nested-abort", "nested-bypass", "veventq", "viommu", "nest-parent"}));
    EXPECT_EQ(host.iommufdObjectCount(), baseObjects);
}

// 7: a JSON config's simulated SMMUv3 host with substreams ("smmu_ssid_bits") and an edu with a
// PASID capability ("pasid_width", "pasid_exec", "pasid_priv"): the VfioPciDevice the vSMMU fronts
// gets the PASID capability VirtualIommu gives it (addVsmmuPasidCapability()), Max PASID Width what
// SMMU and function both do, the function's Exec/Priv; the guest's SSIDSIZE is the same width.
// Without substreams on the host nothing is added.
TEST(VsmmuPasidCapability, TheFrontedDeviceShowsTheHostsPasidWidthAndFeatures) {
    struct Case {
        const char* host;
        const char* device;
        bool pasid;
        uint16_t capRegister;  // PCI_PASID_CAP: Max PASID Width << 8 | Priv << 2 | Exec << 1
    };
    // The config names a payload file that must exist, next to it.
    const std::filesystem::path dir = ::testing::TempDir();
    const std::filesystem::path file = dir / "pasid.json";
    std::ofstream(dir / "p.bin") << "payload";
    for (const Case& c : {Case{"\"smmu_ssid_bits\": 16", "\"pasid_width\": 10, \"pasid_exec\": true", true, 0x0a02},
                          Case{"\"smmu_ssid_bits\": 6", "\"pasid_width\": 10, \"pasid_priv\": true", true, 0x0604},
                          Case{"\"smmu_ssid_bits\": 0", "\"pasid_width\": 10, \"pasid_exec\": true", false, 0}}) {
        SCOPED_TRACE(std::string(c.host) + ", " + c.device);
        const std::string json = std::string(R"({"payload": {"path": "p.bin"}, "viommu": {"type": "smmuv3"},
            "devices": [{"type": "vfio-pci", "host": "0000:00:03.0"}],
            "vfio_host": {"kind": "simulated", "iommu": "smmuv3", )") + c.host +
                                 R"(, "devices": [{"bdf": "0000:00:03.0", )" + c.device + "}]}}";
        auto config = vmm::parseConfig(json, file);
        ASSERT_TRUE(config.ok()) << config.error().describe();
        auto vfioHost = hostsim::simulatedVfioHosts()(config->vfioHost);
        ASSERT_TRUE(vfioHost.ok()) << vfioHost.error().describe();
        auto backend = vfio::IommufdBackend::open((*vfioHost)->interface(), (*vfioHost)->paths()).value();
        FakeVmm vmm;
        ASSERT_TRUE(vmm.createDevice(*backend, "0000:00:03.0").ok());
        vfio::VfioOps& ops = *backend;
        auto binding =
            vmm::NestedSmmuBinding::create(*ops.nesting().value(), {{&vmm.device->vfioDevice(), kSid}}).value();

        auto added = vmm::addVsmmuPasidCapability(*binding, *vmm.device);
        ASSERT_TRUE(added.ok()) << added.error().describe();
        EXPECT_EQ(*added, c.pasid);
        const auto cap = vmm.device->pasidCapability();
        ASSERT_EQ(cap.has_value(), c.pasid);
        EXPECT_EQ(binding->hostIds().maxPasidLog2, c.capRegister >> 8);
        if (!c.pasid) continue;
        EXPECT_EQ(vmm.cfgRead(*cap) & 0xffff, 0x1bu) << "PCI_EXT_CAP_ID_PASID";
        EXPECT_EQ(vmm.cfgRead(*cap + PCI_PASID_CAP, 2), c.capRegister);
        // The guest's SMMU offers the same substream width.
        memory::GuestMemory mem = memory::GuestMemory::create({{kRam, kRamSize}}, {}).value();
        AtomicEdgeLine line;
        auto smmu =
            devices::smmuv3::VirtualSmmu::create("smmuv3", binding->hostIds(), mem, *binding, {&line, &line, &line}).value();
        EXPECT_EQ(v::field(smmu->idrs()[1], reg::kIdr1SsidSize), c.capRegister >> 8);
    }
    // Substreams are an SMMUv3's.
    auto refused = vmm::parseConfig(
        R"({"payload": {"path": "p.bin"}, "vfio_host": {"kind": "simulated", "smmu_ssid_bits": 8}})", file);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().describe().find("smmu_ssid_bits"), std::string::npos) << refused.error().describe();
}
