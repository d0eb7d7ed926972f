#include "devices/acpi_pm.h"

#include <algorithm>

#include "base/log.h"

namespace conduit::devices {

namespace {

constexpr uint16_t kSciEnable = 1u << 0;
constexpr uint16_t kSleepEnable = 1u << 13;
constexpr unsigned kSleepTypeShift = 10;
constexpr uint16_t kSleepTypeMask = 7u << kSleepTypeShift;

uint32_t loadLe(std::span<const uint8_t> data) {
    uint32_t v = 0;
    for (size_t i = 0; i < data.size() && i < 4; ++i) v |= uint32_t(data[i]) << (8 * i);
    return v;
}

void storeLe(std::span<uint8_t> data, uint64_t value) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace

AcpiPm::AcpiPm(Callbacks callbacks) : callbacks_(std::move(callbacks)), start_(std::chrono::steady_clock::now()) {}

uint32_t AcpiPm::timerValue() const {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count();
    unsigned __int128 ticks = static_cast<unsigned __int128>(ns) * kTimerHz / 1'000'000'000u;
    return static_cast<uint32_t>(ticks) & 0xffffff;  // TMR_VAL_EXT is clear in the FADT: 24 bits
}

void AcpiPm::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    // The block as little-endian bytes; a read of any width at any offset takes its slice.
    uint8_t block[kSize] = {};
    auto put = [&](uint64_t at, uint64_t value, size_t len) {
        for (size_t i = 0; i < len; ++i) block[at + i] = static_cast<uint8_t>(value >> (8 * i));
    };
    put(kPm1EventOffset, pm1Status_, 2);
    put(kPm1EventOffset + 2, pm1Enable_, 2);
    put(kPm1ControlOffset, pm1Control_ | kSciEnable, 2);
    put(kTimerOffset, timerValue(), 4);
    if (offset + data.size() > kSize) {
        storeLe(data, ~uint64_t{0});
        return;
    }
    std::copy_n(block + offset, data.size(), data.begin());
}

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data) {
    const uint32_t v = loadLe(data);
    const size_t n = data.size();
    auto& log = log::get("devices");
    if (offset == kResetOffset && n == 1) {
        if (v == kResetValue) {
            log.info("{}: guest wrote the reset value to the FADT reset register", name());
            if (callbacks_.reset) callbacks_.reset("ACPI reset register");
        } else {
            log.warn("{}: ignoring reset register write {:#x} (the reset value is {:#x})", name(), v, kResetValue);
        }
        return;
    }
    std::unique_lock lock(mutex_);
    if (offset == kPm1EventOffset && n >= 2) {
        pm1Status_ &= static_cast<uint16_t>(~v);  // write 1 to clear
        if (n == 4) pm1Enable_ = static_cast<uint16_t>(v >> 16);
    } else if (offset == kPm1EventOffset + 2 && n == 2) {
        pm1Enable_ = static_cast<uint16_t>(v);
    } else if (offset == kPm1ControlOffset && n == 2) {
        pm1Control_ = static_cast<uint16_t>(v & ~kSleepEnable);
        if (!(v & kSleepEnable)) return;
        const unsigned type = (v & kSleepTypeMask) >> kSleepTypeShift;
        lock.unlock();
        if (type == kSleepTypeS5) {
            log.info("{}: guest entered S5 (PM1a_CNT {:#06x}): power off", name(), v);
            if (callbacks_.powerOff) callbacks_.powerOff();
        } else {
            // Only \_S5 is in the DSDT, so a guest has no other sleep type to ask for.
            log.warn("{}: guest asked for sleep type {} (PM1a_CNT {:#06x}); only S5 ({}) is offered, ignored", name(),
                     type, v, kSleepTypeS5);
        }
    } else {
        log.debug("{}: ignoring {}-byte write of {:#x} at offset {:#x}", name(), n, v, offset);
    }
}

void KeyboardControllerReset::read(uint64_t, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);  // status: output and input buffers empty
}

void KeyboardControllerReset::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset != 0 || data.size() != 1) return;
    if (data[0] == kPulseResetCommand) {
        log::get("devices").info("{}: guest pulsed the reset line (command {:#x})", name(), data[0]);
        if (reset_) reset_("keyboard controller reset (0x64 <- 0xfe)");
    }
}

}  // namespace conduit::devices
