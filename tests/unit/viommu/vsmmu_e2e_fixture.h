// What the vSMMU end-to-end tests share (vsmmu_end_to_end_test.cpp, vsmmu_guest_dma_test.cpp): the
// device model (devices/smmuv3/virtual_smmu.h) over the product's host side (NestedSmmuBinding,
// vmm/viommu.h) on the simulated host with an Arm SMMUv3, driven the way Linux's arm-smmu-v3 drives
// it; a recorder of the iommufd calls each guest action costs; and a guest's AArch64 stage 1 (CD
// tables and 4 KiB page tables) written into guest memory. The commands, STEs and the guest
// memory layout are the model's unit-test ones (tests/unit/devices/smmuv3_fixture.h).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "devices/smmuv3/registers.h"
#include "devices/smmuv3/virtual_smmu.h"
#include "tests/hostsim/host_call_observer.h"
#include "tests/hostsim/sim_host.h"
#include "tests/hostsim/sim_smmu_walk.h"
#include "tests/unit/devices/smmuv3_fixture.h"
#include "vfio/iommufd.h"
#include "vfio/uapi_compat.h"
#include "vmm/viommu.h"

namespace conduit::vmm::test {

namespace v = vfio::smmuv3;
namespace reg = devices::smmuv3::reg;
namespace walk = hostsim::smmuwalk;
using devices::smmuv3::Command;
using devices::smmuv3::Event;
using devices::smmuv3::Ste;
using devices::smmuv3::test::cfgiSte;
using devices::smmuv3::test::cmd;
using devices::smmuv3::test::cmdSync;
using devices::smmuv3::test::kCmdq;
using devices::smmuv3::test::kEvtq;
using devices::smmuv3::test::kRam;
using devices::smmuv3::test::kRamSize;
using devices::smmuv3::test::s1Ste;
using devices::smmuv3::test::tlbiVa;
using Calls = std::vector<std::string>;

constexpr uint32_t kSid = 0x18;  // 00:03.0 on the guest's bus 0
constexpr uint64_t kStrtab = devices::smmuv3::test::kLinear;  // linear, 1024 STEs
constexpr uint64_t kCdTable = kRam + 0x110000;

// Every iommufd/VFIO call Conduit makes on the simulated host while it lives. Given the host, also
// which kind of object each IOMMU_DESTROY removed (SimHost::iommufdObjectKinds() before it and
// before the next call).
class CallLog final : public hostsim::HostCallObserver {
public:
    explicit CallLog(const hostsim::SimHost* host = nullptr) : host_(host) { hostsim::setHostCallObserver(this); }
    ~CallLog() override { hostsim::setHostCallObserver(nullptr); }
    int beforeCall(const std::string& call) override {
        if (call == "read") return 0;  // the event thread draining the vEVENTQ, whenever it runs
        std::lock_guard lock(m_);
        calls_.push_back(call);
        resolveDestroy();
        if (host_ && call == "IOMMU_DESTROY") before_ = host_->iommufdObjectKinds();
        return 0;
    }
    void hostDestroyed(const hostsim::SimHostLeftovers&) override {}
    Calls take() {
        std::lock_guard lock(m_);
        return std::exchange(calls_, {});
    }
    // The kinds the IOMMU_DESTROYs since the last destroyed() removed, in order.
    Calls destroyed() {
        std::lock_guard lock(m_);
        resolveDestroy();
        return std::exchange(destroyed_, {});
    }

private:
    void resolveDestroy() {
        if (!before_) return;
        Calls gone = *before_;
        for (const auto& k : host_->iommufdObjectKinds()) {
            if (auto it = std::find(gone.begin(), gone.end(), k); it != gone.end()) gone.erase(it);
        }
        destroyed_.insert(destroyed_.end(), gone.begin(), gone.end());
        before_.reset();
    }

