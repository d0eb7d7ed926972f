// The iommufd nesting seam (vfio/iommu_nesting.h) against the simulated host with an Arm SMMUv3,
// whose rules follow Linux 7.3 (drivers/iommu/iommufd/{hw_pagetable,viommu,eventq,device}.c and
// drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c): the object sequence a vSMMU runs, and each
// refusal with the kernel's errno.
#include <gtest/gtest.h>
#include <poll.h>

#include <cstring>

#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"
#include "vfio/iommu_nesting.h"
#include "vfio/iommufd.h"
#include "vfio/type1.h"
#include "vfio/uapi_compat.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;
namespace smmu = conduit::vfio::smmuv3;

namespace {

constexpr const char* kBdf = "0000:00:03.0";
constexpr const char* kBdf2 = "0000:00:04.0";
constexpr uint64_t kVsid = 0x42;  // != the physical StreamID 0x8, so the translation shows

// vSTEs of ../shared/smmunest/REPORT.md: abort, bypass, and S1 with a CD table at 0x110000.
constexpr smmu::Ste kAbortSte{smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgAbort), 0};
constexpr smmu::Ste kBypassSte{0x9, 0};
constexpr smmu::Ste kS1Ste{0x11000b, 0xd4};

smmu::Command cmd(uint8_t op, uint64_t dw0 = 0, uint64_t dw1 = 0) { return {op | dw0, dw1}; }
smmu::Command tlbiNhVa(uint16_t asid, uint64_t va) {
    return {smmu::kOpTlbiNhVa | smmu::prep(smmu::kTlbi0Asid, asid), (va & smmu::kTlbi1VaMask) | smmu::kTlbi1Leaf};
}
smmu::Command cfgiCd(uint32_t sid) { return {smmu::kOpCfgiCd | smmu::prep(smmu::kCfgi0Sid, sid), smmu::kCfgi1Leaf}; }
smmu::Event translationFault(uint32_t sid, uint64_t iova) {
    return {smmu::kEvtFTranslation | smmu::prep(smmu::kEvt0Sid, sid), 0x0000020000000000ull, iova, 0};
}

SimHostConfig smmuHost() {
    SimHostConfig c;
    c.hwInfoType = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
    return c;
}

struct Fixture {
    explicit Fixture(SimHostConfig hc = smmuHost(), std::vector<SimDeviceConfig> devs = {SimDeviceConfig{}}) : host(hc) {
        for (auto& d : devs) host.addDevice(d);
        backend = IommufdBackend::open(host, host.paths()).value();
        for (auto& d : devs) {
            auto dev = backend->openDevice(d.bdf);
            EXPECT_TRUE(dev.ok()) << dev.error().describe();
            if (dev) devices.push_back(std::move(dev).value());
        }
        // Reached through the VfioOps seam, as the VMM does: no cast.
        VfioOps& ops = *backend;
        nesting = ops.nesting().value();
    }
    VfioDevice& dev(size_t i = 0) { return *devices.at(i); }
    SimHost host;
    std::unique_ptr<IommufdBackend> backend;
    std::vector<std::unique_ptr<VfioDevice>> devices;
    IommuNesting* nesting = nullptr;
};

// The errno of a failed Result, 0 on success.
template <class T>
int err(const Result<T>& r) {
    return r.ok() ? 0 : r.error().code();
}
bool mentions(const Error& e, const std::string& s) { return e.describe().find(s) != std::string::npos; }

}  // namespace

