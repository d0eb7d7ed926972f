// A wire from a device model to the interrupt controller (an IOAPIC/PIC pin). Devices hold one of
// these instead of talking to KVM; the VMM implements it over KVM_IRQ_LINE.
#pragma once

#include <cstdint>

namespace conduit::devices {

class InterruptLine {
public:
    virtual ~InterruptLine() = default;
    // Drives the line. The guest programs the pin edge- or level-triggered; a device reports the
    // state of its interrupt condition and lets the controller turn it into edges or levels.
    virtual void setLevel(bool asserted) = 0;
};

}  // namespace conduit::devices