    const hostsim::SimHost* host_;
    std::mutex m_;
    Calls calls_;
    std::optional<Calls> before_;
    Calls destroyed_;
};

// An edge-counting line raised from the binding's event thread.
struct AtomicEdgeLine final : devices::InterruptLine {
    std::atomic<bool> level{false};
    std::atomic<int> edges{0};
    void setLevel(bool asserted) override {
        if (asserted && !level.exchange(true)) ++edges;
        if (!asserted) level = false;
    }
};

inline hostsim::SimHostConfig smmuHost() {
    hostsim::SimHostConfig c;
    c.hwInfoType = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
    return c;
}

class VsmmuEndToEnd : public ::testing::Test {
protected:
    explicit VsmmuEndToEnd(hostsim::SimHostConfig hc = smmuHost(), hostsim::SimDeviceConfig dc = {})
        : host(std::move(hc)), mem(memory::GuestMemory::create({{kRam, kRamSize}}, {}).value()) {
        host.addDevice(dc);
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
        EXPECT_TRUE(binding->startEvents([model](std::span<const Event> e, uint32_t lost) { model->deliverEvents(e, lost); })
                        .ok());
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

    uint32_t r32(uint64_t off) { return devices::smmuv3::test::mmioRead32(*smmu, off); }
    void w32(uint64_t off, uint32_t x) { devices::smmuv3::test::mmioWrite32(*smmu, off, x); }
    void w64(uint64_t off, uint64_t x) { devices::smmuv3::test::mmioWrite64(*smmu, off, x); }
    void writeSync(uint32_t off, uint32_t ack, uint32_t value) {
        devices::smmuv3::test::writeSync(*smmu, off, ack, value);
    }
    void writeSte(uint32_t sid, const Ste& ste) {
        // Dwords 2..7 zero (no stage 2, as Linux writes a stage-1 STE).
        std::array<uint64_t, 8> full{ste[0], ste[1]};
        ASSERT_TRUE(mem.writeObj(kStrtab + uint64_t{sid} * 64, full).ok());
    }
    void issue(const std::vector<Command>& cmds) { devices::smmuv3::test::issueCommands(*smmu, mem, cmds); }
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
    // Polls `done` every 2 ms for up to a second: what the binding's event thread does arrives
    // asynchronously.
    template <typename Pred>
    static void waitUntil(Pred done) {
        for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // Waits for the event thread to have written `count` records in all into the guest's EVTQ;
    // returns how many there are.
    uint32_t waitEvents(uint32_t count) {
        waitUntil([&] { return (r32(reg::kEvtqProd) & 0xff) >= count; });
        return r32(reg::kEvtqProd) & 0xff;
    }
    // The event thread raises the EVTQ interrupt after it has moved PROD (as the hardware does), so
    // a test that has seen the records waits for the edge too; returns the count.
    int waitEdges(const AtomicEdgeLine& line, int count) {
        waitUntil([&] { return line.edges >= count; });
        return line.edges;
    }
    Event guestEvent(uint32_t index) { return mem.readObj<Event>(kEvtq + (index & 0xff) * 32).value(); }
    hostsim::SimDevice& sim() { return *host.device("0000:00:03.0"); }
    bool dma(uint64_t iova) {
        const uint8_t b = 0x77;
        return host.dmaWrite(sim(), iova, &b, 1);
    }

    hostsim::SimHost host;
    memory::GuestMemory mem;
    std::unique_ptr<vfio::IommufdBackend> backend;
    std::unique_ptr<vfio::VfioDevice> device;
    size_t baseObjects = 0;
    AtomicEdgeLine evtqIrq, gerrorIrq, syncIrq;
    std::unique_ptr<NestedSmmuBinding> binding;
    std::unique_ptr<devices::smmuv3::VirtualSmmu> smmu;
};

// A guest's AArch64 stage 1 in guest memory as Linux's io-pgtable-arm builds it for a CD with
// T0SZ 25 (39-bit VA) and a 4 KiB granule: levels 1-3, 4 KiB pages with AP[1] (EL0), inner
// shareable, AF and nG. Tables come from a bump allocator in guest RAM.
class GuestStage1 {
public:
    GuestStage1(memory::GuestMemory& mem, uint64_t& nextTable) : mem_(mem), next_(nextTable), root_(alloc()) {}
    uint64_t root() const { return root_; }
    // VA -> IPA, one 4 KiB page.
    void map(uint64_t va, uint64_t ipa) { ASSERT_TRUE(mem_.writeObj(leafSlot(va), (ipa & ~0xfffull) | kPage).ok()); }
    void unmap(uint64_t va) { ASSERT_TRUE(mem_.writeObj<uint64_t>(leafSlot(va), 0).ok()); }
    // Context descriptor `cd` (64 bytes at `cdIpa`) translating through these tables with `asid`.
    void writeCd(uint64_t cdIpa, uint16_t asid) const {
        // The CD word 0 a real nested SMMU accepted (../shared/smmunest/REPORT.md): T0SZ 25, TG0
        // 4K, WBWA, IS, EPD1, V, IPS 44, AA64, R, A; word 3 the MAIR.
        const uint64_t w0 = (0x00056204c0003519ull & ~walk::kCd0Asid) | v::prep(walk::kCd0Asid, asid);
        const std::array<uint64_t, 8> cd{w0, root_, 0, 0x04ff};
        ASSERT_TRUE(mem_.writeObj(cdIpa, cd).ok());
    }

    static constexpr uint64_t kPage = walk::kPteValid | walk::kPteTable | walk::kPteApUnpriv | (3ull << 8) |
                                      walk::kPteAf | walk::kPteNg;

private:
    uint64_t alloc() {
        const uint64_t t = next_;
        next_ += 0x1000;
        std::array<uint64_t, 512> zero{};
        EXPECT_TRUE(mem_.writeObj(t, zero).ok());
        return t;
    }
    uint64_t leafSlot(uint64_t va) {
        uint64_t table = root_;
        for (unsigned shift : {30u, 21u}) {
            const uint64_t slot = table + 8 * ((va >> shift) & 511);
            uint64_t d = mem_.readObj<uint64_t>(slot).value();
            if (!(d & walk::kPteValid)) {
                d = alloc() | walk::kPteValid | walk::kPteTable;
                EXPECT_TRUE(mem_.writeObj(slot, d).ok());
            }
            table = d & v::mask(47, 12);
        }
        return table + 8 * ((va >> 12) & 511);
    }

    memory::GuestMemory& mem_;
    uint64_t& next_;
    uint64_t root_;
};

}  // namespace conduit::vmm::test
