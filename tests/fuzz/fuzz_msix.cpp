// libFuzzer target: MSI-X table and PBA accesses of the VFIO passthrough device (emulated on the
// MMIO bus inside BAR2), interleaved with MSI-X / MSI control writes, vector firing (so masked
// vectors become pending in the PBA) and resets. Byte 0 picks the host variant (pci_harness.h).
#include "tests/fuzz/pci_harness.h"

using namespace conduit::fuzz;

namespace {
constexpr uint32_t kMsiCap = 0x40, kMsixCap = 0x60;  // where the simulated edu puts them
constexpr uint64_t kTable = 0xfe000, kPba = 0xff000;  // in BAR2 (tests/hostsim/sim_host.h)
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    Session s(in.u8());
    s.enableDecode();
    const uint8_t start = in.u8();
    if (start & 1) s.cfgWrite(kMsixCap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | ((start & 2) ? PCI_MSIX_FLAGS_MASKALL : 0), 2);
    for (int steps = 0; !in.done() && steps < 128; ++steps) {
        const uint8_t op = in.u8();
        switch (op & 7) {
        case 0: case 1: case 2: {  // table (and a little around it)
            const uint64_t off = kTable + (in.u16() % 0x1100) - 0x40;
            const uint64_t value = in.u64();
            s.mmioOp(s.barBase(2) + off, op & 0x80, op >> 3, value);
            break;
        }
        case 3: {  // PBA (reads; writes are ignored by the spec)
            const uint64_t off = kPba + (in.u16() % 0x1010);
            const uint64_t value = in.u64();
            s.mmioOp(s.barBase(2) + off, op & 0x80, op >> 3, value);
            break;
        }
        case 4:  // MSI-X message control: enable / function mask / read-only bits
            s.cfgWrite(kMsixCap + PCI_MSIX_FLAGS, in.u16(), 2);
            break;
        case 5:  // MSI control and the rest of the MSI capability
            s.cfgOp(in, true, kMsiCap + (in.u8() % 24), op >> 3);  // offset read before value
            break;
        case 6:
            s.fireRoute(op >> 3);
            break;
        case 7:
            if (op & 0x80)
                (void)s.device->functionLevelReset();
            else
                s.cfgOp(in, false, in.u16(), op >> 3);
            break;
        }
        s.checkConsistent();
    }
    return 0;
}
