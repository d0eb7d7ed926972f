#include "vmm/arch/arm64/vsmmu_fdt.h"

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

namespace {
constexpr uint32_t kRidSpace = 0x10000;  // every requester id of the host bridge's buses
uint32_t hi(uint64_t v) { return static_cast<uint32_t>(v >> 32); }
uint32_t lo(uint64_t v) { return static_cast<uint32_t>(v); }
std::string devicePhandleName(uint32_t rid) { return fmt::format("smmu-dev-{:x}", rid); }
// A PCI child node's unit address: "slot" or "slot,function" (dtc's pci_device_reg check).
std::string deviceNodeName(uint32_t rid) {
    const uint32_t slot = (rid >> 3) & 0x1f, fn = rid & 7;
    return fn ? fmt::format("device@{:x},{:x}", slot, fn) : fmt::format("device@{:x}", slot);
}
}  // namespace

bool VsmmuFdt::writesRmr() const { return !p_.msiWindow.empty() && !p_.requesterIds.empty(); }

void VsmmuFdt::reservePhandles(FdtPhandles& phandles) const {
    phandles.extra[kPhandleName] = phandles.allocate();
    if (!writesRmr()) return;
    phandles.extra[kRmrPhandleName] = phandles.allocate();
    for (uint32_t rid : p_.requesterIds) phandles.extra[devicePhandleName(rid)] = phandles.allocate();
}

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
    TRY(w.endNode());
    if (!writesRmr()) return success();
    TRY(w.beginNode("reserved-memory"));
    TRY(w.propertyU32("#address-cells", 2));
    TRY(w.propertyU32("#size-cells", 2));
    TRY(w.propertyEmpty("ranges"));
    const auto& m = p_.msiWindow;
    TRY(w.beginNode(fmt::format("msi-doorbell@{:x}", m.base)));
    TRY(w.propertyCells("reg", {hi(m.base), lo(m.base), hi(m.size), lo(m.size)}));
    TRY(w.propertyEmpty("no-map"));  // not RAM: the ITS frame and an empty rest
    // One entry per function, in the host bridge's cells (3 address, 2 size; no dma-ranges on
    // the bridge: IOVA = bus address).
    std::vector<uint32_t> cells;
    for (uint32_t rid : p_.requesterIds)
        cells.insert(cells.end(), {phandles.extra.at(devicePhandleName(rid)), 0, hi(m.base), lo(m.base), hi(m.size), lo(m.size)});
    TRY(w.propertyCells("iommu-addresses", cells));
    TRY(w.propertyU32("phandle", phandles.extra.at(kRmrPhandleName)));
    TRY(w.endNode());
    return w.endNode();
}

Result<void> VsmmuFdt::writePciHostProperties(FdtWriter& w, const FdtPhandles& phandles) const {
    TRY(w.propertyCells("iommu-map", {0, phandles.extra.at(kPhandleName), 0, kRidSpace}));
    if (!writesRmr()) return success();
    // The fronted functions' nodes (subnodes come after every property of the bridge: this is the
    // last thing written into it).
    for (uint32_t rid : p_.requesterIds) {
        TRY(w.beginNode(deviceNodeName(rid)));
        TRY(w.propertyCells("reg", {(rid & 0xffff) << 8, 0, 0, 0, 0}));
        TRY(w.propertyU32("memory-region", phandles.extra.at(kRmrPhandleName)));
        TRY(w.propertyU32("phandle", phandles.extra.at(devicePhandleName(rid))));
        TRY(w.endNode());
    }
    return success();
}

}  // namespace conduit::vmm::arm64
