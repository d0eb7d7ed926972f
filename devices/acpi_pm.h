// The ACPI fixed-hardware power-management block Conduit's FADT points at (ACPI 6.5, 4.8): how a
// guest powers off (PM1a control, SLP_TYP = S5 with SLP_EN), resets (the FADT reset register) and
// reads the ACPI PM timer. One port-I/O device of kSize bytes at kBase:
//
//   +0x0 PM1a_EVT_BLK (4): PM1 status (write 1 to clear) and enable; no event is ever raised
//   +0x4 PM1a_CNT_BLK (2): SCI_EN reads 1 (ACPI mode from the start: the FADT has no SMI_CMD);
//                           a write with SLP_EN and SLP_TYP == kSleepTypeS5 powers off
//   +0x8 PM_TMR_BLK   (4): 24-bit counter at 3.579545 MHz
//   +0xc RESET_REG    (1): writing kResetValue resets the machine
//
// Power-off and reset are reported to the owner's callbacks (on a vCPU thread, inside the bus
// dispatch); the device keeps no other state that outlives the VM.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "devices/bus_device.h"

namespace conduit::devices {

class AcpiPm final : public BusDevice {
public:
    static constexpr uint16_t kBase = 0x600;  // where PC chipsets (ICH9) put it
    static constexpr uint16_t kSize = 0x10;
    static constexpr uint16_t kPm1EventOffset = 0x0, kPm1EventLength = 4;
    static constexpr uint16_t kPm1ControlOffset = 0x4, kPm1ControlLength = 2;
    static constexpr uint16_t kTimerOffset = 0x8, kTimerLength = 4;
    static constexpr uint16_t kResetOffset = 0xc;
    static constexpr uint8_t kResetValue = 0x01;
    // The SLP_TYP value the DSDT's \_S5 package names; any value works if both sides agree.
    static constexpr uint8_t kSleepTypeS5 = 5;
    static constexpr uint32_t kTimerHz = 3579545;

    struct Callbacks {
        std::function<void()> powerOff;
        std::function<void(const std::string& how)> reset;
    };

    explicit AcpiPm(Callbacks callbacks);

    std::string name() const override { return "acpi-pm@0x600"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    uint32_t timerValue() const;

    Callbacks callbacks_;
    const std::chrono::steady_clock::time_point start_;
    std::mutex mutex_;
    uint16_t pm1Status_ = 0;
    uint16_t pm1Enable_ = 0;
    uint16_t pm1Control_ = 1;  // SCI_EN
};

// The keyboard controller's command port (0x64), as far as a guest uses it to reset the machine:
// command 0xFE pulses the CPU reset line (Linux's reboot=k, and its fallback after ACPI). Status
// reads say both buffers are empty, so a guest waiting to write a command never spins. There is no
// keyboard behind it: the data port 0x60 is not claimed.
class KeyboardControllerReset final : public BusDevice {
public:
    static constexpr uint16_t kCommandPort = 0x64;
    static constexpr uint8_t kPulseResetCommand = 0xfe;

    explicit KeyboardControllerReset(std::function<void(const std::string& how)> reset) : reset_(std::move(reset)) {}

    std::string name() const override { return "i8042-reset@0x64"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    std::function<void(const std::string&)> reset_;
};

}  // namespace conduit::devices
