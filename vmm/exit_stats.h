// Counts of vCPU exits: per KVM exit reason, and per bus access (PIO/MMIO, read/write, claimed or
// not). Accesses are counted by address on the hot path and attributed to devices only when the
// JSON is produced (from the buses' current ranges), so the bus API needs no lookup hook and the
// vCPU threads only take one short lock. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace conduit::devices {
class Bus;
}

namespace conduit::vmm {

// "IO", "MMIO", "INTERNAL_ERROR", ... (KVM_EXIT_ without the prefix), or "EXIT_<n>".
std::string exitReasonName(uint32_t reason);

enum class BusSpace { Pio, Mmio };

class ExitStats {
public:
    static constexpr size_t kMaxReasons = 64;
    // Distinct addresses tracked per space; further ones are lumped into "other".
    static constexpr size_t kMaxAddresses = 4096;

    void countExit(uint32_t reason);
    void countAccess(BusSpace space, uint64_t addr, bool write, bool claimed);

    uint64_t exits(uint32_t reason) const;
    uint64_t totalExits() const;
    uint64_t unclaimed(BusSpace space) const;

    // {"total_exits": N, "exits": {"IO": n, ...},
    //  "pio": {"devices": {"uart@0x3f8": {"reads": r, "writes": w}, ...},
    //          "unclaimed": {"reads": r, "writes": w, "addresses": {"0x61": n, ...}}},
    //  "mmio": {...}}
    // Buses may be null (then every access shows under its address only).
    nlohmann::json toJson(const devices::Bus* pio, const devices::Bus* mmio) const;

private:
    struct Counts {
        uint64_t reads = 0;
        uint64_t writes = 0;
    };
    struct SpaceCounts {
        std::map<uint64_t, Counts> claimed;
        std::map<uint64_t, Counts> unclaimed;
        Counts otherClaimed, otherUnclaimed;
        uint64_t unclaimedTotal = 0;
    };
    nlohmann::json spaceJson(const SpaceCounts& counts, const devices::Bus* bus) const;

    std::array<std::atomic<uint64_t>, kMaxReasons> reasons_{};
    std::atomic<uint64_t> otherReasons_{0};
    mutable std::mutex mutex_;
    SpaceCounts pio_, mmio_;
};

}  // namespace conduit::vmm
