// The guest-physical address map of a machine, as data. The architecture's platform
// (vmm/arch/<arch>/) produces it; everything that places something in guest physical space (RAM
// regions, firmware tables, PCI BARs, the ECAM window, DMA mappings) asks this one object, so RAM
// never overlaps MMIO and BARs never land in a platform range. Nothing here knows an architecture:
// the map is a list of named ranges that create() checks for overlaps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/address_range.h"

namespace conduit::memory {

enum class RangeKind {
    Ram,
    Mmio32,        // PCI BARs below 4 GiB
    Mmio64,        // PCI BARs above RAM
    PciEcam,       // PCI configuration space (ECAM / MMCONFIG)
    Platform,      // interrupt controllers, firmware, platform devices: neither RAM nor BAR space
    ReservedIova,  // addresses a device's DMA must never be mapped at (e.g. an MSI doorbell window)
};

struct NamedRange {
    std::string name;
    RangeKind kind;
    AddressRange range;
};

class AddressLayout {
public:
    // The RAM sizes any platform accepts (configs are checked against these before a platform
    // is chosen); a platform may refuse more.
    static constexpr uint64_t kMinRam = 2 * MiB;
    static constexpr uint64_t kMaxRam = 1024 * GiB;

    // What a platform lays out. RAM ranges in ascending order; their sizes add up to ramBytes.
    struct Spec {
        uint64_t ramBytes = 0;
        std::vector<NamedRange> ram;
        NamedRange mmio32{"pci-mmio32", RangeKind::Mmio32, {}};
        NamedRange mmio64{"pci-mmio64", RangeKind::Mmio64, {}};
        NamedRange ecam{"pci-ecam", RangeKind::PciEcam, {}};
        std::vector<NamedRange> platform;
        // May overlap platform ranges (x86's MSI window is the LAPIC's), never RAM or a BAR window.
        std::vector<NamedRange> reservedIova;
    };

    // Checks the spec: RAM adds up, no range is empty, RAM ranges ascend, and no two of RAM, the
    // windows, the ECAM and the platform ranges overlap; no reserved IOVA range overlaps RAM or a
    // BAR window.
    static Result<AddressLayout> create(Spec spec);
    // kMinRam <= ramBytes <= kMaxRam, a multiple of 4 KiB: platforms call it before laying out.
    static Result<void> checkRamSize(uint64_t ramBytes);

    uint64_t ramBytes() const { return spec_.ramBytes; }
    // RAM ranges in ascending order.
    const std::vector<AddressRange>& ramRanges() const { return ram_; }
    AddressRange mmio32Window() const { return spec_.mmio32.range; }
    AddressRange mmio64Window() const { return spec_.mmio64.range; }
    AddressRange pciEcam() const { return spec_.ecam.range; }
    // Platform ranges that are neither RAM nor available to BARs.
    const std::vector<NamedRange>& platformRanges() const { return spec_.platform; }
    // IOVA ranges never to be DMA-mapped (and so never to hold a BAR that P2P would map).
    const std::vector<NamedRange>& reservedIova() const { return spec_.reservedIova; }
    // Every range of the map except the reserved IOVA ranges, named, sorted by base: for logs and
    // for collision checks.
    std::vector<NamedRange> describe() const;
    // The highest guest-physical address anything is mapped at (exclusive).
    uint64_t end() const;

    bool isRam(uint64_t gpa, uint64_t len) const;

private:
    explicit AddressLayout(Spec spec);

    Spec spec_;
    std::vector<AddressRange> ram_;
};

}  // namespace conduit::memory
