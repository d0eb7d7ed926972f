// Places BARs the way firmware would: each BAR naturally aligned (at least a page, so mmapped
// areas can become memslots) inside a window, never over a range already given out and never
// over a range the IOMMU reserves (VfioOps::reservedRegions: an MSI window or an RMRR there would
// make P2P DMA to the BAR impossible, and on some hosts break the device's own DMA).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/address_range.h"

namespace conduit::devices::pci {

class BarAllocator {
public:
    BarAllocator(std::string name, memory::AddressRange window, uint64_t minAlign = 0x1000)
        : name_(std::move(name)), window_(window), minAlign_(minAlign) {}

    // Ranges that must stay free (host-reserved IOVA, platform devices).
    void exclude(memory::AddressRange range) { excluded_.push_back(range); }
    // The lowest naturally aligned free range of `size` (a power of two); `what` names the BAR.
    Result<uint64_t> allocate(uint64_t size, const std::string& what);
    void release(uint64_t base);
    const memory::AddressRange& window() const { return window_; }

private:
    bool collides(const memory::AddressRange& r) const;

    std::string name_;
    memory::AddressRange window_;
    uint64_t minAlign_;
    std::vector<memory::AddressRange> excluded_;
    std::map<uint64_t, uint64_t> used_;  // base -> size
};

}  // namespace conduit::devices::pci
