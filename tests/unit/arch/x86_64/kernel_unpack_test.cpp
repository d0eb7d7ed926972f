#include "vmm/arch/x86_64/kernel_unpack.h"

#include <gtest/gtest.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>

namespace conduit::vmm::x86 {
namespace {

std::vector<uint8_t> sample() {
    std::vector<uint8_t> v(300000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>((i * 2654435761u) >> 13 ^ (i / 1000));
    return v;
}

void appendSize(std::vector<uint8_t>& out, uint32_t size) {
    uint8_t le[4];
    std::memcpy(le, &size, 4);
    out.insert(out.end(), le, le + 4);
}

// What the kernel build makes: the compressed stream, then the uncompressed size (size_append).
std::vector<uint8_t> gzipPayload(const std::vector<uint8_t>& in) {
    z_stream z{};
    EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::vector<uint8_t> out(deflateBound(&z, in.size()) + 64);
    z.next_in = const_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    out.resize(z.total_out);
    deflateEnd(&z);
    appendSize(out, static_cast<uint32_t>(in.size()));
    return out;
}

std::vector<uint8_t> xzPayload(const std::vector<uint8_t>& in) {
    std::vector<uint8_t> out(lzma_stream_buffer_bound(in.size()));
    size_t pos = 0;
    EXPECT_EQ(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(), out.data(), &pos, out.size()),
              LZMA_OK);
    out.resize(pos);
    appendSize(out, static_cast<uint32_t>(in.size()));
    return out;
}

std::vector<uint8_t> zstdPayload(const std::vector<uint8_t>& in) {
    std::vector<uint8_t> out(ZSTD_compressBound(in.size()));
    size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
    EXPECT_FALSE(ZSTD_isError(n));
    out.resize(n);
    appendSize(out, static_cast<uint32_t>(in.size()));
    return out;
}

// The legacy LZ4 frame with small blocks, so the block loop runs several times.
std::vector<uint8_t> lz4Payload(const std::vector<uint8_t>& in, size_t block) {
    std::vector<uint8_t> out;
    appendSize(out, 0x184C2102);
    for (size_t off = 0; off < in.size(); off += block) {
        int len = static_cast<int>(std::min(block, in.size() - off));
        std::vector<char> c(LZ4_compressBound(len));
        int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data() + off), c.data(), len,
                                     static_cast<int>(c.size()));
        EXPECT_GT(n, 0);
        appendSize(out, static_cast<uint32_t>(n));
        out.insert(out.end(), c.begin(), c.begin() + n);
    }
    appendSize(out, static_cast<uint32_t>(in.size()));
    return out;
}

TEST(KernelUnpack, EveryHostFormatRoundTrips) {
    const auto data = sample();
    struct Case {
        const char* name;
        std::vector<uint8_t> payload;
        Compression c;
    } cases[] = {{"gzip", gzipPayload(data), Compression::Gzip},
                 {"xz", xzPayload(data), Compression::Xz},
                 {"zstd", zstdPayload(data), Compression::Zstd},
                 {"lz4", lz4Payload(data, 65536), Compression::Lz4}};
    for (auto& c : cases) {
        SCOPED_TRACE(c.name);
        EXPECT_EQ(identifyCompression(c.payload), c.c);
        auto out = unpackKernel(c.payload, c.c);
        ASSERT_TRUE(out.ok()) << out.error().describe();
        EXPECT_EQ(*out, data);
    }
}

TEST(KernelUnpack, TruncatedOrMislabelledStreamsAreRefused) {
    const auto data = sample();
    auto lz4 = lz4Payload(data, 65536);
    // Drop the middle of the stream but keep the size trailer: the blocks no longer add up.
    std::vector<uint8_t> cut(lz4.begin(), lz4.begin() + static_cast<long>(lz4.size() / 2));
    appendSize(cut, static_cast<uint32_t>(data.size()));
    auto r = unpackKernel(cut, Compression::Lz4);
    ASSERT_FALSE(r.ok());

    auto gz = gzipPayload(data);
    gz[gz.size() / 2] ^= 0xff;
    EXPECT_FALSE(unpackKernel(gz, Compression::Gzip).ok());

    auto bad = unpackKernel(gz, Compression::Bzip2);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().what(), "cannot unpack a bzip2-compressed kernel on the host (supported: lz4, gzip, xz, zstd)");
}

}  // namespace
}  // namespace conduit::vmm::x86
