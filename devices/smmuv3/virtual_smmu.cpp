#include "devices/smmuv3/virtual_smmu.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "devices/smmuv3/registers.h"
#include "devices/smmuv3/stream_table.h"

namespace conduit::devices::smmuv3 {

namespace v = vfio::smmuv3;
using v::field;
using v::prep;

namespace {

// What the vSMMU offers beyond the host's IDRs. StreamIDs are the guest's PCI requester ids
// (bus:dev.fn), so 16 bits; the queues are the smallest Linux accepts with room to spare (it
// needs more than CMDQ_BATCH_ENTRIES = 64 command slots) and fit one 4 KiB / 8 KiB allocation.
constexpr uint32_t kSidBits = 16;
constexpr uint32_t kCmdqShift = 8;
constexpr uint32_t kEvtqShift = 8;
// Invalidations sent in one invalidate() at most; a CMD_SYNC usually ends the batch long before.
constexpr size_t kMaxBatch = size_t{1} << kCmdqShift;

std::array<uint32_t, 6> deriveIdrs(const HostSmmuIds& host) {
    using namespace reg;
    const uint32_t h0 = host.idr[0], h1 = host.idr[1], h3 = host.idr[3], h5 = host.idr[5];
    // Stalls would need CMD_RESUME, which the kernel does not forward: none, unless the host
    // forces them on every stream (then say so).
    const bool stallForce = field(h0, kIdr0StallModel) == kStallModelForce;
    // Stage 1 only (stage 2 is the VMM's), AArch64 tables in little endian, 2-level stream table.
    // The host's page-table walker walks the guest's CDs and tables: coherency, ASID16, 2-level
    // CD tables, terminate model are the host's. No MSI (wired SPIs), no SEV (CMD_SYNC completes
    // before CMDQ_PROD's write returns, nothing to wait for), no ATS/PRI, no HYP, no BTM, no HTTU.
    const uint32_t idr0 = v::kIdr0S1p | prep(kIdr0Ttf, kIdr0TtfAArch64) | (h0 & kIdr0Cohacc) |
                          (h0 & v::kIdr0Asid16) | (h0 & kIdr0Cd2l) | prep(kIdr0TtEndian, kIdr0TtEndianLe) |
                          prep(kIdr0StallModel, stallForce ? kStallModelForce : kStallModelNone) |
                          (h0 & kIdr0TermModel) | prep(kIdr0StLevel, kIdr0StLevel2Lvl);
    // Substreams: what the host SMMU and the device both can (IOMMU_GET_HW_INFO's max_pasid_log2).
    const uint32_t ssid = std::min<uint32_t>(field(h1, kIdr1SsidSize), host.maxPasidLog2);
    const uint32_t idr1 = prep(kIdr1SidSize, kSidBits) | prep(kIdr1SsidSize, ssid) | prep(kIdr1EvtqS, kEvtqShift) |
                          prep(kIdr1CmdqS, kCmdqShift);
    // Range invalidation, hierarchical attribute disable and the break-before-make level describe
    // the walker and the TLBs, which are the host's.
    const uint32_t idr3 = h3 & (v::kIdr3Ril | kIdr3Had | kIdr3Bbml);
    const uint32_t idr5 = (h5 & (kIdr5Oas | kIdr5Gran4K | kIdr5Gran16K | kIdr5Gran64K | kIdr5Ds | kIdr5Vax)) |
                          (stallForce ? (h5 & kIdr5StallMax) : 0);
    return {idr0, idr1, 0, idr3, 0, idr5};
}

// Queue pointer arithmetic (spec 3.5): an index of `shift` bits and a wrap bit above it.
struct QueueGeometry {
    uint32_t shift;
    uint32_t entries() const { return 1u << shift; }
    uint32_t ptrMask() const { return (2u << shift) - 1; }  // index and wrap
    uint32_t index(uint32_t p) const { return p & (entries() - 1); }
    uint32_t next(uint32_t p) const { return (p + 1) & ptrMask(); }
    bool empty(uint32_t prod, uint32_t cons) const { return (prod & ptrMask()) == (cons & ptrMask()); }
    bool full(uint32_t prod, uint32_t cons) const {
        return index(prod) == index(cons) && ((prod ^ cons) & entries()) != 0;
    }
};

QueueGeometry geometry(uint64_t base, uint32_t maxShift) {
    // LOG2SIZE above the IDR1 maximum is treated as the maximum (spec 6.3.26).
    return {std::min<uint32_t>(field(base, reg::kQBaseLog2Size), maxShift)};
}

Event makeEvent(uint8_t id, uint32_t sid, uint64_t dword3 = 0) {
    return {prep(v::kEvt0Id, id) | prep(v::kEvt0Sid, sid), 0, 0, dword3};
}

enum class CommandKind { Forward, CfgiSte, CfgiRange, Sync, Ignore, Illegal };

CommandKind classify(uint8_t op) {
    switch (op) {
        case v::kOpCfgiSte: return CommandKind::CfgiSte;
        case v::kOpCfgiAll: return CommandKind::CfgiRange;  // CFGI_STE_RANGE; Range 31 is CFGI_ALL
        case v::kOpCmdSync: return CommandKind::Sync;
        case v::kOpPrefetchCfg:
        case reg::kOpPrefetchAddr: return CommandKind::Ignore;  // prefetching is a hint
        // ATC_INV is forwardable but IDR0.ATS is clear: illegal here as on hardware without ATS.
        case v::kOpAtcInv: return CommandKind::Illegal;
        default:
            // TLBI_EL2_*, TLBI_S12_VMALL, TLBI_S2_IPA (no HYP, no stage 2), PRI_RESP, RESUME,
            // STALL_TERM (no PRI, no stalls) and anything unknown: CERROR_ILL.
            return v::forwardedOpcode(op) ? CommandKind::Forward : CommandKind::Illegal;
    }
}

// The room's logger, looked up once (and no temporary name string inside the switches below).
log::Logger& logger() {
    static log::Logger& l = log::get("devices");
    return l;
}

// Interrupts to raise once every lock is released.
struct Pulses {
    bool eventq = false, gerror = false, cmdqSync = false;
};

void pulse(InterruptLine* line) {
    if (!line) return;
    line->setLevel(true);  // edge-triggered SPI: the rising edge is the interrupt
    line->setLevel(false);
}

}  // namespace

struct VirtualSmmu::State {
    State(std::string n, const HostSmmuIds& host, const memory::GuestMemory& mem, StreamBinding& b, VirtualSmmuIrqs i)
        : name(std::move(n)), memory(mem), binding(b), irqs(i), idr(deriveIdrs(host)), iidr(host.iidr), aidr(host.aidr) {
        limits.ssidBits = field(idr[1], reg::kIdr1SsidSize);
        limits.oasBits = reg::oasBits(field(idr[5], reg::kIdr5Oas));
        limits.cd2l = idr[0] & reg::kIdr0Cd2l;
    }

