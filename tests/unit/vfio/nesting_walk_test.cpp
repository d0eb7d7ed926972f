// The simulated host's nested SMMU (tests/hostsim/sim_smmu_walk.h): a device attached to a
// vIOMMU's translating nested HWPT has its DMA translated by the guest's stage 1 (CD table and
// page tables in guest memory, read through stage 2) and then stage 2; faults reach the vEVENTQ as
// the real kernel forwards them (read back with vfio::VeventQueue::read()). The guest values are
// the ones a real nested SMMU accepted in ../shared/smmunest/REPORT.md (Linux 7.3, QEMU 10.0).
#include <gtest/gtest.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <tuple>

#include "tests/hostsim/sim_host.h"
#include "tests/hostsim/sim_smmu_walk.h"
#include "vfio/backend.h"
#include "vfio/iommu_nesting.h"
#include "vfio/iommufd.h"
#include "vfio/uapi_compat.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;
namespace smmu = conduit::vfio::smmuv3;
namespace walk = conduit::hostsim::smmuwalk;

namespace {

constexpr const char* kBdf = "0000:00:03.0";
constexpr uint64_t kVsid = 0x42;  // physical StreamID 0x8
constexpr uint32_t kSid = 0x8;

// ../shared/smmunest/REPORT.md section "What the test does": guest RAM at IPA 0x100000.
constexpr uint64_t kRamIpa = 0x100000;
constexpr uint64_t kOffA = 0x0, kOffB = 0x1000, kOffSrc = 0x2000, kOffCd = 0x10000, kOffL1 = 0x11000,
                   kOffL2 = 0x12000, kOffL3 = 0x13000;
constexpr uint64_t kVaDst = 0x04000000, kVaSrc = 0x04001000, kVaUnmapped = 0x05000000, kVaS2Fault = 0x04002000;
constexpr uint64_t kMsiWindow = 0x08000000;
constexpr uint64_t kCd0 = 0x00056204c0003519;  // T0SZ 25, TG0 4K, WBWA, IS, EPD1, V, IPS 44, AA64, R, A, ASID 5
constexpr uint64_t kLeafAttrs = walk::kPteApUnpriv | (3ull << 8) | walk::kPteAf;  // AP=01 (RW, EL0), SH=IS, AF
// Linux's io-pgtable also sets nG: the entry belongs to the CD's ASID. Without it a translation is
// global and a TLB hit for every ASID (the REPORT's tables are global).
constexpr uint64_t kLeafAttrsNg = kLeafAttrs | walk::kPteNg;
constexpr smmu::Ste kS1Ste{0x11000b, 0xd4};  // V, Cfg S1, S1ContextPtr 0x110000, S1CDMax 0; CIR/COR WBRA, CSH IS
constexpr smmu::Ste kBypassSte{0x9, 0};
constexpr smmu::Ste kAbortSte{smmu::kSte0V, 0};

smmu::Ste s1Ste(uint64_t ctxPtr, unsigned cdMax = 0, unsigned fmt = 0, unsigned s1dss = 0) {
    return {smmu::kSte0V | smmu::prep(smmu::kSte0Cfg, smmu::kCfgS1Trans) | smmu::prep(smmu::kSte0S1Fmt, fmt) |
                (ctxPtr & smmu::kSte0S1CtxPtr) | smmu::prep(smmu::kSte0S1CdMax, cdMax),
            0xd4 | smmu::prep(smmu::kSte1S1Dss, s1dss)};
}
smmu::Command tlbiNhVa(uint16_t asid, uint64_t va) {
    return {smmu::kOpTlbiNhVa | smmu::prep(smmu::kTlbi0Asid, asid), (va & smmu::kTlbi1VaMask) | smmu::kTlbi1Leaf};
}
smmu::Command tlbiNhAsid(uint16_t asid) { return {smmu::kOpTlbiNhAsid | smmu::prep(smmu::kTlbi0Asid, asid), 0}; }
smmu::Command cfgiCd(uint32_t vsid, uint32_t ssid) {
    return {smmu::kOpCfgiCd | smmu::prep(smmu::kCfgi0Sid, vsid) | smmu::prep(smmu::kCfgi0Ssid, ssid), smmu::kCfgi1Leaf};
}

SimHostConfig smmuHost(bool pasid = false) {
    SimHostConfig c;
    c.hwInfoType = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
    if (pasid) {
        c.smmuIdr[0] |= 1u << 19;                            // CD2L
        c.smmuIdr[1] |= 16u << smmu::kIdr1SsidSizeShift;     // SSIDSIZE 16
    }
    return c;
}

// One device on an SMMUv3 host, with guest RAM mapped in the IOAS at kRamIpa (stage 2), the
// nesting objects of the REPORT's flow and a vEVENTQ.
struct Nest {
    explicit Nest(SimHostConfig hc = smmuHost(), size_t ramSize = 0x40000) : host(hc), ram(ramSize) {
        host.addDevice(SimDeviceConfig{});
        backend = IommufdBackend::open(host, host.paths()).value();
        dev = backend->openDevice(kBdf).value();
        VfioOps& ops = *backend;
        n = ops.nesting().value();
        EXPECT_TRUE(backend->mapDma(kRamIpa, ram.size(), ram.data(), true).ok());
        parent = n->allocNestParent(*dev).value();
        viommu = n->allocViommu(*dev, parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
        vdev = n->allocVdevice(*dev, viommu, kVsid).value();
        queue = n->allocVeventQueue(viommu, 64).value();
        sd = host.device(kBdf);
    }
    void put(uint64_t ipa, uint64_t v) { std::memcpy(&ram.at(ipa - kRamIpa), &v, 8); }
    uint64_t get(uint64_t ipa) const {
        uint64_t v;
        std::memcpy(&v, &ram.at(ipa - kRamIpa), 8);
        return v;
    }
    uint8_t at(uint64_t ipa) const { return ram.at(ipa - kRamIpa); }
    void busMaster() { ASSERT_TRUE(dev->writeConfigObj<uint16_t>(0x04, 0x0006).ok()); }  // MEM + MASTER
    // The REPORT's guest stage 1: one CD at 0x110000, 4K tables L1 0x111000 -> L2 0x112000 ->
    // L3 0x113000; VA 0x4000000 -> A, 0x4001000 -> SRC, and the SW_MSI window identity-mapped.
    void reportTables() {
        put(kRamIpa + kOffCd, kCd0);
        put(kRamIpa + kOffCd + 8, kRamIpa + kOffL1);
        put(kRamIpa + kOffCd + 24, 0x04ff);
        put(kRamIpa + kOffL1 + 8 * ((kVaDst >> 30) & 511), (kRamIpa + kOffL2) | 3);
        put(kRamIpa + kOffL2 + 8 * ((kVaDst >> 21) & 511), (kRamIpa + kOffL3) | 3);
        put(kRamIpa + kOffL3 + 8 * ((kVaDst >> 12) & 511), (kRamIpa + kOffA) | 3 | kLeafAttrs);
        put(kRamIpa + kOffL3 + 8 * ((kVaSrc >> 12) & 511), (kRamIpa + kOffSrc) | 3 | kLeafAttrs);
        put(kRamIpa + kOffL2 + 8 * ((kMsiWindow >> 21) & 511), kMsiWindow | 1 | kLeafAttrs | (1 << 2));
    }
    void setLeaf(uint64_t va, uint64_t pte) { put(kRamIpa + kOffL3 + 8 * ((va >> 12) & 511), pte); }
    std::shared_ptr<NestedHwpt> attachSte(const smmu::Ste& ste) {
        auto h = n->allocNestedHwpt(*dev, viommu, ste);
        EXPECT_TRUE(h.ok()) << h.error().describe();
        auto r = n->attach(*dev, *h);
        EXPECT_TRUE(r.ok()) << r.error().describe();
        return *h;
    }
    std::vector<Vevent> events() {
        auto b = queue->read();
        EXPECT_TRUE(b.ok()) << b.error().describe();
        EXPECT_EQ(b->lost, 0u);
        return b.ok() ? b->events : std::vector<Vevent>{};
    }
    bool write32(uint64_t va, uint32_t v, std::optional<uint32_t> pasid = std::nullopt) {
        return host.dmaWrite(*sd, va, &v, 4, pasid);
    }
    uint32_t read32(uint64_t ipa) const {
        uint32_t v;
        std::memcpy(&v, &ram.at(ipa - kRamIpa), 4);
        return v;
    }

    SimHost host;
    std::vector<uint8_t> ram;
    std::unique_ptr<IommufdBackend> backend;
    std::unique_ptr<VfioDevice> dev;
    IommuNesting* n = nullptr;
    std::shared_ptr<NestParentHwpt> parent;
    std::shared_ptr<Viommu> viommu;
    std::shared_ptr<Vdevice> vdev;
    std::unique_ptr<VeventQueue> queue;
    SimDevice* sd = nullptr;
};

}  // namespace

// REPORT step 4: DMA to the stage-1 VA lands in page A, B stays untouched; a read of VA_SRC reads
// SRC; the edu engine (a payload's DMA, BAR0 registers) goes the same way.
TEST(NestingWalk, DmaToAStage1VaLandsInTheGuestPage) {
    Nest f;
    f.reportTables();
    auto s1 = f.attachSte(kS1Ste);
    ASSERT_TRUE(f.write32(kVaDst + 0x10, 0xa5a5a5a5)) << (f.host.dmaFaults().empty() ? "" : f.host.dmaFaults()[0].reason);
    EXPECT_EQ(f.read32(kRamIpa + kOffA + 0x10), 0xa5a5a5a5u);
    EXPECT_EQ(f.read32(kRamIpa + kOffB + 0x10), 0u);
    f.ram[kOffSrc + 8] = 0x77;
    uint8_t b = 0;
    ASSERT_TRUE(f.host.dmaRead(*f.sd, kVaSrc + 8, &b, 1));
    EXPECT_EQ(b, 0x77);
    // The walk's answer for the VA: IPA of A, a 4 KiB leaf.
    auto r = f.host.smmuTranslate(*f.sd, kVaDst + 0x10, true);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, walk::Result::Kind::Translated);
    EXPECT_EQ(r->ipa, kRamIpa + kOffA + 0x10);
    // The 2 MiB block over the SW_MSI window translates as identity; stage 2 (this IOAS) has no
    // doorbell there, so it ends as a stage-2 fault on IPA 0x08000000.
    r = f.host.smmuTranslate(*f.sd, kMsiWindow + 0x40, true);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, walk::Result::Kind::Fault);
    EXPECT_TRUE(r->stage2);
    EXPECT_EQ(smmu::field(r->event[3], walk::kEvt3Ipa) << 12, kMsiWindow);

    // edu: RAM -> edu buffer from VA_SRC, edu buffer -> RAM at VA_DST + 0x100.
    f.busMaster();
    f.sd->regWrite(0x80, kVaSrc, 8);
    f.sd->regWrite(0x88, 0x40000, 8);
    f.sd->regWrite(0x90, 16, 8);
    f.sd->regWrite(0x98, 0x1, 8);  // RAM -> device
    f.sd->regWrite(0x80, 0x40000, 8);
    f.sd->regWrite(0x88, kVaDst + 0x100, 8);
    f.sd->regWrite(0x98, 0x3, 8);  // device -> RAM
    EXPECT_TRUE(f.host.dmaFaults().empty());
    EXPECT_EQ(f.at(kRamIpa + kOffA + 0x108), 0x77);
    EXPECT_TRUE(f.events().empty());
}