TEST(Nesting, FullObjectSequenceOnSmmuV3) {
    Fixture f;
    auto* n = f.nesting;
    const size_t baseObjects = f.host.iommufdObjectCount();  // IOAS, device, auto domain

    auto hw = n->hwInfo(f.dev()).value();
    EXPECT_EQ(hw.dataType, uint32_t(IOMMU_HW_INFO_TYPE_ARM_SMMUV3));
    ASSERT_TRUE(hw.smmuv3);
    EXPECT_EQ(hw.smmuv3->idr[0], 0x0d44101bu);  // QEMU 10.0's stage=nested SMMUv3 as Linux 7.3 read it
    EXPECT_EQ(hw.smmuv3->idr[3], 0x1414u);
    EXPECT_EQ(hw.smmuv3->aidr, 1u);
    EXPECT_TRUE(hw.capabilities & IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED);

    // Guest RAM at IOVA == IPA 0x100000 in the IOAS (stage 2).
    std::vector<uint8_t> ram(0x40000);
    ASSERT_TRUE(f.backend->mapDma(0x100000, ram.size(), ram.data(), true).ok());

    auto parent = n->allocNestParent(f.dev());
    ASSERT_TRUE(parent.ok()) << parent.error().describe();
    EXPECT_EQ((*parent)->ioasId(), f.backend->ioasId());
    auto viommu = n->allocViommu(f.dev(), *parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3);
    ASSERT_TRUE(viommu.ok()) << viommu.error().describe();
    auto vdev = n->allocVdevice(f.dev(), *viommu, kVsid);
    ASSERT_TRUE(vdev.ok()) << vdev.error().describe();
    EXPECT_EQ((*vdev)->virtId(), kVsid);
    auto queue = n->allocVeventQueue(*viommu, 64);
    ASSERT_TRUE(queue.ok()) << queue.error().describe();
    auto abort = n->allocNestedHwpt(f.dev(), *viommu, kAbortSte);
    auto bypass = n->allocNestedHwpt(f.dev(), *viommu, kBypassSte);
    auto s1 = n->allocNestedHwpt(f.dev(), *viommu, kS1Ste);
    ASSERT_TRUE(abort.ok() && bypass.ok() && s1.ok()) << (s1.ok() ? "" : s1.error().describe());
    EXPECT_EQ((*s1)->config(), smmu::kCfgS1Trans);
    EXPECT_EQ((*s1)->ste(), kS1Ste);  // the hook issue 13's stage-1 walk starts from
    EXPECT_EQ((*abort)->config(), smmu::kCfgAbort);

    SimDevice& sd = *f.host.device(kBdf);
    const uint32_t autoDomain = n->attachedHwpt(f.dev());
    ASSERT_NE(autoDomain, 0u);
    const uint8_t data[4] = {1, 2, 3, 4};

    // Replace the IOAS by bypass: stage 2 only, DMA to the IPA lands.
    ASSERT_TRUE(n->attach(f.dev(), *bypass).ok());
    EXPECT_EQ(n->attachedHwpt(f.dev()), (*bypass)->id());
    EXPECT_TRUE(f.host.dmaWrite(sd, 0x100010, data, 4));
    EXPECT_EQ(ram[0x10], 1);
    // Replace bypass by abort: DMA blocked.
    ASSERT_TRUE(n->attach(f.dev(), *abort).ok());
    EXPECT_FALSE(f.host.dmaWrite(sd, 0x100020, data, 4));
    EXPECT_EQ(ram[0x20], 0);
    // And by the translating vSTE; the simulated host keeps it for the walk.
    ASSERT_TRUE(n->attach(f.dev(), *s1).ok());
    auto nd = f.host.nestedDomainOf(sd);
    ASSERT_TRUE(nd);
    EXPECT_EQ(nd->hwpt, (*s1)->id());
    EXPECT_EQ(nd->viommu, (*viommu)->id());
    EXPECT_EQ(nd->parent, (*parent)->id());
    EXPECT_EQ(nd->ste, kS1Ste);
    EXPECT_EQ(nd->vsid, kVsid);

    // Invalidations: forwarded with the VMID forced and the vSID turned into the physical SID.
    const std::vector<smmu::Command> cmds{tlbiNhVa(5, 0x4000000), cmd(smmu::kOpTlbiNhAsid, smmu::prep(smmu::kTlbi0Asid, 5)),
                                          cfgiCd(kVsid), cmd(smmu::kOpCfgiCdAll, smmu::prep(smmu::kCfgi0Sid, kVsid)),
                                          cmd(smmu::kOpTlbiNhAll), cmd(smmu::kOpTlbiNsnhAll)};
    uint32_t done = 99;
    auto inv = n->invalidate(**viommu, cmds, &done);
    ASSERT_TRUE(inv.ok()) << inv.error().describe();
    EXPECT_EQ(done, cmds.size());
    const auto& issued = f.host.smmuCommandsIssued();
    ASSERT_EQ(issued.size(), cmds.size());
    EXPECT_EQ(smmu::field(issued[2].cmd[0], smmu::kCfgi0Sid), 0x8u);
    EXPECT_EQ(smmu::field(issued[3].cmd[0], smmu::kCfgi0Sid), 0x8u);
    const uint64_t vmid = smmu::field(issued[0].cmd[0], smmu::kTlbi0Vmid);
    EXPECT_NE(vmid, 0u);
    EXPECT_EQ(smmu::field(issued[0].cmd[0], smmu::kTlbi0Asid), 5u);
    EXPECT_EQ(smmu::opcode(issued[5].cmd), smmu::kOpTlbiNhAll);  // NSNH_ALL becomes NH_ALL of this VMID
    EXPECT_EQ(smmu::field(issued[5].cmd[0], smmu::kTlbi0Vmid), vmid);

    // A stage-1 fault arrives on the vEVENTQ with the vSID; the fd polls readable until read.
    EXPECT_EQ(f.host.raiseSmmuEvent(sd, translationFault(0x8, 0x5000000)), SmmuEventFate::Forwarded);
    EXPECT_EQ(f.host.raiseSmmuEvent(sd, translationFault(0x8, 0x5000000), /*stage2=*/true), SmmuEventFate::HostOnly);
    pollfd p{(*queue)->fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 1);
    auto batch = (*queue)->read();
    ASSERT_TRUE(batch.ok()) << batch.error().describe();
    ASSERT_EQ(batch->events.size(), 1u);
    EXPECT_EQ(batch->events[0].sequence, 0u);
    EXPECT_EQ(batch->events[0].eventId(), smmu::kEvtFTranslation);
    EXPECT_EQ(batch->events[0].streamId(), kVsid);
    EXPECT_EQ(batch->events[0].record[2], 0x5000000u);
    EXPECT_EQ(batch->lost, 0u);
    EXPECT_EQ(::poll(&p, 1, 0), 0);

    // And back to the IOAS (a fresh auto domain), then detached and re-attached.
    ASSERT_TRUE(n->attachIoas(f.dev()).ok());
    EXPECT_FALSE(f.host.nestedDomainOf(sd));
    EXPECT_TRUE(f.host.dmaWrite(sd, 0x100030, data, 4));
    EXPECT_EQ(ram[0x30], 1);
    ASSERT_TRUE(n->detach(f.dev()).ok());
    EXPECT_EQ(n->attachedHwpt(f.dev()), 0u);
    EXPECT_FALSE(f.host.dmaWrite(sd, 0x100040, data, 4));
    ASSERT_TRUE(n->attachIoas(f.dev()).ok());

    // Dropped parents first: the children hold them, so every IOMMU_DESTROY runs child-first and
    // none is refused.
    parent->reset();
    viommu->reset();
    EXPECT_GT(f.host.iommufdObjectCount(), baseObjects);
    s1->reset();
    bypass->reset();
    abort->reset();
    vdev->reset();
    queue->reset();
    EXPECT_EQ(f.host.iommufdObjectCount(), baseObjects);
    ASSERT_TRUE(f.backend->unmapDma(0x100000, ram.size()).ok());
    f.devices.clear();
    f.backend.reset();
    EXPECT_EQ(f.host.iommufdObjectCount(), 0u);
    EXPECT_EQ(f.host.openFdCount(), 0u);
}

