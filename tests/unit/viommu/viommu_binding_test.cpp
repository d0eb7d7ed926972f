// The vSMMU's host side (vmm/viommu.h, NestedSmmuBinding) against the simulated host with an Arm
// SMMUv3 (tests/hostsim models vIOMMU, vDEVICE, nested HWPT, invalidation and vEVENTQ with Linux
// 7.3's checks). The binding is called as the vSMMU calls it; the test sees the iommufd calls each
// guest action costs (the host call observer) and what the simulated SMMU did.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "tests/hostsim/host_call_observer.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/iommufd.h"
#include "vfio/uapi_compat.h"
#include "vmm/viommu.h"

using namespace conduit;
using namespace conduit::hostsim;
using conduit::vmm::NestedSmmuBinding;
namespace smmu = conduit::vfio::smmuv3;

namespace {

constexpr uint32_t kSid0 = 0x18;  // 00:03.0 on the virtual bus
constexpr uint32_t kSid1 = 0x20;  // 00:04.0

constexpr smmu::Ste kAbort{0, 0};
constexpr smmu::Ste kBypass{smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgBypass), 0};
constexpr smmu::Ste kS1{0x11000b, 0xd4};  // CD table at IPA 0x110000 (REPORT.md's vSTE)
constexpr smmu::Ste kS1b{0x12000b, 0xd4};

smmu::Command tlbiNhVa(uint16_t asid, uint64_t va) {
    return {smmu::kOpTlbiNhVa | smmu::prep(smmu::kTlbi0Asid, asid), (va & smmu::kTlbi1VaMask) | smmu::kTlbi1Leaf};
}
smmu::Command tlbiAsid(uint16_t asid) { return {smmu::kOpTlbiNhAsid | smmu::prep(smmu::kTlbi0Asid, asid), 0}; }
smmu::Command cfgiCd(uint32_t sid) { return {smmu::kOpCfgiCd | smmu::prep(smmu::kCfgi0Sid, sid), smmu::kCfgi1Leaf}; }
smmu::Command atcInv(uint32_t sid) { return {smmu::kOpAtcInv | smmu::prep(smmu::kAtc0Sid, sid), 0}; }
smmu::Event fault(uint32_t sid, uint64_t iova) {
    return {smmu::kEvtFTranslation | smmu::prep(smmu::kEvt0Sid, sid), 0, iova, 0};
}

// The names of the host calls made while it is installed.
class CallLog final : public HostCallObserver {
public:
    CallLog() { setHostCallObserver(this); }
    ~CallLog() override { setHostCallObserver(nullptr); }
    int beforeCall(const std::string& call) override {
        std::lock_guard lock(m_);
        calls_.push_back(call);
        return 0;
    }
    void hostDestroyed(const SimHostLeftovers&) override {}
    std::vector<std::string> take() {
        std::lock_guard lock(m_);
        return std::exchange(calls_, {});
    }

private:
    std::mutex m_;
    std::vector<std::string> calls_;
};

using Calls = std::vector<std::string>;

SimHostConfig smmuHost() {
    SimHostConfig c;
    c.hwInfoType = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
    return c;
}

SimDeviceConfig second() {
    SimDeviceConfig d;
    d.bdf = "0000:00:04.0";
    d.group = 8;
    d.streamIds = {0x20};
    return d;
}

struct Fixture {
    explicit Fixture(SimHostConfig hc = smmuHost(), std::vector<SimDeviceConfig> devs = {SimDeviceConfig{}, second()})
        : host(hc) {
        for (auto& d : devs) host.addDevice(d);
        backend = vfio::IommufdBackend::open(host, host.paths()).value();
        for (auto& d : devs) devices.push_back(backend->openDevice(d.bdf).value());
        vfio::VfioOps& ops = *backend;
        nesting = ops.nesting().value();
        ram.resize(0x40000);
        EXPECT_TRUE(backend->mapDma(0x100000, ram.size(), ram.data(), true).ok());
        baseObjects = host.iommufdObjectCount();  // IOAS, devices, their auto domains
    }
    ~Fixture() {
        (void)backend->unmapDma(0x100000, ram.size());
        devices.clear();
        backend.reset();
    }
    Result<std::unique_ptr<NestedSmmuBinding>> bind(std::vector<uint32_t> sids = {kSid0, kSid1}) {
        std::vector<NestedSmmuBinding::Device> d;
        for (size_t i = 0; i < sids.size(); ++i) d.push_back({devices.at(i).get(), sids[i]});
        return NestedSmmuBinding::create(*nesting, d);
    }
    SimDevice& sim(size_t i = 0) { return *host.device(devices.at(i)->name()); }
    bool dma(size_t i, uint64_t iova) {
        const uint8_t b = 0x5a;
        return host.dmaWrite(sim(i), iova, &b, 1);
    }

