// The guest-physical address map of an x86_64 machine. Everything that places something in guest
// physical space (RAM regions, e820, PCI BARs, the ECAM window, DMA mappings) asks this one object,
// so RAM never overlaps MMIO and BARs never land in a platform range.
//
//   0                      low RAM (up to 3 GiB)
//   0xC000_0000            32-bit PCI MMIO window (512 MiB), BARs below 4 GiB
//   0xE000_0000            PCI ECAM / MMCONFIG (256 MiB: 256 buses x 32 dev x 8 fn x 4 KiB)
//   0xF000_0000            platform: IOAPIC 0xFEC0_0000, LAPIC/MSI 0xFEE0_0000, firmware 0xFFFF_0000
//   0x1_0000_0000          high RAM (what does not fit below 3 GiB)
//   align_up(end, 1 GiB)   64-bit PCI MMIO window (64 GiB)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/address_range.h"

namespace conduit::memory {

enum class RangeKind { Ram, Mmio32, Mmio64, PciEcam, Platform };

struct NamedRange {
    std::string name;
    RangeKind kind;
    AddressRange range;
};

class AddressLayout {
public:
    static constexpr uint64_t kLowRamLimit = 0xC000'0000;      // 3 GiB
    static constexpr uint64_t kMmio32Base = 0xC000'0000;
    static constexpr uint64_t kMmio32Size = 512 * MiB;
    static constexpr uint64_t kEcamBase = 0xE000'0000;
    static constexpr uint64_t kEcamSize = 256 * MiB;
    static constexpr uint64_t kIoApicBase = 0xFEC0'0000;
    static constexpr uint64_t kLapicBase = 0xFEE0'0000;
    static constexpr uint64_t kMsiWindowBase = 0xFEE0'0000;    // MSI writes: never RAM, never IOVA
    static constexpr uint64_t kMsiWindowSize = 1 * MiB;
    static constexpr uint64_t kHighRamBase = 4 * GiB;
    static constexpr uint64_t kMmio64Size = 64 * GiB;
    static constexpr uint64_t kMinRam = 2 * MiB;
    static constexpr uint64_t kMaxRam = 1024 * GiB;

    // Lays out `ramBytes` of RAM (a multiple of 4 KiB, between kMinRam and kMaxRam).
    static Result<AddressLayout> x86_64(uint64_t ramBytes);

    uint64_t ramBytes() const { return ramBytes_; }
    // RAM ranges in ascending order: one below the hole, and one above 4 GiB when RAM exceeds 3 GiB.
    const std::vector<AddressRange>& ramRanges() const { return ram_; }
    AddressRange mmio32Window() const { return {kMmio32Base, kMmio32Size}; }
    AddressRange mmio64Window() const { return mmio64_; }
    AddressRange pciEcam() const { return {kEcamBase, kEcamSize}; }
    // Platform ranges that are neither RAM nor available to BARs (IOAPIC, LAPIC/MSI, firmware).
    const std::vector<NamedRange>& platformRanges() const { return platform_; }
    // Every range of the map, named, sorted by base: for logs and for collision checks.
    std::vector<NamedRange> describe() const;
    // The highest guest-physical address anything is mapped at (exclusive).
    uint64_t end() const { return mmio64_.end(); }

    bool isRam(uint64_t gpa, uint64_t len) const;

private:
    uint64_t ramBytes_ = 0;
    std::vector<AddressRange> ram_;
    AddressRange mmio64_;
    std::vector<NamedRange> platform_;
};

}  // namespace conduit::memory