    const std::string name;
    const memory::GuestMemory& memory;
    StreamBinding& binding;
    const VirtualSmmuIrqs irqs;
    const std::array<uint32_t, 6> idr;
    const uint32_t iidr, aidr;
    SteLimits limits;

    // Lock order: opMutex, then regMutex. opMutex serializes every register write with an effect
    // on the host (CR0, GBPA, CMDQ_PROD, GERRORN) and is held across binding calls; regMutex guards
    // the registers and is never held across one, so deliverEvents() (which takes regMutex only)
    // cannot wait on a binding call in progress.
    std::mutex opMutex;
    mutable std::mutex regMutex;

    // Registers (regMutex).
    uint32_t cr0 = 0, cr1 = 0, cr2 = 0, gbpa = reg::kGbpaReset, irqCtrl = 0, gerror = 0, gerrorn = 0;
    uint64_t gerrorIrqCfg0 = 0, evtqIrqCfg0 = 0;
    uint32_t gerrorIrqCfg1 = 0, gerrorIrqCfg2 = 0, evtqIrqCfg1 = 0, evtqIrqCfg2 = 0;
    uint64_t strtabBase = 0;
    uint32_t strtabBaseCfg = 0;
    uint64_t cmdqBase = 0;
    uint32_t cmdqProd = 0, cmdqCons = 0;
    uint64_t evtqBase = 0;
    uint32_t evtqProd = 0, evtqCons = 0;
    VirtualSmmuStats stats;