TEST(Nesting, AttachedHwptLivesUntilReplacedAndTheDeviceCloseCleansUp) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    auto vdev = n->allocVdevice(f.dev(), viommu, kVsid).value();
    auto s1 = n->allocNestedHwpt(f.dev(), viommu, kS1Ste).value();
    ASSERT_TRUE(n->attach(f.dev(), s1).ok());
    const uint32_t s1Id = s1->id();
    // The caller lets go of everything; the attachment still holds the nested HWPT (and through it
    // the vIOMMU and the parent), as the kernel would refuse to destroy it (EBUSY).
    parent.reset();
    viommu.reset();
    s1.reset();
    EXPECT_EQ(n->attachedHwpt(f.dev()), s1Id);
    EXPECT_TRUE(f.host.nestedDomainOf(*f.host.device(kBdf)));
    // Closing the device destroys its vDEVICE (the handle goes inert), detaches, and then the HWPT
    // goes; the inert vDEVICE handle still holds the vIOMMU and its parent.
    f.devices.clear();
    EXPECT_FALSE(vdev->alive());
    EXPECT_EQ(f.host.iommufdObjectCount(), 3u);  // IOAS, NEST_PARENT, vIOMMU
    vdev.reset();
    EXPECT_EQ(f.host.iommufdObjectCount(), 1u);  // the IOAS
    f.backend.reset();
    EXPECT_EQ(f.host.iommufdObjectCount(), 0u);
    EXPECT_EQ(f.host.openFdCount(), 0u);
}