// REPORT step 5: the PTE rewritten without an invalidation keeps the DMA on the old page (the
// SMMU's TLB), TLBI_NH_VA through IOMMU_HWPT_INVALIDATE redirects it, TLBI_NH_ASID brings it back;
// a TLBI for another ASID does nothing.
TEST(NestingWalk, APteChangeTakesEffectAfterTheTlbi) {
    Nest f;
    f.reportTables();
    f.setLeaf(kVaDst, (kRamIpa + kOffA) | 3 | kLeafAttrsNg);
    auto s1 = f.attachSte(kS1Ste);
    ASSERT_TRUE(f.write32(kVaDst, 1));
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 1u);
    EXPECT_GE(f.host.smmuCaches().leafCount(), 1u);

    f.setLeaf(kVaDst, (kRamIpa + kOffB) | 3 | kLeafAttrsNg);
    ASSERT_TRUE(f.write32(kVaDst, 2));
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 2u) << "no invalidation yet: the cached translation is used";
    EXPECT_EQ(f.read32(kRamIpa + kOffB), 0u);

    const std::vector<smmu::Command> otherAsid{tlbiNhVa(6, kVaDst)};
    ASSERT_TRUE(f.n->invalidate(*f.viommu, otherAsid).ok());
    ASSERT_TRUE(f.write32(kVaDst, 3));
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 3u) << "a TLBI of ASID 6 leaves ASID 5's entry";

    const std::vector<smmu::Command> va{tlbiNhVa(5, kVaDst)};  // REPORT: {0x0005000000000012, 0x4000001}
    EXPECT_EQ(va[0][0], 0x0005000000000012ull);
    EXPECT_EQ(va[0][1], 0x0000000004000001ull);
    ASSERT_TRUE(f.n->invalidate(*f.viommu, va).ok());
    ASSERT_TRUE(f.write32(kVaDst, 4));
    EXPECT_EQ(f.read32(kRamIpa + kOffB), 4u);
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 3u);

    f.setLeaf(kVaDst, (kRamIpa + kOffA) | 3 | kLeafAttrs);
    const std::vector<smmu::Command> asid{tlbiNhAsid(5)};
    ASSERT_TRUE(f.n->invalidate(*f.viommu, asid).ok());
    ASSERT_TRUE(f.write32(kVaDst, 5));
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 5u);
    EXPECT_EQ(f.read32(kRamIpa + kOffB), 4u);
}

