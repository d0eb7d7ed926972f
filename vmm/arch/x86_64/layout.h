// The guest-physical map of Conduit's x86_64 machine, produced as a memory::AddressLayout:
//
//   0                      low RAM (up to 3 GiB; e820 reserves the legacy 0x9fc00..0x100000 hole)
//   0xC000_0000            32-bit PCI MMIO window (512 MiB), BARs below 4 GiB
//   0xE000_0000            PCI ECAM / MMCONFIG (256 MiB: 256 buses x 32 dev x 8 fn x 4 KiB)
//   0xF000_0000            platform: IOAPIC 0xFEC0_0000, LAPIC/MSI 0xFEE0_0000, firmware 0xFFFF_0000
//   0x1_0000_0000          high RAM (what does not fit below 3 GiB)
//   align_up(end, 1 GiB)   64-bit PCI MMIO window (64 GiB)
//
// The LAPIC/MSI window is also a reserved IOVA range: a DMA write there is an interrupt, so no
// DMA mapping may ever cover it.
#pragma once

#include <cstdint>

#include "base/result.h"
#include "memory/address_layout.h"

namespace conduit::vmm::x86 {

inline constexpr uint64_t kLowRamLimit = 0xC000'0000;  // 3 GiB
inline constexpr uint64_t kMmio32Base = 0xC000'0000;
inline constexpr uint64_t kMmio32Size = 512 * memory::MiB;
inline constexpr uint64_t kEcamBase = 0xE000'0000;
inline constexpr uint64_t kEcamSize = 256 * memory::MiB;
inline constexpr uint64_t kIoApicBase = 0xFEC0'0000;
inline constexpr uint64_t kLapicBase = 0xFEE0'0000;
inline constexpr uint64_t kMsiWindowBase = 0xFEE0'0000;  // MSI writes: never RAM, never IOVA
inline constexpr uint64_t kMsiWindowSize = 1 * memory::MiB;
inline constexpr uint64_t kFirmwareBase = 0xFFFF'0000;
inline constexpr uint64_t kHighRamBase = 4 * memory::GiB;
inline constexpr uint64_t kMmio64Size = 64 * memory::GiB;

// Where KVM_SET_IDENTITY_MAP_ADDR (1 page) and KVM_SET_TSS_ADDR (3 pages) go: the platform hole
// below the firmware, never RAM or a BAR window. Intel needs them for real-mode emulation.
inline constexpr uint64_t kIdentityMapAddr = 0xFFFB'C000;
inline constexpr uint64_t kTssAddr = 0xFFFB'D000;

// Lays out `ramBytes` of RAM (a multiple of 4 KiB, between AddressLayout::kMinRam and kMaxRam).
Result<memory::AddressLayout> addressLayout(uint64_t ramBytes);

}  // namespace conduit::vmm::x86
