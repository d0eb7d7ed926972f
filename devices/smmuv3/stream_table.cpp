#include "devices/smmuv3/stream_table.h"

#include <algorithm>

#include "devices/smmuv3/registers.h"

namespace conduit::devices::smmuv3 {

namespace v = vfio::smmuv3;

namespace {

// The first two dwords of the STE at `addr`.
SteRead fetchSte(const memory::GuestMemory& memory, uint64_t addr) {
    auto ste = memory.readObj<Ste>(addr);
    if (!ste.ok()) return {SteLookup::FetchFault, {}, addr};
    return {SteLookup::Found, *ste, addr};
}

}  // namespace

SteRead readSte(const memory::GuestMemory& memory, const StreamTableConfig& table, uint32_t sid) {
    const uint64_t base = table.base & reg::kStrtabBaseAddr;
    // LOG2SIZE beyond SIDSIZE is treated as SIDSIZE (spec 6.3.24).
    const uint32_t log2Size = std::min<uint32_t>(v::field(table.cfg, reg::kStrtabCfgLog2Size), table.sidBits);
    if (log2Size < 32 && (uint64_t{sid} >> log2Size) != 0) return {SteLookup::BadStreamId, {}, 0};

    if (v::field(table.cfg, reg::kStrtabCfgFmt) != reg::kStrtab2Lvl)  // linear (and the reserved formats)
        return fetchSte(memory, base + uint64_t{sid} * reg::kSteBytes);

    // 2-level: SPLIT is 6, 8 or 10 (the others are reserved); an L1 descriptor's Span n covers
    // 2^(n-1) STEs of its L2 table, Span 0 makes it invalid, Span above SPLIT+1 is reserved.
    const uint32_t split = v::field(table.cfg, reg::kStrtabCfgSplit);
    if (split != 6 && split != 8 && split != 10) return {SteLookup::NoL2, {}, 0};
    const uint64_t l1Addr = base + (uint64_t{sid} >> split) * reg::kL1DescBytes;
    auto l1 = memory.readObj<uint64_t>(l1Addr);
    if (!l1.ok()) return {SteLookup::FetchFault, {}, l1Addr};
    const uint64_t span = v::field(*l1, reg::kL1DescSpan);
    const uint64_t l2Index = sid & ((1u << split) - 1);
    if (span == 0 || span > split + 1 || l2Index >= (1ull << (span - 1))) return {SteLookup::NoL2, {}, 0};
    return fetchSte(memory, (*l1 & reg::kL1DescL2Ptr) + l2Index * reg::kSteBytes);
}

SanitizedSte sanitizeSte(const Ste& guest, const SteLimits& limits) {
    if (!(guest[0] & v::kSte0V)) return {kSteAbort, false};
    const SanitizedSte refused{kSteAbort, true};
    switch (v::field(guest[0], v::kSte0Cfg)) {
        case v::kCfgAbort: return {kSteAbort, false};
        case v::kCfgBypass: return {kSteBypass, false};
        case v::kCfgS1Trans: break;
        default: return refused;  // stage 2 and nested are not offered (IDR0.S2P clear); the rest reserved
    }
    const uint64_t cdMax = v::field(guest[0], v::kSte0S1CdMax);
    const uint64_t fmt = v::field(guest[0], v::kSte0S1Fmt);
    const uint64_t ctxPtr = guest[0] & v::kSte0S1CtxPtr;
    if (cdMax > limits.ssidBits) return refused;  // more substreams than IDR1.SSIDSIZE
    if (cdMax != 0) {                             // S1Fmt and S1DSS only matter with substreams
        if (fmt == 3 || (fmt != 0 && !limits.cd2l)) return refused;
        if (v::field(guest[1], v::kSte1S1Dss) == 3) return refused;
    }
    if (limits.oasBits < 64 && (ctxPtr >> limits.oasBits) != 0) return refused;
    // EATS is RES0 without IDR0.ATS; every other bit the kernel refuses for nesting (STRW, SHCFG,
    // MEV, the stage-2 dwords...) is the host's business and dropped.
    return {{guest[0] & v::kSte0NestingAllowed, guest[1] & v::kSte1NestingAllowed & ~v::kSte1Eats}, false};
}

}  // namespace conduit::devices::smmuv3
