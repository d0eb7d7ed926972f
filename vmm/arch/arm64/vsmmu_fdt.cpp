#include "vmm/arch/arm64/vsmmu_fdt.h"

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

namespace {
constexpr uint32_t kRidSpace = 0x10000;  // every requester id of the host bridge's buses
uint32_t hi(uint64_t v) { return static_cast<uint32_t>(v >> 32); }
uint32_t lo(uint64_t v) { return static_cast<uint32_t>(v); }
}  // namespace

void VsmmuFdt::reservePhandles(FdtPhandles& phandles) const { phandles.extra[kPhandleName] = phandles.allocate(); }

Result<void> VsmmuFdt::writeRootNodes(FdtWriter& w, const FdtPhandles& phandles) const {
    TRY(w.beginNode(fmt::format("smmuv3@{:x}", p_.reg.base)));
    TRY(w.propertyString("compatible", "arm,smmu-v3"));
    TRY(w.propertyCells("reg", {hi(p_.reg.base), lo(p_.reg.base), hi(p_.reg.size), lo(p_.reg.size)}));
    // Linux's arm-smmu-v3 takes its wired interrupts by name; all three are edge-triggered.
    TRY(w.propertyCells("interrupts", {kFdtIrqSpi, p_.eventqSpi, kFdtIrqEdgeRising, kFdtIrqSpi, p_.gerrorSpi,
                                       kFdtIrqEdgeRising, kFdtIrqSpi, p_.cmdqSyncSpi, kFdtIrqEdgeRising}));
    TRY(w.propertyStrings("interrupt-names", {"eventq", "gerror", "cmdq-sync"}));
    // Only when true: the guest then skips cache maintenance on its tables and page tables, which
    // the host SMMU would otherwise read stale.
    if (p_.dmaCoherent) TRY(w.propertyEmpty("dma-coherent"));
    TRY(w.propertyU32("#iommu-cells", 1));
    TRY(w.propertyU32("phandle", phandles.extra.at(kPhandleName)));
    return w.endNode();
}

Result<void> VsmmuFdt::writePciHostProperties(FdtWriter& w, const FdtPhandles& phandles) const {
    return w.propertyCells("iommu-map", {0, phandles.extra.at(kPhandleName), 0, kRidSpace});
}

}  // namespace conduit::vmm::arm64
