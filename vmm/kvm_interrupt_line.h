// devices::InterruptLine over KVM_IRQ_LINE: a device's wire to one input of the in-kernel irqchip,
// numbered as the architecture's KVM_IRQ_LINE defines (the platform creates the lines of its own
// devices). Failures are logged: a device cannot act on them.
#pragma once

#include <cstdint>

#include "devices/interrupt_line.h"

namespace conduit::vmm {

class Vm;

class KvmInterruptLine : public devices::InterruptLine {
public:
    // `vm` must outlive the line.
    KvmInterruptLine(Vm& vm, uint32_t line) : vm_(vm), gsi_(line) {}
    void setLevel(bool asserted) override;
    uint32_t gsi() const { return gsi_; }

private:
    Vm& vm_;
    uint32_t gsi_;
};

}  // namespace conduit::vmm
