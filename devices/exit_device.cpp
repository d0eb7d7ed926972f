#include "devices/exit_device.h"

#include <algorithm>

#include "base/log.h"

namespace conduit::devices {

ExitDevice::ExitDevice(std::function<void(uint32_t)> onExit, std::string name)
    : onExit_(std::move(onExit)), name_(std::move(name)) {}

void ExitDevice::read(uint64_t, std::span<uint8_t> data) { std::fill(data.begin(), data.end(), 0); }

void ExitDevice::write(uint64_t offset, std::span<const uint8_t> data) {
    const size_t n = data.size();
    if (offset != 0 || (n != 1 && n != 2 && n != 4)) {
        log::get("devices").warn("{}: ignoring {}-byte write at offset {:#x} (write 1, 2 or 4 bytes at offset 0)",
                                 name_, n, offset);
        return;
    }
    uint32_t value = 0;
    for (size_t i = 0; i < n; ++i) value |= static_cast<uint32_t>(data[i]) << (8 * i);  // little-endian
    log::get("devices").info("{}: guest requested exit with value {} ({:#x})", name_, value, value);
    if (onExit_) onExit_(value);
}

}  // namespace conduit::devices
