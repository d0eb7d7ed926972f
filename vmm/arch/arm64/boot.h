// arm64 Linux boot as data: the Image and the initrd into guest RAM, the device tree built for
// this machine and written into its 2 MiB slot, and what the boot vCPU starts from. No ioctls:
// the platform applies the result (setBootRegisters in kvm_vcpu.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"
#include "vmm/arch/arm64/fdt.h"
#include "vmm/arch/arm64/layout.h"

namespace conduit::vmm::arm64 {

struct LinuxBootInput {
    std::span<const uint8_t> image;   // the arm64 Image
    std::span<const uint8_t> initrd;  // empty: none
    std::string cmdline;
    std::vector<uint64_t> mpidrs;     // one per vCPU, from KVM
    bool its = true;
    std::vector<const FdtExtension*> extensions;  // more device-tree nodes (issue 13's vSMMU)
};

struct BootPlan {
    uint64_t entry = 0;       // PC of the boot vCPU
    uint64_t fdt = 0;         // X0
    size_t fdtSize = 0;
    std::string description;  // for the log
};

Result<BootPlan> loadLinux(const memory::GuestMemory& mem, const Layout& layout, const LinuxBootInput& in);

}  // namespace conduit::vmm::arm64
