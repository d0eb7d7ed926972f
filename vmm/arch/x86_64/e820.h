// The BIOS e820 memory map of a guest, derived from the one AddressLayout: what Linux reads from
// boot_params.e820_table and what payloads could be given.
#pragma once

#include <cstdint>
#include <vector>

#include "memory/address_layout.h"

namespace conduit::vmm::x86 {

enum class E820Type : uint32_t { Ram = 1, Reserved = 2, Acpi = 3, Nvs = 4 };

// Layout of one entry in boot_params.e820_table (struct boot_e820_entry, 20 bytes, packed).
struct __attribute__((packed)) E820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};
static_assert(sizeof(E820Entry) == 20);

// The legacy hole: the top 1 KiB of conventional memory (EBDA, where we put the MP table), the VGA
// window and the BIOS ROM area stay reserved even though guest RAM backs them.
inline constexpr uint64_t kLegacyHoleBase = 0x9fc00;
inline constexpr uint64_t kLegacyHoleEnd = 0x100000;

// Sorted by address, non-overlapping: low RAM (split around the legacy hole), reserved for the
// ECAM window and each platform range (IOAPIC, LAPIC/MSI, firmware), high RAM. The 32- and 64-bit
// BAR windows are left out of the map (holes), so the guest may place PCI resources there.
std::vector<E820Entry> buildE820(const memory::AddressLayout& layout);

}  // namespace conduit::vmm::x86