// A changed CD is invisible until CFGI_CD or an STE rewrite (the VMM's CFGI_STE: a new nested HWPT
// attached by replacement, which makes the kernel rewrite the STE and issue CFGI_STE).
TEST(NestingWalk, AnSteRewriteForgetsTheCachedCd) {
    Nest f;
    f.reportTables();
    f.setLeaf(kVaDst, (kRamIpa + kOffA) | 3 | kLeafAttrsNg);  // not global: ASID 6 must miss it
    auto s1 = f.attachSte(kS1Ste);
    ASSERT_TRUE(f.write32(kVaDst, 1));
    // New tables (ASID 6, so no TLB entry can answer): L1 0x114000 -> L2 0x115000 -> L3 0x116000 -> B.
    f.put(kRamIpa + 0x14000 + 8 * ((kVaDst >> 30) & 511), (kRamIpa + 0x15000) | 3);
    f.put(kRamIpa + 0x15000 + 8 * ((kVaDst >> 21) & 511), (kRamIpa + 0x16000) | 3);
    f.put(kRamIpa + 0x16000 + 8 * ((kVaDst >> 12) & 511), (kRamIpa + kOffB) | 3 | kLeafAttrsNg);
    f.put(kRamIpa + kOffCd, (kCd0 & ~walk::kCd0Asid) | smmu::prep(walk::kCd0Asid, 6));
    f.put(kRamIpa + kOffCd + 8, kRamIpa + 0x14000);
    ASSERT_TRUE(f.write32(kVaDst, 2));
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 2u) << "the cached CD is still in use";
    EXPECT_EQ(f.host.smmuCaches().cdCount(), 1u);
    auto again = f.attachSte(kS1Ste);
    ASSERT_TRUE(f.write32(kVaDst, 3));
    EXPECT_EQ(f.read32(kRamIpa + kOffB), 3u);
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 2u);
}

// REPORT step 10: the device's MSI write goes to the host's SW_MSI doorbell (0x08000040) through
// the guest's stage 1: with the window identity-mapped the interrupt arrives; without it (after a
// TLBI) it is lost and F_TRANSLATION at InputAddr 0x08000040 reaches the vEVENTQ.
TEST(NestingWalk, MsiWritesGoThroughStage1) {
    auto hc = smmuHost();
    hc.reserved = {{0x08000000, 0x080fffff, "msi"}};
    Nest f(hc);
    f.reportTables();
    auto s1 = f.attachSte(kS1Ste);
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    const int32_t fds[1] = {efd};
    ASSERT_TRUE(f.dev->setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds).ok());
    auto fired = [&] {
        uint64_t v = 0;
        return ::read(efd, &v, 8) == 8 ? v : 0;
    };
    f.sd->regWrite(0x70, 0, 4);  // sim extension: fire MSI-X vector 0
    EXPECT_EQ(fired(), 1u);
    EXPECT_TRUE(f.events().empty());

    f.put(kRamIpa + kOffL2 + 8 * ((kMsiWindow >> 21) & 511), 0);
    const std::vector<smmu::Command> asid{tlbiNhAsid(5), {smmu::kOpTlbiNhVaa, kMsiWindow}};
    ASSERT_TRUE(f.n->invalidate(*f.viommu, asid).ok());
    f.sd->regWrite(0x70, 0, 4);
    EXPECT_EQ(fired(), 0u);
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].record, (smmu::Event{0x0000004200000010ull, 0x0000020000000000ull, 0x08000040ull, 0}));

    // Mapped elsewhere: the message lands in guest memory as a write, still no interrupt.
    f.put(kRamIpa + kOffL2 + 8 * ((kMsiWindow >> 21) & 511), (kRamIpa + 0x20000) | 3);
    f.put(kRamIpa + 0x20000, (kRamIpa + kOffB) | 3 | kLeafAttrs);
    ASSERT_TRUE(f.n->invalidate(*f.viommu, asid).ok());
    f.sd->regWrite(0x70, 0, 4);
    EXPECT_EQ(fired(), 0u);
    EXPECT_TRUE(f.events().empty());
    ::close(efd);
}

// Two VMs (two iommufd contexts, each its NEST_PARENT and vIOMMU) on one host: their guests use
// the same ASID and VA for different pages, and the SMMU's TLB keeps them apart by VMID.
TEST(NestingWalk, TwoVmsWithTheSameAsidDoNotShareTranslations) {
    SimHost host(smmuHost());
    SimDeviceConfig d1, d2;
    d2.bdf = "0000:00:04.0";
    d2.group = 8;
    d2.streamIds = {0x10};
    host.addDevice(d1);
    host.addDevice(d2);
    struct Vm {
        std::vector<uint8_t> ram = std::vector<uint8_t>(0x40000);
        std::unique_ptr<IommufdBackend> backend;
        std::unique_ptr<VfioDevice> dev;
        std::shared_ptr<NestParentHwpt> parent;
        std::shared_ptr<Viommu> viommu;
        std::shared_ptr<Vdevice> vdev;
        std::shared_ptr<NestedHwpt> s1;
        void put(uint64_t ipa, uint64_t v) { std::memcpy(&ram.at(ipa - kRamIpa), &v, 8); }
    };
    Vm vms[2];
    const char* bdfs[2] = {kBdf, "0000:00:04.0"};
    for (int i = 0; i < 2; ++i) {
        Vm& vm = vms[i];
        vm.backend = IommufdBackend::open(host, host.paths()).value();
        vm.dev = vm.backend->openDevice(bdfs[i]).value();
        VfioOps& ops = *vm.backend;
        auto* n = ops.nesting().value();
        ASSERT_TRUE(vm.backend->mapDma(kRamIpa, vm.ram.size(), vm.ram.data(), true).ok());
        vm.parent = n->allocNestParent(*vm.dev).value();
        vm.viommu = n->allocViommu(*vm.dev, vm.parent, IOMMU_VIOMMU_TYPE_ARM_SMMUV3).value();
        vm.vdev = n->allocVdevice(*vm.dev, vm.viommu, kVsid).value();
        // Same CD (ASID 5) and tables in both guests; VM i maps VA_DST to page A + i * 0x1000.
        vm.put(kRamIpa + kOffCd, kCd0);
        vm.put(kRamIpa + kOffCd + 8, kRamIpa + kOffL1);
        vm.put(kRamIpa + kOffL1, (kRamIpa + kOffL2) | 3);
        vm.put(kRamIpa + kOffL2 + 8 * ((kVaDst >> 21) & 511), (kRamIpa + kOffL3) | 3);
        vm.put(kRamIpa + kOffL3, (kRamIpa + kOffA + i * 0x1000) | 3 | kLeafAttrsNg);
        vm.s1 = n->allocNestedHwpt(*vm.dev, vm.viommu, kS1Ste).value();
        ASSERT_TRUE(n->attach(*vm.dev, vm.s1).ok());
    }
    const uint32_t v = 0x5a5a5a5a;
    ASSERT_TRUE(host.dmaWrite(*host.device(bdfs[0]), kVaDst, &v, 4));
    ASSERT_TRUE(host.dmaWrite(*host.device(bdfs[1]), kVaDst, &v, 4));
    EXPECT_EQ(vms[0].ram[kOffA], 0x5a);
    EXPECT_EQ(vms[0].ram[kOffA + 0x1000], 0);
    EXPECT_EQ(vms[1].ram[kOffA], 0) << "VM 1 used VM 0's cached translation";
    EXPECT_EQ(vms[1].ram[kOffA + 0x1000], 0x5a);
}

