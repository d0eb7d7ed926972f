// MsiMessage: the write a device makes to raise a message-signalled interrupt (MSI, MSI-X, and
// the wired-to-MSI interrupts of platform devices such as an SMMU's queues), and what the VMM
// routes to the interrupt controller.
//
// One type for both sides: devices build it (devices/pci/platform.h's MsiRouter takes it) and the
// VMM turns it into KVM routes (vmm/irq_routing.h). It lives in devices/ rather than devices/pci/
// because non-PCI devices send MSIs too, and rather than base/ because it is a device concept that
// the VMM, which already builds on devices/, consumes; base/ holds no domain types.
//
// The device id is who sent the message. An x86 LAPIC ignores it; a GICv3 ITS translates
// (device id, data) to an LPI, so on arm64 KVM needs it with every MSI (KVM_MSI_VALID_DEVID). A
// device fills it whenever it knows it (a PCI function: its requester id once it is on a bus);
// whether it reaches KVM is the VM's decision (KVM_CAP_MSI_DEVID), not the device's.
#pragma once

#include <cstdint>
#include <optional>

namespace conduit::devices {

struct MsiMessage {
    uint64_t address = 0;
    uint32_t data = 0;
    std::optional<uint32_t> deviceId;
    bool operator==(const MsiMessage&) const = default;
};

// A PCI function's requester id (bus << 8 | devfn): the device id KVM's ITS takes for PCI MSIs,
// as the host bridge's msi-map passes it through unchanged.
constexpr uint32_t pciRequesterId(uint8_t bus, uint8_t devfn) { return uint32_t(bus) << 8 | devfn; }

}  // namespace conduit::devices
