// The SMMUv3 programming interface as a guest's driver sees it (spec IHI 0070, chapter 6 and the
// queue/table layouts of chapters 3 and 5): register offsets of pages 0 and 1, their fields, the
// stream-table descriptors and the CMDQ fields the virtual SMMU decodes beyond what crosses the
// iommufd uAPI (those are in vfio/smmuv3.h, shared with the host side). Names follow Linux's
// drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h so the two can be read side by side.
#pragma once

#include <cstdint>

#include "vfio/smmuv3.h"

namespace conduit::devices::smmuv3::reg {

using vfio::smmuv3::mask;

// ---- Page 0 ---------------------------------------------------------------------------------
constexpr uint32_t kIdr0 = 0x00;  // IDR0..IDR5 at 0x00..0x14
constexpr uint32_t kIdr5 = 0x14;
constexpr uint32_t kIidr = 0x18;
constexpr uint32_t kAidr = 0x1c;
constexpr uint32_t kCr0 = 0x20;
constexpr uint32_t kCr0Ack = 0x24;
constexpr uint32_t kCr1 = 0x28;
constexpr uint32_t kCr2 = 0x2c;
constexpr uint32_t kStatusr = 0x40;
constexpr uint32_t kGbpa = 0x44;
constexpr uint32_t kAgbpa = 0x48;
constexpr uint32_t kIrqCtrl = 0x50;
constexpr uint32_t kIrqCtrlAck = 0x54;
constexpr uint32_t kGerror = 0x60;
constexpr uint32_t kGerrorN = 0x64;
constexpr uint32_t kGerrorIrqCfg0 = 0x68;  // 64-bit
constexpr uint32_t kGerrorIrqCfg1 = 0x70;
constexpr uint32_t kGerrorIrqCfg2 = 0x74;
constexpr uint32_t kStrtabBase = 0x80;  // 64-bit
constexpr uint32_t kStrtabBaseCfg = 0x88;
constexpr uint32_t kCmdqBase = 0x90;  // 64-bit
constexpr uint32_t kCmdqProd = 0x98;
constexpr uint32_t kCmdqCons = 0x9c;
constexpr uint32_t kEvtqBase = 0xa0;  // 64-bit
constexpr uint32_t kEvtqIrqCfg0 = 0xb0;  // 64-bit
constexpr uint32_t kEvtqIrqCfg1 = 0xb8;
constexpr uint32_t kEvtqIrqCfg2 = 0xbc;
// ---- Page 1 (the queue pointers software polls; page 0's 0xa8/0xac are reserved) -----------
constexpr uint32_t kPage1 = 0x10000;
constexpr uint32_t kEvtqProd = kPage1 + 0xa8;
constexpr uint32_t kEvtqCons = kPage1 + 0xac;

// ---- IDR fields (the ones vfio/smmuv3.h does not already name) -----------------------------
constexpr uint32_t kIdr0Ttf = mask(3, 2);
constexpr uint32_t kIdr0TtfAArch64 = 2;
constexpr uint32_t kIdr0Cohacc = 1u << 4;
constexpr uint32_t kIdr0Btm = 1u << 5;
constexpr uint32_t kIdr0Httu = mask(7, 6);
constexpr uint32_t kIdr0Hyp = 1u << 9;
constexpr uint32_t kIdr0Msi = 1u << 13;
constexpr uint32_t kIdr0Sev = 1u << 14;
constexpr uint32_t kIdr0Pri = 1u << 16;
constexpr uint32_t kIdr0Vmid16 = 1u << 18;
constexpr uint32_t kIdr0Cd2l = 1u << 19;
constexpr uint32_t kIdr0TtEndian = mask(22, 21);
constexpr uint32_t kIdr0TtEndianLe = 2;
constexpr uint32_t kIdr0StallModel = mask(25, 24);
enum StallModel : uint32_t { kStallModelStall = 0, kStallModelNone = 1, kStallModelForce = 2 };
constexpr uint32_t kIdr0TermModel = 1u << 26;
constexpr uint32_t kIdr0StLevel = mask(28, 27);
constexpr uint32_t kIdr0StLevel2Lvl = 1;

constexpr uint32_t kIdr1SidSize = mask(5, 0);
constexpr uint32_t kIdr1SsidSize = mask(10, 6);
constexpr uint32_t kIdr1PriqS = mask(15, 11);
constexpr uint32_t kIdr1EvtqS = mask(20, 16);
constexpr uint32_t kIdr1CmdqS = mask(25, 21);
constexpr uint32_t kIdr1Rel = 1u << 28;
constexpr uint32_t kIdr1QueuesPreset = 1u << 29;
constexpr uint32_t kIdr1TablesPreset = 1u << 30;

constexpr uint32_t kIdr3Had = 1u << 2;
constexpr uint32_t kIdr3Bbml = mask(12, 11);

constexpr uint32_t kIdr5Oas = mask(2, 0);
constexpr uint32_t kIdr5Gran4K = 1u << 4;
constexpr uint32_t kIdr5Gran16K = 1u << 5;
constexpr uint32_t kIdr5Gran64K = 1u << 6;
constexpr uint32_t kIdr5Ds = 1u << 7;
constexpr uint32_t kIdr5Vax = mask(11, 10);
constexpr uint32_t kIdr5StallMax = mask(31, 16);
// IDR5.OAS encodings to bits: 32, 36, 40, 42, 44, 48, 52.
constexpr unsigned oasBits(uint32_t oas) {
    constexpr unsigned kBits[] = {32, 36, 40, 42, 44, 48, 52, 48};
    return kBits[oas & 7];
}

// ---- Control registers ----------------------------------------------------------------------
constexpr uint32_t kCr0SmmuEn = 1u << 0;
constexpr uint32_t kCr0PriqEn = 1u << 1;
constexpr uint32_t kCr0EvtqEn = 1u << 2;
constexpr uint32_t kCr0CmdqEn = 1u << 3;
constexpr uint32_t kCr1Mask = mask(11, 0);  // table and queue shareability/cacheability
constexpr uint32_t kCr2Mask = mask(2, 0);   // E2H, RECINVSID, PTM

constexpr uint32_t kGbpaUpdate = 1u << 31;
constexpr uint32_t kGbpaAbort = 1u << 20;
// ABORT, INSTCFG, PRIVCFG, SHCFG, ALLOCCFG, MTCFG, MEMATTR: the RW fields.
constexpr uint32_t kGbpaFields = kGbpaAbort | mask(19, 16) | mask(13, 8) | mask(4, 0);
constexpr uint32_t kGbpaReset = 1u << 12;  // SHCFG = use incoming, ABORT clear: bypass, as QEMU resets it

constexpr uint32_t kIrqCtrlGerrorIrqEn = 1u << 0;
constexpr uint32_t kIrqCtrlPriqIrqEn = 1u << 1;
constexpr uint32_t kIrqCtrlEvtqIrqEn = 1u << 2;

constexpr uint32_t kGerrorCmdqErr = 1u << 0;
constexpr uint32_t kGerrorEvtqAbtErr = 1u << 2;
constexpr uint32_t kGerrorPriqAbtErr = 1u << 3;
constexpr uint32_t kGerrorMsiCmdqAbtErr = 1u << 4;
constexpr uint32_t kGerrorSfmErr = 1u << 8;
constexpr uint32_t kGerrorErrMask = 0x1fd;

// ---- Stream table ---------------------------------------------------------------------------
constexpr uint64_t kStrtabBaseAddr = mask(51, 6);
constexpr uint64_t kStrtabBaseRa = 1ull << 62;
constexpr uint32_t kStrtabCfgLog2Size = mask(5, 0);
constexpr uint32_t kStrtabCfgSplit = mask(10, 6);
constexpr uint32_t kStrtabCfgFmt = mask(17, 16);
enum StrtabFmt : uint32_t { kStrtabLinear = 0, kStrtab2Lvl = 1 };
constexpr uint64_t kL1DescSpan = mask(4, 0);  // 0: invalid; n: the L2 table holds 2^(n-1) STEs
constexpr uint64_t kL1DescL2Ptr = mask(51, 6);
constexpr uint64_t kSteBytes = 64;  // 8 dwords; the model reads the first two
constexpr uint64_t kL1DescBytes = 8;

// ---- Queues -----------------------------------------------------------------------------------
constexpr uint64_t kQBaseAddr = mask(51, 5);
constexpr uint64_t kQBaseLog2Size = mask(4, 0);
constexpr uint64_t kQBaseRa = 1ull << 62;
constexpr uint32_t kQOverflowFlag = 1u << 31;  // EVTQ_PROD.OVFLG, EVTQ_CONS.OVACKFLG
constexpr uint32_t kCmdqConsErr = mask(30, 24);
enum CmdqError : uint32_t { kCerrorNone = 0, kCerrorIll = 1, kCerrorAbt = 2, kCerrorAtcInvSync = 3 };
constexpr uint64_t kCmdBytes = 16;
constexpr uint64_t kEvtBytes = 32;

// ---- Commands and events the model decodes itself ----------------------------------------------
constexpr uint8_t kOpPrefetchAddr = 0x02;
constexpr uint64_t kCfgi1Range = mask(4, 0);  // CFGI_STE_RANGE: 2^(Range+1) StreamIDs; 31 = all (CFGI_ALL)
constexpr uint64_t kSync0Cs = mask(13, 12);
enum SyncCs : uint8_t { kSyncCsNone = 0, kSyncCsIrq = 1, kSyncCsSev = 2 };
constexpr uint8_t kEvtCBadStreamId = 0x02;
constexpr uint8_t kEvtFSteFetch = 0x03;
constexpr uint64_t kEvt3FetchAddr = mask(51, 3);

}  // namespace conduit::devices::smmuv3::reg
