#include "devices/pci/bar_allocator.h"

#include <fmt/format.h>

namespace conduit::devices::pci {

bool BarAllocator::collides(const memory::AddressRange& r) const {
    for (auto& e : excluded_)
        if (e.overlaps(r)) return true;
    for (auto& [base, size] : used_)
        if (memory::AddressRange{base, size}.overlaps(r)) return true;
    return false;
}

Result<uint64_t> BarAllocator::allocate(uint64_t size, const std::string& what) {
    if (!size || (size & (size - 1)))
        return Error(fmt::format("{} window: {} size {:#x} is not a power of two", name_, what, size), EINVAL);
    const uint64_t align = std::max(size, minAlign_);
    const uint64_t span = std::max(size, minAlign_);
    for (uint64_t at = memory::alignUp(window_.base, align); at >= window_.base && at + span <= window_.end() && at + span > at;
         at += align) {
        memory::AddressRange r{at, span};
        if (collides(r)) continue;
        used_[at] = span;
        return at;
    }
    return Error(fmt::format("{} window {}: no free naturally aligned range of {:#x} for {} (outside reserved ranges)",
                             name_, window_.toString(), size, what),
                 ENOSPC);
}

void BarAllocator::release(uint64_t base) { used_.erase(base); }

}  // namespace conduit::devices::pci
