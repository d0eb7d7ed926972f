#include "vmm/arch/arm64/layout.h"

#include <algorithm>

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

using memory::AddressRange;
using memory::NamedRange;
using memory::RangeKind;

static_assert(Layout::kItsTranslaterFrame == Layout::kMsiWindowBase,
              "the ITS translater frame must start the MSI window (issue 13)");
static_assert(Layout::kGicItsBase + Layout::kGicItsSize <= Layout::kMsiWindowBase + Layout::kMsiWindowSize);
static_assert(Layout::kGicRedistLimit <= Layout::kGicItsBase);
static_assert(Layout::kRamBase >= Layout::kEcamBase + Layout::kEcamSize);
static_assert(Layout::kVsmmuBase >= Layout::kExitDeviceBase + Layout::kExitDeviceSize &&
              Layout::kVsmmuBase + Layout::kVsmmuSize <= Layout::kMmio32Base);
static_assert(Layout::kVsmmuEventqSpi >= Layout::kPciIntxSpiBase + Layout::kPciIntxSpiCount &&
                  Layout::kVsmmuCmdqSyncSpi < Layout::kSpiCount,
              "the vSMMU's SPIs are above the INTx ones and within the vGIC's");
static_assert(Layout::kPciIntxSpiBase > Layout::kUartSpi &&
              Layout::kPciIntxSpiBase + Layout::kPciIntxSpiCount <= Layout::kSpiCount);

Result<Layout> Layout::create(uint64_t ramBytes, unsigned vcpus) {
    if (ramBytes < kMinRam || ramBytes > kMaxRam)
        return Error(fmt::format("arm64 layout: memory size {} MiB is outside the supported {}..{} MiB",
                                 ramBytes / MiB, kMinRam / MiB, kMaxRam / MiB));
    if (!memory::isAligned(ramBytes, 64 * KiB))
        return Error(fmt::format("arm64 layout: memory size {:#x} is not a multiple of 64 KiB", ramBytes));
    if (vcpus == 0 || vcpus > kMaxVcpus)
        return Error(fmt::format("arm64 layout: {} vCPUs requested; the redistributor area holds 1..{}",
                                 vcpus, kMaxVcpus));
    Layout l;
    l.vcpus_ = vcpus;
    l.ram_ = {kRamBase, ramBytes};
    // Above 4 GiB even when RAM ends lower, so what the window holds is 64-bit in fact as in name
    // (as on x86).
    l.mmio64_ = {memory::alignUp(std::max(l.ram_.end(), 4 * GiB), GiB), kMmio64Size};
    return l;
}

std::vector<NamedRange> Layout::platformRanges() const {
    // The whole redistributor area is reserved, not just the frames in use: the map does not
    // move with the vCPU count.
    return {
        {"gic-dist", RangeKind::Platform, gicDist()},
        {"gic-redist", RangeKind::Platform, {kGicRedistBase, kGicRedistLimit - kGicRedistBase}},
        {"gic-its", RangeKind::Platform, gicIts()},
        // The rest of the MSI window after the ITS translater frame: empty on purpose.
        {"msi-reserved", RangeKind::Platform, {gicIts().end(), msiWindow().end() - gicIts().end()}},
        {"uart", RangeKind::Platform, uart()},
        {"exit-device", RangeKind::Platform, exitDevice()},
        {"vsmmu", RangeKind::Platform, vsmmu()},
    };
}

std::vector<NamedRange> Layout::describe() const {
    std::vector<NamedRange> all = platformRanges();
    all.push_back({"pci-mmio32", RangeKind::Mmio32, mmio32Window()});
    all.push_back({"pci-ecam", RangeKind::PciEcam, pciEcam()});
    all.push_back({"ram", RangeKind::Ram, ram_});
    all.push_back({"pci-mmio64", RangeKind::Mmio64, mmio64_});
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.range.base < b.range.base; });
    return all;
}

}  // namespace conduit::vmm::arm64
