// Anything that answers guest port-I/O or MMIO accesses.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace conduit::devices {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    // For logs and errors: "uart@0x3f8", "0000:00:02.0 BAR0".
    virtual std::string name() const = 0;
    // `offset` is relative to the base the device was registered at; data.size() is 1, 2, 4 or 8.
    // Called from vCPU threads, possibly concurrently: a device protects its own state.
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace conduit::devices
