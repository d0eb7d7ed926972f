#include "vmm/arch/x86_64/e820.h"

#include <algorithm>

namespace conduit::vmm::x86 {

std::vector<E820Entry> buildE820(const memory::AddressLayout& layout) {
    std::vector<E820Entry> map;
    auto add = [&](uint64_t addr, uint64_t size, E820Type type) {
        if (size > 0)
            map.push_back({addr, size, static_cast<uint32_t>(type)});
    };
    for (const memory::AddressRange& ram : layout.ramRanges()) {
        memory::AddressRange hole{kLegacyHoleBase, kLegacyHoleEnd - kLegacyHoleBase};
        if (!ram.overlaps(hole)) {
            add(ram.base, ram.size, E820Type::Ram);
            continue;
        }
        // RAM below the hole, the hole itself (as far as RAM backs it), RAM above it.
        add(ram.base, std::max(ram.base, hole.base) - ram.base, E820Type::Ram);
        uint64_t holeEnd = std::min(ram.end(), hole.end());
        add(std::max(ram.base, hole.base), holeEnd - std::max(ram.base, hole.base), E820Type::Reserved);
        if (ram.end() > hole.end())
            add(hole.end(), ram.end() - hole.end(), E820Type::Ram);
    }
    add(layout.pciEcam().base, layout.pciEcam().size, E820Type::Reserved);
    for (const memory::NamedRange& p : layout.platformRanges())
        add(p.range.base, p.range.size, E820Type::Reserved);
    std::sort(map.begin(), map.end(), [](const E820Entry& a, const E820Entry& b) { return a.addr < b.addr; });
    return map;
}

}  // namespace conduit::vmm::x86