// Without the caches (SimHostConfig::smmuCaches off) a PTE change is seen at once.
TEST(NestingWalk, WithoutCachesAPteChangeIsSeenAtOnce) {
    auto hc = smmuHost();
    hc.smmuCaches = false;
    Nest f(hc);
    f.reportTables();
    auto s1 = f.attachSte(kS1Ste);
    ASSERT_TRUE(f.write32(kVaDst, 1));
    f.setLeaf(kVaDst, (kRamIpa + kOffB) | 3 | kLeafAttrs);
    ASSERT_TRUE(f.write32(kVaDst, 2));
    EXPECT_EQ(f.read32(kRamIpa + kOffB), 2u);
    EXPECT_EQ(f.host.smmuCaches().leafCount(), 0u);
}

// REPORT step 6: a 4-byte DMA to an unmapped VA is exactly one vEVENT, the raw record the real
// kernel delivered: {0x0000004200000010, 0x0000020000000000, 0x5000000, 0}.
TEST(NestingWalk, AnUnmappedVaIsOneTranslationFaultOnTheVeventq) {
    Nest f;
    f.reportTables();
    auto s1 = f.attachSte(kS1Ste);
    EXPECT_FALSE(f.write32(kVaUnmapped, 0xdead));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].sequence, 0u);
    EXPECT_EQ(ev[0].record, (smmu::Event{0x0000004200000010ull, 0x0000020000000000ull, 0x5000000ull, 0}));
    EXPECT_EQ(ev[0].streamId(), kVsid);
    ASSERT_EQ(f.host.dmaFaults().size(), 1u);
    EXPECT_EQ(f.host.dmaFaults()[0].kind, DmaFaultKind::Stage1Fault);
    ASSERT_TRUE(f.host.dmaFaults()[0].smmuEvent);
    EXPECT_EQ(smmu::field((*f.host.dmaFaults()[0].smmuEvent)[0], smmu::kEvt0Sid), kSid);  // the host's own view
    ASSERT_EQ(f.host.smmuEvents().size(), 1u);
    EXPECT_EQ(f.host.smmuEvents()[0].fate, SmmuEventFate::Forwarded);

    // A read is RnW = 1; a 4 KiB write that runs off the mapped page into an unmapped one moves
    // the mapped part and faults once, at the first unmapped page.
    uint32_t v;
    EXPECT_FALSE(f.host.dmaRead(*f.sd, kVaUnmapped + 0x10, &v, 4));
    std::vector<uint8_t> big(0x1000, 0xee);
    EXPECT_FALSE(f.host.dmaWrite(*f.sd, kVaSrc + 0x800, big.data(), big.size()));  // SRC, then VA 0x4002000
    EXPECT_EQ(f.at(kRamIpa + kOffSrc + 0xfff), 0xee);
    ev = f.events();
    ASSERT_EQ(ev.size(), 2u);
    EXPECT_EQ(ev[0].record[1], 0x0000020000000000ull | walk::kEvt1RnW);
    EXPECT_EQ(ev[0].record[2], kVaUnmapped + 0x10);
    EXPECT_EQ(ev[1].record[2], kVaS2Fault);
    EXPECT_EQ(ev[1].sequence, 2u);
}

// REPORT step 7: stage 1 maps a VA to an IPA stage 2 does not map: the host logs an S2 fault,
// nothing reaches the vEVENTQ (arm_smmu_handle_event(): only !event->s2 is forwarded).
TEST(NestingWalk, AStage2FaultStaysInTheHostLog) {
    Nest f;
    f.reportTables();
    f.setLeaf(kVaS2Fault, 0x300000 | 3 | kLeafAttrs);
    auto s1 = f.attachSte(kS1Ste);
    EXPECT_FALSE(f.write32(kVaS2Fault, 1));
    EXPECT_TRUE(f.events().empty());
    ASSERT_EQ(f.host.smmuEvents().size(), 1u);
    const auto& e = f.host.smmuEvents()[0];
    EXPECT_EQ(e.fate, SmmuEventFate::HostOnly);
    EXPECT_TRUE(e.stage2);
    EXPECT_EQ(e.record[0], 0x0000000800000010ull);  // F_TRANSLATION, physical SID 8
    EXPECT_TRUE(e.record[1] & walk::kEvt1S2);
    EXPECT_EQ(e.record[2], kVaS2Fault);
    EXPECT_EQ(e.record[3], 0x300000u);
    ASSERT_EQ(f.host.dmaFaults().size(), 1u);
    EXPECT_EQ(f.host.dmaFaults()[0].kind, DmaFaultKind::NotPresent);
    EXPECT_EQ(f.host.dmaFaults()[0].ipa, 0x300000u);
    // A table stage 2 cannot reach (the L3 pointer moved out of RAM): S2, CLASS = TT, host only.
    f.put(kRamIpa + kOffL2 + 8 * ((kVaDst >> 21) & 511), 0x400000 | 3);
    const std::vector<smmu::Command> all{{smmu::kOpTlbiNhAll, 0}};
    ASSERT_TRUE(f.n->invalidate(*f.viommu, all).ok());
    EXPECT_FALSE(f.write32(kVaDst, 1));
    EXPECT_TRUE(f.events().empty());
    ASSERT_EQ(f.host.smmuEvents().size(), 2u);
    EXPECT_EQ(smmu::field(f.host.smmuEvents()[1].record[1], walk::kEvt1Class), walk::kClassTt);
    EXPECT_EQ(f.host.smmuEvents()[1].record[3], 0x400000u);
}

// REPORT step 8: a vSTE pointing at a zero CD is C_BAD_CD {0x000000420000000a}.
TEST(NestingWalk, AnInvalidCdIsCBadCd) {
    Nest f;
    f.reportTables();
    auto bad = f.attachSte(s1Ste(kRamIpa + kOffCd + 0x40));
    EXPECT_FALSE(f.write32(kVaDst, 1));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].record[0], 0x000000420000000aull);
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 0u);
    // Other C_BAD_CD causes: AArch32 tables, T0SZ beyond 39, a reserved granule.
    for (uint64_t cd0 : {kCd0 & ~walk::kCd0Aa64, (kCd0 & ~walk::kCd0T0sz) | 40, kCd0 | walk::kCd0Tg0}) {
        f.put(kRamIpa + kOffCd, cd0);
        const std::vector<smmu::Command> cfgi{cfgiCd(kVsid, 0)};
        ASSERT_TRUE(f.n->invalidate(*f.viommu, cfgi).ok());
        auto s1 = f.attachSte(kS1Ste);
        EXPECT_FALSE(f.write32(kVaDst, 1)) << std::hex << cd0;
        ev = f.events();
        ASSERT_EQ(ev.size(), 1u) << std::hex << cd0;
        EXPECT_EQ(ev[0].eventId(), smmu::kEvtCBadCd) << std::hex << cd0;
    }
}

