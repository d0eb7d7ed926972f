#include "tests/hostsim/bringup.h"

#include <sys/mman.h>

#include "base/log.h"
#include "vfio/iommufd.h"

namespace conduit::hostsim {

void BringUp::teardown() {
    if (device) (void)device->disableIrq(VFIO_PCI_MSIX_IRQ_INDEX);
    msix.clear();
    barMaps.clear();
    if (dmaMapped && backend) {
        auto r = backend->unmapDma(dmaIova, dmaBuffer.size());
        if (!r) log::get("hostsim").warn("{}", r.error().describe());
        dmaMapped = false;
    }
    device.reset();
    backend.reset();
    dmaBuffer.reset();
}

Result<void> bringUp(vfio::HostInterface& host, vfio::BackendKind kind, const vfio::HostPaths& paths,
                     const std::string& bdf, BringUp& out, uint64_t iova) {
    out.backend = TRY(vfio::openBackend(host, kind, paths));
    out.device = TRY(out.backend->openDevice(bdf));
    auto& dev = *out.device;
    for (uint32_t i = 0; i < VFIO_PCI_NUM_REGIONS; ++i) TRY(dev.regionInfo(i));
    uint16_t vendor = TRY(dev.readConfigObj<uint16_t>(0));
    (void)vendor;
    for (uint32_t bar = 0; bar <= VFIO_PCI_BAR5_REGION_INDEX; ++bar) {
        for (auto& area : TRY(dev.mmapAreas(bar)))
            out.barMaps.push_back(TRY(dev.mapRegion(bar, area.offset, area.size, PROT_READ | PROT_WRITE)));
    }
    auto msix = TRY(dev.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX));
    std::vector<int32_t> fds;
    for (uint32_t i = 0; i < msix.count; ++i) {
        out.msix.push_back(TRY(EventFd::create()));
        fds.push_back(out.msix.back().fd());
    }
    if (!fds.empty()) TRY(dev.setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds));
    // GET_HW_INFO where the backend has iommufd nesting (type1 has none: nesting() is an error).
    if (auto nesting = out.backend->nesting()) TRY(nesting.value()->hwInfo(dev));
    out.dmaBuffer = TRY(Mapping::map(0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "DMA buffer"));
    TRY(out.backend->iovaRanges());
    TRY(out.backend->mapDma(iova, out.dmaBuffer.size(), out.dmaBuffer.data(), true));
    out.dmaIova = iova;
    out.dmaMapped = true;
    // Bus mastering on, as a driver would before DMA.
    uint16_t cmd = TRY(dev.readConfigObj<uint16_t>(0x04));
    TRY(dev.writeConfigObj<uint16_t>(0x04, static_cast<uint16_t>(cmd | 0x6)));
    return success();
}

}  // namespace conduit::hostsim
