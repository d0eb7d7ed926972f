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
//
// The MSI window's identity mapping (docs/vsmmu.md, "MSI doorbell"): each fronted function gets
// a child node of the host bridge (`device@S[,F]`, reg = its config address) whose memory-region
// names one reserved-memory node over the MSI window, whose iommu-addresses map the same range
// for each of them. Linux's of_iommu_get_resv_regions() turns that into an IOMMU_RESV_DIRECT
// region (reg equal to the IOVA range): the guest's DMA domain maps IOVA 0x0800_0000 to IPA
// 0x0800_0000, which the device's MSI writes (to the host's doorbell IOVA) need at stage 1.
//
//   reserved-memory { msi-doorbell@8000000 { reg = <window>; no-map;
//                     iommu-addresses = <&dev 0 0 base 0 size>, ...; }; };   PCI cells: 3 + 2
//   pcie@...: device@3 { reg = <0x1800 0 0 0 0>; memory-region = <&rmr>; };
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/address_range.h"
#include "vmm/arch/arm64/fdt.h"

namespace conduit::vmm::arm64 {

struct VsmmuFdtParams {
    memory::AddressRange reg;
    uint32_t eventqSpi = 0;
    uint32_t gerrorSpi = 0;
    uint32_t cmdqSyncSpi = 0;
    bool dmaCoherent = false;
    // Identity-mapped at stage 1 for every fronted function (requester ids on bus 0); empty
    // window or no ids: no reserved-memory node.
    memory::AddressRange msiWindow;
    std::vector<uint32_t> requesterIds;
};

class VsmmuFdt final : public FdtExtension {
public:
    static constexpr const char* kPhandleName = "smmu";
    static constexpr const char* kRmrPhandleName = "smmu-msi-rmr";
    explicit VsmmuFdt(VsmmuFdtParams params) : p_(params) {}
    void reservePhandles(FdtPhandles& phandles) const override;
    Result<void> writeRootNodes(FdtWriter& w, const FdtPhandles& phandles) const override;
    Result<void> writePciHostProperties(FdtWriter& w, const FdtPhandles& phandles) const override;

private:
    bool writesRmr() const;
    VsmmuFdtParams p_;
};

}  // namespace conduit::vmm::arm64