    SimHost host;
    std::unique_ptr<vfio::IommufdBackend> backend;
    std::vector<std::unique_ptr<vfio::VfioDevice>> devices;
    vfio::IommuNesting* nesting = nullptr;
    std::vector<uint8_t> ram;
    size_t baseObjects = 0;
};

bool mentions(const Error& e, const std::string& s) { return e.describe().find(s) != std::string::npos; }

}  // namespace

TEST(NestedSmmuBinding, CreatesTheObjectsInTheKernelsOrder) {
    Fixture f;
    CallLog log;
    auto b = f.bind();
    ASSERT_TRUE(b.ok()) << b.error().describe();
    EXPECT_EQ(log.take(), (Calls{"IOMMU_GET_HW_INFO", "IOMMU_HWPT_ALLOC" /* NEST_PARENT */,
                                 "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_VIOMMU_ALLOC",
                                 "IOMMU_HWPT_ALLOC" /* abort */, "IOMMU_HWPT_ALLOC" /* bypass */,
                                 "IOMMU_VEVENTQ_ALLOC", "IOMMU_VDEVICE_ALLOC",
                                 // the second device joins the unit: same SMMU, same stage 2
                                 "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_VDEVICE_ALLOC", "IOMMU_GET_HW_INFO"}));
    EXPECT_EQ((*b)->streams(), (std::vector<uint32_t>{kSid0, kSid1}));
    // The host's ID registers, for the vSMMU to mirror (QEMU's stage=nested SMMUv3: COHACC set).
    EXPECT_EQ((*b)->hostIds().idr, f.host.config().smmuIdr);
    EXPECT_EQ((*b)->hostIds().aidr, f.host.config().smmuAidr);
    EXPECT_TRUE((*b)->coherent());
    auto s = (*b)->stats();
    EXPECT_EQ(s.viommus, 1u);
    EXPECT_EQ(s.vdevices, 2u);
    // On stage 2 alone DMA to guest RAM at its IPA still lands: nothing changed for the guest yet.
    EXPECT_TRUE(f.dma(0, 0x100010));
    EXPECT_EQ(f.ram[0x10], 0x5a);
    EXPECT_FALSE(f.host.nestedDomainOf(f.sim(0)));
}

