// Where loadLinux puts things in guest-physical memory. Fixed addresses, all in low RAM below the
// legacy hole, away from the kernel (which loads at 1 MiB or above).
//
//   0x00500  GDT: null, null, __BOOT_CS 0x10, __BOOT_DS 0x18, TSS descriptor 0x20 (16 bytes)
//   0x00600  TSS (104 bytes; KVM wants a usable TR, Linux loads its own)
//   0x07000  boot_params ("zero page", 4 KiB)
//   0x08ff0  BSP stack top (the kernel switches to its own stack at once)
//   0x09000  PML4, PDPT, 4 page directories: identity map of [0, 4 GiB)
//   0x20000  kernel command line (up to cmdline_size + 1 bytes, at most kLinuxCmdlineMaxBytes)
//   0x9fc00  MP floating pointer + configuration table (reserved in e820)
#pragma once

#include <cstdint>

namespace conduit::vmm::x86 {

inline constexpr uint64_t kLinuxGdtAddr = 0x500;
inline constexpr uint64_t kLinuxTssAddr = 0x600;
inline constexpr uint64_t kBootParamsAddr = 0x7000;
inline constexpr uint64_t kLinuxStackTop = 0x8ff0;
inline constexpr uint64_t kLinuxPml4Addr = 0x9000;
inline constexpr uint64_t kLinuxIdentityMapEnd = 4ull << 30;
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kLinuxCmdlineMaxBytes = 0x10000;  // including the terminating NUL
inline constexpr uint16_t kLinuxBootCs = 0x10;  // __BOOT_CS
inline constexpr uint16_t kLinuxBootDs = 0x18;  // __BOOT_DS
inline constexpr uint16_t kLinuxBootTss = 0x20;
// The lowest address a kernel or initrd may occupy: everything above is free for them.
inline constexpr uint64_t kLinuxKernelMin = 0x100000;

}  // namespace conduit::vmm::x86
