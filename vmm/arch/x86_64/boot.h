// x86_64 boot: puts a Linux kernel or a raw payload into guest memory and says how each vCPU must
// start. Pure data in and out: no ioctls here (the Machine applies the result to its Vcpus).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "base/result.h"
#include "memory/address_layout.h"
#include "memory/guest_memory.h"
#include "vmm/config.h"

namespace conduit::vmm::x86 {

struct VcpuBootState {
    kvm_regs regs{};
    kvm_sregs sregs{};
    // true: the vCPU runs from this state at once (KVM_SET_MP_STATE RUNNABLE on APs).
    // false: an AP left in wait-for-SIPI for the guest to start with INIT/SIPI (Linux); its regs and
    // sregs then hold the architectural reset state (what KVM already has), so applying them is harmless.
    bool runnable = true;
};

struct BootPlan {
    std::vector<VcpuBootState> vcpus;  // one per vCPU, index 0 = BSP
    std::string description;           // for the log: "Linux 6.1 bzImage, protocol 2.15, cmdline ..."
};

// Loads a bzImage or ELF vmlinux (detected from the file) with boot_params, e820, cmdline, initrd,
// identity page tables, GDT and an MP table for `vcpus` CPUs.
Result<BootPlan> loadLinux(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                           const KernelConfig& kernel, unsigned vcpus);

// Loads a flat binary and prepares the entry state of payload_abi.h (64-bit) or real mode.
Result<BootPlan> loadPayload(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                             const PayloadConfig& payload, unsigned vcpus);

// CPUID for vCPU `index` of `count`, from KVM_GET_SUPPORTED_CPUID with per-vCPU APIC ids and
// topology, the hypervisor bit, and features Conduit does not emulate removed.
std::vector<kvm_cpuid_entry2> buildCpuid(const std::vector<kvm_cpuid_entry2>& supported, unsigned index,
                                         unsigned count);

}  // namespace conduit::vmm::x86