TEST(NestedSmmuBinding, SteChangesCostOneAttachAndFreeTheOldHwpt) {
    Fixture f;
    auto b = f.bind().value();
    CallLog log;
    // S1: a nested HWPT for the vSTE, attached by replacement.
    ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));
    auto nd = f.host.nestedDomainOf(f.sim(0));
    ASSERT_TRUE(nd);
    EXPECT_EQ(nd->ste, kS1);
    EXPECT_EQ(nd->vsid, kSid0);  // the vDEVICE existed at attach: events and CFGI_CD know the vSID
    const uint32_t firstS1 = nd->hwpt;
    // The same STE again (a CFGI_STE with nothing changed): no call.
    ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
    EXPECT_TRUE(log.take().empty());
    // Another CD table: the new HWPT replaces the old one, which is then destroyed.
    ASSERT_TRUE(b->setStream(kSid0, kS1b).ok());
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_DESTROY"}));
    nd = f.host.nestedDomainOf(f.sim(0));
    ASSERT_TRUE(nd);
    EXPECT_NE(nd->hwpt, firstS1);
    EXPECT_EQ(nd->ste, kS1b);
    // Bypass: the shared bypass HWPT (no allocation), the S1 HWPT destroyed; DMA is stage 2 only.
    ASSERT_TRUE(b->setStream(kSid0, kBypass).ok());
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT", "IOMMU_DESTROY"}));
    EXPECT_TRUE(f.dma(0, 0x100020));
    EXPECT_EQ(f.ram[0x20], 0x5a);
    // Abort (an STE without V): the shared abort HWPT; DMA blocked.
    ASSERT_TRUE(b->setStream(kSid0, kAbort).ok());
    EXPECT_EQ(log.take(), (Calls{"VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));
    EXPECT_FALSE(f.dma(0, 0x100030));
    EXPECT_EQ(f.ram[0x30], 0);
    // The other stream was never touched: still stage 2.
    EXPECT_TRUE(f.dma(1, 0x100040));
    auto s = b->stats();
    EXPECT_EQ(s.steS1, 2u);
    EXPECT_EQ(s.steBypass, 1u);
    EXPECT_EQ(s.steAbort, 1u);
    EXPECT_EQ(s.steUnchanged, 1u);
    auto j = b->statsJson();
    EXPECT_EQ(j["ste_changes"]["s1"], 2);
    EXPECT_EQ(j["streams"][0]["config"], "abort");
    EXPECT_EQ(j["streams"][1]["config"], "stage2");
}

TEST(NestedSmmuBinding, RefusesWhatTheHostMustNotSee) {
    Fixture f;
    auto b = f.bind().value();
    CallLog log;
    auto unknown = b->setStream(0x99, kBypass);
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.error().code(), ENOENT);
    // A bit outside STRTAB_STE_0_NESTING_ALLOWED (S1 STALLD is allowed; S2 VMID in dword 2 is not
    // representable; here Config's neighbour ShareCfg in dword 1, bit 44).
    auto dirty = b->setStream(kSid0, {kS1[0], kS1[1] | (1ull << 44)});
    ASSERT_FALSE(dirty.ok());
    EXPECT_EQ(dirty.error().code(), EINVAL);
    auto s2 = b->setStream(kSid0, {smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgS2Trans), 0});
    ASSERT_FALSE(s2.ok());
    EXPECT_TRUE(mentions(s2.error(), "abort, bypass and S1 only")) << s2.error().describe();
    EXPECT_TRUE(log.take().empty());  // none reached the host
    EXPECT_EQ(b->stats().steErrors, 3u);
    // The host refusing the nested HWPT (ENOMEM here): the previous configuration stays in force.
    ASSERT_TRUE(b->setStream(kSid0, kBypass).ok());
    const size_t objects = f.host.iommufdObjectCount();
    f.host.failIoctl(IOMMU_HWPT_ALLOC, ENOMEM);
    auto refused = b->setStream(kSid0, kS1);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code(), ENOMEM);
    EXPECT_TRUE(f.dma(0, 0x100050));  // still bypass
    EXPECT_EQ(f.ram[0x50], 0x5a);
    EXPECT_EQ(f.host.iommufdObjectCount(), objects);
    // And it can be asked again.
    f.host.clearInjectedFaults();
    EXPECT_TRUE(b->setStream(kSid0, kS1).ok());
}

TEST(NestedSmmuBinding, OneInvalidateCallPerBatch) {
    Fixture f;
    auto b = f.bind().value();
    ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
    CallLog log;
    // What the guest queued before a CMD_SYNC: TLBIs, a CFGI_CD of an assigned stream, and one of
    // a stream no assigned device has (an emulated device's): dropped, counted as handled.
    const std::vector<smmu::Command> cmds{tlbiNhVa(5, 0x400000), tlbiAsid(5), cfgiCd(kSid0), cfgiCd(0x40),
                                          {smmu::kOpTlbiNhAll, 0}};
    uint32_t done = 99;
    auto r = b->invalidate(cmds, &done);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(done, cmds.size());
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_INVALIDATE"}));
    const auto& issued = f.host.smmuCommandsIssued();
    ASSERT_EQ(issued.size(), 4u);
    EXPECT_EQ(smmu::field(issued[2].cmd[0], smmu::kCfgi0Sid), 0x8u);  // the physical StreamID
    auto s = b->stats();
    EXPECT_EQ(s.invalidateCalls, 1u);
    EXPECT_EQ(s.commandsForwarded, 4u);
    EXPECT_EQ(s.commandsDropped, 1u);
    // Only commands for unassigned streams: no call at all.
    const smmu::Command other = cfgiCd(0x40);
    ASSERT_TRUE(b->invalidate(std::span(&other, 1), &done).ok());
    EXPECT_EQ(done, 1u);
    EXPECT_TRUE(log.take().empty());
}