    // What each bound stream was last set to (opMutex); absent: not set by this model yet.
    std::map<uint32_t, Ste> applied;

    // ---- registers (regMutex held) ----
    uint32_t readWord(uint32_t off) const;
    void writeWordPlain(uint32_t off, uint32_t value);
    bool cmdqErrorActive() const { return ((gerror ^ gerrorn) & reg::kGerrorCmdqErr) != 0; }
    void raiseGerror(uint32_t bit, Pulses& p);
    void postEvents(std::span<const Event> events, uint32_t lost, Pulses& p);

    // ---- effects (opMutex held, regMutex not) ----
    void writeWordOp(uint32_t off, uint32_t value, Pulses& p);
    SanitizedSte evaluate(uint32_t sid, Pulses& p);
    void setStream(uint32_t sid, const SanitizedSte& target, Pulses& p);
    void reevaluate(const std::vector<uint32_t>& sids, Pulses& p);
    void processCmdq(Pulses& p);
    void fire(const Pulses& p) const;
};

// ---- register file ------------------------------------------------------------------------------

uint32_t VirtualSmmu::State::readWord(uint32_t off) const {
    using namespace reg;
    auto lo = [](uint64_t r) { return static_cast<uint32_t>(r); };
    auto hi = [](uint64_t r) { return static_cast<uint32_t>(r >> 32); };
    if (off <= kIdr5) return idr[off / 4];
    switch (off) {
        case kIidr: return iidr;
        case kAidr: return aidr;
        case kCr0:
        case kCr0Ack: return cr0;  // every CR0 update takes effect before the write returns
        case kCr1: return cr1;
        case kCr2: return cr2;
        case kGbpa: return gbpa;  // UPDATE is always clear: an update completes within the write
        case kIrqCtrl:
        case kIrqCtrlAck: return irqCtrl;
        case kGerror: return gerror;
        case kGerrorN: return gerrorn;
        case kGerrorIrqCfg0: return lo(gerrorIrqCfg0);
        case kGerrorIrqCfg0 + 4: return hi(gerrorIrqCfg0);
        case kGerrorIrqCfg1: return gerrorIrqCfg1;
        case kGerrorIrqCfg2: return gerrorIrqCfg2;
        case kStrtabBase: return lo(strtabBase);
        case kStrtabBase + 4: return hi(strtabBase);
        case kStrtabBaseCfg: return strtabBaseCfg;
        case kCmdqBase: return lo(cmdqBase);
        case kCmdqBase + 4: return hi(cmdqBase);
        case kCmdqProd: return cmdqProd;
        case kCmdqCons: return cmdqCons;
        case kEvtqBase: return lo(evtqBase);
        case kEvtqBase + 4: return hi(evtqBase);
        case kEvtqIrqCfg0: return lo(evtqIrqCfg0);
        case kEvtqIrqCfg0 + 4: return hi(evtqIrqCfg0);
        case kEvtqIrqCfg1: return evtqIrqCfg1;
        case kEvtqIrqCfg2: return evtqIrqCfg2;
        case kEvtqProd: return evtqProd;
        case kEvtqCons: return evtqCons;
        default: return 0;  // STATUSR, AGBPA, the PRI queue, ID registers...: RAZ
    }
}

void VirtualSmmu::State::writeWordPlain(uint32_t off, uint32_t value) {
    using namespace reg;
    auto setLo = [](uint64_t& r, uint64_t m, uint32_t val) { r = ((r & ~0xffffffffull) | val) & m; };
    auto setHi = [](uint64_t& r, uint64_t m, uint32_t val) { r = ((r & 0xffffffffull) | (uint64_t{val} << 32)) & m; };
    const bool smmuEn = cr0 & kCr0SmmuEn, cmdqEn = cr0 & kCr0CmdqEn, evtqEn = cr0 & kCr0EvtqEn;
    constexpr uint64_t kMsiAddr = v::mask(51, 2);
    constexpr uint64_t kQBase = kQBaseRa | kQBaseAddr | kQBaseLog2Size;
    constexpr uint64_t kStrtab = kStrtabBaseRa | kStrtabBaseAddr;
    constexpr uint32_t kStrtabCfg = kStrtabCfgFmt | kStrtabCfgSplit | kStrtabCfgLog2Size;
    const uint32_t evtqPtr = (2u << kEvtqShift) - 1;
    switch (off) {
        case kCr1: cr1 = value & kCr1Mask; break;
        case kCr2: cr2 = value & kCr2Mask; break;
        // Only the two interrupts the model has; the acknowledgement follows at once.
        case kIrqCtrl: irqCtrl = value & (kIrqCtrlGerrorIrqEn | kIrqCtrlEvtqIrqEn); break;
        // MSI is not offered, but Linux clears the address registers anyway: stored, never used.
        case kGerrorIrqCfg0: setLo(gerrorIrqCfg0, kMsiAddr, value); break;
        case kGerrorIrqCfg0 + 4: setHi(gerrorIrqCfg0, kMsiAddr, value); break;
        case kGerrorIrqCfg1: gerrorIrqCfg1 = value; break;
        case kGerrorIrqCfg2: gerrorIrqCfg2 = value & 0x3f; break;
        case kEvtqIrqCfg0: setLo(evtqIrqCfg0, kMsiAddr, value); break;
        case kEvtqIrqCfg0 + 4: setHi(evtqIrqCfg0, kMsiAddr, value); break;
        case kEvtqIrqCfg1: evtqIrqCfg1 = value; break;
        case kEvtqIrqCfg2: evtqIrqCfg2 = value & 0x3f; break;
        // Table and queue bases are read-only while what uses them is enabled (spec 6.3.23-6.3.29).
        case kStrtabBase: if (!smmuEn) setLo(strtabBase, kStrtab, value); break;
        case kStrtabBase + 4: if (!smmuEn) setHi(strtabBase, kStrtab, value); break;
        case kStrtabBaseCfg: if (!smmuEn) strtabBaseCfg = value & kStrtabCfg; break;
        case kCmdqBase: if (!cmdqEn) setLo(cmdqBase, kQBase, value); break;
        case kCmdqBase + 4: if (!cmdqEn) setHi(cmdqBase, kQBase, value); break;
        // Software moves CONS only while the queue is off or stopped on an error; ERR is the
        // model's report.
        case kCmdqCons:
            if (!cmdqEn || cmdqErrorActive()) cmdqCons = (cmdqCons & kCmdqConsErr) | (value & ((2u << kCmdqShift) - 1));
            break;
        case kEvtqBase: if (!evtqEn) setLo(evtqBase, kQBase, value); break;
        case kEvtqBase + 4: if (!evtqEn) setHi(evtqBase, kQBase, value); break;
        case kEvtqProd: if (!evtqEn) evtqProd = value & (kQOverflowFlag | evtqPtr); break;
        case kEvtqCons: evtqCons = value & (kQOverflowFlag | evtqPtr); break;
        default: break;  // IDRs, ACKs, GERROR: read-only; the rest: WI
    }
}

void VirtualSmmu::State::raiseGerror(uint32_t bit, Pulses& p) {
    // An error is active while GERROR and GERRORN differ in its bit; it toggles only from inactive.
    if (((gerror ^ gerrorn) & bit) == 0) gerror ^= bit;
    if (irqCtrl & reg::kIrqCtrlGerrorIrqEn) p.gerror = true;
}

void VirtualSmmu::State::postEvents(std::span<const Event> events, uint32_t lost, Pulses& p) {
    using namespace reg;
    if (!(cr0 & kCr0EvtqEn) || !(cr0 & kCr0SmmuEn)) {  // no queue to write to: events are discarded
        stats.eventsLost += events.size() + lost;
        return;
    }
    const QueueGeometry q = geometry(evtqBase, kEvtqShift);
    const uint64_t base = evtqBase & kQBaseAddr;
    uint64_t dropped = lost, written = 0;
    for (size_t i = 0; i < events.size(); ++i) {
        if (q.full(evtqProd, evtqCons)) {
            dropped += events.size() - i;
            break;
        }
        if (!memory.writeObj(base + uint64_t{q.index(evtqProd)} * kEvtBytes, events[i]).ok()) {
            raiseGerror(kGerrorEvtqAbtErr, p);  // the queue is not in guest RAM
            dropped += events.size() - i;
            break;
        }
        evtqProd = (evtqProd & kQOverflowFlag) | q.next(evtqProd);
        ++written;
    }
    bool overflowed = false;
    // Overflow (spec 7.4): PROD.OVFLG toggles when records are lost and the last overflow was
    // acknowledged (CONS.OVACKFLG equal to it); Linux then reports "events lost" and acks.
    if (dropped && ((evtqProd ^ evtqCons) & kQOverflowFlag) == 0) {
        evtqProd ^= kQOverflowFlag;
        overflowed = true;
    }
    stats.eventsDelivered += written;
    stats.eventsLost += dropped;
    if ((written || overflowed) && (irqCtrl & kIrqCtrlEvtqIrqEn)) p.eventq = true;
}

void VirtualSmmu::State::fire(const Pulses& p) const {
    if (p.gerror) pulse(irqs.gerror);
    if (p.eventq) pulse(irqs.eventq);
    if (p.cmdqSync) pulse(irqs.cmdqSync);
}

// ---- effects on the host ------------------------------------------------------------------------

SanitizedSte VirtualSmmu::State::evaluate(uint32_t sid, Pulses& p) {
    StreamTableConfig table;
    uint32_t cr0Now, gbpaNow;
    {
        std::lock_guard lock(regMutex);
        cr0Now = cr0;
        gbpaNow = gbpa;
        table = {strtabBase, strtabBaseCfg, kSidBits};
    }
    if (!(cr0Now & reg::kCr0SmmuEn)) return {(gbpaNow & reg::kGbpaAbort) ? kSteAbort : kSteBypass, false};
    const SteRead read = readSte(memory, table, sid);
    SanitizedSte result{kSteAbort, true};
    Event event{};
    switch (read.status) {
        case SteLookup::Found:
            result = sanitizeSte(read.ste, limits);
            if (!result.refused) return result;
            logger().debug("{}: StreamID {:#x}: STE {:#x} {:#x} refused (C_BAD_STE)", name, sid,
                           read.ste[0], read.ste[1]);
            event = makeEvent(v::kEvtCBadSte, sid);
            break;
        case SteLookup::NoL2: return {kSteAbort, false};  // an absent STE is an abort, like V clear
        case SteLookup::BadStreamId: event = makeEvent(reg::kEvtCBadStreamId, sid); break;
        case SteLookup::FetchFault:
            event = makeEvent(reg::kEvtFSteFetch, sid, read.fetchAddr & reg::kEvt3FetchAddr);
            break;
    }
    std::lock_guard lock(regMutex);
    postEvents(std::span(&event, 1), 0, p);
    return result;
}

void VirtualSmmu::State::setStream(uint32_t sid, const SanitizedSte& target, Pulses& p) {
    auto it = applied.find(sid);
    if (it != applied.end() && it->second == target.ste) return;
    auto count = [&] {
        std::lock_guard lock(regMutex);
        ++stats.steConfigs;
    };
    count();
    auto r = binding.setStream(sid, target.ste);
    if (r.ok()) {
        applied[sid] = target.ste;
        return;
    }
    logger().warn("{}: StreamID {:#x}: host refused STE {:#x} {:#x}: {}", name, sid, target.ste[0],
                  target.ste[1], r.error().describe());
    {
        std::lock_guard lock(regMutex);
        const Event e = makeEvent(v::kEvtCBadSte, sid);
        postEvents(std::span(&e, 1), 0, p);
    }
    // A refused STE terminates the stream's traffic on hardware; keeping the previous
    // configuration could leave DMA going through tables the guest is about to free.
    if (target.ste == kSteAbort || (it != applied.end() && it->second == kSteAbort)) return;
    count();
    if (binding.setStream(sid, kSteAbort).ok()) applied[sid] = kSteAbort;
}

void VirtualSmmu::State::reevaluate(const std::vector<uint32_t>& sids, Pulses& p) {
    for (uint32_t sid : sids) setStream(sid, evaluate(sid, p), p);
}

void VirtualSmmu::State::processCmdq(Pulses& p) {
    using namespace reg;
    QueueGeometry q{0};
    uint64_t base;
    uint32_t prod, cursor;
    {
        std::lock_guard lock(regMutex);
        if (!(cr0 & kCr0CmdqEn) || cmdqErrorActive()) return;
        q = geometry(cmdqBase, kCmdqShift);
        base = cmdqBase & kQBaseAddr;
        prod = cmdqProd & q.ptrMask();
        cursor = cmdqCons & q.ptrMask();
    }
    // CONS moves past a command once it is done; batched invalidations are done when the batch
    // went to the host, so CONS stays at the first one until then.
    auto publish = [&](uint32_t cons) {
        std::lock_guard lock(regMutex);
        cmdqCons = (cmdqCons & kCmdqConsErr) | cons;
    };
    auto fail = [&](uint32_t at, CmdqError err) {
        std::lock_guard lock(regMutex);
        cmdqCons = prep(kCmdqConsErr, err) | at;
        ++stats.commandErrors;
        raiseGerror(kGerrorCmdqErr, p);  // the queue stops until GERRORN acknowledges it
    };
    std::vector<Command> batch;
    std::vector<uint32_t> batchAt;
    std::optional<std::vector<uint32_t>> bound;  // binding.streams(), asked once per run  // the queue position of each batched command
    auto flush = [&]() -> bool {
        if (batch.empty()) return true;
        uint32_t done = 0;
        auto r = binding.invalidate(batch, &done);
        {
            std::lock_guard lock(regMutex);
            ++stats.invalidateCalls;
            stats.invalidationsForwarded += batch.size();
        }
        if (!r.ok()) {
            const size_t k = std::min<size_t>(done, batch.size() - 1);
            logger().debug("{}: invalidation {} of {} ({}) failed: {}", name, k, batch.size(),
                           v::opcodeName(v::opcode(batch[k])), r.error().describe());
            fail(batchAt[k], kCerrorIll);
            batch.clear();
            batchAt.clear();
            return false;
        }
        batch.clear();
        batchAt.clear();
        return true;
    };

    while (!q.empty(prod, cursor)) {
        auto cmd = memory.readObj<Command>(base + uint64_t{q.index(cursor)} * kCmdBytes);
        if (!cmd.ok()) {
            if (flush()) fail(cursor, kCerrorAbt);
            return;
        }
        {
            std::lock_guard lock(regMutex);
            ++stats.commands;
        }
        const uint8_t op = v::opcode(*cmd);
        switch (classify(op)) {
            case CommandKind::Forward:
                // CFGI_CD(_ALL) of a stream the host does not front concerns only the guest's own
                // configuration (the host would refuse the unknown vSID): done, nothing to send.
                if (v::carriesStreamId(op)) {
                    if (!bound) bound = binding.streams();
                    const uint32_t sid = field((*cmd)[0], v::kCfgi0Sid);
                    if (std::find(bound->begin(), bound->end(), sid) == bound->end()) break;
                }
                batch.push_back(*cmd);
                batchAt.push_back(cursor);
                if (batch.size() >= kMaxBatch && !flush()) return;
                break;
            case CommandKind::CfgiSte:
            case CommandKind::CfgiRange: {
                if (!flush()) return;  // invalidations queued before it reach the host first
                const uint32_t sid = field((*cmd)[0], v::kCfgi0Sid);
                uint64_t first = sid, count = 1;
                if (op == v::kOpCfgiAll) {
                    const uint32_t range = field((*cmd)[1], kCfgi1Range);
                    count = range >= 31 ? (1ull << 32) : (2ull << range);
                    first = sid & ~(count - 1);
                }
                std::vector<uint32_t> sids;
                for (uint32_t s : binding.streams())
                    if (s >= first && s - first < count) sids.push_back(s);
                reevaluate(sids, p);
                break;
            }
            case CommandKind::Sync: {
                if (!flush()) return;
                {
                    std::lock_guard lock(regMutex);
                    ++stats.syncs;
                }
                if (field((*cmd)[0], kSync0Cs) == kSyncCsIrq) p.cmdqSync = true;
                break;
            }
            case CommandKind::Ignore: break;
            case CommandKind::Illegal:
                logger().debug("{}: illegal command {:#x} ({}) at CONS {:#x}", name, op, v::opcodeName(op),
                               cursor);
                if (flush()) fail(cursor, kCerrorIll);
                return;
        }
        cursor = q.next(cursor);
        if (batch.empty()) publish(cursor);
    }
    if (flush()) publish(cursor);
}

void VirtualSmmu::State::writeWordOp(uint32_t off, uint32_t value, Pulses& p) {
    using namespace reg;
    switch (off) {
        case kCr0: {
            uint32_t old, now;
            {
                std::lock_guard lock(regMutex);
                old = cr0;
                // PRIQEN, ATSCHK and VMW are RES0: neither PRI nor ATS nor stage 2 is offered.
                now = cr0 = value & (kCr0SmmuEn | kCr0EvtqEn | kCr0CmdqEn);
            }
            // SMMUEN 0->1: the guest's STEs take over from GBPA; 1->0: GBPA takes over.
            if ((old ^ now) & kCr0SmmuEn) reevaluate(binding.streams(), p);
            processCmdq(p);  // enabling the queue with PROD != CONS starts it
            break;
        }
        case kGbpa: {
            bool smmuEn;
            {
                std::lock_guard lock(regMutex);
                if (!(value & kGbpaUpdate)) return;  // a write without UPDATE has no effect
                gbpa = value & kGbpaFields;
                smmuEn = cr0 & kCr0SmmuEn;
            }
            if (!smmuEn) reevaluate(binding.streams(), p);
            break;
        }
        case kCmdqProd: {
            {
                std::lock_guard lock(regMutex);
                cmdqProd = value & ((2u << kCmdqShift) - 1);
            }
            processCmdq(p);
            break;
        }
        case kGerrorN: {
            bool resume;
            {
                std::lock_guard lock(regMutex);
                const bool wasStopped = cmdqErrorActive();
                gerrorn = value & kGerrorErrMask;
                resume = wasStopped && !cmdqErrorActive();
                if (resume) cmdqCons &= ~kCmdqConsErr;  // the error was dealt with
            }
            // The guest has dealt with the command at CONS (Linux turns it into a CMD_SYNC):
            // the queue restarts from CONS.
            if (resume) processCmdq(p);
            break;
        }
    }
}

// ---- the device ---------------------------------------------------------------------------------

Result<std::unique_ptr<VirtualSmmu>> VirtualSmmu::create(std::string name, const HostSmmuIds& host,
                                                         const memory::GuestMemory& memory, StreamBinding& binding,
                                                         VirtualSmmuIrqs irqs) {
    if (!(host.idr[0] & v::kIdr0S1p))
        return Error(fmt::format("{}: the host SMMU has no stage 1 (IDR0 {:#x}): nothing to nest", name, host.idr[0]));
    if (!(field(host.idr[0], reg::kIdr0Ttf) & reg::kIdr0TtfAArch64))
        return Error(fmt::format("{}: the host SMMU walks no AArch64 tables (IDR0 {:#x})", name, host.idr[0]));
    const uint32_t endian = field(host.idr[0], reg::kIdr0TtEndian);
    if (endian != 0 && endian != reg::kIdr0TtEndianLe)
        return Error(fmt::format("{}: the host SMMU walks no little-endian tables (IDR0 {:#x})", name, host.idr[0]));
    auto state = std::make_unique<State>(std::move(name), host, memory, binding, irqs);
    return std::unique_ptr<VirtualSmmu>(new VirtualSmmu(std::move(state)));
}

VirtualSmmu::VirtualSmmu(std::unique_ptr<State> state) : state_(std::move(state)) {}
VirtualSmmu::~VirtualSmmu() = default;

std::string VirtualSmmu::name() const { return state_->name; }

// Registers are 32 or 64 bits wide and accessed with naturally aligned 32- or 64-bit accesses
// (spec 6.2); a 64-bit access is two 32-bit ones, low word first. Other sizes: RAZ/WI.
void VirtualSmmu::read(uint64_t offset, std::span<uint8_t> data) {
    std::memset(data.data(), 0, data.size());
    if ((data.size() != 4 && data.size() != 8) || offset % data.size() || offset + data.size() > kMmioSize) return;
    std::lock_guard lock(state_->regMutex);
    for (size_t i = 0; i < data.size(); i += 4) {
        const uint32_t word = state_->readWord(static_cast<uint32_t>(offset + i));
        std::memcpy(data.data() + i, &word, 4);
    }
}

void VirtualSmmu::write(uint64_t offset, std::span<const uint8_t> data) {
    if ((data.size() != 4 && data.size() != 8) || offset % data.size() || offset + data.size() > kMmioSize) return;
    for (size_t i = 0; i < data.size(); i += 4) {
        uint32_t word;
        std::memcpy(&word, data.data() + i, 4);
        const auto off = static_cast<uint32_t>(offset + i);
        if (off == reg::kCr0 || off == reg::kGbpa || off == reg::kCmdqProd || off == reg::kGerrorN) {
            Pulses p;
            {
                std::lock_guard op(state_->opMutex);
                state_->writeWordOp(off, word, p);
            }
            state_->fire(p);
        } else {
            std::lock_guard lock(state_->regMutex);
            state_->writeWordPlain(off, word);
        }
    }
}

void VirtualSmmu::deliverEvents(std::span<const Event> events, uint32_t lost) {
    Pulses p;
    {
        std::lock_guard lock(state_->regMutex);
        state_->postEvents(events, lost, p);
    }
    state_->fire(p);
}

void VirtualSmmu::rebindStreams() {
    Pulses p;
    {
        std::lock_guard op(state_->opMutex);
        const std::vector<uint32_t> bound = state_->binding.streams();
        std::erase_if(state_->applied, [&](const auto& e) {
            return std::find(bound.begin(), bound.end(), e.first) == bound.end();
        });
        state_->reevaluate(bound, p);
    }
    state_->fire(p);
}

std::array<uint32_t, 6> VirtualSmmu::idrs() const { return state_->idr; }

VirtualSmmuStats VirtualSmmu::stats() const {
    std::lock_guard lock(state_->regMutex);
    return state_->stats;
}

}  // namespace conduit::devices::smmuv3
