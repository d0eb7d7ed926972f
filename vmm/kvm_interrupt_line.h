// devices::InterruptLine over KVM_IRQ_LINE: a device's wire to one GSI of the in-kernel irqchip
// (IOAPIC pin, and PIC input for GSIs 0-15). Failures are logged: a device cannot act on them.
#pragma once

#include <cstdint>

#include "devices/interrupt_line.h"

namespace conduit::vmm {

class Vm;

class KvmInterruptLine : public devices::InterruptLine {
public:
    // `vm` must outlive the line.
    KvmInterruptLine(Vm& vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
    void setLevel(bool asserted) override;
    uint32_t gsi() const { return gsi_; }

private:
    Vm& vm_;
    uint32_t gsi_;
};

}  // namespace conduit::vmm
