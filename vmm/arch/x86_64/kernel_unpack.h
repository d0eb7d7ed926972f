// Decompressing a bzImage's kernel on the host.
//
// Why: the bzImage's own decompressor runs in the guest at CPL0, and on hosts where guest CPL0 is
// emulated (this project's nested KVM: ~14,000x slower, see docs/linux-boot.md) unpacking a 50 MB
// kernel takes many minutes. With `"unpack": "host"` Conduit does the decompressor's work itself:
// it decompresses the payload into the ELF vmlinux and enters the kernel proper at startup_64 with
// boot_params built from the bzImage's own setup header, which is exactly the hand-off the in-guest
// decompressor makes (minus KASLR, which only the decompressor implements).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "vmm/arch/x86_64/bzimage.h"

namespace conduit::vmm::x86 {

// The formats unpackKernel handles: the ones Debian and most distributions build with.
bool canUnpackOnHost(Compression c);

// Decompresses a kernel payload. `data` is the payload as the bzImage carries it: the compressed
// stream followed by the 4-byte little-endian uncompressed size the kernel build appends. The
// result must be exactly that size and is refused above `maxBytes`.
Result<std::vector<uint8_t>> unpackKernel(std::span<const uint8_t> data, Compression c,
                                          uint64_t maxBytes = 1ull << 30);

}  // namespace conduit::vmm::x86
