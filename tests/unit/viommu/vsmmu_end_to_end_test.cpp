// The virtual SMMUv3 end to end without KVM: the device model (devices/smmuv3/virtual_smmu.h)
// driven the way Linux's arm-smmu-v3 drives it, over the product's host side (NestedSmmuBinding,
// vmm/viommu.h) on the simulated host with an Arm SMMUv3. Each guest action is checked by the
// iommufd calls it costs and by what the simulated SMMU then holds; a host fault comes back into
// the guest's event queue with its interrupt; teardown leaves nothing. (VirtualIommu, which adds
// the MMIO bus and KVM interrupt lines, needs KVM: the arm64 bed covers it.)
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "devices/smmuv3/registers.h"
#include "devices/smmuv3/virtual_smmu.h"
#include "tests/hostsim/host_call_observer.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/iommufd.h"
#include "vfio/uapi_compat.h"
#include "vmm/viommu.h"

using namespace conduit;
using namespace conduit::hostsim;
using conduit::vmm::NestedSmmuBinding;
namespace v = conduit::vfio::smmuv3;
namespace reg = conduit::devices::smmuv3::reg;
using devices::smmuv3::Command;
using devices::smmuv3::Event;
using devices::smmuv3::Ste;

namespace {

constexpr uint32_t kSid = 0x18;  // 00:03.0 on the guest's bus 0
constexpr uint64_t kRam = 0x40000000;
constexpr uint64_t kRamSize = 8ull << 20;
constexpr uint64_t kCmdq = kRam + 0x10000;
constexpr uint64_t kEvtq = kRam + 0x20000;
constexpr uint64_t kStrtab = kRam + 0x400000;  // linear, 1024 STEs
constexpr uint64_t kCdTable = kRam + 0x110000;

class CallLog final : public HostCallObserver {
public:
    CallLog() { setHostCallObserver(this); }
    ~CallLog() override { setHostCallObserver(nullptr); }
    int beforeCall(const std::string& call) override {
        if (call == "read") return 0;  // the event thread draining the vEVENTQ, whenever it runs
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

struct EdgeLine final : devices::InterruptLine {
    std::atomic<bool> level{false};
    std::atomic<int> edges{0};
    void setLevel(bool asserted) override {
        if (asserted && !level.exchange(true)) ++edges;
        if (!asserted) level = false;
    }
};

Command cmd(uint8_t op, uint64_t d0 = 0, uint64_t d1 = 0) { return {op | d0, d1}; }
Command cfgiSte(uint32_t sid) { return cmd(v::kOpCfgiSte, v::prep(v::kCfgi0Sid, sid), v::kCfgi1Leaf); }
Command cmdSync() { return cmd(v::kOpCmdSync, v::prep(reg::kSync0Cs, reg::kSyncCsSev)); }
Command tlbiVa(uint16_t asid, uint64_t va) { return cmd(v::kOpTlbiNhVa, v::prep(v::kTlbi0Asid, asid), va & v::kTlbi1VaMask); }
Ste s1Ste() {
    return {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgS1Trans) | (kCdTable & v::kSte0S1CtxPtr),
            v::prep(v::kSte1S1Cir, 1) | v::prep(v::kSte1S1Cor, 1) | v::prep(v::kSte1S1Csh, 3)};
}
SimHostConfig smmuHost() {
    SimHostConfig c;
    c.hwInfoType = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
    return c;
}

class VsmmuEndToEnd : public ::testing::Test {
protected:
    VsmmuEndToEnd() : host(smmuHost()), mem(memory::GuestMemory::create({{kRam, kRamSize}}, {}).value()) {
        host.addDevice(SimDeviceConfig{});
        backend = vfio::IommufdBackend::open(host, host.paths()).value();
        device = backend->openDevice("0000:00:03.0").value();
        // Stage 2: guest RAM at IOVA == IPA, as Passthrough's DmaMapper does.
        EXPECT_TRUE(backend->mapDma(kRam, kRamSize, mem.regions()[0]->host(), true).ok());
        baseObjects = host.iommufdObjectCount();
        vfio::VfioOps& ops = *backend;
        binding = NestedSmmuBinding::create(*ops.nesting().value(), {{device.get(), kSid}}).value();
        smmu = devices::smmuv3::VirtualSmmu::create("smmuv3@0x9050000", binding->hostIds(), mem, *binding,
                                                    {&evtqIrq, &gerrorIrq, &syncIrq})
                   .value();
        auto* model = smmu.get();
        EXPECT_TRUE(binding->startEvents([model](std::span<const Event> e, uint32_t lost) { model->deliverEvents(e, lost); }).ok());
    }
    ~VsmmuEndToEnd() override {
        teardown();
        (void)backend->unmapDma(kRam, kRamSize);
        device.reset();
        backend.reset();
    }
    void teardown() {
        if (binding) binding->stopEvents();
        smmu.reset();
        binding.reset();
    }

