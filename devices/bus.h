// Address-range dispatch of guest port-I/O or MMIO accesses to BusDevices. One Bus per address
// space (the VM has a PIO bus and an MMIO bus). Ranges are kept in a Boost.Intrusive ordered set;
// an overlapping registration is refused with both ranges named.
//
// Thread-safety: lookups take a shared lock and copy the device pointer out, then call the device
// with no bus lock held, so a device may insert/remove ranges from inside its own handler (a BAR
// relocation triggered by a config-space write does exactly that).
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/bus_device.h"

namespace conduit::devices {

class Bus {
public:
    explicit Bus(std::string name);  // "pio" or "mmio", for messages
    ~Bus();
    Bus(const Bus&) = delete;
    Bus& operator=(const Bus&) = delete;

    Result<void> insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size);
    // Removes the range that starts exactly at `base`.
    Result<void> remove(uint64_t base);

    // Dispatches an access that lies entirely inside one registered range. Returns false when no
    // device claims it; the caller then completes reads with all-ones and drops writes.
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

    struct Entry {
        uint64_t base;
        uint64_t size;
        std::shared_ptr<BusDevice> device;
    };
    std::vector<Entry> entries() const;  // sorted by base

private:
    struct Node;
    struct Lookup {
        std::shared_ptr<BusDevice> device;
        uint64_t offset = 0;
    };
    Lookup find(uint64_t addr, uint64_t len) const;

    std::string name_;
    mutable std::shared_mutex mutex_;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace conduit::devices
