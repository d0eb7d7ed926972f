#include "memory/dma_mapper.h"

#include <fmt/format.h>

#include "base/log.h"

namespace conduit::memory {

namespace {
std::string rangesText(const std::vector<vfio::IovaRange>& ranges) {
    std::string s;
    for (auto& r : ranges) s += fmt::format("{}[{:#x}, {:#x}]", s.empty() ? "" : ", ", r.start, r.last);
    return s.empty() ? "none" : s;
}
constexpr uint64_t kHugePage = 2 * MiB;
}  // namespace

DmaMapper::~DmaMapper() { unmapAll(); }

Result<void> DmaMapper::check(const std::string& name, AddressRange gpa) {
    const auto what = fmt::format("DMA mapping of guest RAM region {} {}", name, gpa.toString());
    if (gpa.empty()) return Error(what + ": empty region", EINVAL);

    auto limits = TRY_CTX(ops_.limits(), what);
    const uint64_t align = std::max<uint64_t>(limits.alignment, 1);
    if (gpa.base % align || gpa.size % align)
        return Error(fmt::format("{}: not aligned to the IOMMU's {:#x}-byte granule", what, align), EINVAL);

    auto valid = TRY_CTX(ops_.iovaRanges(), what);
    bool inside = false;
    for (auto& r : valid) inside = inside || r.contains(gpa.base, gpa.size);
    if (!inside)
        return Error(fmt::format("{} ({}): not inside the IOMMU's valid IOVA ranges ({})", what, ops_.backendName(),
                                 rangesText(valid)),
                     ERANGE);

    auto reserved = TRY_CTX(ops_.reservedRegions(), what);
    for (auto& r : reserved)
        if (r.range.overlaps(gpa.base, gpa.size))
            return Error(fmt::format("{}: collides with reserved IOVA range [{:#x}, {:#x}] ({}) of IOMMU group {}", what,
                                     r.range.start, r.range.last, r.type, r.group),
                         EADDRINUSE);

    for (auto& [iova, m] : mapped_)
        if (m.overlaps(gpa)) return Error(fmt::format("{}: overlaps the mapping {}", what, m.toString()), EEXIST);

    if (limits.dmaAvail && *limits.dmaAvail < 1)
        return Error(fmt::format("{}: the IOMMU allows no more DMA mappings (dma_avail 0; raise the vfio_iommu_type1 "
                                 "dma_entry_limit module parameter)",
                                 what),
                     ENOSPC);
    return success();
}

Result<void> DmaMapper::regionAdded(const GuestRegion& region) {
    TRY(check(region.name(), region.gpa()));
    const auto gpa = region.gpa();
    // Huge IOMMU pages need host VA and IOVA congruent modulo the page size; say so when they are not.
    if (gpa.size >= kHugePage && (reinterpret_cast<uintptr_t>(region.host()) - gpa.base) % kHugePage)
        log::get("memory").debug("region {}: host VA {} and GPA {:#x} differ modulo 2 MiB; IOMMU uses small pages",
                                 region.name(), static_cast<void*>(region.host()), gpa.base);
    TRY_CTX(ops_.mapDma(gpa.base, gpa.size, region.host(), true),
            fmt::format("DMA mapping of guest RAM region {} {}", region.name(), gpa.toString()));
    mapped_[gpa.base] = gpa;
    log::get("memory").debug("{}: guest RAM {} {} mapped at IOVA == GPA", ops_.backendName(), region.name(),
                             gpa.toString());
    return success();
}

void DmaMapper::regionRemoved(const GuestRegion& region) {
    auto it = mapped_.find(region.gpa().base);
    if (it == mapped_.end()) return;
    auto r = ops_.unmapDma(it->second.base, it->second.size);
    if (!r) log::get("memory").error("unmapping guest RAM region {}: {}", region.name(), r.error().describe());
    mapped_.erase(it);
}

void DmaMapper::unmapAll() {
    for (auto& [iova, m] : mapped_) {
        auto r = ops_.unmapDma(m.base, m.size);
        if (!r) log::get("memory").error("unmapping guest RAM {}: {}", m.toString(), r.error().describe());
    }
    mapped_.clear();
}

bool DmaMapper::isMapped(uint64_t gpa) const {
    for (auto& [iova, m] : mapped_)
        if (m.contains(gpa)) return true;
    return false;
}

}  // namespace conduit::memory
