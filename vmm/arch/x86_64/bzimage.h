// Looking inside a bzImage: its setup header, and the compressed kernel it carries.
//
// Why: a bzImage decompresses itself in the guest at CPL0, and CPL0 is emulated ~14,000x slower on
// this machine's KVM (kvm-here REPORT, finding 1), so an xz-compressed kernel may not finish
// unpacking within a test's time. The integration side can take the payload out, decompress it on
// the host and boot the resulting ELF vmlinux directly.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "vmm/arch/x86_64/linux_boot_params.h"

namespace conduit::vmm::x86 {

enum class Compression { Gzip, Bzip2, Lzma, Xz, Lzo, Lz4, Zstd, Unknown };

// "gzip", "xz", ... ("unknown" for Unknown).
std::string_view compressionName(Compression c);

// The format of a compressed stream, from its leading magic bytes (the formats the kernel's
// CONFIG_KERNEL_* choices produce; lz4 is the legacy frame format the kernel build uses).
Compression identifyCompression(std::span<const uint8_t> data);

// True when `bytes` carries a bzImage setup header (boot_flag 0xaa55 and "HdrS").
bool isBzImage(std::span<const uint8_t> bytes);

// The setup header of a bzImage (copied out; fields past the one the image's protocol version
// defines are whatever bytes follow, as boot.rst describes). Refuses images too short to hold it
// or without the magic numbers.
Result<linux_boot::SetupHeader> readSetupHeader(std::span<const uint8_t> bytes);

// Offset of the protected-mode kernel in the file: (setup_sects + 1) * 512, with setup_sects 0
// meaning 4.
uint64_t protectedModeOffset(const linux_boot::SetupHeader& hdr);

// The compressed kernel (payload_offset/payload_length of the header, relative to the
// protected-mode kernel; protocol 2.08 or later). Errors name the numbers that do not fit.
Result<std::vector<uint8_t>> extractBzImagePayload(std::span<const uint8_t> bytes);

struct BzImagePayload {
    std::vector<uint8_t> data;
    Compression compression = Compression::Unknown;
};
// Same, with the format identified.
Result<BzImagePayload> extractBzImagePayloadWithFormat(std::span<const uint8_t> bytes);

}  // namespace conduit::vmm::x86
