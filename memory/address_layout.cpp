#include "memory/address_layout.h"

#include <algorithm>

#include <fmt/format.h>

namespace conduit::memory {

std::string AddressRange::toString() const { return fmt::format("[{:#x}, {:#x})", base, end()); }

Result<AddressLayout> AddressLayout::x86_64(uint64_t ramBytes) {
    if (ramBytes < kMinRam || ramBytes > kMaxRam)
        return Error(fmt::format("memory size {} MiB is outside the supported {}..{} MiB", ramBytes / MiB,
                                 kMinRam / MiB, kMaxRam / MiB));
    if (!isAligned(ramBytes, 4 * KiB))
        return Error(fmt::format("memory size {:#x} is not a multiple of 4 KiB", ramBytes));

    AddressLayout layout;
    layout.ramBytes_ = ramBytes;
    uint64_t low = std::min(ramBytes, kLowRamLimit);
    layout.ram_.push_back({0, low});
    uint64_t ramEnd = low;
    if (ramBytes > low) {
        layout.ram_.push_back({kHighRamBase, ramBytes - low});
        ramEnd = kHighRamBase + (ramBytes - low);
    }
    layout.mmio64_ = {alignUp(std::max(ramEnd, kHighRamBase), GiB), kMmio64Size};
    layout.platform_ = {
        {"ioapic", RangeKind::Platform, {kIoApicBase, 4 * KiB}},
        {"lapic-msi", RangeKind::Platform, {kMsiWindowBase, kMsiWindowSize}},
        {"firmware", RangeKind::Platform, {0xFFFF'0000, 64 * KiB}},
    };
    return layout;
}

std::vector<NamedRange> AddressLayout::describe() const {
    std::vector<NamedRange> all;
    for (size_t i = 0; i < ram_.size(); ++i)
        all.push_back({i == 0 ? "ram-low" : "ram-high", RangeKind::Ram, ram_[i]});
    all.push_back({"pci-mmio32", RangeKind::Mmio32, mmio32Window()});
    all.push_back({"pci-ecam", RangeKind::PciEcam, pciEcam()});
    all.insert(all.end(), platform_.begin(), platform_.end());
    all.push_back({"pci-mmio64", RangeKind::Mmio64, mmio64_});
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.range.base < b.range.base; });
    return all;
}

bool AddressLayout::isRam(uint64_t gpa, uint64_t len) const {
    return std::any_of(ram_.begin(), ram_.end(), [&](auto& r) { return r.contains(gpa, len); });
}

}  // namespace conduit::memory
