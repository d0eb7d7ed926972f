#include "memory/address_layout.h"

#include <algorithm>

#include <fmt/format.h>

namespace conduit::memory {

std::string AddressRange::toString() const { return fmt::format("[{:#x}, {:#x})", base, end()); }

Result<void> AddressLayout::checkRamSize(uint64_t ramBytes) {
    if (ramBytes < kMinRam || ramBytes > kMaxRam)
        return Error(fmt::format("memory size {} MiB is outside the supported {}..{} MiB", ramBytes / MiB,
                                 kMinRam / MiB, kMaxRam / MiB));
    if (!isAligned(ramBytes, 4 * KiB))
        return Error(fmt::format("memory size {:#x} is not a multiple of 4 KiB", ramBytes));
    return success();
}

AddressLayout::AddressLayout(Spec spec) : spec_(std::move(spec)) {
    for (auto& r : spec_.ram) ram_.push_back(r.range);
}

Result<AddressLayout> AddressLayout::create(Spec spec) {
    TRY(checkRamSize(spec.ramBytes));
    if (spec.ram.empty()) return Error("address layout: no RAM range");
    uint64_t total = 0;
    for (size_t i = 0; i < spec.ram.size(); ++i) {
        total += spec.ram[i].range.size;
        if (i > 0 && spec.ram[i].range.base < spec.ram[i - 1].range.end())
            return Error(fmt::format("address layout: RAM range {} {} is not above {}", spec.ram[i].name,
                                     spec.ram[i].range.toString(), spec.ram[i - 1].name));
    }
    if (total != spec.ramBytes)
        return Error(fmt::format("address layout: RAM ranges hold {:#x} bytes, {:#x} requested", total, spec.ramBytes));

    AddressLayout layout(std::move(spec));
    std::vector<NamedRange> all = layout.describe();
    for (auto& r : all)
        if (r.range.empty()) return Error(fmt::format("address layout: {} is empty", r.name));
    for (size_t i = 1; i < all.size(); ++i)
        if (all[i - 1].range.overlaps(all[i].range))
            return Error(fmt::format("address layout: {} {} overlaps {} {}", all[i - 1].name,
                                     all[i - 1].range.toString(), all[i].name, all[i].range.toString()));
    for (auto& iova : layout.spec_.reservedIova)
        for (auto& r : all)
            if (r.kind != RangeKind::Platform && iova.range.overlaps(r.range))
                return Error(fmt::format("address layout: reserved IOVA range {} {} overlaps {} {}", iova.name,
                                         iova.range.toString(), r.name, r.range.toString()));
    return layout;
}

std::vector<NamedRange> AddressLayout::describe() const {
    std::vector<NamedRange> all = spec_.ram;
    all.push_back(spec_.mmio32);
    all.push_back(spec_.ecam);
    all.insert(all.end(), spec_.platform.begin(), spec_.platform.end());
    all.push_back(spec_.mmio64);
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.range.base < b.range.base; });
    return all;
}

uint64_t AddressLayout::end() const {
    uint64_t e = 0;
    for (auto& r : describe()) e = std::max(e, r.range.end());
    return e;
}

bool AddressLayout::isRam(uint64_t gpa, uint64_t len) const {
    return std::any_of(ram_.begin(), ram_.end(), [&](auto& r) { return r.contains(gpa, len); });
}

}  // namespace conduit::memory
