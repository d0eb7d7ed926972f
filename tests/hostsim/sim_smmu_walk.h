// The simulated SMMUv3's stage-1 walk for nested translation (issue 13): what the physical SMMU does
// with a device transaction when the kernel installed a guest's vSTE as a nested STE (Config
// S1+S2): locate the guest's Context Descriptor in guest memory (linear or 2-level CD table, by
// SubstreamID / PASID, S1DSS for transactions without one), walk the guest's AArch64 LPAE stage-1
// tables from the CD's TTB0/TTB1, and hand the resulting IPA to stage 2 (the VMM's IOAS). Every
// CD, L1CD and table fetch is itself an IPA read through stage 2, as the SMMU does it.
//
// Faults come back as the 32-byte event records the SMMU writes to its event queue, with the
// physical StreamID, the ids and fields of SMMUv3 spec section 7.3 (F_TRANSLATION, F_ADDR_SIZE,
// F_ACCESS, F_PERMISSION, C_BAD_CD, C_BAD_SUBSTREAMID, C_BAD_STE, F_STREAM_DISABLED); a fault
// stage 2 raised (S2 = 1) is marked so: Linux never forwards those to the vEVENTQ.
//
// Facts from the SMMUv3 spec (5.2 STE: S1Fmt, S1CDMax, S1DSS; 5.3 L1CD; 5.4 CD; 7.3 events), the
// Arm ARM's VMSAv8-64 descriptor formats, and Linux 7.3's arm-smmu-v3.h / io-pgtable-arm.c (which
// bits a Linux guest sets). Not modelled (docs/testing.md, "Simulated host: nested stage 1"):
// AArch32 LPAE CDs (C_BAD_CD here), big-endian tables, 52-bit addresses (FEAT_LPA/DS), hierarchical
// APTable/PXNTable, execute permissions (DMA never fetches instructions), stalls, ATS, the
// MAIR/shareability attributes, CD.A == 0 (RAZ/WI termination is treated as an abort).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "vfio/smmuv3.h"

