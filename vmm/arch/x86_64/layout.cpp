#include "vmm/arch/x86_64/layout.h"

#include <algorithm>

namespace conduit::vmm::x86 {

using memory::GiB;
using memory::KiB;
using memory::RangeKind;

Result<memory::AddressLayout> addressLayout(uint64_t ramBytes) {
    TRY(memory::AddressLayout::checkRamSize(ramBytes));
    memory::AddressLayout::Spec spec;
    spec.ramBytes = ramBytes;
    const uint64_t low = std::min(ramBytes, kLowRamLimit);
    spec.ram.push_back({"ram-low", RangeKind::Ram, {0, low}});
    uint64_t ramEnd = low;
    if (ramBytes > low) {
        spec.ram.push_back({"ram-high", RangeKind::Ram, {kHighRamBase, ramBytes - low}});
        ramEnd = kHighRamBase + (ramBytes - low);
    }
    spec.mmio32.range = {kMmio32Base, kMmio32Size};
    spec.ecam.range = {kEcamBase, kEcamSize};
    spec.mmio64.range = {memory::alignUp(std::max(ramEnd, kHighRamBase), GiB), kMmio64Size};
    spec.platform = {
        {"ioapic", RangeKind::Platform, {kIoApicBase, 4 * KiB}},
        {"lapic-msi", RangeKind::Platform, {kMsiWindowBase, kMsiWindowSize}},
        {"firmware", RangeKind::Platform, {kFirmwareBase, 64 * KiB}},
    };
    spec.reservedIova = {{"msi-window", RangeKind::ReservedIova, {kMsiWindowBase, kMsiWindowSize}}};
    return memory::AddressLayout::create(std::move(spec));
}

}  // namespace conduit::vmm::x86