TEST(NestedSmmuBinding, APartialFailureNamesTheFailingCommand) {
    Fixture f;
    auto b = f.bind().value();
    ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
    // ATC_INV on a device without ATS is refused by the host (EIO) at index 2 of the batch; the
    // dropped CFGI_CD before it shifts nothing in the guest's numbering.
    const std::vector<smmu::Command> cmds{cfgiCd(0x40), tlbiAsid(1), atcInv(kSid0), tlbiAsid(2)};
    uint32_t done = 99;
    auto r = b->invalidate(cmds, &done);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(done, 2u);
    EXPECT_EQ(r.error().code(), EIO);
    EXPECT_TRUE(mentions(r.error(), "command 2")) << r.error().describe();
    EXPECT_EQ(f.host.smmuCommandsIssued().size(), 1u);  // the TLBI before it reached the SMMU
    EXPECT_EQ(b->stats().invalidateErrors, 1u);
    // A command the host never takes (CFGI_STE is the VMM's own) is refused before any call.
    CallLog log;
    const std::vector<smmu::Command> own{tlbiAsid(1), {smmu::kOpCfgiSte, 0}};
    ASSERT_FALSE(b->invalidate(own, &done).ok());
    EXPECT_EQ(done, 1u);
    EXPECT_TRUE(log.take().empty());
}

TEST(NestedSmmuBinding, EventsReachTheSinkWithTheGuestStreamId) {
    Fixture f;
    auto b = f.bind().value();
    ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
    std::mutex m;
    std::condition_variable cv;
    std::vector<smmu::Event> got;
    uint32_t lost = 0;
    // Fill the vEVENTQ past its depth before the thread runs: the loss must be reported.
    const unsigned n = NestedSmmuBinding::kEventQueueDepth + 3;
    for (unsigned i = 0; i < n; ++i) (void)f.host.raiseSmmuEvent(f.sim(0), fault(0x8, 0x1000 * i));
    ASSERT_TRUE(b->startEvents([&](std::span<const smmu::Event> e, uint32_t l) {
                     std::lock_guard lock(m);
                     got.insert(got.end(), e.begin(), e.end());
                     lost += l;
                     cv.notify_all();
                 }).ok());
    {
        std::unique_lock lock(m);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return got.size() + lost >= n; }))
            << got.size() << " events, " << lost << " lost";
    }
    // And one more while it runs.
    EXPECT_EQ(f.host.raiseSmmuEvent(f.sim(0), fault(0x8, 0xabc000)), SmmuEventFate::Forwarded);
    {
        std::unique_lock lock(m);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return got.size() + lost > n; }));
        EXPECT_EQ(got.size(), NestedSmmuBinding::kEventQueueDepth + 1);
        EXPECT_EQ(lost, 3u);
        EXPECT_EQ(smmu::field(got[0][0], smmu::kEvt0Sid), kSid0);  // the vSID, not the host's 0x8
        EXPECT_EQ(got.back()[2], 0xabc000u);
    }
    b->stopEvents();
    auto s = b->stats();
    EXPECT_EQ(s.eventsDelivered, NestedSmmuBinding::kEventQueueDepth + 1);
    EXPECT_EQ(s.eventsLost, 3u);
}

TEST(NestedSmmuBinding, TeardownLeavesNothingAndTheDevicesOnTheIoas) {
    Fixture f;
    {
        auto b = f.bind().value();
        ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
        ASSERT_TRUE(b->setStream(kSid1, kAbort).ok());
        ASSERT_TRUE(b->startEvents([](std::span<const smmu::Event>, uint32_t) {}).ok());
        EXPECT_GT(f.host.iommufdObjectCount(), f.baseObjects);
    }
    // Every nesting object destroyed (none refused busy), and the devices translate through the
    // IOAS again as Passthrough opened them.
    EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
    EXPECT_FALSE(f.host.nestedDomainOf(f.sim(0)));
    EXPECT_TRUE(f.dma(0, 0x100060));
    EXPECT_TRUE(f.dma(1, 0x100061));
    EXPECT_EQ(f.ram[0x61], 0x5a);
}

