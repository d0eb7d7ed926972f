// The virtual SMMUv3 end to end without KVM: the device model (devices/smmuv3/virtual_smmu.h)
// driven the way Linux's arm-smmu-v3 drives it, over the product's host side (NestedSmmuBinding,
// vmm/viommu.h) on the simulated host with an Arm SMMUv3. Each guest action is checked by the
// iommufd calls it costs and by what the simulated SMMU then holds; a host fault comes back into
// the guest's event queue with its interrupt; teardown leaves nothing. (VirtualIommu, which adds
// the MMIO bus and KVM interrupt lines, needs KVM: the arm64 bed covers it.)
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/unit/viommu/vsmmu_e2e_fixture.h"

using namespace conduit;
using namespace conduit::hostsim;
using namespace conduit::vmm::test;

TEST_F(VsmmuEndToEnd, EachGuestActionCostsTheIommufdCallsItShould) {
    CallLog log;
    // Probe with an all-zero (invalid) STE for our stream: CR0 = 0 puts it where GBPA says (bypass
    // at reset), the TLBI_NSNH_ALL is forwarded, SMMUEN makes the invalid STE an abort. The
    // shared abort and bypass HWPTs make both a bare attach.
    probeLikeLinux();
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_HWPT_INVALIDATE", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));
    EXPECT_FALSE(dma(kRam + 0x100));  // aborted
    EXPECT_EQ(r32(reg::kGerror), r32(reg::kGerrorN));

    // The guest's driver attaches a stage-1 domain: STE written, CFGI_STE + CMD_SYNC.
    writeSte(kSid, s1Ste(kCdTable));
    issue({cfgiSte(kSid), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));
    auto nd = host.nestedDomainOf(sim());
    ASSERT_TRUE(nd);
    EXPECT_EQ(nd->ste, s1Ste(kCdTable));
    EXPECT_EQ(nd->vsid, kSid);

    // Unmap: a batch of TLBIs and one CMD_SYNC is one IOMMU_HWPT_INVALIDATE.
    issue({tlbiVa(1, 0x1000), tlbiVa(1, 0x2000), tlbiVa(1, 0x3000), cmd(v::kOpTlbiNhAsid, v::prep(v::kTlbi0Asid, 1)),
           cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_INVALIDATE"}));
    EXPECT_EQ(host.smmuCommandsIssued().size(), 4u + 1u);  // + the probe's TLBI_NSNH_ALL
    EXPECT_EQ(r32(reg::kCmdqCons) & reg::kCmdqConsErr, 0u);

    // A fault on the host arrives in the guest's EVTQ with the guest's StreamID, and its interrupt.
    const int edges = evtqIrq.edges;
    EXPECT_EQ(host.raiseSmmuEvent(sim(), {v::kEvtFTranslation | v::prep(v::kEvt0Sid, 0x8), 0, 0xdead000, 0}),
              SmmuEventFate::Forwarded);
    waitEvents(1);
    ASSERT_EQ(r32(reg::kEvtqProd) & 0xff, 1u);
    auto ev = mem.readObj<Event>(kEvtq).value();
    EXPECT_EQ(v::field(ev[0], v::kEvt0Id), v::kEvtFTranslation);
    EXPECT_EQ(v::field(ev[0], v::kEvt0Sid), kSid);
    EXPECT_EQ(ev[2], 0xdead000u);
    EXPECT_EQ(waitEdges(evtqIrq, edges + 1), edges + 1);

    // Driver unbound, the stream in bypass: the shared bypass HWPT, the S1 one destroyed.
    writeSte(kSid, {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgBypass), 0});
    issue({cfgiSte(kSid), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_DESTROY"}));
    EXPECT_TRUE(dma(kRam + 0x200));  // stage 2 only: IPA == IOVA
    EXPECT_EQ(mem.readObj<uint8_t>(kRam + 0x200).value(), 0x77);

    // Counters on both sides.
    auto hs = binding->stats();
    EXPECT_EQ(hs.steS1, 1u);
    EXPECT_EQ(hs.steBypass, 2u);  // GBPA at the probe, and the unbind
    EXPECT_EQ(hs.steAbort, 1u);
    EXPECT_EQ(hs.invalidateCalls, 2u);  // the probe's TLBI_NSNH_ALL and the unmap batch
    EXPECT_EQ(hs.commandsForwarded, 5u);
    EXPECT_EQ(hs.eventsDelivered, 1u);
    EXPECT_EQ(smmu->stats().eventsDelivered, 1u);

    // Teardown: nothing of the nesting left, the device back on the IOAS.
    teardown();
    EXPECT_EQ(host.iommufdObjectCount(), baseObjects);
    EXPECT_TRUE(dma(kRam + 0x300));
}

TEST_F(VsmmuEndToEnd, AHostRefusalStopsTheGuestsQueueAtTheFailingCommand) {
    probeLikeLinux();
    writeSte(kSid, s1Ste(kCdTable));
    issue({cfgiSte(kSid), cmdSync()});
    ASSERT_TRUE(host.nestedDomainOf(sim()));
    // A range TLBI with TTL but no granule: the host refuses it (EIO); the TLBI before it went through.
    CallLog log;
    const size_t before = host.smmuCommandsIssued().size();
    issue({tlbiVa(2, 0x4000), cmd(v::kOpTlbiNhVa, v::prep(v::kTlbi0Asid, 2), v::prep(v::kTlbi1Ttl, 1)), cmdSync()});
    // One IOMMU_HWPT_INVALIDATE for the batch (the seam may issue the commands before a refused
    // one again: Linux reports them handled although they were not issued).
    const Calls calls = log.take();
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(std::count(calls.begin(), calls.end(), "IOMMU_HWPT_INVALIDATE"), static_cast<long>(calls.size()));
    EXPECT_EQ(host.smmuCommandsIssued().size(), before + 1);
    EXPECT_NE(r32(reg::kCmdqCons) & reg::kCmdqConsErr, 0u);  // CONS.ERR set at the failing command
    EXPECT_EQ(r32(reg::kCmdqCons) & 0xff, 2u + 2u + 2u + 1u);  // probe 4, CFGI+SYNC 2, TLBI done: stopped at the refused one
    EXPECT_NE(r32(reg::kGerror) ^ r32(reg::kGerrorN), 0u);     // GERROR.CMDQ_ERR raised
    EXPECT_EQ(binding->stats().invalidateErrors, 1u);
}
