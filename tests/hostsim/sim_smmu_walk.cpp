// The simulated SMMUv3's nested stage-1 walk (sim_smmu_walk.h). Each rule names the spec section
// or the kernel definition it follows.
#include "tests/hostsim/sim_smmu_walk.h"

#include <algorithm>
#include <cstring>

namespace conduit::hostsim::smmuwalk {

Caps Caps::fromIdr(const uint32_t idr[6]) {
    // IDR5.OAS [2:0]: 32, 36, 40, 42, 44, 48, 52 bits (arm_smmu_device_hw_probe()).
    static constexpr unsigned kOas[8] = {32, 36, 40, 42, 44, 48, 52, 52};
    Caps c;
    c.ssidBits = (idr[1] >> smmu::kIdr1SsidSizeShift) & 0x1f;
    c.cd2l = idr[0] & (1u << 19);  // IDR0_CD2L
    c.oasBits = kOas[idr[5] & 7];
    return c;
}

namespace {

// CD.IPS / TCR.PS encodings (spec 5.4 IPS); 0b110 and 0b111 read as 52 bits (SMMUv3.1+).
unsigned ipsBits(uint64_t ips) {
    static constexpr unsigned kIps[8] = {32, 36, 40, 42, 44, 48, 52, 52};
    return kIps[ips & 7];
}

// The stage-1 walk of one transaction: builds the Result as it goes.
class Walk {
public:
    Walk(const Transaction& t, const Caps& caps, const Stage2& s2, Caches* caches, uint16_t vmid)
        : t_(t), caps_(caps), s2_(s2), caches_(caches), vmid_(vmid) {}

    Result run(const smmu::Ste& vste);

private:
    // A configuration error (C_*) or F_STREAM_DISABLED: word 0 names the stream and substream.
    Result configFault(uint8_t id, std::string why) const {
        Result r;
        r.kind = Result::Kind::Fault;
        r.event[0] = id | smmu::prep(smmu::kEvt0Sid, t_.sid);
        if (t_.ssid) r.event[0] |= kEvt0Ssv | smmu::prep(kEvt0Ssid, *t_.ssid);
        r.why = std::move(why);
        return r;
    }
    // A translation-related fault (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION): word 1
    // says read/write, privilege, the stage and what was being accessed; word 2 the input address;
    // word 3 the IPA a stage-2 fault was on. The real run of ../shared/smmunest/REPORT.md shows a
    // stage-1 F_TRANSLATION as {id|SID, CLASS=IN, InputAddr, 0}.
    Result addrFault(uint8_t id, EventClass cls, bool stage2, uint64_t ipa, std::string why) const {
        Result r = configFault(id, std::move(why));
        r.event[1] = smmu::prep(kEvt1Class, cls) | (t_.write ? 0 : kEvt1RnW) | (t_.privileged ? kEvt1PnU : 0) |
                     (stage2 ? kEvt1S2 : 0);
        r.event[2] = t_.iova;
        if (stage2) r.event[3] = ipa & kEvt3Ipa;
        r.stage2 = stage2;
        r.record = stage2 || recordS1_;
        return r;
    }

    // An 8-byte read of guest memory at `ipa` through stage 2, for a CD, L1CD or table fetch.
    // Null and `fault` set: stage 2 refused it (S2 = 1, CLASS = what was fetched).
    uint8_t* fetch(uint64_t ipa, EventClass cls, uint64_t& value, std::optional<Result>& fault) const {
        auto hit = s2_(ipa);
        if (!hit || hit->avail < 8) {
            fault = addrFault(smmu::kEvtFTranslation, cls, true, ipa, "stage 2 maps no guest memory at a fetched IPA");
            return nullptr;
        }
        if (!hit->read) {
            fault = addrFault(smmu::kEvtFPermission, cls, true, ipa, "stage 2 does not let the SMMU read a fetched IPA");
            return nullptr;
        }
        std::memcpy(&value, hit->host, 8);  // little-endian tables only (CD.ENDI == 1 is C_BAD_CD here)
        return hit->host;
    }

    std::optional<Result> fetchCd(const smmu::Ste& vste, unsigned cdMax, uint32_t index, Cd& cd) const;
    Result finish(uint64_t ipa, uint64_t leafEnd, Result::Kind kind) const;