TEST(NestedSmmuBinding, HostRefusalsSayWhyAndLeaveNothing) {
    {
        SimHostConfig hc = smmuHost();
        hc.canwbs = false;  // a device-tree host without S2FWB
        Fixture f(hc);
        auto b = f.bind();
        ASSERT_FALSE(b.ok());
        EXPECT_EQ(b.error().code(), EOPNOTSUPP);
        EXPECT_TRUE(mentions(b.error(), "CANWBS") && mentions(b.error(), "S2FWB") &&
                    mentions(b.error(), "IOMMU_VIOMMU_ALLOC"))
            << b.error().describe();
        EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
        EXPECT_TRUE(f.dma(0, 0x100070));  // back on the IOAS
    }
    {
        Fixture f(SimHostConfig{});  // an Intel VT-d host
        auto b = f.bind();
        ASSERT_FALSE(b.ok());
        EXPECT_TRUE(mentions(b.error(), "no Arm SMMUv3")) << b.error().describe();
        EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
    }
    {
        SimHostConfig hc = smmuHost();
        hc.nesting = false;
        Fixture f(hc);
        auto b = f.bind();
        ASSERT_FALSE(b.ok());
        EXPECT_TRUE(mentions(b.error(), "NEST_PARENT")) << b.error().describe();
        EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
    }
    {
        Fixture f;
        auto dup = f.bind({kSid0, kSid0});
        ASSERT_FALSE(dup.ok());
        EXPECT_EQ(dup.error().code(), EINVAL);
        EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
    }
}

TEST(NestedSmmuBinding, DevicesBehindTwoSmmusMakeTwoUnits) {
    SimDeviceConfig other = second();
    other.iommu = 1;
    Fixture f(smmuHost(), {SimDeviceConfig{}, other});
    auto b = f.bind();
    ASSERT_TRUE(b.ok()) << b.error().describe();
    EXPECT_EQ((*b)->stats().viommus, 2u);
    ASSERT_TRUE((*b)->setStream(kSid0, kS1).ok());
    ASSERT_TRUE((*b)->setStream(kSid1, kS1b).ok());
    CallLog log;
    // A TLBI goes to both vIOMMUs (an ASID is the guest's across its streams), a CFGI_CD only to
    // its stream's: two calls for the batch.
    const std::vector<smmu::Command> cmds{tlbiAsid(3), cfgiCd(kSid1)};
    uint32_t done = 0;
    ASSERT_TRUE((*b)->invalidate(cmds, &done).ok());
    EXPECT_EQ(done, 2u);
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_INVALIDATE", "IOMMU_HWPT_INVALIDATE"}));
    EXPECT_EQ(f.host.smmuCommandsIssued().size(), 3u);
    b->reset();
    EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
}

TEST(NestedSmmuBinding, ADriverRefusingTheSharedStage2AttachStartsAUnitToo) {
    SimDeviceConfig other = second();
    other.iommu = 1;
    Fixture f(smmuHost(), {SimDeviceConfig{}, other});
    // The second device's attach to the first unit's stage 2 is refused (EINVAL), as by an SMMU
    // driver that does not share a domain across instances: no vDEVICE is tried there.
    f.host.failIoctl(VFIO_DEVICE_ATTACH_IOMMUFD_PT, EINVAL, 2);
    CallLog log;
    auto b = f.bind();
    ASSERT_TRUE(b.ok()) << b.error().describe();
    EXPECT_EQ((*b)->stats().viommus, 2u);
    const Calls calls = log.take();
    EXPECT_EQ(std::count(calls.begin(), calls.end(), "IOMMU_VDEVICE_ALLOC"), 2);
    EXPECT_EQ(std::count(calls.begin(), calls.end(), "IOMMU_VIOMMU_ALLOC"), 2);
    f.host.clearInjectedFaults();
    b->reset();
    EXPECT_EQ(f.host.iommufdObjectCount(), f.baseObjects);
}

TEST(NestedSmmuBinding, AGuestResetKeepsTheVdeviceAndTheStage1) {
    Fixture f;
    auto b = f.bind().value();
    ASSERT_TRUE(b->setStream(kSid0, kS1).ok());
    // VFIO_DEVICE_RESET (a guest FLR) touches no iommufd object: events still name the vSID.
    ASSERT_TRUE(f.devices[0]->reset().ok());
    auto nd = f.host.nestedDomainOf(f.sim(0));
    ASSERT_TRUE(nd);
    EXPECT_EQ(nd->vsid, kSid0);
    EXPECT_EQ(nd->ste, kS1);
}
