// DmaMapper: keeps guest RAM in the IOMMU at IOVA == GPA, so a passed-through device DMAs with the
// addresses the guest programs. It listens to GuestMemory: every region is checked (valid IOVA
// ranges, the groups' reserved regions, alignment, dma_avail) before anything is mapped, mapped as
// one mapping per region (as few as possible; the region's host VA and GPA stay congruent for huge
// IOMMU pages when GuestMemory allocated them so), unmapped when the region goes, and everything
// is unmapped on teardown.
#pragma once

#include <cstdint>
#include <map>

#include "base/result.h"
#include "memory/guest_memory.h"
#include "vfio/vfio_ops.h"

namespace conduit::memory {

class DmaMapper final : public GuestMemoryListener {
public:
    explicit DmaMapper(vfio::VfioOps& ops) : ops_(ops) {}
    ~DmaMapper() override;
    DmaMapper(const DmaMapper&) = delete;
    DmaMapper& operator=(const DmaMapper&) = delete;

    Result<void> regionAdded(const GuestRegion& region) override;
    void regionRemoved(const GuestRegion& region) override;

    // Unmaps everything mapped so far (also done by the destructor).
    void unmapAll();
    size_t mappingCount() const { return mapped_.size(); }
    bool isMapped(uint64_t gpa) const;

    // The checks regionAdded() makes, without mapping: an error names the colliding range.
    Result<void> check(const std::string& name, AddressRange gpa);

private:
    vfio::VfioOps& ops_;
    std::map<uint64_t, AddressRange> mapped_;  // by IOVA (== GPA)
};

}  // namespace conduit::memory