    uint32_t r32(uint64_t off) {
        uint32_t x = 0;
        smmu->read(off, std::span(reinterpret_cast<uint8_t*>(&x), 4));
        return x;
    }
    void w32(uint64_t off, uint32_t x) { smmu->write(off, std::span(reinterpret_cast<const uint8_t*>(&x), 4)); }
    void w64(uint64_t off, uint64_t x) { smmu->write(off, std::span(reinterpret_cast<const uint8_t*>(&x), 8)); }
    void writeSync(uint32_t off, uint32_t ack, uint32_t value) {
        w32(off, value);
        EXPECT_EQ(r32(ack), value) << "register " << std::hex << off;
    }
    void writeSte(uint32_t sid, const Ste& ste) {
        // Dwords 2..7 zero (no stage 2, as Linux writes a stage-1 STE).
        std::array<uint64_t, 8> full{ste[0], ste[1]};
        ASSERT_TRUE(mem.writeObj(kStrtab + uint64_t{sid} * 64, full).ok());
    }
    void issue(const std::vector<Command>& cmds) {
        uint32_t prod = r32(reg::kCmdqProd);
        for (const auto& c : cmds) {
            ASSERT_TRUE(mem.writeObj(kCmdq + (prod & 0xff) * 16, c).ok());
            prod = (prod + 1) & 0x1ff;
        }
        w32(reg::kCmdqProd, prod);
    }
    // arm_smmu_device_reset() of Linux 7.3, linear stream table of 1024 STEs.
    void probeLikeLinux() {
        writeSync(reg::kCr0, reg::kCr0Ack, 0);
        w32(reg::kCr1, 0xd75);
        w32(reg::kCr2, 0x6);
        w64(reg::kStrtabBase, reg::kStrtabBaseRa | kStrtab);
        w32(reg::kStrtabBaseCfg, v::prep(reg::kStrtabCfgLog2Size, 10));
        w64(reg::kCmdqBase, reg::kQBaseRa | kCmdq | 8);
        w32(reg::kCmdqProd, 0);
        w32(reg::kCmdqCons, 0);
        writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn);
        issue({cmd(v::kOpCfgiAll, 0, v::prep(reg::kCfgi1Range, 31)), cmdSync()});
        issue({cmd(v::kOpTlbiNsnhAll), cmdSync()});
        w64(reg::kEvtqBase, reg::kQBaseRa | kEvtq | 8);
        w32(reg::kEvtqProd, 0);
        w32(reg::kEvtqCons, 0);
        writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn);
        writeSync(reg::kIrqCtrl, reg::kIrqCtrlAck, reg::kIrqCtrlEvtqIrqEn | reg::kIrqCtrlGerrorIrqEn);
        writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    }
    SimDevice& sim() { return *host.device("0000:00:03.0"); }
    bool dma(uint64_t iova) {
        const uint8_t b = 0x77;
        return host.dmaWrite(sim(), iova, &b, 1);
    }

    SimHost host;
    memory::GuestMemory mem;
    std::unique_ptr<vfio::IommufdBackend> backend;
    std::unique_ptr<vfio::VfioDevice> device;
    size_t baseObjects = 0;
    EdgeLine evtqIrq, gerrorIrq, syncIrq;
    std::unique_ptr<NestedSmmuBinding> binding;
    std::unique_ptr<devices::smmuv3::VirtualSmmu> smmu;
};

}  // namespace

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
    writeSte(kSid, s1Ste());
    issue({cfgiSte(kSid), cmdSync()});
    EXPECT_EQ(log.take(), (Calls{"IOMMU_HWPT_ALLOC", "VFIO_DEVICE_ATTACH_IOMMUFD_PT"}));
    auto nd = host.nestedDomainOf(sim());
    ASSERT_TRUE(nd);
    EXPECT_EQ(nd->ste, s1Ste());
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
    for (int i = 0; i < 500 && r32(reg::kEvtqProd) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_EQ(r32(reg::kEvtqProd) & 0xff, 1u);
    auto ev = mem.readObj<Event>(kEvtq).value();
    EXPECT_EQ(v::field(ev[0], v::kEvt0Id), v::kEvtFTranslation);
    EXPECT_EQ(v::field(ev[0], v::kEvt0Sid), kSid);
    EXPECT_EQ(ev[2], 0xdead000u);
    EXPECT_GT(evtqIrq.edges, edges);

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
    writeSte(kSid, s1Ste());
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