// Stage-1 permissions and the access flag: a write to a read-only page is F_PERMISSION (a read
// passes), AF clear is F_ACCESS (unless the CD has HA, which sets it, or AFFD), AP[1] clear denies
// the device's unprivileged access; CD.R clear records nothing.
TEST(NestingWalk, PermissionAndAccessFlagFaults) {
    Nest f;
    f.reportTables();
    auto s1 = f.attachSte(kS1Ste);
    f.setLeaf(kVaDst, (kRamIpa + kOffA) | 3 | kLeafAttrs | walk::kPteApRdonly);
    EXPECT_FALSE(f.write32(kVaDst, 1));
    uint32_t v = 0;
    EXPECT_TRUE(f.host.dmaRead(*f.sd, kVaDst, &v, 4));
    f.setLeaf(kVaSrc, (kRamIpa + kOffSrc) | 3 | (kLeafAttrs & ~walk::kPteAf));
    EXPECT_FALSE(f.write32(kVaSrc, 1));
    f.setLeaf(kVaS2Fault, (kRamIpa + kOffB) | 3 | (kLeafAttrs & ~walk::kPteApUnpriv));
    EXPECT_FALSE(f.write32(kVaS2Fault, 1));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 3u);
    EXPECT_EQ(ev[0].eventId(), smmu::kEvtFPermission);
    EXPECT_EQ(ev[0].record[2], kVaDst);
    EXPECT_EQ(ev[1].eventId(), smmu::kEvtFAccess);
    EXPECT_EQ(ev[2].eventId(), smmu::kEvtFPermission);
    EXPECT_EQ(f.read32(kRamIpa + kOffA), 0u);
    EXPECT_EQ(f.read32(kRamIpa + kOffB), 0u);

    // HA: the SMMU sets AF in the guest's descriptor and the write goes through.
    f.put(kRamIpa + kOffCd, kCd0 | walk::kCd0Ha);
    const std::vector<smmu::Command> cfgi{cfgiCd(kVsid, 0)};
    ASSERT_TRUE(f.n->invalidate(*f.viommu, cfgi).ok());
    EXPECT_TRUE(f.write32(kVaSrc, 9));
    EXPECT_EQ(f.read32(kRamIpa + kOffSrc), 9u);
    EXPECT_TRUE(f.get(kRamIpa + kOffL3 + 8 * ((kVaSrc >> 12) & 511)) & walk::kPteAf);

    // CD.R clear: the fault is not recorded anywhere.
    f.put(kRamIpa + kOffCd, kCd0 & ~walk::kCd0R);
    ASSERT_TRUE(f.n->invalidate(*f.viommu, cfgi).ok());
    const size_t logged = f.host.smmuEvents().size();
    EXPECT_FALSE(f.write32(kVaUnmapped, 1));
    EXPECT_EQ(f.host.smmuEvents().size(), logged);
    EXPECT_TRUE(f.events().empty());
}

// Bypass and abort vSTEs: bypass is stage 2 alone and refuses a PASID (C_BAD_SUBSTREAMID, which
// the kernel forwards); abort blocks without an event (arm_smmu_make_abort_ste()).
TEST(NestingWalk, BypassAndAbortVstes) {
    Nest f;
    auto bypass = f.attachSte(kBypassSte);
    EXPECT_TRUE(f.write32(kRamIpa + 0x20, 7));
    EXPECT_EQ(f.read32(kRamIpa + 0x20), 7u);
    EXPECT_FALSE(f.write32(kRamIpa + 0x20, 8, 1));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].eventId(), smmu::kEvtCBadSubstreamId);
    EXPECT_EQ(ev[0].record[0], 0x0000004200001808ull);  // SSV, SSID 1, vSID
    auto abort = f.attachSte(kAbortSte);
    EXPECT_FALSE(f.write32(kRamIpa + 0x20, 9));
    EXPECT_EQ(f.read32(kRamIpa + 0x20), 7u);
    EXPECT_TRUE(f.events().empty());
    EXPECT_EQ(f.host.dmaFaults().back().kind, DmaFaultKind::NoDomain);
}

// On QEMU's SMMU (SSIDSIZE 0) any PASID is C_BAD_SUBSTREAMID, as it is with S1CDMax 0.
TEST(NestingWalk, NoSubstreamsMeansCBadSubstreamId) {
    Nest f;
    f.reportTables();
    auto s1 = f.attachSte(kS1Ste);
    EXPECT_FALSE(f.write32(kVaDst, 1, 0));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].eventId(), smmu::kEvtCBadSubstreamId);
    EXPECT_TRUE(ev[0].record[0] & walk::kEvt0Ssv);
}

namespace {

// PASID layout in a 1 MiB guest RAM at kRamIpa: per CD index i its own 4K tables mapping
// VA 0x4000000 to page kPasidPage(i); tables of CD i at 0x80000 + i * 0x4000.
constexpr uint64_t pasidPage(uint32_t i) { return kRamIpa + 0x40000 + (i % 64) * 0x1000; }

void pasidTables(Nest& f, uint64_t cdIpa, uint32_t i) {
    const uint64_t t = kRamIpa + 0x80000 + (i % 32) * 0x4000;
    f.put(cdIpa, (kCd0 & ~walk::kCd0Asid) | smmu::prep(walk::kCd0Asid, 0x100 + i));
    f.put(cdIpa + 8, t);
    f.put(t + 8 * ((kVaDst >> 30) & 511), (t + 0x1000) | 3);
    f.put(t + 0x1000 + 8 * ((kVaDst >> 21) & 511), (t + 0x2000) | 3);
    f.put(t + 0x2000 + 8 * ((kVaDst >> 12) & 511), pasidPage(i) | 3 | kLeafAttrsNg);
}

}  // namespace