TEST(Nesting, VsteBitsOutsideTheKernelsMasksAreEio) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    const size_t objects = f.host.iommufdObjectCount();
    struct Bad {
        const char* what;
        smmu::Ste ste;
    };
    const Bad bad[] = {
        {"Config S2 only", {0xd, 0}},
        {"Config nested", {smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgNested), 0}},
        {"Config reserved 1", {smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, 1), 0}},
        {"dword 0 bit 52 (between S1ContextPtr and S1CDMax)", {kS1Ste[0] | (1ull << 52), kS1Ste[1]}},
        {"dword 1 MEV", {kS1Ste[0], kS1Ste[1] | (1ull << 19)}},
        {"dword 1 S2FWB", {kS1Ste[0], kS1Ste[1] | (1ull << 25)}},
        {"dword 1 STRW", {kS1Ste[0], kS1Ste[1] | smmu::prep(smmu::mask(31, 30), 2)}},
        {"dword 1 SHCFG", {kS1Ste[0], kS1Ste[1] | smmu::prep(smmu::mask(45, 44), 1)}},
        {"EATS S1CHK", {kS1Ste[0], kS1Ste[1] | smmu::prep(smmu::kSte1Eats, smmu::kEatsS1Chk)}},
    };
    for (const auto& b : bad) {
        auto r = n->allocNestedHwpt(f.dev(), viommu, b.ste);
        ASSERT_FALSE(r.ok()) << b.what;
        EXPECT_EQ(r.error().code(), EIO) << b.what;
        EXPECT_TRUE(mentions(r.error(), "IOMMU_HWPT_ALLOC(nested)") && mentions(r.error(), "vIOMMU"))
            << r.error().describe();
    }
    EXPECT_EQ(f.host.iommufdObjectCount(), objects);
    // Every allowed field at once passes (EATS 1 is accepted, then kept aside by the kernel).
    const smmu::Ste allowed{(smmu::kSte0NestingAllowed & ~smmu::kSte0Cfg) | smmu::prep(smmu::kSte0Cfg, smmu::kCfgS1Trans),
                            (smmu::kSte1NestingAllowed & ~smmu::kSte1Eats) | smmu::prep(smmu::kSte1Eats, 1)};
    auto all = n->allocNestedHwpt(f.dev(), viommu, allowed);
    ASSERT_TRUE(all.ok()) << all.error().describe();
    EXPECT_EQ((*all)->ste()[0], allowed[0]);
    EXPECT_EQ((*all)->ste()[1], allowed[1] & ~smmu::kSte1Eats);
    EXPECT_EQ(f.host.iommufdObjectCount(), objects + 1);
    // No V: whatever else is set, it is an abort STE (the kernel zeroes it).
    auto invalid = n->allocNestedHwpt(f.dev(), viommu, {~smmu::kSte0V, ~0ull});
    ASSERT_TRUE(invalid.ok()) << invalid.error().describe();
    EXPECT_EQ((*invalid)->config(), smmu::kCfgAbort);
    EXPECT_EQ((*invalid)->ste(), (smmu::Ste{0, 0}));
}

TEST(Nesting, TranslatingVsteNeedsTheVdeviceBeforeAttach) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    auto s1 = n->allocNestedHwpt(f.dev(), viommu, kS1Ste).value();
    auto bypass = n->allocNestedHwpt(f.dev(), viommu, kBypassSte).value();
    const uint32_t before = n->attachedHwpt(f.dev());
    auto r = n->attach(f.dev(), s1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOENT);  // arm_smmu_attach_prepare_vmaster()
    EXPECT_TRUE(mentions(r.error(), "VFIO_DEVICE_ATTACH_IOMMUFD_PT")) << r.error().describe();
    EXPECT_EQ(n->attachedHwpt(f.dev()), before);  // still on the IOAS
    EXPECT_TRUE(n->attach(f.dev(), bypass).ok());  // the GBPA case needs none
    // Without a vDEVICE at attach time there is no vmaster: events stay with the host.
    EXPECT_EQ(f.host.raiseSmmuEvent(*f.host.device(kBdf), translationFault(0x8, 0)), SmmuEventFate::HostOnly);
    auto vdev = n->allocVdevice(f.dev(), viommu, kVsid).value();
    EXPECT_TRUE(n->attach(f.dev(), s1).ok());
}

