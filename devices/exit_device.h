// The exit device: how a payload or a test ends the VM with a status. A 32-bit port at
// CONDUIT_EXIT_PORT (vmm/arch/x86_64/payload_abi.h): writing V with outb/outw/outl at offset 0 calls the
// owner's onExit(V zero-extended); `conduit run` then stops the VM and exits with V & 0xff.
// Reads return 0. Other offsets or widths are ignored (and logged), so a stray access does not
// end the VM with a garbage status.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "devices/bus_device.h"

namespace conduit::devices {

class ExitDevice final : public BusDevice {
public:
    explicit ExitDevice(std::function<void(uint32_t)> onExit, std::string name = "exit@0x700");

    std::string name() const override { return name_; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    std::function<void(uint32_t)> onExit_;
    std::string name_;
};

}  // namespace conduit::devices
