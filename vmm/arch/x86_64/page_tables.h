// Identity page tables with 2 MiB pages for the 64-bit entry states (payloads and Linux).
//
// Layout from `base` upward: one PML4 page, one PDPT page per 512 GiB, one page directory per GiB.
// Every level is present|writable|user so CPL3 payload code can reach RAM, the LAPIC/IOAPIC and
// BARs directly (the kvm-here findings: CPL0 is emulated, the real work runs at CPL3). 2 MiB pages
// that hold no RAM at all are mapped uncached (PCD|PWT): they are device registers, where reads
// have side effects and writes must not be combined.
#pragma once

#include <cstdint>

#include "base/result.h"
#include "memory/address_layout.h"
#include "memory/guest_memory.h"

namespace conduit::vmm::x86 {

inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPteUser = 1ull << 2;
inline constexpr uint64_t kPteWriteThrough = 1ull << 3;
inline constexpr uint64_t kPteCacheDisable = 1ull << 4;
inline constexpr uint64_t kPteLargePage = 1ull << 7;  // PS in a PDE: 2 MiB page
inline constexpr uint64_t kPageSize2M = 2ull << 20;

// Bytes of tables needed to identity-map [0, mapEnd) (mapEnd a multiple of 1 GiB).
uint64_t identityPageTablesSize(uint64_t mapEnd);

// Writes the tables at `base` (4 KiB aligned) mapping [0, mapEnd); mapEnd must be a non-zero
// multiple of 1 GiB. `layout` decides which 2 MiB pages are RAM (cached) and which are not.
// Returns the end of the tables (exclusive).
Result<uint64_t> writeIdentityPageTables(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                                         uint64_t base, uint64_t mapEnd);

}  // namespace conduit::vmm::x86
