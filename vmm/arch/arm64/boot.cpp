#include "vmm/arch/arm64/boot.h"

#include <fmt/format.h>

#include "vmm/arch/arm64/board.h"
#include "vmm/arch/arm64/image.h"

namespace conduit::vmm::arm64 {

Result<BootPlan> loadLinux(const memory::GuestMemory& mem, const Layout& layout, const LinuxBootInput& in) {
    if (in.mpidrs.size() != layout.vcpus())
        return Error(fmt::format("arm64 boot: {} MPIDRs for {} vCPUs", in.mpidrs.size(), layout.vcpus()));
    auto loaded = TRY(loadImage(mem, layout.ramRanges().front(), in.image, in.initrd));

    BoardOptions board;
    board.mpidrs = in.mpidrs;
    board.bootargs = in.cmdline;
    board.initrd = loaded.placement.initrd;
    board.its = in.its;
    FdtDescription desc = describeBoard(layout, board);
    desc.extensions = in.extensions;
    auto fdt = TRY(buildFdt(desc));
    if (fdt.size() > loaded.placement.fdtSlot.size)
        return Error(fmt::format("arm64 boot: the device tree is {} bytes, over its {} byte slot", fdt.size(),
                                 loaded.placement.fdtSlot.size));
    TRY_CTX(mem.write(loaded.placement.fdtSlot.base, fdt), "arm64 boot: writing the device tree");

    BootPlan plan;
    plan.entry = loaded.placement.kernel;
    plan.fdt = loaded.placement.fdtSlot.base;
    plan.fdtSize = fdt.size();
    plan.description = fmt::format("{}, at {:#x}; device tree {} bytes at {:#x}", loaded.header.describe(), plan.entry,
                                   plan.fdtSize, plan.fdt);
    if (loaded.placement.initrd)
        plan.description += fmt::format("; initrd {} bytes at {:#x}", loaded.placement.initrd->size,
                                        loaded.placement.initrd->base);
    plan.description += fmt::format("; cmdline \"{}\"", in.cmdline);
    return plan;
}

}  // namespace conduit::vmm::arm64