TEST(Nesting, InvalidateRefusesAndReportsTheFailingIndex) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    auto vdev = n->allocVdevice(f.dev(), viommu, kVsid).value();

    // CFGI_STE is the VMM's own work, not forwarded: refused at index 2 after two done.
    std::vector<smmu::Command> cmds{cmd(smmu::kOpTlbiNhAll), tlbiNhVa(1, 0x1000),
                                    cmd(smmu::kOpCfgiSte, smmu::prep(smmu::kCfgi0Sid, kVsid)), cmd(smmu::kOpTlbiNhAll)};
    uint32_t done = 0;
    auto r = n->invalidate(*viommu, cmds, &done);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), EIO);
    EXPECT_EQ(done, 2u);
    EXPECT_TRUE(mentions(r.error(), "command 2 of 4 (CFGI_STE")) << r.error().describe();
    EXPECT_TRUE(mentions(r.error(), "IOMMU_HWPT_INVALIDATE vIOMMU")) << r.error().describe();
    // The two before it reached the SMMU (the kernel left them unissued in their batch; the seam
    // issued them again).
    EXPECT_EQ(f.host.smmuCommandsIssued().size(), 2u);

    struct Bad {
        const char* what;
        smmu::Command c;
    };
    const Bad bad[] = {
        {"CMD_SYNC", cmd(smmu::kOpCmdSync)},
        {"CFGI_ALL", cmd(smmu::kOpCfgiAll)},
        {"TLBI_S12_VMALL", cmd(smmu::kOpTlbiS12Vmall)},
        {"unknown vSID", cfgiCd(0x77)},
        {"RES0 bit in TLBI_NH_ALL", cmd(smmu::kOpTlbiNhAll, 1ull << 8)},
        {"ATC_INV without ATS", cmd(smmu::kOpAtcInv, smmu::prep(smmu::kAtc0Sid, kVsid))},
        {"SSID without substreams", cmd(smmu::kOpCfgiCd, smmu::prep(smmu::kCfgi0Sid, kVsid) | smmu::prep(smmu::kCfgi0Ssid, 1))},
        {"range TTL with TG 0", {smmu::kOpTlbiNhVa, smmu::prep(smmu::kTlbi1Ttl, 1)}},
    };
    for (const auto& b : bad) {
        auto one = n->invalidate(*viommu, std::span(&b.c, 1), &done);
        ASSERT_FALSE(one.ok()) << b.what;
        EXPECT_EQ(one.error().code(), EIO) << b.what;
        EXPECT_EQ(done, 0u) << b.what;
    }
    EXPECT_EQ(f.host.smmuCommandsIssued().size(), 2u);
}

TEST(Nesting, APartialFailureBeyondAFullBatchIssuesEverythingBeforeIt) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    // 63 commands make the kernel's first batch; 64 and 65 are converted, 66 is refused.
    std::vector<smmu::Command> cmds(70, tlbiNhVa(3, 0x2000));
    cmds[66] = cmd(smmu::kOpCfgiSte);
    uint32_t done = 0;
    auto r = n->invalidate(*viommu, cmds, &done);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(done, 66u);
    EXPECT_EQ(f.host.smmuCommandsIssued().size(), 66u);
}

TEST(Nesting, DestroyingAParentInUseIsEbusy) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    auto vdev = n->allocVdevice(f.dev(), viommu, kVsid).value();
    auto queue = n->allocVeventQueue(viommu, 8).value();
    auto bypass = n->allocNestedHwpt(f.dev(), viommu, kBypassSte).value();
    ASSERT_TRUE(n->attach(f.dev(), bypass).ok());
    // Out of order, the kernel refuses each (iommufd_object_remove(): refcount_dec_if_one()).
    auto busy = [&](uint32_t id, const char* what) {
        auto r = f.backend->destroy(id, what);
        ASSERT_FALSE(r.ok()) << what;
        EXPECT_EQ(r.error().code(), EBUSY) << what;
        EXPECT_TRUE(mentions(r.error(), "IOMMU_DESTROY")) << r.error().describe();
    };
    busy(parent->id(), "NEST_PARENT under a vIOMMU");
    busy(viommu->id(), "vIOMMU under a vDEVICE, vEVENTQ and nested HWPT");
    busy(bypass->id(), "nested HWPT attached");
    busy(queue->id(), "vEVENTQ with its fd open");
    busy(f.backend->ioasId(), "IOAS under a NEST_PARENT HWPT");
}

