#include "vmm/arch/x86_64/bzimage.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace conduit::vmm::x86 {

using linux_boot::SetupHeader;

std::string_view compressionName(Compression c) {
    switch (c) {
        case Compression::Gzip: return "gzip";
        case Compression::Bzip2: return "bzip2";
        case Compression::Lzma: return "lzma";
        case Compression::Xz: return "xz";
        case Compression::Lzo: return "lzo";
        case Compression::Lz4: return "lz4";
        case Compression::Zstd: return "zstd";
        case Compression::Unknown: break;
    }
    return "unknown";
}

Compression identifyCompression(std::span<const uint8_t> d) {
    auto starts = [&](std::initializer_list<uint8_t> magic) {
        return d.size() >= magic.size() && std::equal(magic.begin(), magic.end(), d.begin());
    };
    if (starts({0x1f, 0x8b}))
        return Compression::Gzip;
    if (starts({0xfd, '7', 'z', 'X', 'Z', 0x00}))
        return Compression::Xz;
    if (starts({0x28, 0xb5, 0x2f, 0xfd}))
        return Compression::Zstd;
    if (starts({0x02, 0x21, 0x4c, 0x18}))  // lz4 legacy frame
        return Compression::Lz4;
    if (starts({0x04, 0x22, 0x4d, 0x18}))  // lz4 frame format
        return Compression::Lz4;
    if (starts({'B', 'Z', 'h'}))
        return Compression::Bzip2;
    if (starts({0x89, 'L', 'Z', 'O'}))
        return Compression::Lzo;
    // The .lzma ("lzma_alone") header has no magic: properties byte 0x5d (lc=3, lp=0, pb=2, what
    // every kernel build uses) followed by a little-endian dictionary size, then the size; the
    // kernel's build writes 0x5d 0x00 0x00.
    if (starts({0x5d, 0x00, 0x00}))
        return Compression::Lzma;
    return Compression::Unknown;
}

bool isBzImage(std::span<const uint8_t> bytes) { return readSetupHeader(bytes).ok(); }

Result<SetupHeader> readSetupHeader(std::span<const uint8_t> bytes) {
    constexpr uint64_t kEnd = linux_boot::kSetupHeaderOffset + sizeof(SetupHeader);
    // Protocol 2.00 headers end early; ask only for up to the magic and version to tell what it is.
    constexpr uint64_t kMagicEnd = 0x208;
    if (bytes.size() < kMagicEnd)
        return Error(fmt::format("{} bytes are too few for a bzImage setup header (needs {})", bytes.size(),
                                 kMagicEnd));
    SetupHeader hdr{};
    std::memcpy(&hdr, bytes.data() + linux_boot::kSetupHeaderOffset,
                std::min<uint64_t>(sizeof(hdr), bytes.size() - linux_boot::kSetupHeaderOffset));
    if (hdr.boot_flag != linux_boot::kBootFlag || hdr.header != linux_boot::kHeaderMagic)
        return Error(fmt::format("no bzImage setup header (boot_flag {:#06x}, header {:#010x}; want {:#06x}, "
                                 "{:#010x} \"HdrS\")",
                                 uint32_t{hdr.boot_flag}, uint32_t{hdr.header}, linux_boot::kBootFlag, linux_boot::kHeaderMagic));
    if (bytes.size() < kEnd)
        return Error(fmt::format("bzImage of {} bytes is truncated inside its setup header (ends at {:#x})",
                                 bytes.size(), kEnd));
    return hdr;
}

uint64_t protectedModeOffset(const SetupHeader& hdr) {
    uint64_t sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
    return (sects + 1) * 512;
}

Result<std::vector<uint8_t>> extractBzImagePayload(std::span<const uint8_t> bytes) {
    SetupHeader hdr = TRY(readSetupHeader(bytes));
    if (hdr.version < 0x0208)
        return Error(fmt::format("bzImage protocol {}.{:02} has no payload_offset/payload_length (needs 2.08)",
                                 hdr.version >> 8, hdr.version & 0xff));
    const uint64_t pm = protectedModeOffset(hdr);
    const uint64_t begin = pm + hdr.payload_offset;
    const uint64_t end = begin + hdr.payload_length;
    if (hdr.payload_length == 0 || end > bytes.size())
        return Error(fmt::format("bzImage payload [{:#x}, {:#x}) (protected-mode kernel at {:#x} + payload_offset "
                                 "{:#x}, payload_length {:#x}) is empty or beyond the file's {} bytes",
                                 begin, end, pm, uint32_t{hdr.payload_offset}, uint32_t{hdr.payload_length}, bytes.size()));
    return std::vector<uint8_t>(bytes.begin() + static_cast<ptrdiff_t>(begin),
                                bytes.begin() + static_cast<ptrdiff_t>(end));
}

Result<BzImagePayload> extractBzImagePayloadWithFormat(std::span<const uint8_t> bytes) {
    BzImagePayload p;
    p.data = TRY(extractBzImagePayload(bytes));
    p.compression = identifyCompression(p.data);
    return p;
}

}  // namespace conduit::vmm::x86