namespace conduit::hostsim::smmuwalk {

namespace smmu = vfio::smmuv3;

// Context Descriptor (spec 5.4) word 0 and 1 fields, as arm-smmu-v3.h names them (CTXDESC_CD_*).
constexpr uint64_t kCd0T0sz = smmu::mask(5, 0);
constexpr uint64_t kCd0Tg0 = smmu::mask(7, 6);
constexpr uint64_t kCd0Epd0 = 1ull << 14;
constexpr uint64_t kCd0Endi = 1ull << 15;
constexpr uint64_t kCd0T1sz = smmu::mask(21, 16);
constexpr uint64_t kCd0Tg1 = smmu::mask(23, 22);
constexpr uint64_t kCd0Epd1 = 1ull << 30;
constexpr uint64_t kCd0V = 1ull << 31;
constexpr uint64_t kCd0Ips = smmu::mask(34, 32);
constexpr uint64_t kCd0Affd = 1ull << 35;
constexpr uint64_t kCd0Tbi0 = 1ull << 38;
constexpr uint64_t kCd0Tbi1 = 1ull << 39;
constexpr uint64_t kCd0Aa64 = 1ull << 41;
constexpr uint64_t kCd0Hd = 1ull << 42;
constexpr uint64_t kCd0Ha = 1ull << 43;
constexpr uint64_t kCd0R = 1ull << 45;
constexpr uint64_t kCd0A = 1ull << 46;
constexpr uint64_t kCd0Asid = smmu::mask(63, 48);
constexpr uint64_t kCd1Ttb0 = smmu::mask(51, 4);
constexpr uint64_t kCd2Ttb1 = smmu::mask(51, 4);
// L1CD (spec 5.3).
constexpr uint64_t kL1cdV = 1ull << 0;
constexpr uint64_t kL1cdL2Ptr = smmu::mask(51, 12);
// STE.S1Fmt values and STE.S1DSS values.
enum S1Fmt : uint8_t { kS1FmtLinear = 0, kS1Fmt2Lvl4K = 1, kS1Fmt2Lvl64K = 2 };
enum S1Dss : uint8_t { kS1DssTerminate = 0, kS1DssBypass = 1, kS1DssSsid0 = 2 };
// VMSAv8-64 stage-1 descriptor bits (io-pgtable-arm.c's ARM_LPAE_PTE_*).
constexpr uint64_t kPteValid = 1ull << 0;
constexpr uint64_t kPteTable = 1ull << 1;  // table (levels 0-2) or page (level 3); clear: block
constexpr uint64_t kPteApUnpriv = 1ull << 6;
constexpr uint64_t kPteApRdonly = 1ull << 7;
constexpr uint64_t kPteAf = 1ull << 10;
constexpr uint64_t kPteNg = 1ull << 11;
constexpr uint64_t kPteDbm = 1ull << 51;
// Event record words 0-3 (arm-smmu-v3.h EVTQ_*).
constexpr uint64_t kEvt0Ssv = 1ull << 11;
constexpr uint64_t kEvt0Ssid = smmu::mask(31, 12);
constexpr uint64_t kEvt1PnU = 1ull << 33;
constexpr uint64_t kEvt1RnW = 1ull << 35;  // 1: read
constexpr uint64_t kEvt1S2 = 1ull << 39;
constexpr uint64_t kEvt1Class = smmu::mask(41, 40);
enum EventClass : uint8_t { kClassCd = 0, kClassTt = 1, kClassIn = 2 };
constexpr uint64_t kEvt3Ipa = smmu::mask(51, 12);

// The SMMU's own features the walk depends on (from the ID registers the host reports).
struct Caps {
    unsigned ssidBits = 0;  // IDR1.SSIDSIZE: 0 = no substreams at all
    bool cd2l = false;      // IDR0.CD2L: 2-level CD tables
    unsigned oasBits = 44;  // IDR5.OAS, decoded: caps CD.IPS
    static Caps fromIdr(const uint32_t idr[6]);
};

// One device transaction as it reaches the SMMU.
struct Transaction {
    uint32_t sid = 0;               // physical StreamID
    uint64_t iova = 0;              // the device's address: a stage-1 VA under a translating STE
    bool write = false;
    std::optional<uint32_t> ssid;   // SubstreamID: the PCIe PASID prefix (SSV = has_value())
    bool privileged = false;        // PASID prefix "Privileged Mode Requested"; plain DMA is unprivileged
};

// Stage 2 as the SMMU sees it: the host bytes behind `ipa`, how many follow contiguously, and the
// permissions stage 2 grants. nullopt: stage 2 maps nothing there.
struct Stage2Hit {
    uint8_t* host = nullptr;
    uint64_t avail = 0;
    bool read = false, write = false;
};
using Stage2 = std::function<std::optional<Stage2Hit>(uint64_t ipa)>;

// One translated leaf, as a TLB would hold it.
struct Leaf {
    uint64_t va = 0, ipa = 0, size = 0;  // va and ipa aligned to size
    uint64_t pte = 0;                    // the descriptor's attribute bits
    uint16_t asid = 0;
    bool global = false;                 // nG clear: matches every ASID
};

// A context descriptor as fetched (its 4 meaningful words) and where it was found.
struct Cd {
    std::array<uint64_t, 4> w{};
    uint64_t ipa = 0;
};

// Configuration and TLB caches, as the SMMU (and QEMU's model of it) keeps them: a stale PTE or
// CD stays in use until the matching invalidation command reaches the SMMU. Keys follow the
// hardware's tagging: CDs by (StreamID, CD index), translations by (VMID, ASID, VA) or global.
class Caches {
public:
    std::optional<Cd> cd(uint32_t sid, uint32_t index) const;
    void putCd(uint32_t sid, uint32_t index, const Cd& cd);
    std::optional<Leaf> leaf(uint16_t vmid, uint16_t asid, uint64_t va) const;
    void putLeaf(uint16_t vmid, const Leaf& leaf);
    // A command as the host issued it on the SMMU's CMDQ (VMID forced, physical StreamID).
    void apply(const smmu::Command& cmd);
    // The stream's STE was rewritten (the kernel's CFGI_STE): its cached CDs and L1CDs go.
    void dropStream(uint32_t sid);
    size_t cdCount() const { return cds_.size(); }
    size_t leafCount() const { return leaves_.size(); }

private:
    struct CdEntry {
        uint32_t sid, index;
        Cd cd;
    };
    struct LeafEntry {
        uint16_t vmid;
        Leaf leaf;
    };
    std::vector<CdEntry> cds_;
    std::vector<LeafEntry> leaves_;
};

struct Result {
    enum class Kind {
        Translated,  // host/ipa valid: stage 1 then stage 2
        Bypass,      // stage 1 bypassed (STE bypass, or S1DSS bypass): ipa == iova, stage 2 done
        Abort,       // STE abort: terminated, no event (spec 5.2 Config 0b000)
        Fault,       // terminated with `event`
    } kind = Kind::Abort;
    uint64_t ipa = 0;
    uint8_t* host = nullptr;   // the bytes at ipa (Translated/Bypass)
    uint64_t span = 0;         // bytes valid from host on: to the end of the S1 leaf and S2 mapping
    smmu::Event event{};       // Fault: the record, with the physical StreamID
    bool stage2 = false;       // Fault raised by stage 2 (S2 = 1): never forwarded to a vEVENTQ
    bool record = true;        // false: the CD has R == 0, the fault is not recorded at all
    std::string why;
    uint8_t eventId() const { return static_cast<uint8_t>(event[0] & smmu::kEvt0Id); }
};

// Translates one transaction through the nested STE built from `vste` (the vSTE the kernel keeps:
// Config abort / bypass / S1; V clear is an abort). `caches` may be null (no caching); `vmid` tags
// the cached translations (the S2 parent's VMID).
Result translate(const smmu::Ste& vste, const Transaction& t, const Caps& caps, const Stage2& s2,
                 Caches* caches = nullptr, uint16_t vmid = 0);

}  // namespace conduit::hostsim::smmuwalk
