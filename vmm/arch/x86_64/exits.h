// The x86 exits the generic vCPU loop leaves to the platform: port I/O (KVM_EXIT_IO) dispatched to
// the PIO bus, counted in ExitStats; and "rip 0x..." for messages.
#pragma once

#include "devices/bus.h"
#include "vmm/exit_stats.h"
#include "vmm/vcpu_runner.h"

namespace conduit::vmm::x86 {

class X86Exits final : public VcpuExitHandler {
public:
    // `pio` and `stats` must outlive the handler.
    X86Exits(devices::Bus& pio, ExitStats& stats) : pio_(pio), stats_(stats) {}
    bool handle(Vcpu& vcpu) override;
    std::string where(const Vcpu& vcpu) const override;

private:
    void portIo(Vcpu& vcpu);

    devices::Bus& pio_;
    ExitStats& stats_;
};

}  // namespace conduit::vmm::x86
