// libFuzzer target: the virtual SMMUv3 (devices/smmuv3/virtual_smmu.h) driven by a hostile guest:
// MMIO writes and reads to both register pages at any offset and width, commands of every opcode
// (and garbage) in the CMDQ, STEs, L1 descriptors and CDs in linear and 2-level stream tables, raw
// guest-memory writes, GERRORN acknowledgements (with Linux's recovery: the failed command turned
// into a CMD_SYNC), host event records and losses, host refusals (setStream and invalidate failing
// at any index) and stream renumbering. The first byte picks the bound StreamIDs and failure modes.
//
// Checked: every STE reaching the host has only kSte{0,1}NestingAllowed bits and Config abort,
// bypass or S1, for a bound stream, and differs from what that stream already has; invalidate()
// gets only forwardable opcodes (CFGI_CD only of bound streams), never empty and never more than a
// queue's worth; the model writes guest memory only inside the event queue; CR0ACK = CR0,
// IRQ_CTRLACK = IRQ_CTRL, GBPA.UPDATE clear; GERROR holds only the errors the model raises;
// CMDQ_CONS.ERR is a real code; the model never moves EVTQ_PROD past a full queue; interrupts are
// edges; the stats agree with what the binding saw.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "base/log.h"
#include "devices/smmuv3/registers.h"
#include "devices/smmuv3/virtual_smmu.h"
#include "tests/fuzz/fuzz_input.h"

using namespace conduit;
using namespace conduit::fuzz;
using namespace conduit::devices::smmuv3;
namespace v = conduit::vfio::smmuv3;

namespace {

constexpr uint64_t kRam = 0x40000000;
constexpr uint64_t kRamSize = 0x8000;  // small: the whole of it is compared after every step

// What the inputs reached, over a whole run: FUZZ_VSMMU_SUMMARY=1 prints it at exit (run the
// binary over a corpus with -runs=0 to see what the corpus covers).
struct Totals {
    uint64_t s1 = 0, bypass = 0, abort = 0, refusedByHost = 0, invalidations = 0, invalidateFailures = 0;
    uint64_t cmdqErrors = 0, events = 0, eventsLost = 0;
    ~Totals() {
        if (std::getenv("FUZZ_VSMMU_SUMMARY"))
            std::fprintf(stderr,
                         "fuzz_vsmmu reached: setStream S1 %llu bypass %llu abort %llu (host refused %llu); "
                         "invalidate %llu (failed %llu); CONS.ERR %llu; events %llu delivered %llu lost\n",
                         (unsigned long long)s1, (unsigned long long)bypass, (unsigned long long)abort,
                         (unsigned long long)refusedByHost, (unsigned long long)invalidations,
                         (unsigned long long)invalidateFailures, (unsigned long long)cmdqErrors,
                         (unsigned long long)events, (unsigned long long)eventsLost);
    }
};
Totals totals;

struct FuzzBinding final : StreamBinding {
    std::vector<uint32_t> sids;
    std::map<uint32_t, Ste> current;  // what each stream was last set to successfully
    uint8_t failSet = 0;              // bit 0: refuse S1, bit 1: refuse bypass
    int failInvalidateAt = -1;
    uint64_t setCalls = 0, invalidateCalls = 0, forwarded = 0;

