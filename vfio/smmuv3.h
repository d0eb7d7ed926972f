// Arm SMMUv3 architectural layouts that cross the iommufd nesting uAPI: the two Stream Table Entry
// dwords a nested HWPT carries, the 128-bit CMDQ commands IOMMU_HWPT_INVALIDATE forwards, and the
// 256-bit event records a vEVENTQ delivers (SMMUv3 spec sections 5.2, 4 and 7.3). The masks are
// the ones Linux 7.3 checks in drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c (field names as
// in arm-smmu-v3.h), so the VMM, the simulated host and the vSMMU (issue 13) agree on one set.
#pragma once

#include <array>
#include <cstdint>

namespace conduit::vfio::smmuv3 {

// GENMASK_ULL(hi, lo).
constexpr uint64_t mask(unsigned hi, unsigned lo) { return (~0ull >> (63 - hi)) & (~0ull << lo); }
// FIELD_GET / FIELD_PREP.
constexpr uint64_t field(uint64_t value, uint64_t m) { return (value & m) >> __builtin_ctzll(m); }
constexpr uint64_t prep(uint64_t m, uint64_t value) { return (value << __builtin_ctzll(m)) & m; }

// ---- Stream Table Entry, dwords 0 and 1 (the part of a vSTE a nested HWPT takes) ----------------
using Ste = std::array<uint64_t, 2>;

constexpr uint64_t kSte0V = 1ull << 0;
constexpr uint64_t kSte0Cfg = mask(3, 1);
enum SteCfg : uint8_t { kCfgAbort = 0, kCfgBypass = 4, kCfgS1Trans = 5, kCfgS2Trans = 6, kCfgNested = 7 };
constexpr uint64_t kSte0S1Fmt = mask(5, 4);
constexpr uint64_t kSte0S1CtxPtr = mask(51, 6);
constexpr uint64_t kSte0S1CdMax = mask(63, 59);
constexpr uint64_t kSte1S1Dss = mask(1, 0);
constexpr uint64_t kSte1S1Cir = mask(3, 2);
constexpr uint64_t kSte1S1Cor = mask(5, 4);
constexpr uint64_t kSte1S1Csh = mask(7, 6);
constexpr uint64_t kSte1S1Stalld = 1ull << 27;
constexpr uint64_t kSte1Eats = mask(29, 28);
enum SteEats : uint8_t { kEatsAbort = 0, kEatsTrans = 1, kEatsS1Chk = 2 };
// STRTAB_STE_{0,1}_NESTING_ALLOWED: every other bit of a vSTE with V set is EIO.
constexpr uint64_t kSte0NestingAllowed = kSte0V | kSte0Cfg | kSte0S1Fmt | kSte0S1CtxPtr | kSte0S1CdMax;
constexpr uint64_t kSte1NestingAllowed = kSte1S1Dss | kSte1S1Cir | kSte1S1Cor | kSte1S1Csh | kSte1S1Stalld | kSte1Eats;

// The STE's configuration as the host acts on it: a vSTE without V is an abort
// (arm_smmu_make_nested_domain_ste()).
constexpr SteCfg steConfig(const Ste& ste) {
    return (ste[0] & kSte0V) ? static_cast<SteCfg>(field(ste[0], kSte0Cfg)) : kCfgAbort;
}

// ---- CMDQ commands (128 bits, little-endian dwords) ----------------------------------------------
using Command = std::array<uint64_t, 2>;

enum Opcode : uint8_t {
    kOpPrefetchCfg = 0x01,
    kOpCfgiSte = 0x03,
    kOpCfgiAll = 0x04,
    kOpCfgiCd = 0x05,
    kOpCfgiCdAll = 0x06,
    kOpTlbiNhAll = 0x10,
    kOpTlbiNhAsid = 0x11,
    kOpTlbiNhVa = 0x12,
    kOpTlbiNhVaa = 0x13,
    kOpTlbiEl2All = 0x20,
    kOpTlbiEl2Asid = 0x21,
    kOpTlbiEl2Va = 0x22,
    kOpTlbiS12Vmall = 0x28,
    kOpTlbiS2Ipa = 0x2a,
    kOpTlbiNsnhAll = 0x30,
    kOpAtcInv = 0x40,
    kOpPriResp = 0x41,
    kOpResume = 0x44,
    kOpCmdSync = 0x46,
};
constexpr uint64_t kCmd0Op = mask(7, 0);
constexpr uint64_t kCmd0Ssv = 1ull << 11;
constexpr uint64_t kCfgi0Ssid = mask(31, 12);
constexpr uint64_t kCfgi0Sid = mask(63, 32);
constexpr uint64_t kCfgi1Leaf = 1ull << 0;
constexpr uint64_t kTlbi0Num = mask(16, 12);
constexpr uint64_t kTlbi0Scale = mask(25, 20);
constexpr uint64_t kTlbi0Vmid = mask(47, 32);
constexpr uint64_t kTlbi0Asid = mask(63, 48);
constexpr uint64_t kTlbi1Leaf = 1ull << 0;
constexpr uint64_t kTlbi1Ttl = mask(9, 8);
constexpr uint64_t kTlbi1Tg = mask(11, 10);
constexpr uint64_t kTlbi1VaMask = mask(63, 12);
constexpr uint64_t kAtc0Ssid = mask(31, 12);
constexpr uint64_t kAtc0Sid = mask(63, 32);
constexpr uint64_t kAtc0Global = 1ull << 9;
constexpr uint64_t kAtc1Size = mask(5, 0);
constexpr uint64_t kAtc1AddrMask = mask(63, 12);
constexpr unsigned kAtcInvSizeAll = 52;
// CMDQ_BATCH_ENTRIES (BITS_PER_LONG): arm_vsmmu_cache_invalidate() issues converted commands in
// batches of this many minus one.
constexpr unsigned kCmdqBatchEntries = 64;

constexpr uint8_t opcode(const Command& c) { return static_cast<uint8_t>(c[0] & kCmd0Op); }
// Whether the vIOMMU forwards this opcode at all (arm_vsmmu_validate_user_cmd()); CFGI_STE,
// CFGI_ALL and CMD_SYNC are the VMM's own work.
constexpr bool forwardedOpcode(uint8_t op) {
    return op == kOpTlbiNsnhAll || op == kOpTlbiNhVa || op == kOpTlbiNhVaa || op == kOpTlbiNhAsid ||
           op == kOpTlbiNhAll || op == kOpAtcInv || op == kOpCfgiCd || op == kOpCfgiCdAll;
}
// Opcodes whose StreamID field (bits 63:32 of dword 0) the host translates from the vSID.
constexpr bool carriesStreamId(uint8_t op) { return op == kOpAtcInv || op == kOpCfgiCd || op == kOpCfgiCdAll; }
const char* opcodeName(uint8_t op);

// ---- Event records (256 bits) --------------------------------------------------------------------
using Event = std::array<uint64_t, 4>;
constexpr uint64_t kEvt0Id = mask(7, 0);
constexpr uint64_t kEvt0Sid = mask(63, 32);
enum EventId : uint8_t {
    kEvtCBadSte = 0x04,
    kEvtFStreamDisabled = 0x06,
    kEvtCBadSubstreamId = 0x08,
    kEvtCBadCd = 0x0a,
    kEvtFTranslation = 0x10,
    kEvtFAddrSize = 0x11,
    kEvtFAccess = 0x12,
    kEvtFPermission = 0x13,
};
const char* eventName(uint8_t id);

// ---- ID registers (the words IOMMU_GET_HW_INFO reports) ------------------------------------------
constexpr uint32_t kIdr0S2p = 1u << 0;
constexpr uint32_t kIdr0S1p = 1u << 1;
constexpr uint32_t kIdr0Ats = 1u << 10;
constexpr uint32_t kIdr0Asid16 = 1u << 12;
constexpr uint32_t kIdr1SsidSizeShift = 6;  // IDR1.SSIDSIZE, bits 10:6
constexpr uint32_t kIdr3Fwb = 1u << 8;
constexpr uint32_t kIdr3Ril = 1u << 10;

}  // namespace conduit::vfio::smmuv3
