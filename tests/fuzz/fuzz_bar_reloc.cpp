// libFuzzer target: BAR relocation sequences of the VFIO passthrough device. The guest writes BAR
// registers (sizing pattern, zero, addresses that overlap each other, the MSI window, above 4 GiB,
// arbitrary values), the ROM BAR and COMMAND decode bits in any order, and touches the BARs where
// they are now. After every step: each trapped bus range and each guest memslot lies inside a BAR
// that is decoded now (nothing left behind at an old address), memslots never overlap, and the
// device's counters agree with the fakes; teardown leaves nothing. Byte 0 picks the host variant.
#include "tests/fuzz/pci_harness.h"

using namespace conduit::fuzz;

namespace {
uint32_t candidate(Input& in) {
    static constexpr uint32_t kValues[] = {
        0x00000000, 0xffffffff, 0xc0000000, 0xc0100000, 0xc0080000, 0xc00ff000, 0xfee00000,
        0xe0000000, 0x80000000, 0x00001000, 0xfffff000, 0xc0200000, 0x00000001, 0xfffffffe};
    const uint8_t sel = in.u8();
    if (sel < 224) return kValues[sel % (sizeof(kValues) / sizeof(kValues[0]))];
    return in.u32();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    Session s(in.u8());
    for (int steps = 0; !in.done() && steps < 128; ++steps) {
        const uint8_t op = in.u8();
        switch (op & 7) {
        case 0: case 1: case 2:  // a BAR register, low or high half
            s.cfgWrite(PCI_BASE_ADDRESS_0 + 4 * ((op >> 3) % 6), candidate(in), 4);
            break;
        case 3: {  // the upper half of the 64-bit BAR2: 0, 1 (4 GiB), or anything
            const uint8_t sel = in.u8();
            s.cfgWrite(PCI_BASE_ADDRESS_3, sel < 128 ? sel & 1 : in.u32(), 4);
            break;
        }
        case 4: {  // COMMAND: memory / io / master decode bits
            static constexpr uint16_t kCmd[] = {0, PCI_COMMAND_MEMORY, PCI_COMMAND_IO,
                                                PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER,
                                                PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_MASTER};
            s.cfgWrite(PCI_COMMAND, kCmd[(op >> 3) % 5], 2);
            break;
        }
        case 5:  // ROM BAR
            s.cfgWrite(PCI_ROM_ADDRESS, candidate(in) | ((op & 0x80) ? PCI_ROM_ADDRESS_ENABLE : 0), 4);
            break;
        case 6: {  // touch a BAR where it is now
            const unsigned bar = (op >> 3) % 7;
            const uint64_t off = in.u32() & 0xfffff;  // sequenced: argument order is unspecified
            s.mmioOp(s.barBase(bar) + off, op & 0x40, op >> 4, in.u64());
            break;
        }
        case 7:
            if ((op >> 3) == 0)
                (void)s.device->functionLevelReset();
            else
                s.cfgOp(in, false, PCI_BASE_ADDRESS_0 + (op >> 3), op >> 6);  // read BARs back
            break;
        }
        s.checkConsistent();
    }
    return 0;
}
