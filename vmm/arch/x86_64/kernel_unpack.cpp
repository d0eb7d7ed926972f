#include "vmm/arch/x86_64/kernel_unpack.h"

#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>

#include <fmt/format.h>

namespace conduit::vmm::x86 {

namespace {

// lib/decompress_unlz4.c: the legacy frame is a magic word, then blocks of (u32 compressed size,
// data) that each decompress to at most 8 MiB; a repeated magic word starts a concatenated frame.
constexpr uint32_t kLz4LegacyMagic = 0x184C2102;
constexpr uint32_t kLz4LegacyBlock = 8u << 20;

uint32_t le32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

Result<void> unlz4(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    size_t pos = 4;  // the magic, checked by identifyCompression
    size_t produced = 0;
    while (in.size() - pos >= 4) {
        uint32_t chunk = le32(in.data() + pos);
        if (chunk == kLz4LegacyMagic) {
            pos += 4;
            continue;
        }
        if (in.size() - pos == 4) break;  // the appended uncompressed size
        pos += 4;
        if (chunk > in.size() - pos)
            return Error(fmt::format("lz4 block of {} bytes at offset {:#x} runs past the payload end", chunk, pos - 4));
        size_t room = std::min<size_t>(kLz4LegacyBlock, out.size() - produced);
        int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data() + pos),
                                    reinterpret_cast<char*>(out.data() + produced), static_cast<int>(chunk),
                                    static_cast<int>(room));
        if (n < 0) return Error(fmt::format("lz4 block at offset {:#x} is corrupt", pos - 4));
        produced += static_cast<size_t>(n);
        pos += chunk;
    }
    if (produced != out.size())
        return Error(fmt::format("lz4 stream gave {} bytes, the payload says {}", produced, out.size()));
    return success();
}

Result<void> gunzip(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    z_stream z{};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return Error("zlib inflateInit2 failed");
    z.next_in = const_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    int rc = inflate(&z, Z_FINISH);
    uint64_t produced = z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END || produced != out.size())
        return Error(fmt::format("gzip stream: inflate returned {} after {} of {} bytes", rc, produced, out.size()));
    return success();
}

Result<void> unxz(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    lzma_stream s = LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&s, UINT64_MAX, 0) != LZMA_OK) return Error("liblzma: cannot create a decoder");
    s.next_in = in.data();
    s.avail_in = in.size();
    s.next_out = out.data();
    s.avail_out = out.size();
    lzma_ret rc = lzma_code(&s, LZMA_FINISH);
    uint64_t produced = s.total_out;
    lzma_end(&s);
    if (rc != LZMA_STREAM_END || produced != out.size())
        return Error(fmt::format("xz stream: liblzma returned {} after {} of {} bytes", static_cast<int>(rc), produced,
                                 out.size()));
    return success();
}

Result<void> unzstd(std::span<const uint8_t> in, std::vector<uint8_t>& out) {
    ZSTD_DCtx* ctx = ZSTD_createDCtx();
    if (!ctx) return Error("libzstd: cannot create a context");
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    ZSTD_outBuffer ob{out.data(), out.size(), 0};
    size_t rc = 1;
    while (rc != 0 && ib.pos < ib.size) {
        rc = ZSTD_decompressStream(ctx, &ob, &ib);
        if (ZSTD_isError(rc)) {
            std::string why = ZSTD_getErrorName(rc);
            ZSTD_freeDCtx(ctx);
            return Error("zstd stream: " + why);
        }
        if (ob.pos == ob.size) break;
    }
    ZSTD_freeDCtx(ctx);
    if (ob.pos != out.size())
        return Error(fmt::format("zstd stream gave {} bytes, the payload says {}", ob.pos, out.size()));
    return success();
}

}  // namespace

bool canUnpackOnHost(Compression c) {
    return c == Compression::Lz4 || c == Compression::Gzip || c == Compression::Xz || c == Compression::Zstd;
}

Result<std::vector<uint8_t>> unpackKernel(std::span<const uint8_t> data, Compression c, uint64_t maxBytes) {
    if (!canUnpackOnHost(c))
        return Error(fmt::format("cannot unpack a {}-compressed kernel on the host (supported: lz4, gzip, xz, zstd)",
                                 compressionName(c)));
    if (data.size() < 8) return Error(fmt::format("{} payload of {} bytes is too short", compressionName(c), data.size()));
    const uint32_t size = le32(data.data() + data.size() - 4);
    if (size == 0 || size > maxBytes)
        return Error(fmt::format("{} payload declares {} uncompressed bytes (limit {})", compressionName(c), size,
                                 maxBytes));
    std::vector<uint8_t> out(size);
    Result<void> r = success();
    switch (c) {
        case Compression::Lz4: r = unlz4(data, out); break;
        case Compression::Gzip: r = gunzip(data.first(data.size() - 4), out); break;
        case Compression::Xz: r = unxz(data.first(data.size() - 4), out); break;
        case Compression::Zstd: r = unzstd(data.first(data.size() - 4), out); break;
        default: break;
    }
    if (!r) return std::move(r).error();
    return out;
}

}  // namespace conduit::vmm::x86
