// How PCI INTx pins reach the IOAPIC: one rule shared by the passthrough wiring (vmm/passthrough.cpp)
// and the ACPI _PRT that tells the guest (vmm/arch/x86_64/acpi.cpp), so the two cannot disagree.
// IOAPIC pins 16..23 are PCI's (0..15 are ISA's); a device in slot S raises pin 16 + S % 8 whichever
// of INTA..INTD it uses, level-triggered. KVM's IOAPIC ignores the polarity bit, so the guest's
// "level, active low" (the ACPI default for a _PRT entry with a GSI) works with a line raised to 1.
#pragma once

#include <cstdint>

namespace conduit::vmm::x86 {

inline constexpr uint32_t kPciIntxFirstGsi = 16;
inline constexpr uint32_t kPciIntxGsiCount = 8;

constexpr uint32_t pciIntxGsi(unsigned slot) { return kPciIntxFirstGsi + slot % kPciIntxGsiCount; }

// The port-I/O window PCI I/O BARs are placed in.
inline constexpr uint16_t kPciIoWindowBase = 0xc000;
inline constexpr uint32_t kPciIoWindowSize = 0x4000;

}  // namespace conduit::vmm::x86