    std::vector<uint32_t> streams() const override { return sids; }
    Result<void> setStream(uint32_t sid, const Ste& ste) override {
        ++setCalls;
        FUZZ_CHECK((ste[0] & ~v::kSte0NestingAllowed) == 0);
        FUZZ_CHECK((ste[1] & ~v::kSte1NestingAllowed) == 0);
        const auto cfg = v::steConfig(ste);
        FUZZ_CHECK(cfg == v::kCfgAbort || cfg == v::kCfgBypass || cfg == v::kCfgS1Trans);
        FUZZ_CHECK(std::find(sids.begin(), sids.end(), sid) != sids.end());
        auto it = current.find(sid);
        FUZZ_CHECK(it == current.end() || it->second != ste);  // only changes reach the host
        ++(cfg == v::kCfgS1Trans ? totals.s1 : cfg == v::kCfgBypass ? totals.bypass : totals.abort);
        if ((cfg == v::kCfgS1Trans && (failSet & 1)) || (cfg == v::kCfgBypass && (failSet & 2))) {
            ++totals.refusedByHost;
            return Error("refused", EIO);
        }
        current[sid] = ste;
        return success();
    }
    Result<void> invalidate(std::span<const Command> commands, uint32_t* done) override {
        ++invalidateCalls;
        forwarded += commands.size();
        FUZZ_CHECK(!commands.empty());
        FUZZ_CHECK(commands.size() <= 256);
        for (const auto& c : commands) {
            FUZZ_CHECK(v::forwardedOpcode(v::opcode(c)) && v::opcode(c) != v::kOpAtcInv);
            if (v::carriesStreamId(v::opcode(c)))  // only vSIDs the host knows
                FUZZ_CHECK(std::find(sids.begin(), sids.end(), v::field(c[0], v::kCfgi0Sid)) != sids.end());
        }
        ++totals.invalidations;
        if (failInvalidateAt >= 0 && static_cast<size_t>(failInvalidateAt) < commands.size()) {
            ++totals.invalidateFailures;
            *done = static_cast<uint32_t>(failInvalidateAt);
            return Error("refused", EIO);
        }
        *done = static_cast<uint32_t>(commands.size());
        return success();
    }
};

struct Line final : devices::InterruptLine {
    bool level = false;
    void setLevel(bool asserted) override {
        FUZZ_CHECK(asserted != level);  // edges only: set, then clear
        level = asserted;
    }
};

// Interesting register offsets; anything else comes raw.
constexpr uint32_t kRegs[] = {
    reg::kCr0, reg::kCr1, reg::kCr2, reg::kGbpa, reg::kIrqCtrl, reg::kGerrorN, reg::kGerrorIrqCfg0,
    reg::kStrtabBase, reg::kStrtabBase + 4, reg::kStrtabBaseCfg, reg::kCmdqBase, reg::kCmdqBase + 4,
    reg::kCmdqProd, reg::kCmdqCons, reg::kEvtqBase, reg::kEvtqBase + 4, reg::kEvtqProd, reg::kEvtqCons,
    reg::kEvtqIrqCfg0, reg::kIdr0, reg::kGerror, reg::kCr0Ack, reg::kEvtqProd - reg::kPage1,
};
constexpr uint8_t kOps[] = {
    v::kOpCfgiSte, v::kOpCfgiAll, v::kOpCmdSync, v::kOpTlbiNhVa, v::kOpTlbiNhAsid, v::kOpTlbiNhAll,
    v::kOpTlbiNhVaa, v::kOpTlbiNsnhAll, v::kOpCfgiCd, v::kOpCfgiCdAll, v::kOpPrefetchCfg, reg::kOpPrefetchAddr,
    v::kOpAtcInv, v::kOpTlbiEl2All, v::kOpTlbiS12Vmall, v::kOpTlbiS2Ipa, v::kOpPriResp, v::kOpResume,
};

struct Harness {
    std::unique_ptr<memory::GuestMemory> mem;
    uint8_t* ram = nullptr;
    std::vector<uint8_t> shadow = std::vector<uint8_t>(kRamSize);
    FuzzBinding binding;
    Line evtq, gerror, sync;
    std::unique_ptr<VirtualSmmu> smmu;
    VirtualSmmuStats last{};

    Harness() {
        log::setLevel("off");
        auto m = memory::GuestMemory::create({{kRam, kRamSize}}, {});
        if (!m.ok()) violated("guest memory", __FILE__, __LINE__);
        mem = std::make_unique<memory::GuestMemory>(std::move(m).value());
        auto p = mem->hostPointer(kRam, kRamSize);
        if (!p.ok()) violated("host pointer", __FILE__, __LINE__);
        ram = p.value();
    }

    void start(uint8_t variant) {
        if (smmu) {
            totals.cmdqErrors += last.commandErrors;
            totals.events += last.eventsDelivered;
            totals.eventsLost += last.eventsLost;
        }
        std::memset(ram, 0, kRamSize);
        std::memset(shadow.data(), 0, kRamSize);
        binding = FuzzBinding{};
        static constexpr uint32_t kSidSets[4][3] = {{0x10, 0x108, 0xffff}, {0, 1, 2}, {0x100, 0x1ff, 0x200}, {0x8, 0x8, 0x8}};
        const auto& set = kSidSets[variant & 3];
        binding.sids.assign(set, set + ((variant >> 2) % 3 + 1));
        binding.failSet = (variant >> 4) & 3;
        binding.failInvalidateAt = (variant & 0x40) ? (variant >> 7) : -1;
        HostSmmuIds host;
        host.idr = {0x0d44101b | ((variant & 0x80) ? reg::kIdr0Cd2l : 0u), 0x02730010 | (20u << 6), 0, 0x1414, 0, 0x74};
        host.maxPasidLog2 = variant & 0x80 ? 8 : 0;
        evtq = {}, gerror = {}, sync = {};
        auto s = VirtualSmmu::create("fuzz", host, *mem, binding, {&evtq, &gerror, &sync});
        if (!s.ok()) violated("create", __FILE__, __LINE__);
        smmu = std::move(s).value();
        last = {};
    }

