// The guest's stream table as the virtual SMMUv3 reads it: finding a StreamID's STE in guest
// memory (linear or 2-level, spec 3.3) and reducing it to what may reach the host through an
// iommufd nested HWPT (vfio::smmuv3::kSte{0,1}NestingAllowed). Pure functions over guest memory,
// so the unit tests and the fuzz target reach them without a device.
#pragma once

#include <cstdint>

#include "devices/smmuv3/stream_binding.h"
#include "memory/guest_memory.h"

namespace conduit::devices::smmuv3 {

// STRTAB_BASE and STRTAB_BASE_CFG as the guest wrote them, and IDR1.SIDSIZE.
struct StreamTableConfig {
    uint64_t base = 0;
    uint32_t cfg = 0;
    uint32_t sidBits = 16;
};

enum class SteLookup : uint8_t {
    Found,        // `ste` holds the STE's first two dwords
    NoL2,         // 2-level: the L1 descriptor is invalid (Span 0) or the StreamID is past its span
    BadStreamId,  // the StreamID is outside the table (LOG2SIZE) or SIDSIZE: C_BAD_STREAMID
    FetchFault,   // the descriptor or STE at `fetchAddr` is not guest RAM: F_STE_FETCH
};

struct SteRead {
    SteLookup status = SteLookup::NoL2;
    Ste ste{};
    uint64_t fetchAddr = 0;
};

SteRead readSte(const memory::GuestMemory& memory, const StreamTableConfig& table, uint32_t sid);

// What the vSMMU offers the guest (its IDRs) and so what an STE may ask for.
struct SteLimits {
    uint32_t ssidBits = 0;   // IDR1.SSIDSIZE: S1CDMax above it is illegal
    unsigned oasBits = 48;   // IDR5.OAS: S1ContextPtr beyond it is illegal
    bool cd2l = false;       // IDR0.CD2L: 2-level CD tables (S1Fmt 1, 2)
};

constexpr Ste kSteAbort{0, 0};
constexpr Ste kSteBypass{vfio::smmuv3::kSte0V | vfio::smmuv3::prep(vfio::smmuv3::kSte0Cfg, vfio::smmuv3::kCfgBypass), 0};

struct SanitizedSte {
    Ste ste = kSteAbort;  // only bits of kSte{0,1}NestingAllowed; abort and bypass in one canonical form
    bool refused = false;  // V was set and the configuration is illegal or not offered: C_BAD_STE, abort
};

// Every abort (V clear, Cfg abort, refused) becomes {0, 0}; bypass becomes V|Cfg=bypass alone;
// stage 1 keeps the allowed fields, EATS cleared (no ATS is offered).
SanitizedSte sanitizeSte(const Ste& guest, const SteLimits& limits);

}  // namespace conduit::devices::smmuv3
