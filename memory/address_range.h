// A half-open guest-physical (or IOVA) range [base, base + size).
#pragma once

#include <cstdint>
#include <string>

namespace conduit::memory {

struct AddressRange {
    uint64_t base = 0;
    uint64_t size = 0;

    uint64_t end() const { return base + size; }  // exclusive
    uint64_t last() const { return base + size - 1; }  // inclusive; size must be > 0
    bool empty() const { return size == 0; }
    bool contains(uint64_t addr) const { return addr >= base && addr - base < size; }
    bool contains(uint64_t addr, uint64_t len) const {
        return len <= size && addr >= base && addr - base <= size - len;
    }
    bool overlaps(const AddressRange& o) const {
        return !empty() && !o.empty() && base < o.end() && o.base < end();
    }
    bool operator==(const AddressRange&) const = default;

    // "[0x1000, 0x2000)" for messages.
    std::string toString() const;
};

inline uint64_t alignUp(uint64_t v, uint64_t align) { return (v + align - 1) & ~(align - 1); }
inline uint64_t alignDown(uint64_t v, uint64_t align) { return v & ~(align - 1); }
inline bool isAligned(uint64_t v, uint64_t align) { return (v & (align - 1)) == 0; }

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

}  // namespace conduit::memory
