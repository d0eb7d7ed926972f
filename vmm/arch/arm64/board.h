// The arm64 machine as the guest sees it, turned into a device-tree description: the Layout's
// ranges, one cpu node per vCPU (from the MPIDRs KVM gives the vCPUs), the UART as console, and
// the PCIe host bridge with all four INTx pins of each slot on Layout::intxSpi(slot).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memory/address_range.h"
#include "vmm/arch/arm64/fdt.h"
#include "vmm/arch/arm64/layout.h"

namespace conduit::vmm::arm64 {

struct BoardOptions {
    std::vector<uint64_t> mpidrs;  // one per vCPU
    std::string bootargs;
    std::optional<memory::AddressRange> initrd;
    bool its = true;  // false: no ITS (no MSIs), for tests and for hosts without one
};

FdtDescription describeBoard(const Layout& layout, const BoardOptions& options);

}  // namespace conduit::vmm::arm64
