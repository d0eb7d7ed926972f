// How arm64 interrupts are named to KVM, as plain values (no ioctls here, so they are unit-tested
// on any host):
//  - GIC INTIDs: SGIs 0-15, PPIs 16-31, SPIs from 32. The device tree and the routing table count
//    SPIs from 0; KVM_IRQ_LINE wants the INTID.
//  - KVM_IRQ_LINE's `irq` on arm64 is not a GSI: bits 24-27 the type (SPI, PPI, or a vCPU's own
//    IRQ/FIQ line), 16-23 (and 28-31) the vCPU for PPIs, 0-15 the INTID.
//  - The GSI routing table: an irqchip entry's pin is the SPI number (KVM adds the 32), and the
//    vGIC's default table routes GSI n to SPI n, which KVM_SET_GSI_ROUTING replaces, so the table
//    must carry those entries itself.
//  - MSIs reach the ITS with a device id (KVM_MSI_VALID_DEVID): the PCI requester id, as the
//    device tree's msi-map says (identity). Their KVM encodings are the generic ones
//    (vmm/irq_routing.h: msiRoutingEntry, kvmMsi, with devices::MsiMessage's device id).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "devices/msi_message.h"

#if defined(__aarch64__)
#include <asm/kvm.h>
#endif

namespace conduit::vmm::arm64 {

inline constexpr uint32_t kSpiIntidBase = 32;

inline constexpr uint32_t kIrqLineTypeShift = 24;
inline constexpr uint32_t kIrqLineVcpuShift = 16;
inline constexpr uint32_t kIrqLineVcpu2Shift = 28;
inline constexpr uint32_t kIrqLineTypeSpi = 1;
inline constexpr uint32_t kIrqLineTypePpi = 2;

#if defined(__aarch64__)
static_assert(kIrqLineTypeShift == KVM_ARM_IRQ_TYPE_SHIFT && kIrqLineVcpuShift == KVM_ARM_IRQ_VCPU_SHIFT &&
              kIrqLineVcpu2Shift == KVM_ARM_IRQ_VCPU2_SHIFT && kIrqLineTypeSpi == KVM_ARM_IRQ_TYPE_SPI &&
              kIrqLineTypePpi == KVM_ARM_IRQ_TYPE_PPI);
#endif

constexpr uint32_t spiIntid(uint32_t spi) { return kSpiIntidBase + spi; }

// KVM_IRQ_LINE's irq for SPI `spi` (0-based).
constexpr uint32_t irqLineSpi(uint32_t spi) { return (kIrqLineTypeSpi << kIrqLineTypeShift) | spiIntid(spi); }

// KVM_IRQ_LINE's irq for PPI `ppi` (0-15, INTID 16 + ppi) of vCPU `vcpu` (0..4095).
constexpr uint32_t irqLinePpi(unsigned vcpu, uint32_t ppi) {
    return ((vcpu >> 8 & 0xf) << kIrqLineVcpu2Shift) | (kIrqLineTypePpi << kIrqLineTypeShift) |
           ((vcpu & 0xff) << kIrqLineVcpuShift) | (16 + ppi);
}

// A GSI routed to SPI `spi` of the vGIC (irqchip 0).
inline kvm_irq_routing_entry spiRoute(uint32_t gsi, uint32_t spi) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_IRQCHIP;
    e.u.irqchip.irqchip = 0;
    e.u.irqchip.pin = spi;
    return e;
}

// The routes the vGIC starts with (GSI n -> SPI n, n < spis): what a routing table must keep.
inline std::vector<kvm_irq_routing_entry> defaultSpiRoutes(uint32_t spis) {
    std::vector<kvm_irq_routing_entry> v;
    for (uint32_t n = 0; n < spis; ++n) v.push_back(spiRoute(n, n));
    return v;
}

// The ITS device id of a PCI function: its requester id (bus << 8 | device << 3 | function), as
// devices::pciRequesterId gives it.
constexpr uint32_t pciDeviceId(unsigned bus, unsigned device, unsigned function) {
    return devices::pciRequesterId(static_cast<uint8_t>(bus), static_cast<uint8_t>((device & 0x1f) << 3 | (function & 7)));
}

}  // namespace conduit::vmm::arm64