    const Transaction& t_;
    const Caps& caps_;
    const Stage2& s2_;
    Caches* caches_;
    uint16_t vmid_;
    bool recordS1_ = true;  // CD.R
};

// Stage 2 of the data access itself: F_TRANSLATION / F_PERMISSION with S2 = 1 and CLASS = IN.
Result Walk::finish(uint64_t ipa, uint64_t leafEnd, Result::Kind kind) const {
    auto hit = s2_(ipa);
    if (!hit) return addrFault(smmu::kEvtFTranslation, kClassIn, true, ipa, "stage 2 maps nothing at the IPA");
    if (!(t_.write ? hit->write : hit->read))
        return addrFault(smmu::kEvtFPermission, kClassIn, true, ipa,
                         t_.write ? "stage 2 mapping is read-only" : "stage 2 mapping is not readable");
    Result r;
    r.kind = kind;
    r.ipa = ipa;
    r.host = hit->host;
    r.span = std::min(hit->avail, leafEnd - ipa);
    return r;
}

// Spec 5.2 S1Fmt / S1ContextPtr and 5.3: the CD for `index` in a linear or 2-level table.
std::optional<Result> Walk::fetchCd(const smmu::Ste& vste, unsigned cdMax, uint32_t index, Cd& cd) const {
    const uint64_t ctxPtr = vste[0] & smmu::kSte0S1CtxPtr;
    const auto fmt = smmu::field(vste[0], smmu::kSte0S1Fmt);
    std::optional<Result> fault;
    uint64_t cdIpa = ctxPtr + uint64_t(index) * 64;  // one CD, or a linear table (0b11 behaves as 0b00)
    if (cdMax && (fmt == kS1Fmt2Lvl4K || fmt == kS1Fmt2Lvl64K)) {
        const unsigned l2Bits = fmt == kS1Fmt2Lvl4K ? 6 : 10;  // 64 or 1024 CDs per leaf table
        const uint64_t l1Index = cdMax > l2Bits ? index >> l2Bits : 0;
        uint64_t l1 = 0;
        if (!fetch(ctxPtr + l1Index * 8, kClassCd, l1, fault)) return fault;
        if (!(l1 & kL1cdV)) return configFault(smmu::kEvtCBadSubstreamId, "the L1CD of the SubstreamID is invalid");
        cdIpa = (l1 & kL1cdL2Ptr) + uint64_t(index & ((1u << l2Bits) - 1)) * 64;
    }
    cd.ipa = cdIpa;
    for (unsigned i = 0; i < cd.w.size(); ++i)
        if (!fetch(cdIpa + 8 * i, kClassCd, cd.w[i], fault)) return fault;
    return std::nullopt;
}

Result Walk::run(const smmu::Ste& vste) {
    const auto cfg = smmu::steConfig(vste);
    if (cfg == smmu::kCfgBypass) {
        // Stage 1 bypassed (the kernel installs an S2-only STE): a SubstreamID is C_BAD_SUBSTREAMID
        // (spec 5.2 S1Fmt: "the supply of a SubstreamID ... with stage 1 disabled").
        if (t_.ssid) return configFault(smmu::kEvtCBadSubstreamId, "SubstreamID with stage 1 bypassed");
        return finish(t_.iova, ~0ull, Result::Kind::Bypass);
    }
    if (cfg != smmu::kCfgS1Trans) {
        Result r;  // arm_smmu_make_abort_ste(): Config 0b000, abort with no event (spec 5.2 Config)
        r.why = "the STE aborts";
        return r;
    }

    // Spec 5.2 S1CDMax: IGNORED without substream support; above SSIDSIZE the STE is ILLEGAL, and
    // so is a 2-level format without IDR0.CD2L.
    unsigned cdMax = caps_.ssidBits ? unsigned(smmu::field(vste[0], smmu::kSte0S1CdMax)) : 0;
    if (cdMax > caps_.ssidBits) return configFault(smmu::kEvtCBadSte, "STE.S1CDMax is above IDR1.SSIDSIZE");
    const auto fmt = smmu::field(vste[0], smmu::kSte0S1Fmt);
    if (cdMax && (fmt == kS1Fmt2Lvl4K || fmt == kS1Fmt2Lvl64K) && !caps_.cd2l)
        return configFault(smmu::kEvtCBadSte, "2-level CD table without IDR0.CD2L");

    uint32_t index = 0;
    if (t_.ssid) {
        if (!cdMax) return configFault(smmu::kEvtCBadSubstreamId, "SubstreamID with substreams disabled (S1CDMax 0)");
        if (*t_.ssid >= (1u << cdMax)) return configFault(smmu::kEvtCBadSubstreamId, "SubstreamID beyond 2^S1CDMax");
        if (smmu::field(vste[1], smmu::kSte1S1Dss) == kS1DssSsid0 && *t_.ssid == 0)
            return configFault(smmu::kEvtFStreamDisabled, "SubstreamID 0 is reserved by S1DSS=SSID0");
        index = *t_.ssid;
    } else if (cdMax) {
        // Spec 5.2 S1DSS: a transaction without a SubstreamID when substreams are enabled.
        switch (smmu::field(vste[1], smmu::kSte1S1Dss)) {
            case kS1DssBypass: return finish(t_.iova, ~0ull, Result::Kind::Bypass);
            case kS1DssSsid0: index = 0; break;
            default: return configFault(smmu::kEvtFStreamDisabled, "no SubstreamID and S1DSS terminates");
        }
    }

    Cd cd;
    if (auto c = caches_ ? caches_->cd(t_.sid, index) : std::nullopt) {
        cd = *c;
    } else {
        if (auto f = fetchCd(vste, cdMax, index, cd)) return *f;
        // Only valid CDs are kept: a CD the guest has not written yet is fetched again.
        if (caches_ && (cd.w[0] & kCd0V)) caches_->putCd(t_.sid, index, cd);
    }

    // Spec 5.4: V, AA64 (VMSAv8-32 LPAE is not modelled), ENDI (TTENDIAN little-endian only).
    const uint64_t w0 = cd.w[0];
    if (!(w0 & kCd0V)) return configFault(smmu::kEvtCBadCd, "CD.V is clear");
    if (!(w0 & kCd0Aa64)) return configFault(smmu::kEvtCBadCd, "CD.AA64 clear (AArch32 tables are not modelled)");
    if (w0 & kCd0Endi) return configFault(smmu::kEvtCBadCd, "CD.ENDI big-endian tables");
    // CD.R: whether stage-1 faults are recorded. (CD.A == 0 would end a faulting transaction with
    // RAZ/WI instead of an abort; the sim always aborts: Linux sets A.)
    recordS1_ = w0 & kCd0R;
    const uint16_t asid = static_cast<uint16_t>(smmu::field(w0, kCd0Asid));

    // Region: VA[55] selects TTB1 (upper) or TTB0; with TBIx the top byte is ignored; the bits
    // between the region's size and the top must all equal VA[55] (Arm ARM, VMSAv8-64 VA ranges).
    const uint64_t va = t_.iova;
    const bool upper = (va >> 55) & 1;
    const bool tbi = w0 & (upper ? kCd0Tbi1 : kCd0Tbi0);
    const unsigned tsz = unsigned(smmu::field(w0, upper ? kCd0T1sz : kCd0T0sz));
    if (w0 & (upper ? kCd0Epd1 : kCd0Epd0))
        return addrFault(smmu::kEvtFTranslation, kClassIn, false, 0,
                         upper ? "TTB1 walks disabled (EPD1)" : "TTB0 walks disabled (EPD0)");
    // Spec 5.4 T0SZ: 16..39 without IDR3.STT / 52-bit VAs; out of range is ILLEGAL (SMMUv3.1+).
    if (tsz < 16 || tsz > 39) return configFault(smmu::kEvtCBadCd, "CD.TxSZ out of range");
    unsigned g;  // granule shift; TG0 and TG1 encode it differently (spec 5.4 TG0, TG1)
    const auto tg = smmu::field(w0, upper ? kCd0Tg1 : kCd0Tg0);
    if (!upper)
        g = tg == 0 ? 12 : tg == 1 ? 16 : tg == 2 ? 14 : 0;
    else
        g = tg == 1 ? 14 : tg == 2 ? 12 : tg == 3 ? 16 : 0;
    if (!g) return configFault(smmu::kEvtCBadCd, "CD.TGx reserved");
    const unsigned ias = 64 - tsz;
    const unsigned top = tbi ? 55 : 63;
    const uint64_t high = (va & smmu::mask(top, ias)) >> ias;
    if (high != (upper ? smmu::mask(top - ias, 0) : 0))
        return addrFault(smmu::kEvtFTranslation, kClassIn, false, 0, "VA outside the TTBx region (TxSZ)");
    const unsigned effIps = std::min(ipsBits(smmu::field(w0, kCd0Ips)), caps_.oasBits);
    const uint64_t vaIn = va & smmu::mask(ias - 1, 0);

    Leaf leaf;
    if (auto l = caches_ ? caches_->leaf(vmid_, asid, va) : std::nullopt) {
        leaf = *l;
    } else {
        const unsigned stride = g - 3;
        const unsigned levels = (ias - g + stride - 1) / stride;
        const unsigned start = 4 - levels;
        uint64_t table = (upper ? cd.w[2] & kCd2Ttb1 : cd.w[1] & kCd1Ttb0) & smmu::mask(47, 3);
        if (effIps < 48 && (table >> effIps))
            return addrFault(smmu::kEvtFAddrSize, kClassTt, false, 0, "TTBx beyond CD.IPS");
        uint8_t* descHost = nullptr;
        uint64_t desc = 0;
        unsigned level = start;
        for (;; ++level) {
            const unsigned shift = g + (3 - level) * stride;
            const unsigned bits = level == start ? ias - shift : stride;
            const uint64_t idx = (vaIn >> shift) & ((1ull << bits) - 1);
            std::optional<Result> fault;
            descHost = fetch(table + idx * 8, kClassTt, desc, fault);
            if (!descHost) return *fault;
            if (!(desc & kPteValid))
                return addrFault(smmu::kEvtFTranslation, kClassIn, false, 0, "invalid stage-1 descriptor");
            if (level < 3 && (desc & kPteTable)) {
                table = desc & smmu::mask(47, g);
                if (effIps < 48 && (table >> effIps))
                    return addrFault(smmu::kEvtFAddrSize, kClassIn, false, 0, "next-level table beyond CD.IPS");
                continue;
            }
            if (level == 3 && !(desc & kPteTable))
                return addrFault(smmu::kEvtFTranslation, kClassIn, false, 0, "reserved level-3 descriptor");
            // Blocks: 1 GiB and 2 MiB with 4K granules, 32 MiB with 16K, 512 MiB with 64K (no FEAT_LPA).
            if (level < 3 && !((g == 12 && (level == 1 || level == 2)) || level == 2))
                return addrFault(smmu::kEvtFTranslation, kClassIn, false, 0,
                                 "block descriptor at a level without blocks");
            leaf.size = 1ull << shift;
            leaf.ipa = desc & smmu::mask(47, shift);
            break;
        }
        if (effIps < 48 && (leaf.ipa >> effIps))
            return addrFault(smmu::kEvtFAddrSize, kClassIn, false, 0, "output address beyond CD.IPS");
        leaf.va = va & ~(leaf.size - 1);
        leaf.asid = asid;
        leaf.global = !(desc & kPteNg);
        // Access flag (spec 5.4 HA, AFFD): hardware sets it, or it is taken as set, or it faults.
        if (!(desc & kPteAf)) {
            if (w0 & kCd0Ha) {
                desc |= kPteAf;
                std::memcpy(descHost, &desc, 8);
            } else if (!(w0 & kCd0Affd)) {
                return addrFault(smmu::kEvtFAccess, kClassIn, false, 0, "stage-1 descriptor has AF clear");
            }
        }
        // Dirty state (HD with DBM): a write to a writable-clean page makes it dirty (AP[2] clear).
        if (t_.write && (desc & kPteApRdonly) && (desc & kPteDbm) && (w0 & kCd0Hd)) {
            desc &= ~kPteApRdonly;
            std::memcpy(descHost, &desc, 8);
        }
        leaf.pte = desc;
        // Faulting descriptors are not cached (a TLB holds only translations that succeeded); a
        // read-only one is, as it translates reads.
        if (caches_ && (desc & kPteAf || w0 & kCd0Affd)) caches_->putLeaf(vmid_, leaf);
    }

    // Permissions (VMSAv8-64 AP[2:1]): AP[1] grants unprivileged access, which is what a device's
    // plain DMA is (Linux's io-pgtable sets ARM_LPAE_PTE_AP_UNPRIV unless IOMMU_PRIV); AP[2] is
    // read-only.
    if (!t_.privileged && !(leaf.pte & kPteApUnpriv))
        return addrFault(smmu::kEvtFPermission, kClassIn, false, 0, "unprivileged access to a privileged-only page");
    if (t_.write && (leaf.pte & kPteApRdonly))
        return addrFault(smmu::kEvtFPermission, kClassIn, false, 0, "write to a read-only stage-1 page");
    const uint64_t ipa = leaf.ipa + (va - leaf.va);
    return finish(ipa, leaf.ipa + leaf.size, Result::Kind::Translated);
}

}  // namespace

Result translate(const smmu::Ste& vste, const Transaction& t, const Caps& caps, const Stage2& s2, Caches* caches,
                 uint16_t vmid) {
    return Walk(t, caps, s2, caches, vmid).run(vste);
}

// ---- caches ------------------------------------------------------------------------------------

std::optional<Cd> Caches::cd(uint32_t sid, uint32_t index) const {
    for (auto& e : cds_)
        if (e.sid == sid && e.index == index) return e.cd;
    return std::nullopt;
}

void Caches::putCd(uint32_t sid, uint32_t index, const Cd& cd) {
    std::erase_if(cds_, [&](auto& e) { return e.sid == sid && e.index == index; });
    cds_.push_back({sid, index, cd});
}

std::optional<Leaf> Caches::leaf(uint16_t vmid, uint16_t asid, uint64_t va) const {
    for (auto& e : leaves_)
        if (e.vmid == vmid && (e.leaf.global || e.leaf.asid == asid) && va - e.leaf.va < e.leaf.size) return e.leaf;
    return std::nullopt;
}

void Caches::putLeaf(uint16_t vmid, const Leaf& leaf) { leaves_.push_back({vmid, leaf}); }

void Caches::dropStream(uint32_t sid) {
    std::erase_if(cds_, [&](auto& e) { return e.sid == sid; });
}

void Caches::apply(const smmu::Command& c) {
    const uint8_t op = smmu::opcode(c);
    const auto vmid = static_cast<uint16_t>(smmu::field(c[0], smmu::kTlbi0Vmid));
    const auto asid = static_cast<uint16_t>(smmu::field(c[0], smmu::kTlbi0Asid));
    const auto sid = static_cast<uint32_t>(smmu::field(c[0], smmu::kCfgi0Sid));
    // TLBI_NH_VA(A) address range (spec 4.4.1): one VA, or with TG set (range invalidation, RIL)
    // (NUM + 1) * 2^SCALE granules from VA.
    uint64_t lo = c[1] & smmu::kTlbi1VaMask, len = 1;
    if (const auto tg = smmu::field(c[1], smmu::kTlbi1Tg)) {
        const unsigned gshift = tg == 1 ? 12 : tg == 2 ? 14 : 16;
        len = (smmu::field(c[0], smmu::kTlbi0Num) + 1) << (smmu::field(c[0], smmu::kTlbi0Scale) + gshift);
    }
    auto hitsRange = [&](const Leaf& l) { return lo < l.va + l.size && l.va < lo + len; };
    switch (op) {
        case smmu::kOpTlbiNhAll:
            std::erase_if(leaves_, [&](auto& e) { return e.vmid == vmid; });
            break;
        case smmu::kOpTlbiNsnhAll:
            leaves_.clear();
            break;
        case smmu::kOpTlbiNhAsid:  // global entries survive an invalidation by ASID
            std::erase_if(leaves_, [&](auto& e) { return e.vmid == vmid && !e.leaf.global && e.leaf.asid == asid; });
            break;
        case smmu::kOpTlbiNhVa:  // by VA for one ASID, and global entries at that VA
            std::erase_if(leaves_, [&](auto& e) {
                return e.vmid == vmid && (e.leaf.global || e.leaf.asid == asid) && hitsRange(e.leaf);
            });
            break;
        case smmu::kOpTlbiNhVaa:
            std::erase_if(leaves_, [&](auto& e) { return e.vmid == vmid && hitsRange(e.leaf); });
            break;
        case smmu::kOpCfgiCd: {
            // A leaf CFGI_CD drops the one CD; a non-leaf one also the L1CD, whose span the sim does
            // not keep apart (the final CD is cached): drop every CD of the stream.
            const auto ssid = static_cast<uint32_t>(smmu::field(c[0], smmu::kCfgi0Ssid));
            if (c[1] & smmu::kCfgi1Leaf)
                std::erase_if(cds_, [&](auto& e) { return e.sid == sid && e.index == ssid; });
            else
                dropStream(sid);
            break;
        }
        case smmu::kOpCfgiCdAll:
        case smmu::kOpCfgiSte:
            dropStream(sid);
            break;
        case smmu::kOpCfgiAll:
            cds_.clear();
            break;
        default:
            break;
    }
}

}  // namespace conduit::hostsim::smmuwalk
