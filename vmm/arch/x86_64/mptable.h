// Intel MultiProcessor Specification 1.4 tables: how a Linux guest without ACPI finds its APs and
// the IOAPIC. A floating pointer structure followed by a configuration table with one processor
// entry per vCPU, one ISA bus, the IOAPIC, an I/O interrupt entry per ISA IRQ (0-15, identity to
// IOAPIC pins 0-15) and the two local interrupt entries (LINT0 ExtINT, LINT1 NMI).
#pragma once

#include <cstdint>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace conduit::vmm::x86 {

// The last KiB of conventional memory (639 KiB), one of the places the MP spec says to search and
// reserved in our e820 (kLegacyHoleBase). Fits the tables for up to 32 vCPUs.
inline constexpr uint64_t kMpTableAddr = 0x9fc00;
inline constexpr uint64_t kMpTableMaxBytes = 1024;
inline constexpr uint8_t kMpLapicVersion = 0x14;
inline constexpr uint8_t kMpIoApicVersion = 0x11;

// Bytes the floating pointer plus configuration table take for `vcpus` processors.
uint64_t mpTableSize(unsigned vcpus);

// Writes the tables at `addr` (16-byte aligned). APIC ids are 0..vcpus-1 (vCPU 0 is the BSP); the
// IOAPIC gets id `vcpus`, the first one no CPU uses. Returns the bytes written.
Result<uint64_t> writeMpTable(const memory::GuestMemory& mem, uint64_t addr, unsigned vcpus, uint64_t ioapicBase,
                              uint64_t lapicBase);

}  // namespace conduit::vmm::x86
