#include "memory/guest_memory.h"

#include <sys/mman.h>

#include <algorithm>

#include <fmt/format.h>

#include "base/log.h"

namespace conduit::memory {

namespace {

#ifndef MADV_POPULATE_WRITE
constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14; older headers lack the name
#endif

constexpr uint64_t kHugePageSize = 2 * MiB;

}  // namespace

GuestMemory::~GuestMemory() {
    // Listeners must let go of every region before its pages disappear.
    for (auto it = regions_.rbegin(); it != regions_.rend(); ++it)
        for (auto l = listeners_.rbegin(); l != listeners_.rend(); ++l) (*l)->regionRemoved(**it);
}

Result<GuestMemory> GuestMemory::create(const std::vector<AddressRange>& ranges, const GuestMemoryOptions& options) {
    GuestMemory memory(options);
    for (size_t i = 0; i < ranges.size(); ++i) TRY(memory.addRegion(fmt::format("ram{}", i), ranges[i]));
    return memory;
}

Result<std::unique_ptr<GuestRegion>> GuestMemory::allocate(const std::string& name, AddressRange gpa) const {
    const std::string what = fmt::format("guest RAM region {} {}", name, gpa.toString());
    const bool hugetlb = options_.hugePages == HugePages::Hugetlbfs;
    const uint64_t align = hugetlb ? kHugePageSize : 4 * KiB;
    if (gpa.empty() || !isAligned(gpa.base, align) || !isAligned(gpa.size, align))
        return Error(fmt::format("{}: base and size must be non-zero multiples of {:#x}", what, align));

    unsigned flags = MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0u);
    UniqueFd fd(::memfd_create(("conduit-" + name).c_str(), flags));
    if (!fd) return Error::fromErrno(what + ": memfd_create" + (hugetlb ? " (MFD_HUGETLB)" : ""));
    if (::ftruncate(fd.get(), static_cast<off_t>(gpa.size)) != 0)
        return Error::fromErrno(fmt::format("{}: ftruncate to {:#x}", what, gpa.size));

    // MAP_NORESERVE: pages are allocated on first touch (or by prefault below), so a large guest
    // starts in well under a millisecond.
    auto mapping = TRY_CTX(Mapping::map(gpa.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd.get(), 0, what),
                           what);
    if (options_.hugePages == HugePages::Transparent && ::madvise(mapping.data(), gpa.size, MADV_HUGEPAGE) != 0)
        log::get("memory").warn("{}: MADV_HUGEPAGE refused ({}); continuing with small pages", what, errnoName(errno));
    if (options_.prefault && ::madvise(mapping.data(), gpa.size, MADV_POPULATE_WRITE) != 0)
        return Error::fromErrno(what + ": prefault (MADV_POPULATE_WRITE)");
    return std::make_unique<GuestRegion>(name, gpa, std::move(fd), std::move(mapping));
}

Result<void> GuestMemory::addListener(GuestMemoryListener* listener) {
    for (size_t i = 0; i < regions_.size(); ++i) {
        auto added = listener->regionAdded(*regions_[i]);
        if (!added) {
            while (i-- > 0) listener->regionRemoved(*regions_[i]);
            return std::move(added).error();
        }
    }
    listeners_.push_back(listener);
    return success();
}

void GuestMemory::removeListener(GuestMemoryListener* listener) {
    auto it = std::find(listeners_.begin(), listeners_.end(), listener);
    if (it == listeners_.end()) return;
    listeners_.erase(it);
    for (auto r = regions_.rbegin(); r != regions_.rend(); ++r) listener->regionRemoved(**r);
}

Result<const GuestRegion*> GuestMemory::addRegion(const std::string& name, AddressRange gpa) {
    for (auto& r : regions_)
        if (r->gpa().overlaps(gpa))
            return Error(fmt::format("guest RAM region {} {} overlaps region {} {}", name, gpa.toString(), r->name(),
                                     r->gpa().toString()));
    auto region = TRY(allocate(name, gpa));
    for (size_t i = 0; i < listeners_.size(); ++i) {
        auto added = listeners_[i]->regionAdded(*region);
        if (!added) {
            while (i-- > 0) listeners_[i]->regionRemoved(*region);
            return std::move(added).error().withContext("adding guest RAM region " + name);
        }
    }
    log::get("memory").debug("RAM region {} at {} ({} MiB, memfd {})", name, gpa.toString(), gpa.size / MiB,
                             region->memfd());
    auto pos = std::upper_bound(regions_.begin(), regions_.end(), gpa.base,
                                [](uint64_t base, auto& r) { return base < r->gpa().base; });
    return regions_.insert(pos, std::move(region))->get();
}

Result<void> GuestMemory::removeRegion(uint64_t gpaBase) {
    auto it = std::find_if(regions_.begin(), regions_.end(), [&](auto& r) { return r->gpa().base == gpaBase; });
    if (it == regions_.end()) return Error(fmt::format("no guest RAM region starts at {:#x}", gpaBase));
    for (auto l = listeners_.rbegin(); l != listeners_.rend(); ++l) (*l)->regionRemoved(**it);
    regions_.erase(it);
    return success();
}

uint64_t GuestMemory::totalBytes() const {
    uint64_t total = 0;
    for (auto& r : regions_) total += r->gpa().size;
    return total;
}

const GuestRegion* GuestMemory::findRegion(uint64_t gpa, uint64_t len) const {
    for (auto& r : regions_)
        if (r->gpa().contains(gpa, len)) return r.get();
    return nullptr;
}

Result<uint8_t*> GuestMemory::hostPointer(uint64_t gpa, uint64_t len) const {
    const GuestRegion* r = findRegion(gpa, len);
    if (!r) return Error(fmt::format("guest range [{:#x}, +{:#x}) is not inside guest RAM", gpa, len), EFAULT);
    return r->host() + (gpa - r->gpa().base);
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
    uint8_t* p = TRY(hostPointer(gpa, out.size()));
    std::memcpy(out.data(), p, out.size());
    return success();
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> in) const {
    uint8_t* p = TRY(hostPointer(gpa, in.size()));
    std::memcpy(p, in.data(), in.size());
    return success();
}

}  // namespace conduit::memory
