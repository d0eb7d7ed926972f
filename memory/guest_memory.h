// Guest RAM: regions backed by memfds (so device models, the IOMMU and KVM can all map the same
// pages), with bounds-checked GPA -> host translation and typed little-endian access.
//
// Whoever must follow RAM (KVM memslots, IOMMU mappings) registers a GuestMemoryListener. Adding a
// region notifies every listener in order; if one refuses, the ones already notified are told to
// drop it again and the region is not added, so nothing is left half-applied.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/mapping.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "memory/address_range.h"

namespace conduit::memory {

enum class HugePages {
    None,         // 4 KiB pages
    Transparent,  // madvise(MADV_HUGEPAGE) on a memfd mapping (shmem THP, if the host enables it)
    Hugetlbfs,    // memfd_create(MFD_HUGETLB): 2 MiB pages from the hugetlb pool, fails if the pool is short
};

struct GuestMemoryOptions {
    HugePages hugePages = HugePages::None;
    bool prefault = false;  // populate every page at creation (MADV_POPULATE_WRITE), no first-touch cost later
};

// One contiguous piece of guest RAM. Owned by GuestMemory; its address never changes.
class GuestRegion {
public:
    GuestRegion(std::string name, AddressRange gpa, UniqueFd memfd, Mapping mapping)
        : name_(std::move(name)), gpa_(gpa), memfd_(std::move(memfd)), mapping_(std::move(mapping)) {}

    const std::string& name() const { return name_; }
    AddressRange gpa() const { return gpa_; }
    uint8_t* host() const { return mapping_.data(); }
    int memfd() const { return memfd_.get(); }
    uint64_t memfdOffset() const { return 0; }

private:
    std::string name_;
    AddressRange gpa_;
    UniqueFd memfd_;
    Mapping mapping_;
};

class GuestMemoryListener {
public:
    virtual ~GuestMemoryListener() = default;
    // Called after the region is mapped and before it becomes visible; an error vetoes the region.
    virtual Result<void> regionAdded(const GuestRegion& region) = 0;
    // Called before the region is unmapped; must not fail (tear down what can be torn down, log the rest).
    virtual void regionRemoved(const GuestRegion& region) = 0;
};

class GuestMemory {
public:
    explicit GuestMemory(GuestMemoryOptions options) : options_(options) {}
    GuestMemory(GuestMemory&&) = default;
    GuestMemory& operator=(GuestMemory&&) = default;
    ~GuestMemory();

    // Creates one region per range (names "ram0", "ram1", ...), with no listeners yet.
    static Result<GuestMemory> create(const std::vector<AddressRange>& ranges, const GuestMemoryOptions& options);

    // Listeners are told about every existing region when they register (and may refuse, which
    // fails the registration with nothing applied); they must outlive their registration.
    Result<void> addListener(GuestMemoryListener* listener);
    void removeListener(GuestMemoryListener* listener);

    // Hot add/remove, kept in step with every listener.
    Result<const GuestRegion*> addRegion(const std::string& name, AddressRange gpa);
    Result<void> removeRegion(uint64_t gpaBase);

    const std::vector<std::unique_ptr<GuestRegion>>& regions() const { return regions_; }
    uint64_t totalBytes() const;

    // The region that holds all of [gpa, gpa + len), or nullptr.
    const GuestRegion* findRegion(uint64_t gpa, uint64_t len = 1) const;
    // Host address of [gpa, gpa + len); an error names the range when it is not entirely RAM.
    Result<uint8_t*> hostPointer(uint64_t gpa, uint64_t len) const;

    Result<void> read(uint64_t gpa, std::span<uint8_t> out) const;
    Result<void> write(uint64_t gpa, std::span<const uint8_t> in) const;

    // Typed access (the guest is little-endian and so is every host Conduit runs on).
    template <class T>
    Result<T> readObj(uint64_t gpa) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T value;
        TRY(read(gpa, std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T))));
        return value;
    }
    template <class T>
    Result<void> writeObj(uint64_t gpa, const T& value) const {
        static_assert(std::is_trivially_copyable_v<T>);
        return write(gpa, std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
    }

private:
    Result<std::unique_ptr<GuestRegion>> allocate(const std::string& name, AddressRange gpa) const;

    GuestMemoryOptions options_;
    std::vector<std::unique_ptr<GuestRegion>> regions_;  // sorted by gpa
    std::vector<GuestMemoryListener*> listeners_;
};

}  // namespace conduit::memory