// Issue 13 item 3 against the simulated host: a linear CD table with S1CDMax 3 (8 CDs); PASIDs 1
// and 5 land in different pages through different CDs (ASIDs), PASID 8 is C_BAD_SUBSTREAMID, and
// the edu engine's PASID register carries the PASID; DMA without a PASID follows S1DSS.
TEST(NestingWalk, PasidDmaThroughALinearCdTable) {
    Nest f(smmuHost(true), 0x100000);
    const uint64_t table = kRamIpa + kOffCd;
    for (uint32_t i : {0u, 1u, 5u}) pasidTables(f, table + 64 * i, i);
    auto s1 = f.attachSte(s1Ste(table, 3, walk::kS1FmtLinear, walk::kS1DssTerminate));
    ASSERT_TRUE(f.write32(kVaDst, 0x11, 1));
    ASSERT_TRUE(f.write32(kVaDst, 0x55, 5));
    EXPECT_EQ(f.read32(pasidPage(1)), 0x11u);
    EXPECT_EQ(f.read32(pasidPage(5)), 0x55u);
    EXPECT_EQ(f.read32(pasidPage(0)), 0u);
    // PASID 3: inside the table, its CD not written: C_BAD_CD naming SSID 3.
    EXPECT_FALSE(f.write32(kVaDst, 1, 3));
    // PASID 8 = 2^S1CDMax: C_BAD_SUBSTREAMID naming it.
    EXPECT_FALSE(f.write32(kVaDst, 1, 8));
    // No PASID with S1DSS terminate: F_STREAM_DISABLED.
    EXPECT_FALSE(f.write32(kVaDst, 1));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 3u);
    EXPECT_EQ(ev[0].record[0], 0x000000420000380aull);  // C_BAD_CD, SSV, SSID 3
    EXPECT_EQ(ev[1].record[0], 0x0000004200008808ull);  // C_BAD_SUBSTREAMID, SSV, SSID 8
    EXPECT_EQ(ev[2].record[0], 0x0000004200000006ull);  // F_STREAM_DISABLED, no SSV

    // The edu engine with its PASID register: device buffer -> VA 0x4000000 + 0x20 under PASID 5.
    f.busMaster();
    f.sd->regWrite(0x40000, 0xcafef00d, 4);  // the edu buffer
    f.sd->regWrite(SimDevice::kRegDmaPasid, SimDevice::kDmaPasidEnable | 5, 4);
    EXPECT_EQ(f.sd->regRead(SimDevice::kRegDmaPasid, 4), SimDevice::kDmaPasidEnable | 5);
    f.host.clearDmaFaults();
    f.sd->regWrite(0x80, 0x40000, 8);
    f.sd->regWrite(0x88, kVaDst + 0x20, 8);
    f.sd->regWrite(0x90, 4, 8);
    f.sd->regWrite(0x98, 0x3, 8);
    EXPECT_TRUE(f.host.dmaFaults().empty());
    EXPECT_EQ(f.read32(pasidPage(5) + 0x20), 0xcafef00du);
    EXPECT_EQ(f.read32(pasidPage(1) + 0x20), 0u);

    // S1DSS bypass: no PASID is stage 2 alone; S1DSS SSID0: CD 0, and PASID 0 itself is refused.
    auto byp = f.attachSte(s1Ste(table, 3, walk::kS1FmtLinear, walk::kS1DssBypass));
    ASSERT_TRUE(f.write32(kRamIpa + 0x30, 0x33));
    EXPECT_EQ(f.read32(kRamIpa + 0x30), 0x33u);
    auto ssid0 = f.attachSte(s1Ste(table, 3, walk::kS1FmtLinear, walk::kS1DssSsid0));
    ASSERT_TRUE(f.write32(kVaDst, 0x1234));
    EXPECT_EQ(f.read32(pasidPage(0)), 0x1234u);
    EXPECT_FALSE(f.write32(kVaDst, 1, 0));
    ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].record[0], 0x0000004200000806ull);  // F_STREAM_DISABLED, SSV, SSID 0

    // S1CDMax above IDR1.SSIDSIZE (16): the STE is ILLEGAL, C_BAD_STE.
    auto ill = f.attachSte(s1Ste(table, 17));
    EXPECT_FALSE(f.write32(kVaDst, 1, 1));
    ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].eventId(), smmu::kEvtCBadSte);
}

// 2-level CD tables: S1Fmt 1 (4 KiB leaf tables of 64 CDs, SSID[5:0]) and S1Fmt 2 (64 KiB of
// 1024, SSID[9:0]); an invalid L1CD is C_BAD_SUBSTREAMID (spec 5.3.1); CFGI_CD makes a changed CD
// visible.
TEST(NestingWalk, PasidDmaThroughTwoLevelCdTables) {
    Nest f(smmuHost(true), 0x100000);
    // S1Fmt 1, S1CDMax 8: L1 at 0x110000 (4 L1CDs), leaf tables at 0x111000 (SSIDs 0-63) and
    // 0x112000 (64-127); L1CD 2 invalid.
    const uint64_t l1 = kRamIpa + 0x10000;
    f.put(l1, (kRamIpa + 0x11000) | walk::kL1cdV);
    f.put(l1 + 8, (kRamIpa + 0x12000) | walk::kL1cdV);
    pasidTables(f, kRamIpa + 0x11000 + 64 * 1, 1);
    pasidTables(f, kRamIpa + 0x12000 + 64 * 5, 69);  // SSID 69 = L1 1, CD 5
    auto s1 = f.attachSte(s1Ste(l1, 8, walk::kS1Fmt2Lvl4K));
    ASSERT_TRUE(f.write32(kVaDst, 0x01, 1));
    ASSERT_TRUE(f.write32(kVaDst, 0x45, 69));
    EXPECT_EQ(f.read32(pasidPage(1)), 0x01u);
    EXPECT_EQ(f.read32(pasidPage(69)), 0x45u);
    EXPECT_FALSE(f.write32(kVaDst, 1, 5));     // L1 0, CD 5: not written -> C_BAD_CD
    EXPECT_FALSE(f.write32(kVaDst, 1, 130));   // L1 2 invalid -> C_BAD_SUBSTREAMID
    EXPECT_FALSE(f.write32(kVaDst, 1, 256));   // beyond 2^8 -> C_BAD_SUBSTREAMID
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 3u);
    EXPECT_EQ(ev[0].eventId(), smmu::kEvtCBadCd);
    EXPECT_EQ(ev[1].record[0], 0x0000004200082808ull);  // C_BAD_SUBSTREAMID, SSV, SSID 130
    EXPECT_EQ(ev[2].eventId(), smmu::kEvtCBadSubstreamId);

    // The guest gives CD 69 PASID 1's ASID and tables: the SMMU keeps using the cached CD (ASID
    // 0x145) until CFGI_CD(vSID, 69). (Keeping the ASID would need a TLBI too: the TLB is tagged
    // by ASID, not by CD.)
    f.put(kRamIpa + 0x12000 + 64 * 5, f.get(kRamIpa + 0x11000 + 64 * 1));
    f.put(kRamIpa + 0x12000 + 64 * 5 + 8, f.get(kRamIpa + 0x11000 + 64 * 1 + 8));
    ASSERT_TRUE(f.write32(kVaDst + 4, 0x46, 69));
    EXPECT_EQ(f.read32(pasidPage(69) + 4), 0x46u);
    const std::vector<smmu::Command> cfgi{cfgiCd(kVsid, 69)};
    ASSERT_TRUE(f.n->invalidate(*f.viommu, cfgi).ok());
    ASSERT_TRUE(f.write32(kVaDst + 4, 0x47, 69));
    EXPECT_EQ(f.read32(pasidPage(1) + 4), 0x47u);

    // S1Fmt 2, S1CDMax 11: L1 at 0x1f0000 (2 L1CDs), 64 KiB leaf tables at 0x120000 and 0x130000;
    // SSID 0x401 = L1 1, CD 1.
    const uint64_t l1b = kRamIpa + 0xf0000;
    f.put(l1b, (kRamIpa + 0x20000) | walk::kL1cdV);
    f.put(l1b + 8, (kRamIpa + 0x30000) | walk::kL1cdV);
    pasidTables(f, kRamIpa + 0x20000 + 64 * 2, 2);
    pasidTables(f, kRamIpa + 0x30000 + 64 * 1, 3);
    auto s2 = f.attachSte(s1Ste(l1b, 11, walk::kS1Fmt2Lvl64K));
    ASSERT_TRUE(f.write32(kVaDst, 0x02, 2));
    ASSERT_TRUE(f.write32(kVaDst, 0x03, 0x401));
    EXPECT_EQ(f.read32(pasidPage(2)), 0x02u);
    EXPECT_EQ(f.read32(pasidPage(3)), 0x03u);
    EXPECT_TRUE(f.events().empty());
}