TEST(Nesting, VdeviceRules) {
    SimDeviceConfig d1, d2, other, twoStreams;
    d2.bdf = kBdf2;
    d2.group = 8;
    d2.streamIds = {0x20};
    other.bdf = "0000:00:05.0";
    other.group = 9;
    other.iommu = 1;  // behind another SMMU
    twoStreams.bdf = "0000:00:06.0";
    twoStreams.group = 10;
    twoStreams.streamIds = {0x30, 0x31};
    Fixture f(smmuHost(), {d1, d2, other, twoStreams});
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev(0)).value();
    auto viommu = n->allocViommu(f.dev(0), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    auto v1 = n->allocVdevice(f.dev(0), viommu, kVsid);
    ASSERT_TRUE(v1.ok()) << v1.error().describe();
    auto dupVsid = n->allocVdevice(f.dev(1), viommu, kVsid);
    EXPECT_EQ(err(dupVsid), EEXIST);
    EXPECT_TRUE(!dupVsid.ok() && mentions(dupVsid.error(), "IOMMU_VDEVICE_ALLOC"));
    EXPECT_EQ(err(n->allocVdevice(f.dev(0), viommu, 0x43)), EEXIST);  // one vDEVICE per device
    EXPECT_EQ(err(n->allocVdevice(f.dev(2), viommu, 0x44)), EINVAL);  // another SMMU
    EXPECT_EQ(err(n->allocVdevice(f.dev(3), viommu, 0x45)), EOPNOTSUPP);  // two StreamIDs
    EXPECT_TRUE(n->allocVdevice(f.dev(1), viommu, 0x43).ok());
    // The vIOMMU and nested HWPTs belong to the parent's SMMU too.
    EXPECT_EQ(err(n->allocViommu(f.dev(2), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3)), EINVAL);
    EXPECT_EQ(err(n->allocNestedHwpt(f.dev(2), viommu, kBypassSte)), EINVAL);
    // A freed vSID can be taken again.
    v1->reset();
    EXPECT_TRUE(n->allocVdevice(f.dev(0), viommu, kVsid).ok());
}

TEST(Nesting, VeventQueueOverflowAndSequenceGaps) {
    Fixture f;
    auto* n = f.nesting;
    auto parent = n->allocNestParent(f.dev()).value();
    auto viommu = n->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
    auto vdev = n->allocVdevice(f.dev(), viommu, kVsid).value();
    auto bypass = n->allocNestedHwpt(f.dev(), viommu, kBypassSte).value();
    ASSERT_TRUE(n->attach(f.dev(), bypass).ok());  // a vmaster: the vDEVICE existed at attach
    SimDevice& sd = *f.host.device(kBdf);
    EXPECT_EQ(f.host.raiseSmmuEvent(sd, translationFault(0x8, 0x1000)), SmmuEventFate::NoQueue);
    auto queue = n->allocVeventQueue(viommu, 2).value();
    EXPECT_EQ(err(n->allocVeventQueue(viommu, 2)), EEXIST);  // one per type per vIOMMU
    EXPECT_EQ(err(n->allocVeventQueue(viommu, 0)), EINVAL);

    // Depth 2, five events: two queued (sequence 0, 1; the report without a queue took no
    // number), three lost; the LOST_EVENTS header carries the last lost one's number (4).
    for (int i = 0; i < 5; ++i)
        EXPECT_EQ(f.host.raiseSmmuEvent(sd, translationFault(0x8, 0x1000 * i)),
                  i < 2 ? SmmuEventFate::Forwarded : SmmuEventFate::Lost);
    auto b = queue->read().value();
    ASSERT_EQ(b.events.size(), 2u);
    EXPECT_EQ(b.events[0].sequence, 0u);
    EXPECT_EQ(b.events[1].sequence, 1u);
    EXPECT_EQ(b.events[1].record[2], 0x1000u);
    EXPECT_TRUE(b.lostHeader);
    EXPECT_EQ(b.lost, 3u);
    EXPECT_TRUE(queue->read().value().events.empty());

    // A loss followed by a later event: the header is gone, the gap says it.
    for (int i = 0; i < 3; ++i) (void)f.host.raiseSmmuEvent(sd, translationFault(0x8, 0x9000));  // 5, 6 queued; 7 lost
    auto first = queue->read(1).value();  // one record: 5
    ASSERT_EQ(first.events.size(), 1u);
    EXPECT_EQ(first.lost, 0u);
    EXPECT_EQ(first.events[0].sequence, 5u);
    (void)f.host.raiseSmmuEvent(sd, translationFault(0x8, 0xa000));  // 8 replaces the header
    auto rest = queue->read().value();
    ASSERT_EQ(rest.events.size(), 2u);
    EXPECT_EQ(rest.events[0].sequence, 6u);
    EXPECT_EQ(rest.events[1].sequence, 8u);
    EXPECT_FALSE(rest.lostHeader);
    EXPECT_EQ(rest.lost, 1u);
}

