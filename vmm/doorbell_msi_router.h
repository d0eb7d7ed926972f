// DoorbellMsiRouter: the MSI router of the devices behind the virtual IOMMU. Their guest driver
// programs an MSI address that is an IOVA of its own stage 1 (Linux's iommu_dma_get_msi_page()
// allocates it from the device's DMA domain and maps it to the ITS doorbell page), not the
// doorbell's guest-physical address KVM looks its ITS up by (vgic_msi_to_its()). The machine has
// one MSI controller, so every MSI of such a device is meant for it: the address is replaced by
// the doorbell's guest-physical address, the data and device id (what the ITS translates) stay.
// An address of 0 (nothing programmed yet) stays 0. docs/vsmmu.md, "MSI doorbell".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "devices/pci/platform.h"

namespace conduit::vmm {

class DoorbellMsiRouter final : public devices::pci::MsiRouter {
public:
    // `inner` must outlive this router and its routes.
    DoorbellMsiRouter(devices::pci::MsiRouter& inner, uint64_t doorbell) : inner_(inner), doorbell_(doorbell) {}
    Result<std::unique_ptr<devices::pci::MsiRoute>> createRoute(const devices::MsiMessage& message, bool masked,
                                                                const std::string& name) override;
    std::unique_ptr<devices::pci::MsiRouteBatch> batch() override { return inner_.batch(); }
    devices::MsiMessage rewrite(const devices::MsiMessage& message) const;

private:
    devices::pci::MsiRouter& inner_;
    uint64_t doorbell_;
};

}  // namespace conduit::vmm
