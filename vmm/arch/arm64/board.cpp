#include "vmm/arch/arm64/board.h"

namespace conduit::vmm::arm64 {

FdtDescription describeBoard(const Layout& layout, const BoardOptions& options) {
    FdtDescription d;
    d.memory = layout.ramRanges();
    d.cpuMpidrs = options.mpidrs;
    d.gic.distributor = layout.gicDist();
    d.gic.redistributorRegions = {layout.gicRedist()};
    if (options.its) d.gic.its = layout.gicIts();
    d.uart = FdtUart{layout.uart(), Layout::kUartSpi};
    FdtPci pci;
    pci.ecam = layout.pciEcam();
    pci.busFirst = 0;
    pci.busLast = static_cast<uint32_t>(layout.pciEcam().size / memory::MiB) - 1;
    pci.mmio32 = layout.mmio32Window();
    pci.mmio64 = layout.mmio64Window();
    for (unsigned slot = 0; slot < 32; ++slot)
        for (unsigned pin = 1; pin <= 4; ++pin) pci.intx.push_back({slot, pin, Layout::intxSpi(slot)});
    d.pci = std::move(pci);
    d.chosen.bootargs = options.bootargs;
    d.chosen.initrd = options.initrd;
    return d;
}

}  // namespace conduit::vmm::arm64