// A 2-level CD table on an SMMU without IDR0.CD2L is an ILLEGAL STE.
TEST(NestingWalk, TwoLevelCdTableNeedsCd2l) {
    auto hc = smmuHost(true);
    hc.smmuIdr[0] &= ~(1u << 19);
    Nest f(hc, 0x100000);
    auto s1 = f.attachSte(s1Ste(kRamIpa + 0x10000, 8, walk::kS1Fmt2Lvl4K));
    EXPECT_FALSE(f.write32(kVaDst, 1, 1));
    auto ev = f.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].eventId(), smmu::kEvtCBadSte);
}

// IOMMU_GET_HW_INFO's PASID answer (what vshost builds the guest's PASID capability from):
// min(the device's PASID width, IDR1.SSIDSIZE) and the EXEC/PRIV features the kernel enabled.
TEST(NestingWalk, HwInfoReportsThePasidWidthAndFeatures) {
    for (auto [ssid, width, expect] : {std::tuple{16u, 20u, 16u}, {16u, 8u, 8u}, {0u, 20u, 0u}}) {
        auto hc = smmuHost();
        hc.smmuIdr[1] = (hc.smmuIdr[1] & ~(0x1fu << 6)) | (ssid << 6);
        SimDeviceConfig dc;
        dc.pcieCaps = true;
        // PASID capability: EXEC supported, PRIV not, Max PASID Width `width`; control register 0.
        dc.extCaps = {{0x1b, 1, 0x100, {uint8_t(0x02), uint8_t(width), 0, 0}}};
        SimHost host(hc);
        host.addDevice(dc);
        auto backend = IommufdBackend::open(host, host.paths()).value();
        auto dev = backend->openDevice(kBdf).value();
        VfioOps& ops = *backend;
        auto hw = ops.nesting().value()->hwInfo(*dev).value();
        EXPECT_EQ(hw.maxPasidLog2, expect) << ssid << " " << width;
        EXPECT_TRUE(hw.capabilities & IOMMU_HW_CAP_PCI_PASID_EXEC);
        EXPECT_FALSE(hw.capabilities & IOMMU_HW_CAP_PCI_PASID_PRIV);
    }
    Nest plain(smmuHost(true));  // no PASID capability: no PASID
    auto hw = plain.n->hwInfo(*plain.dev).value();
    EXPECT_EQ(hw.maxPasidLog2, 0u);
    EXPECT_FALSE(hw.capabilities & IOMMU_HW_CAP_PCI_PASID_EXEC);
}

// PASID-tagged DMA on a domain with no CD table (the IOAS's own domain) is blocked.
TEST(NestingWalk, PasidDmaOutsideNestingIsBlocked) {
    Nest f;
    ASSERT_TRUE(f.n->attachIoas(*f.dev).ok());
    EXPECT_TRUE(f.write32(kRamIpa, 1));
    EXPECT_FALSE(f.write32(kRamIpa, 2, 1));
    EXPECT_EQ(f.read32(kRamIpa), 1u);
    EXPECT_EQ(f.host.dmaFaults().back().pasid, 1u);
}

// ---- the walker alone, over a plain buffer as stage 2 ---------------------------------------------

namespace {

struct Mem {
    std::vector<uint8_t> b = std::vector<uint8_t>(0x400000);
    uint64_t base = 0x40000000;
    void put(uint64_t ipa, uint64_t v) { std::memcpy(&b.at(ipa - base), &v, 8); }
    walk::Stage2 s2() {
        return [this](uint64_t ipa) -> std::optional<walk::Stage2Hit> {
            if (ipa < base || ipa - base >= b.size()) return std::nullopt;
            return walk::Stage2Hit{b.data() + (ipa - base), b.size() - (ipa - base), true, true};
        };
    }
};

walk::Result tr(Mem& m, const smmu::Ste& ste, uint64_t va, bool write = false, std::optional<uint32_t> ssid = {}) {
    return walk::translate(ste, walk::Transaction{kSid, va, write, ssid, false}, walk::Caps{}, m.s2());
}

}  // namespace

