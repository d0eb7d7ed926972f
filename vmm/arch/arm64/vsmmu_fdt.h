// The virtual SMMUv3 in the arm64 guest's device tree (issue 13), as an FdtExtension: the
// smmuv3 node (Linux's Documentation/devicetree/bindings/iommu/arm,smmu-v3.yaml) and the PCIe
// host bridge's iommu-map, so the guest's arm-smmu-v3 driver probes it and puts every function of
// the bridge behind it with StreamID = requester id (identity over the 16-bit RID space: the
// binding's StreamIDs, vmm/viommu.h, are the same numbers).
//
//   smmuv3@9050000 {
//       compatible = "arm,smmu-v3";
//       reg = <0x0 0x9050000 0x0 0x20000>;
//       interrupts = <SPI eventq EDGE>, <SPI gerror EDGE>, <SPI cmdq-sync EDGE>;
//       interrupt-names = "eventq", "gerror", "cmdq-sync";
//       dma-coherent;          only when the host SMMU walks coherently (IDR0.COHACC)
//       #iommu-cells = <1>;    the StreamID
//   };
//   pcie@...: iommu-map = <0 &smmu 0 0x10000>;
//
// No msi-parent: the vSMMU has no MSI (IDR0.MSI clear), its interrupts are the wired SPIs.
#pragma once

#include <cstdint>

#include "memory/address_range.h"
#include "vmm/arch/arm64/fdt.h"

namespace conduit::vmm::arm64 {

struct VsmmuFdtParams {
    memory::AddressRange reg;
    uint32_t eventqSpi = 0;
    uint32_t gerrorSpi = 0;
    uint32_t cmdqSyncSpi = 0;
    bool dmaCoherent = false;
};

class VsmmuFdt final : public FdtExtension {
public:
    static constexpr const char* kPhandleName = "smmu";
    explicit VsmmuFdt(VsmmuFdtParams params) : p_(params) {}
    void reservePhandles(FdtPhandles& phandles) const override;
    Result<void> writeRootNodes(FdtWriter& w, const FdtPhandles& phandles) const override;
    Result<void> writePciHostProperties(FdtWriter& w, const FdtPhandles& phandles) const override;

private:
    VsmmuFdtParams p_;
};

}  // namespace conduit::vmm::arm64