TEST(Nesting, HostRefusals) {
    {
        SimHostConfig hc = smmuHost();
        hc.canwbs = false;  // a device-tree host without S2FWB: REPORT.md's blocker
        Fixture f(hc);
        auto parent = f.nesting->allocNestParent(f.dev());
        ASSERT_TRUE(parent.ok());
        auto v = f.nesting->allocViommu(f.dev(), *parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3);
        EXPECT_EQ(err(v), EOPNOTSUPP);
        EXPECT_TRUE(!v.ok() && mentions(v.error(), "IOMMU_VIOMMU_ALLOC")) << (v.ok() ? "" : v.error().describe());
    }
    {
        SimHostConfig hc = smmuHost();
        hc.nesting = false;
        Fixture f(hc);
        EXPECT_EQ(err(f.nesting->allocNestParent(f.dev())), EOPNOTSUPP);
    }
    {
        Fixture f;  // Tegra241 CMDQV on a plain SMMUv3
        auto parent = f.nesting->allocNestParent(f.dev()).value();
        EXPECT_EQ(err(f.nesting->allocViommu(f.dev(), parent, IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV)), EOPNOTSUPP);
    }
}

TEST(Nesting, Type1HasNoNesting) {
    SimHost host;
    host.addDevice({});
    auto b = openBackend(host, BackendKind::Type1, host.paths()).value();
    auto n = b->nesting();
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(n.error().code(), EOPNOTSUPP);
    EXPECT_TRUE(mentions(n.error(), "type1")) << n.error().describe();
    // The iommufd backend answers through the same accessor.
    auto i = openBackend(host, BackendKind::Iommufd, host.paths()).value();
    EXPECT_TRUE(i->nesting().ok());
}

