#include "vmm/arch/x86_64/page_tables.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

namespace conduit::vmm::x86 {

using memory::GiB;

namespace {
constexpr uint64_t kTablePage = 4096;
constexpr uint64_t kPdptSpan = 512 * GiB;
constexpr uint64_t kTableFlags = kPtePresent | kPteWritable | kPteUser;

bool pageHoldsRam(const memory::AddressLayout& layout, uint64_t addr) {
    memory::AddressRange page{addr, kPageSize2M};
    return std::any_of(layout.ramRanges().begin(), layout.ramRanges().end(),
                       [&](const memory::AddressRange& r) { return r.overlaps(page); });
}
}  // namespace

uint64_t identityPageTablesSize(uint64_t mapEnd) {
    uint64_t pdpts = (mapEnd + kPdptSpan - 1) / kPdptSpan;
    uint64_t pds = (mapEnd + GiB - 1) / GiB;
    return (1 + pdpts + pds) * kTablePage;
}

Result<uint64_t> writeIdentityPageTables(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                                         uint64_t base, uint64_t mapEnd) {
    if (mapEnd == 0 || !memory::isAligned(mapEnd, GiB))
        return Error(fmt::format("identity map end {:#x} is not a non-zero multiple of 1 GiB", mapEnd));
    if (mapEnd > 512 * kPdptSpan)
        return Error(fmt::format("identity map end {:#x} is beyond what one PML4 maps (256 TiB)", mapEnd));
    if (!memory::isAligned(base, kTablePage))
        return Error(fmt::format("page table base {:#x} is not 4 KiB aligned", base));

    const uint64_t pdpts = (mapEnd + kPdptSpan - 1) / kPdptSpan;
    const uint64_t pds = mapEnd / GiB;
    const uint64_t size = identityPageTablesSize(mapEnd);
    // Build in a host buffer and copy once: one bounds check, and no stale entries from earlier use.
    std::vector<uint64_t> tables(size / 8, 0);
    const uint64_t pml4 = base;
    const uint64_t pdptBase = base + kTablePage;
    const uint64_t pdBase = pdptBase + pdpts * kTablePage;
    auto at = [&](uint64_t gpa) -> uint64_t& { return tables[(gpa - base) / 8]; };

    for (uint64_t i = 0; i < pdpts; ++i)
        at(pml4 + 8 * i) = (pdptBase + i * kTablePage) | kTableFlags;
    for (uint64_t g = 0; g < pds; ++g)
        at(pdptBase + 8 * g) = (pdBase + g * kTablePage) | kTableFlags;  // PDPTs are contiguous
    for (uint64_t g = 0; g < pds; ++g) {
        for (uint64_t j = 0; j < 512; ++j) {
            uint64_t addr = g * GiB + j * kPageSize2M;
            uint64_t pde = addr | kTableFlags | kPteLargePage;
            if (!pageHoldsRam(layout, addr))
                pde |= kPteCacheDisable | kPteWriteThrough;
            at(pdBase + g * kTablePage + 8 * j) = pde;
        }
    }
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(tables.data()), size);
    TRY_CTX(mem.write(base, bytes), fmt::format("writing identity page tables at {:#x} ({} bytes)", base, size));
    return base + size;
}

}  // namespace conduit::vmm::x86