    uint32_t r32(uint64_t off) {
        uint32_t x = 0;
        smmu->read(off, std::span(reinterpret_cast<uint8_t*>(&x), 4));
        return x;
    }
    void w32(uint64_t off, uint32_t x) { smmu->write(off, std::span(reinterpret_cast<const uint8_t*>(&x), 4)); }
    void w64(uint64_t off, uint64_t x) { smmu->write(off, std::span(reinterpret_cast<const uint8_t*>(&x), 8)); }
    // Guest writes: to RAM and to the shadow the model's own writes are checked against.
    void poke(uint64_t gpa, const void* p, size_t n) {
        if (gpa < kRam || gpa - kRam > kRamSize - n) return;
        std::memcpy(ram + (gpa - kRam), p, n);
        std::memcpy(shadow.data() + (gpa - kRam), p, n);
    }
    template <class T>
    void pokeObj(uint64_t gpa, const T& x) { poke(gpa, &x, sizeof x); }
    // An address inside RAM most of the time, anywhere otherwise.
    static uint64_t gpa(Input& in, uint64_t align) {
        const uint16_t sel = in.u16();
        if ((sel & 0xf) == 0xf) return in.u64();
        return kRam + ((sel >> 4) * 16 % kRamSize & ~(align - 1));
    }

