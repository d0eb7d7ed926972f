#include "vmm/arch/arm64/psci.h"

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

namespace {
// Bit 0 of data[0] (KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2 / ..._SHUTDOWN_FLAG_PSCI_OFF2, newer
// than this uAPI header).
constexpr uint64_t kPsciVariant2 = 1;
}  // namespace

SystemEvent decodeSystemEvent(uint32_t type, uint64_t flags) {
    switch (type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
            return {SystemEventKind::PowerOff,
                    (flags & kPsciVariant2) ? "guest powered off (PSCI SYSTEM_OFF2)" : "guest powered off (PSCI SYSTEM_OFF)"};
        case KVM_SYSTEM_EVENT_RESET:
            return {SystemEventKind::Reset,
                    (flags & kPsciVariant2) ? "guest reset (PSCI SYSTEM_RESET2)" : "guest reset (PSCI SYSTEM_RESET)"};
        case KVM_SYSTEM_EVENT_CRASH:
            return {SystemEventKind::Crash, "guest crashed (KVM_SYSTEM_EVENT_CRASH)"};
        default:
            return {SystemEventKind::Other, fmt::format("KVM_EXIT_SYSTEM_EVENT type {} flags {:#x}", type, flags)};
    }
}

}  // namespace conduit::vmm::arm64
