// libFuzzer target: guest config-space reads and writes of the VFIO passthrough device, against the
// simulated host. Byte 0 picks the host variant (pci_harness.h); then a program of accesses, any
// offset of the 4 KiB space, any value, with occasional MMIO accesses to the BARs (which config
// writes may have moved) and function-level resets. After every step the device's trapped ranges
// and guest mappings must lie in decoded BARs; after the input, teardown must leave nothing.
#include "tests/fuzz/pci_harness.h"

using namespace conduit::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    Session s(in.u8());
    if (in.u8() & 1) s.enableDecode();
    for (int steps = 0; !in.done() && steps < 128; ++steps) {
        const uint8_t op = in.u8();
        switch (op & 7) {
        case 0: case 1: case 2:
            s.cfgOp(in, true, in.u16(), op >> 3);
            break;
        case 3: case 4:
            s.cfgOp(in, false, in.u16(), op >> 3);
            break;
        case 5: {  // an MMIO access inside (or just past) a BAR
            const unsigned bar = (op >> 3) % 7;
            const uint64_t off = in.u32() & 0x1fffff;  // sequenced: argument order is unspecified
            s.mmioOp(s.barBase(bar) + off, op & 0x40, op >> 4, in.u64());
            break;
        }
        case 6:
            (void)s.device->functionLevelReset();
            break;
        case 7:
            s.fireRoute(op >> 3);
            break;
        }
        s.checkConsistent();
    }
    return 0;
}