    // Linux's reset sequence, compressed: tables and queues at input-chosen places, then enable.
    void probe(Input& in) {
        const uint8_t f = in.u8();
        w32(reg::kCr0, 0);
        const uint64_t strtab = gpa(in, 64);
        w64(reg::kStrtabBase, strtab | reg::kStrtabBaseRa);
        w32(reg::kStrtabBaseCfg, (f & 1) ? (v::prep(reg::kStrtabCfgFmt, 1) | v::prep(reg::kStrtabCfgSplit, (f & 2) ? 6 : 8) |
                                            v::prep(reg::kStrtabCfgLog2Size, 16))
                                         : v::prep(reg::kStrtabCfgLog2Size, 4 + (f >> 4)));
        w64(reg::kCmdqBase, gpa(in, 32) | (f & 4 ? 8 : 5));
        w32(reg::kCmdqProd, 0);
        w32(reg::kCmdqCons, 0);
        w64(reg::kEvtqBase, gpa(in, 32) | (f & 8 ? 8 : 2));
        w32(reg::kEvtqProd, 0);
        w32(reg::kEvtqCons, 0);
        w32(reg::kIrqCtrl, reg::kIrqCtrlEvtqIrqEn | reg::kIrqCtrlGerrorIrqEn);
        w32(reg::kCr0, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    }

    // Where the guest's STE for `sid` is, by the registers as they are now (0: nowhere).
    uint64_t steAddr(uint32_t sid, Input& in) {
        const uint64_t base = (uint64_t{r32(reg::kStrtabBase + 4)} << 32 | r32(reg::kStrtabBase)) & reg::kStrtabBaseAddr;
        const uint32_t cfg = r32(reg::kStrtabBaseCfg);
        if (v::field(cfg, reg::kStrtabCfgFmt) != 1) return base + uint64_t{sid} * 64;
        const uint32_t split = v::field(cfg, reg::kStrtabCfgSplit);
        if (split > 16) return 0;
        const uint64_t l1 = base + (uint64_t{sid} >> split) * 8;
        uint64_t desc = 0;
        if (l1 >= kRam && l1 - kRam <= kRamSize - 8) std::memcpy(&desc, ram + (l1 - kRam), 8);
        if (v::field(desc, reg::kL1DescSpan) == 0 || (in.u8() & 7) == 0) {  // make (or remake) the L2 table
            desc = gpa(in, 64) | (split + 1);
            pokeObj(l1, desc);
        }
        return (desc & reg::kL1DescL2Ptr) + (sid & ((1u << split) - 1)) * 64;
    }

    Ste randomSte(Input& in) {
        const uint8_t k = in.u8();
        Ste ste{in.u64(), in.u64()};
        if (k & 1) {  // a plausible stage-1 STE with a CD table in RAM
            ste[0] = (ste[0] & (v::kSte0S1CdMax | v::kSte0S1Fmt | (k & 2 ? v::mask(58, 52) : 0))) | v::kSte0V |
                     v::prep(v::kSte0Cfg, (k & 4) ? v::kCfgS1Trans : (k >> 5)) | (gpa(in, 64) & v::kSte0S1CtxPtr);
            if (k & 8) ste[0] &= ~v::kSte0S1CdMax;
        }
        return ste;
    }

    void command(Input& in) {
        const uint8_t k = in.u8();
        uint8_t op = (k & 0x80) ? in.u8() : kOps[k % std::size(kOps)];
        Command c{op | (in.u64() & ~0xffull), in.u64()};
        if (op == v::kOpCfgiSte || op == v::kOpCfgiAll) {
            if (!binding.sids.empty() && (k & 0x40))
                c[0] = (c[0] & 0xffffffffull) | (uint64_t{binding.sids[k % binding.sids.size()]} << 32);
            if (op == v::kOpCfgiAll && (k & 0x20)) c[1] = 31;
        }
        const uint64_t base = (uint64_t{r32(reg::kCmdqBase + 4)} << 32 | r32(reg::kCmdqBase)) & reg::kQBaseAddr;
        const uint32_t log2 = std::min<uint32_t>(r32(reg::kCmdqBase) & 0x1f, 8);
        const uint32_t prod = r32(reg::kCmdqProd);
        const uint32_t n = (k & 0x10) ? 1 + in.u8() % 4 : 1;  // several copies: batches
        uint32_t p = prod;
        for (uint32_t i = 0; i < n; ++i) {
            pokeObj(base + uint64_t{p & ((1u << log2) - 1)} * 16, c);
            p = (p + 1) & ((2u << log2) - 1);
        }
        if (k & 8) pokeObj(base + uint64_t{p & ((1u << log2) - 1)} * 16, Command{v::kOpCmdSync, 0}), p = (p + 1) & ((2u << log2) - 1);
        w32(reg::kCmdqProd, p | ((k & 4) ? in.u32() & ~0x1ffu : 0));
    }

    struct EvtqView {
        bool enabled;
        uint32_t entries, prod, cons;  // PROD and CONS: index and wrap
    };
    EvtqView evtqView() {
        const uint32_t n = 1u << std::min<uint32_t>(r32(reg::kEvtqBase) & 0x1f, 8);
        return {(r32(reg::kCr0) & reg::kCr0EvtqEn) != 0, n, r32(reg::kEvtqProd) & (2 * n - 1),
                r32(reg::kEvtqCons) & (2 * n - 1)};
    }
    EvtqView before{};

    void check() {
        // The model writes guest memory only inside the event queue.
        const uint64_t evBase = (uint64_t{r32(reg::kEvtqBase + 4)} << 32 | r32(reg::kEvtqBase)) & reg::kQBaseAddr;
        const uint32_t evLog2 = std::min<uint32_t>(r32(reg::kEvtqBase) & 0x1f, 8);
        const uint64_t evEnd = evBase + (32ull << evLog2);
        if (std::memcmp(ram, shadow.data(), kRamSize) != 0) for (uint64_t i = 0; i < kRamSize; i += 8) {
            if (std::memcmp(ram + i, shadow.data() + i, 8) == 0) continue;
            FUZZ_CHECK(kRam + i >= evBase && kRam + i + 8 <= evEnd);
            std::memcpy(shadow.data() + i, ram + i, 8);
        }
        FUZZ_CHECK(r32(reg::kCr0Ack) == r32(reg::kCr0));
        FUZZ_CHECK(r32(reg::kIrqCtrlAck) == r32(reg::kIrqCtrl));
        FUZZ_CHECK((r32(reg::kGbpa) & reg::kGbpaUpdate) == 0);
        FUZZ_CHECK((r32(reg::kGerror) & ~(reg::kGerrorCmdqErr | reg::kGerrorEvtqAbtErr)) == 0);
        FUZZ_CHECK(v::field(r32(reg::kCmdqCons), reg::kCmdqConsErr) <= reg::kCerrorAbt);
        // While the queue stayed enabled and the guest did not move CONS, only the model moved
        // PROD: never past a full queue.
        const EvtqView now = evtqView();
        const uint32_t m = 2 * now.entries - 1;
        if (now.enabled && before.enabled && now.entries == before.entries && now.cons == before.cons) {
            const uint32_t used = (before.prod - before.cons) & m;
            if (used <= now.entries) FUZZ_CHECK(((now.prod - before.prod) & m) <= now.entries - used);
        }
        const VirtualSmmuStats s = smmu->stats();
        FUZZ_CHECK(s.steConfigs == binding.setCalls);
        FUZZ_CHECK(s.invalidateCalls == binding.invalidateCalls);
        FUZZ_CHECK(s.invalidationsForwarded == binding.forwarded);
        FUZZ_CHECK(s.commands >= last.commands && s.syncs <= s.commands && s.commandErrors >= last.commandErrors);
        FUZZ_CHECK(s.eventsDelivered >= last.eventsDelivered && s.eventsLost >= last.eventsLost);
        last = s;
        FUZZ_CHECK(!evtq.level && !gerror.level && !sync.level);
    }
};

Harness& harness() {
    static Harness h;
    return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    Harness& h = harness();
    h.start(in.u8());
    for (int steps = 0; !in.done() && steps < 96; ++steps) {
        h.before = h.evtqView();
        const uint8_t op = in.u8();
        switch (op % 13) {
            case 0: {  // a register, 32 bits
                const uint8_t r = in.u8();
                const uint64_t off = r < 200 ? kRegs[r % std::size(kRegs)] : in.u32() % VirtualSmmu::kMmioSize;
                h.w32(off, in.u32());
                break;
            }
            case 1: {  // 64 bits, or any width anywhere
                const uint64_t off = (op & 0x80) ? in.u32() % (VirtualSmmu::kMmioSize + 16) : kRegs[in.u8() % std::size(kRegs)];
                const uint64_t value = in.u64();
                const size_t len = (op & 0x40) ? size_t{1} << (in.u8() % 4) : 8;
                h.smmu->write(off, std::span(reinterpret_cast<const uint8_t*>(&value), len));
                break;
            }
            case 2: {
                uint64_t value;
                const size_t len = size_t{1} << (op >> 6);
                h.smmu->read(in.u32() % (VirtualSmmu::kMmioSize + 16), std::span(reinterpret_cast<uint8_t*>(&value), len));
                break;
            }
            case 3: case 4: h.command(in); break;
            case 5: {  // an STE of a bound stream (or any)
                const uint32_t sid = (op & 0x80) || h.binding.sids.empty() ? in.u16() : h.binding.sids[in.u8() % h.binding.sids.size()];
                const uint64_t at = h.steAddr(sid, in);
                h.pokeObj(at, h.randomSte(in));
                break;
            }
            case 6: {  // a CD (the host walks them; the model must not care) or any bytes
                const uint64_t at = Harness::gpa(in, 8);
                const std::array<uint64_t, 8> cd{in.u64(), in.u64(), in.u64(), in.u64()};
                h.poke(at, cd.data(), (op & 0x80) ? 64 : 8);
                break;
            }
            case 7: {  // host events and losses
                std::vector<Event> evs(in.u8() % 40);
                for (auto& e : evs) e = {v::prep(v::kEvt0Id, v::kEvtFTranslation) | v::prep(v::kEvt0Sid, in.u16()), in.u64(), in.u64(), 0};
                h.smmu->deliverEvents(evs, (op & 0x80) ? in.u8() : 0);
                break;
            }
            case 8: {  // the guest drains the event queue (and acks overflow)
                const uint32_t prod = h.r32(reg::kEvtqProd);
                h.w32(reg::kEvtqCons, (op & 0x80) ? (prod & 0x1ff) : prod);
                break;
            }
            case 9: {  // Linux's gerror handler
                const uint32_t cons = h.r32(reg::kCmdqCons);
                if (op & 0x80) {
                    const uint64_t base = (uint64_t{h.r32(reg::kCmdqBase + 4)} << 32 | h.r32(reg::kCmdqBase)) & reg::kQBaseAddr;
                    const uint32_t log2 = std::min<uint32_t>(h.r32(reg::kCmdqBase) & 0x1f, 8);
                    h.pokeObj(base + uint64_t{cons & ((1u << log2) - 1)} * 16, Command{v::kOpCmdSync, 0});
                }
                h.w32(reg::kGerrorN, h.r32(reg::kGerror));
                break;
            }
            case 10:
                h.probe(in);
                h.before.enabled = false;  // the guest reset EVTQ_PROD itself
                break;
            case 11: {  // the host changes its mind
                h.binding.failSet = in.u8() & 3;
                const uint8_t k = in.u8();
                h.binding.failInvalidateAt = (k & 1) ? k >> 1 : -1;
                break;
            }
            case 12: {  // renumbering: other StreamIDs are bound now
                std::vector<uint32_t> sids(in.u8() % 4);
                for (auto& s : sids) s = (op & 0x80) ? in.u16() : in.u8();
                std::sort(sids.begin(), sids.end());
                sids.erase(std::unique(sids.begin(), sids.end()), sids.end());
                for (auto it = h.binding.current.begin(); it != h.binding.current.end();)
                    it = std::find(sids.begin(), sids.end(), it->first) == sids.end() ? h.binding.current.erase(it) : std::next(it);
                h.binding.sids = sids;
                h.smmu->rebindStreams();
                break;
            }
        }
        h.check();
    }
    return 0;
}
