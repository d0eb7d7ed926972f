// VfioOps: the IOMMU side of VFIO as one interface, implemented by the type1 container and by an
// iommufd IOAS (as cloud-hypervisor's vfio-ioctls does). The DmaMapper and the passthrough device
// map through it without knowing which backend they run on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace conduit::vfio {

class IommuNesting;

struct IovaRange {
    uint64_t start = 0;
    uint64_t last = 0;  // inclusive, like the kernel reports it
    bool contains(uint64_t iova, uint64_t size) const { return size && iova >= start && iova + (size - 1) <= last && iova + (size - 1) >= iova; }
    bool overlaps(uint64_t iova, uint64_t size) const { return size && iova <= last && iova + (size - 1) >= start; }
};

struct DmaLimits {
    uint64_t pageSizes = 0x1000;         // bitmap of IOMMU page sizes (type1 iova_pgsizes)
    uint64_t alignment = 0x1000;         // minimum IOVA/size alignment (iommufd out_iova_alignment)
    std::optional<uint32_t> dmaAvail;    // type1: mappings still allowed (DMA_AVAIL cap); iommufd: none
};

// A reserved IOVA range of an IOMMU group (sysfs reserved_regions): DMA must never be mapped there.
struct ReservedIova {
    IovaRange range;
    std::string type;  // "msi", "reserved", "direct", ...
    unsigned group = 0;
};

class VfioOps {
public:
    virtual ~VfioOps() = default;
    virtual std::string_view backendName() const = 0;

    // Maps [iova, iova + size) to the process memory at vaddr (read always; write when writable).
    virtual Result<void> mapDma(uint64_t iova, uint64_t size, void* vaddr, bool writable) = 0;
    // Unmaps exactly what an earlier mapDma mapped (neither backend splits mappings).
    virtual Result<void> unmapDma(uint64_t iova, uint64_t size) = 0;
    // Maps a file (memfd or VFIO dma-buf) range; iommufd IOMMU_IOAS_MAP_FILE. type1 has no such
    // call and returns EOPNOTSUPP with a message saying so.
    virtual Result<void> mapFile(uint64_t iova, uint64_t size, int fd, uint64_t offset, bool writable) = 0;
    // Whether mapFile() exists here, so a caller with a choice of paths picks without trying.
    virtual bool mapsFiles() const = 0;

    // Valid IOVA ranges now (they narrow as devices are attached).
    virtual Result<std::vector<IovaRange>> iovaRanges() = 0;
    virtual Result<DmaLimits> limits() = 0;
    // Reserved ranges of every IOMMU group behind this address space.
    virtual Result<std::vector<ReservedIova>> reservedRegions() = 0;

    // The iommufd nesting objects over this address space (vfio/iommu_nesting.h), for a virtual
    // IOMMU; an error (EOPNOTSUPP) saying why when this backend has none (type1). Never null.
    virtual Result<IommuNesting*> nesting() {
        return Error(std::string("VFIO backend ") + std::string(backendName()) + " has no iommufd nesting", EOPNOTSUPP);
    }
};

}  // namespace conduit::vfio