// The simulated kernel's uAPI rules for the nesting ioctls, called raw (no wrapper deciding).
TEST(NestingSim, UapiRules) {
    Fixture f;
    const int fd = f.backend->iommufd();
    const uint32_t devId = *f.backend->devId(kBdf);
    auto ioctl = [&](unsigned long req, auto& s) {
        auto r = f.host.ioctl(fd, req, reinterpret_cast<uintptr_t>(&s));
        return r.ok() ? 0 : r.error().code();
    };
    auto parent = f.nesting->allocNestParent(f.dev()).value();
    auto plain = f.backend->allocHwpt(devId, 0).value();  // a paging HWPT, no NEST_PARENT

    iommu_viommu_alloc va{};
    va.size = sizeof va;
    va.type = IOMMU_VIOMMU_TYPE_ARM_SMMUV3;
    va.dev_id = devId;
    va.hwpt_id = plain.id();
    EXPECT_EQ(ioctl(IOMMU_VIOMMU_ALLOC, va), EINVAL);  // not a NEST_PARENT
    va.hwpt_id = f.backend->ioasId();
    EXPECT_EQ(ioctl(IOMMU_VIOMMU_ALLOC, va), ENOENT);  // not a paging HWPT
    va.hwpt_id = parent->id();
    va.flags = 1;
    EXPECT_EQ(ioctl(IOMMU_VIOMMU_ALLOC, va), EOPNOTSUPP);
    va.flags = 0;
    va.size = offsetof(iommu_viommu_alloc, out_viommu_id);  // below the minimum
    EXPECT_EQ(ioctl(IOMMU_VIOMMU_ALLOC, va), EINVAL);
    va.size = sizeof va;
    ASSERT_EQ(ioctl(IOMMU_VIOMMU_ALLOC, va), 0);
    IommufdObject viommu(f.backend.get(), va.out_viommu_id, "vIOMMU");

    // NEST_PARENT only over an IOAS; a nested HWPT only with valid ARM data.
    iommu_hwpt_alloc ha{};
    ha.size = sizeof ha;
    ha.dev_id = devId;
    ha.flags = IOMMU_HWPT_ALLOC_NEST_PARENT;
    ha.pt_id = parent->id();
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EOPNOTSUPP);
    ha.pt_id = 999;
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EINVAL);  // unknown pt_id
    iommu_hwpt_arm_smmuv3 ste{{kBypassSte[0], kBypassSte[1]}};
    ha.flags = 0;
    ha.pt_id = viommu.id();
    ha.data_type = IOMMU_HWPT_DATA_ARM_SMMUV3;
    ha.data_uptr = reinterpret_cast<uint64_t>(&ste);
    ha.data_len = 0;
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EINVAL);  // a data type without data
    ha.data_len = 8;
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EINVAL);
    ha.data_len = sizeof ste;
    ha.data_type = IOMMU_HWPT_DATA_VTD_S1;
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EINVAL);
    ha.data_type = IOMMU_HWPT_DATA_ARM_SMMUV3;
    ha.flags = IOMMU_HWPT_FAULT_ID_VALID;
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EOPNOTSUPP);
    ha.flags = 0;
    ha.__reserved = 1;
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EOPNOTSUPP);
    ha.__reserved = 0;
    ha.pt_id = parent->id();  // an SMMUv3 nests only through a vIOMMU
    EXPECT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), EOPNOTSUPP);
    ha.pt_id = viommu.id();
    ASSERT_EQ(ioctl(IOMMU_HWPT_ALLOC, ha), 0);
    IommufdObject nested(f.backend.get(), ha.out_hwpt_id, "nested");

    // HWPT_INVALIDATE: entry_num answered on failure; a nested SMMUv3 HWPT takes none.
    smmu::Command c = cmd(smmu::kOpTlbiNhAll);
    iommu_hwpt_invalidate inv{};
    inv.size = sizeof inv;
    inv.hwpt_id = viommu.id();
    inv.data_uptr = reinterpret_cast<uint64_t>(&c);
    inv.data_type = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;
    inv.entry_len = 0;
    inv.entry_num = 1;
    EXPECT_EQ(ioctl(IOMMU_HWPT_INVALIDATE, inv), EINVAL);
    EXPECT_EQ(inv.entry_num, 0u);
    inv.entry_len = sizeof c;
    inv.entry_num = 0;
    EXPECT_EQ(ioctl(IOMMU_HWPT_INVALIDATE, inv), EINVAL);  // an empty array on a vIOMMU
    inv.entry_num = 1;
    inv.data_type = IOMMU_HWPT_INVALIDATE_DATA_VTD_S1;
    EXPECT_EQ(ioctl(IOMMU_HWPT_INVALIDATE, inv), EINVAL);
    inv.data_type = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;
    inv.entry_num = 1;
    inv.hwpt_id = nested.id();
    EXPECT_EQ(ioctl(IOMMU_HWPT_INVALIDATE, inv), EOPNOTSUPP);
    inv.hwpt_id = viommu.id();
    struct {
        smmu::Command c;
        uint64_t tail;
    } longer{cmd(smmu::kOpTlbiNhAll), 1};
    inv.data_uptr = reinterpret_cast<uint64_t>(&longer);
    inv.entry_len = sizeof longer;
    inv.entry_num = 1;  // (every answer writes it back)
    EXPECT_EQ(ioctl(IOMMU_HWPT_INVALIDATE, inv), E2BIG);  // copy_struct_from_user()
    longer.tail = 0;
    inv.entry_num = 1;
    EXPECT_EQ(ioctl(IOMMU_HWPT_INVALIDATE, inv), 0);
    EXPECT_EQ(inv.entry_num, 1u);

    // VEVENTQ_ALLOC's flags and reserved field; GET_HW_INFO's.
    iommu_veventq_alloc q{};
    q.size = sizeof q;
    q.viommu_id = viommu.id();
    q.type = IOMMU_VEVENTQ_TYPE_ARM_SMMUV3;
    q.veventq_depth = 4;
    q.__reserved = 1;
    EXPECT_EQ(ioctl(IOMMU_VEVENTQ_ALLOC, q), EOPNOTSUPP);
    q.__reserved = 0;
    q.veventq_depth = (1u << 19) + 1;
    EXPECT_EQ(ioctl(IOMMU_VEVENTQ_ALLOC, q), EINVAL);
    iommu_hw_info hi{};
    hi.size = sizeof hi;
    hi.dev_id = devId;
    hi.flags = IOMMU_HW_INFO_FLAG_INPUT_TYPE;
    hi.out_data_type = IOMMU_HW_INFO_TYPE_INTEL_VTD;
    EXPECT_EQ(ioctl(IOMMU_GET_HW_INFO, hi), EOPNOTSUPP);
    hi.out_data_type = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
    EXPECT_EQ(ioctl(IOMMU_GET_HW_INFO, hi), 0);
    hi.__reserved[1] = 1;
    EXPECT_EQ(ioctl(IOMMU_GET_HW_INFO, hi), EOPNOTSUPP);
}
