// ACPI tables for a Linux guest, generated from the same data the VMM builds the machine from
// (ACPI 6.5): RSDP -> XSDT -> FADT (-> FACS, DSDT), MADT, MCFG.
//
//   FADT  the PM block of devices/acpi_pm.h (PM1a event/control, PM timer, SCI on IRQ 9), the reset
//         register, no SMI command (ACPI mode from the start), no RTC, no VGA, no 8042
//   DSDT  \_SB.PCI0: a PCIe host bridge (PNP0A08) with _CRS windows = the address layout's bus
//         range, PCI I/O window and both MMIO windows, _PRT for every slot and pin
//         (vmm/arch/x86_64/pci_irq.h), _OSC granting every PCIe control asked for; \_SB.COM1 (the
//         16550 at 0x3f8, IRQ 4); \_S5 for power-off
//   MADT  one local APIC per vCPU (APIC id = vCPU index), the IOAPIC (id = vCPU count, GSI base 0),
//         the SCI as level/active-high (ISA IRQs identity-mapped), LINT1 = NMI on every CPU
//   MCFG  the ECAM window, segment 0, buses 0..(size / 1 MiB - 1)
//
// All tables live in [kAcpiTablesAddr, kAcpiTablesEnd), the BIOS area Linux scans for the RSDP
// (and boot_params.acpi_rsdp_addr points at it); e820 reserves it (kLegacyHole*).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/address_layout.h"
#include "vmm/arch/x86_64/layout.h"
#include "memory/guest_memory.h"

namespace conduit::vmm::x86 {

inline constexpr uint64_t kAcpiTablesAddr = 0xe0000;  // the RSDP is first
inline constexpr uint64_t kAcpiTablesEnd = 0x100000;

struct AcpiTable {
    std::string signature;  // "FACP", "DSDT", ...; "RSD PTR " for the RSDP
    uint64_t address = 0;   // guest-physical
    std::vector<uint8_t> bytes;
};

// Every table with its address, the RSDP first, each checksummed. Fails if they do not fit.
Result<std::vector<AcpiTable>> buildAcpiTables(const memory::AddressLayout& layout, unsigned vcpus);

// Builds and writes them into guest memory; returns the RSDP's address.
Result<uint64_t> writeAcpiTables(const memory::GuestMemory& mem, const memory::AddressLayout& layout, unsigned vcpus);

}  // namespace conduit::vmm::x86
