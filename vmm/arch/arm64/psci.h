// What a KVM_EXIT_SYSTEM_EVENT means for the VM. On arm64 KVM implements PSCI itself
// (KVM_ARM_VCPU_PSCI_0_2) and hands only the machine-wide calls to the VMM: SYSTEM_OFF as
// SHUTDOWN, SYSTEM_RESET as RESET (data[0] bit 0 set: SYSTEM_RESET2), and a CRASH type. Plain
// data, so the decoding is tested on any host.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>

namespace conduit::vmm::arm64 {

enum class SystemEventKind { PowerOff, Reset, Crash, Other };

struct SystemEvent {
    SystemEventKind kind;
    std::string call;    // the firmware call behind it: "PSCI SYSTEM_OFF"
    std::string reason;  // "guest powered off (PSCI SYSTEM_OFF)", for the log and the exit status
};

SystemEvent decodeSystemEvent(uint32_t type, uint64_t flags);

inline SystemEvent decodeSystemEvent(const kvm_run& run) {
    // ndata/data arrived with KVM_CAP_SYSTEM_EVENT_DATA (5.18); older kernels leave ndata 0.
    uint64_t flags = run.system_event.ndata > 0 ? run.system_event.data[0] : 0;
    return decodeSystemEvent(run.system_event.type, flags);
}

}  // namespace conduit::vmm::arm64
