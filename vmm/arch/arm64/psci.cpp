#include "vmm/arch/arm64/psci.h"

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

namespace {
// Bit 0 of data[0] (KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2 / ..._SHUTDOWN_FLAG_PSCI_OFF2, newer
// than this uAPI header).
constexpr uint64_t kPsciVariant2 = 1;
}  // namespace

SystemEvent decodeSystemEvent(uint32_t type, uint64_t flags) {
    bool v2 = flags & kPsciVariant2;
    switch (type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN: {
            std::string call = v2 ? "PSCI SYSTEM_OFF2" : "PSCI SYSTEM_OFF";
            return {SystemEventKind::PowerOff, call, "guest powered off (" + call + ")"};
        }
        case KVM_SYSTEM_EVENT_RESET: {
            std::string call = v2 ? "PSCI SYSTEM_RESET2" : "PSCI SYSTEM_RESET";
            return {SystemEventKind::Reset, call, "guest reset (" + call + ")"};
        }
        case KVM_SYSTEM_EVENT_CRASH:
            return {SystemEventKind::Crash, "crash", "guest crashed (KVM_SYSTEM_EVENT_CRASH)"};
        default:
            return {SystemEventKind::Other, fmt::format("type {} flags {:#x}", type, flags),
                    fmt::format("KVM_EXIT_SYSTEM_EVENT type {} flags {:#x}", type, flags)};
    }
}

}  // namespace conduit::vmm::arm64