// Level count by T0SZ, blocks, 64K and 16K granules, the TTB1 region and EPD.
TEST(SmmuWalk, GranulesLevelsBlocksAndRegions) {
    Mem m;
    const uint64_t cd = m.base, t0 = m.base + 0x10000;
    const auto ste = s1Ste(cd);
    const uint64_t leaf = kLeafAttrs;
    // 4K, T0SZ 16 (48-bit): four levels from L0. VA 0x0000_8040_2030_1000.
    const uint64_t va = 0x0000804020301000;
    m.put(cd, (kCd0 & ~walk::kCd0T0sz) | 16);
    m.put(cd + 8, t0);
    m.put(t0 + 8 * ((va >> 39) & 511), (t0 + 0x1000) | 3);
    m.put(t0 + 0x1000 + 8 * ((va >> 30) & 511), (t0 + 0x2000) | 3);
    m.put(t0 + 0x2000 + 8 * ((va >> 21) & 511), (t0 + 0x3000) | 3);
    m.put(t0 + 0x3000 + 8 * ((va >> 12) & 511), (m.base + 0x200000) | 3 | leaf);
    auto r = tr(m, ste, va + 0x123);
    ASSERT_EQ(r.kind, walk::Result::Kind::Translated) << r.why;
    EXPECT_EQ(r.ipa, m.base + 0x200123);
    // A 2 MiB block at L2 instead of the L3 table.
    m.put(t0 + 0x2000 + 8 * ((va >> 21) & 511), (m.base + 0x200000) | 1 | leaf);
    r = tr(m, ste, va + 0x123);
    ASSERT_EQ(r.kind, walk::Result::Kind::Translated) << r.why;
    EXPECT_EQ(r.ipa, m.base + 0x200000 + ((va + 0x123) & 0x1fffff));
    // A block at L0 does not exist with 4K granules.
    m.put(t0 + 8 * ((va >> 39) & 511), m.base | 1 | leaf);
    r = tr(m, ste, va);
    EXPECT_EQ(r.eventId(), smmu::kEvtFTranslation);
    // VA beyond 48 bits in TTB0: translation fault, no walk.
    r = tr(m, ste, 0x0001000000000000);
    EXPECT_EQ(r.eventId(), smmu::kEvtFTranslation);
    EXPECT_EQ(r.event[2], 0x0001000000000000u);
    // The TTB1 region with EPD1 set (Linux's CDs): translation fault.
    r = tr(m, ste, 0xffff000000001000);
    EXPECT_EQ(r.eventId(), smmu::kEvtFTranslation);

    // 64K granule, T0SZ 25: two levels (L2 of 1024 entries, L3 of 8192), a 64 KiB page.
    const uint64_t va64 = 0x04350000;
    m.put(cd, (kCd0 & ~walk::kCd0Tg0) | smmu::prep(walk::kCd0Tg0, 1));
    m.put(t0 + 8 * ((va64 >> 29) & 1023), (m.base + 0x20000) | 3);
    m.put(m.base + 0x20000 + 8 * ((va64 >> 16) & 8191), (m.base + 0x300000) | 3 | leaf);
    r = tr(m, ste, va64 + 0xabcd);
    ASSERT_EQ(r.kind, walk::Result::Kind::Translated) << r.why;
    EXPECT_EQ(r.ipa, m.base + 0x300000 + 0xabcd);

    // 16K granule, T0SZ 25: three levels, L1 of 8 entries (VA[38:36]), L2 and L3 of 2048.
    const uint64_t va16 = 0x04354000, t16 = m.base + 0x50000;
    m.put(cd, (kCd0 & ~walk::kCd0Tg0) | smmu::prep(walk::kCd0Tg0, 2));
    m.put(cd + 8, t16);
    m.put(t16 + 8 * ((va16 >> 36) & 7), (m.base + 0x40000) | 3);
    m.put(m.base + 0x40000 + 8 * ((va16 >> 25) & 2047), (m.base + 0x48000) | 3);
    m.put(m.base + 0x48000 + 8 * ((va16 >> 14) & 2047), (m.base + 0x304000) | 3 | leaf);
    r = tr(m, ste, va16 + 0x10);
    ASSERT_EQ(r.kind, walk::Result::Kind::Translated) << r.why;
    EXPECT_EQ(r.ipa, m.base + 0x304010);

    // EPD0: translation fault without a walk.
    m.put(cd, kCd0 | walk::kCd0Epd0);
    r = tr(m, ste, kVaDst);
    EXPECT_EQ(r.eventId(), smmu::kEvtFTranslation);
}

// Output addresses beyond CD.IPS (capped by IDR5.OAS) are F_ADDR_SIZE.
TEST(SmmuWalk, OutputBeyondIpsIsAddressSizeFault) {
    Mem m;
    const uint64_t cd = m.base, t0 = m.base + 0x10000;
    m.put(cd, (kCd0 & ~walk::kCd0Ips));  // IPS 0: 32 bits
    m.put(cd + 8, t0);
    m.put(t0 + 8 * ((kVaDst >> 30) & 511), (t0 + 0x1000) | 3);
    m.put(t0 + 0x1000 + 8 * ((kVaDst >> 21) & 511), (t0 + 0x2000) | 3);
    m.put(t0 + 0x2000 + 8 * ((kVaDst >> 12) & 511), 0x100000000ull | 3 | kLeafAttrs);
    auto r = tr(m, s1Ste(cd), kVaDst);
    EXPECT_EQ(r.eventId(), smmu::kEvtFAddrSize);
    m.put(cd, kCd0);  // IPS 44: the IPA is fine for stage 1, stage 2 has nothing there
    r = tr(m, s1Ste(cd), kVaDst);
    EXPECT_EQ(r.eventId(), smmu::kEvtFTranslation);
    EXPECT_TRUE(r.stage2);
}

// The caches' invalidation scopes: NH_VA by ASID keeps other ASIDs, global (nG clear) entries
// survive NH_ASID but not NH_VA/NH_VAA, range TLBIs cover NUM/SCALE granules, NH_ALL drops only
// its VMID, CFGI_CD drops one CD and CFGI_CD_ALL a stream's.
TEST(SmmuWalk, CacheInvalidationScopes) {
    walk::Caches c;
    auto leaf = [](uint64_t va, uint16_t asid, bool global) { return walk::Leaf{va, 0x1000, 0x1000, 0, asid, global}; };
    c.putLeaf(1, leaf(0x10000, 5, false));
    c.putLeaf(1, leaf(0x20000, 6, false));
    c.putLeaf(1, leaf(0x30000, 0, true));
    c.putLeaf(2, leaf(0x10000, 5, false));
    EXPECT_TRUE(c.leaf(1, 7, 0x30800));  // global: any ASID
    EXPECT_FALSE(c.leaf(1, 7, 0x10800));
    auto vmidCmd = [](smmu::Command cmd, uint16_t vmid) {
        cmd[0] |= smmu::prep(smmu::kTlbi0Vmid, vmid);
        return cmd;
    };
    c.apply(vmidCmd(tlbiNhAsid(5), 1));
    EXPECT_FALSE(c.leaf(1, 5, 0x10000));
    EXPECT_TRUE(c.leaf(2, 5, 0x10000));  // other VMID
    EXPECT_TRUE(c.leaf(1, 5, 0x30000));  // global survives NH_ASID
    c.apply(vmidCmd(tlbiNhVa(9, 0x30000), 1));
    EXPECT_FALSE(c.leaf(1, 5, 0x30000));  // ... but not NH_VA at its address
    // Range: TG 4K, NUM 1, SCALE 4: 2 * 16 pages = [0, 0x20000): misses the page at 0x20000;
    // NUM 2 (3 * 16 pages) covers it.
    smmu::Command range{smmu::kOpTlbiNhVaa | smmu::prep(smmu::kTlbi0Num, 1) | smmu::prep(smmu::kTlbi0Scale, 4),
                        smmu::prep(smmu::kTlbi1Tg, 1)};
    c.apply(vmidCmd(range, 1));
    EXPECT_TRUE(c.leaf(1, 6, 0x20000));
    range = {smmu::kOpTlbiNhVaa | smmu::prep(smmu::kTlbi0Num, 2) | smmu::prep(smmu::kTlbi0Scale, 4),
                        smmu::prep(smmu::kTlbi1Tg, 1)};
    c.apply(vmidCmd(range, 1));
    EXPECT_FALSE(c.leaf(1, 6, 0x20000));
    c.apply(vmidCmd({smmu::kOpTlbiNhAll, 0}, 2));
    EXPECT_EQ(c.leafCount(), 0u);

    c.putCd(8, 1, {});
    c.putCd(8, 2, {});
    c.putCd(9, 1, {});
    c.apply(cfgiCd(8, 1));
    EXPECT_FALSE(c.cd(8, 1));
    EXPECT_TRUE(c.cd(8, 2));
    c.apply({smmu::kOpCfgiCdAll | smmu::prep(smmu::kCfgi0Sid, 8), 0});
    EXPECT_FALSE(c.cd(8, 2));
    EXPECT_TRUE(c.cd(9, 1));
}
