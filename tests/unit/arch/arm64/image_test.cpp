#include "vmm/arch/arm64/image.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace conduit::vmm::arm64 {
namespace {

using memory::AddressRange;
using memory::GiB;
using memory::KiB;
using memory::MiB;

constexpr AddressRange kRam256{0x4000'0000, 256 * MiB};

void put64(std::vector<uint8_t>& b, size_t off, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

// A synthetic Image: the header as booting.rst lays it out, then filler.
std::vector<uint8_t> makeImage(uint64_t textOffset, uint64_t imageSize, uint64_t flags, size_t fileSize = 64 * KiB) {
    std::vector<uint8_t> b(fileSize, 0xAB);
    put64(b, 0, 0x1400'0000'9100'0000ull);  // code0/code1: whatever
    put64(b, 8, textOffset);
    put64(b, 16, imageSize);
    put64(b, 24, flags);
    put64(b, 32, 0);
    put64(b, 40, 0);
    put64(b, 48, 0);
    std::memcpy(b.data() + 0x38, "ARM\x64", 4);
    std::memset(b.data() + 0x3c, 0, 4);
    return b;
}

constexpr uint64_t kFlags4kAnywhere = (1 << 1) | (1 << 3);

TEST(Arm64Image, ParsesTheHeader) {
    auto h = parseImageHeader(makeImage(0, 0x2a3'0000, kFlags4kAnywhere));
    ASSERT_TRUE(h) << h.error().describe();
    EXPECT_EQ(h->textOffset, 0u);
    EXPECT_EQ(h->imageSize, 0x2a3'0000u);
    EXPECT_EQ(h->pageSizeKiB, 4u);
    EXPECT_TRUE(h->anywhere);
    EXPECT_FALSE(h->legacy);

    auto h64 = parseImageHeader(makeImage(0x80000, 4 * MiB, 3 << 1));
    ASSERT_TRUE(h64);
    EXPECT_EQ(h64->textOffset, 0x80000u);
    EXPECT_EQ(h64->pageSizeKiB, 64u);
    EXPECT_FALSE(h64->anywhere);
}

TEST(Arm64Image, ALegacyImageGetsTheOldTextOffsetAndItsFileSize) {
    auto h = parseImageHeader(makeImage(0, 0, 0, 100 * KiB));
    ASSERT_TRUE(h) << h.error().describe();
    EXPECT_TRUE(h->legacy);
    EXPECT_EQ(h->textOffset, 0x80000u);
    EXPECT_EQ(h->imageSize, 100 * KiB);
}

TEST(Arm64Image, RefusesWhatIsNotALittleEndianImage) {
    auto img = makeImage(0, MiB, 0);
    img[0x38] = 'X';
    auto bad = parseImageHeader(img);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().what().find("magic"), std::string::npos) << bad.error().what();

    std::vector<uint8_t> gz(128, 0);
    gz[0] = 0x1f;
    gz[1] = 0x8b;
    auto g = parseImageHeader(gz);
    ASSERT_FALSE(g);
    EXPECT_NE(g.error().what().find("gzip"), std::string::npos) << g.error().what();

    auto be = parseImageHeader(makeImage(0, MiB, 1));
    ASSERT_FALSE(be);
    EXPECT_NE(be.error().what().find("big-endian"), std::string::npos) << be.error().what();

    auto shortFile = parseImageHeader(std::vector<uint8_t>(63, 0));
    ASSERT_FALSE(shortFile);
    EXPECT_NE(shortFile.error().what().find("shorter"), std::string::npos);

    auto small = parseImageHeader(makeImage(0, 4 * KiB, 0, 64 * KiB));  // image_size < file
    ASSERT_FALSE(small);
    EXPECT_NE(small.error().what().find("image_size"), std::string::npos);

    auto text = parseImageHeader(makeImage(3 * MiB, 4 * MiB, 0));
    ASSERT_FALSE(text);
    EXPECT_NE(text.error().what().find("text_offset"), std::string::npos);
}

TEST(Arm64Image, PlacesKernelInitrdAndDtbByTheBootRules) {
    auto h = parseImageHeader(makeImage(0x80000, 30 * MiB, kFlags4kAnywhere));
    ASSERT_TRUE(h);
    auto p = placeBoot(*h, 64 * KiB, kRam256, 10 * MiB + 123);
    ASSERT_TRUE(p) << p.error().describe();
    EXPECT_EQ(p->kernel, 0x4000'0000u + 0x80000);  // 2 MiB-aligned base + text_offset
    EXPECT_EQ(p->kernelSpan, (AddressRange{0x4008'0000, 30 * MiB}));
    // The DTB gets the last 2 MiB block of RAM.
    EXPECT_EQ(p->fdtSlot, (AddressRange{0x4000'0000 + 254 * MiB, 2 * MiB}));
    EXPECT_EQ(p->fdtSlot.base % (2 * MiB), 0u);
    ASSERT_TRUE(p->initrd);
    EXPECT_EQ(p->initrd->size, 10 * MiB + 123);
    EXPECT_EQ(p->initrd->base % (64 * KiB), 0u);
    EXPECT_LE(p->initrd->end(), p->fdtSlot.base);
    EXPECT_GE(p->initrd->base, p->kernelSpan.end());

    auto none = placeBoot(*h, 64 * KiB, kRam256, 0);
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->initrd);
}

TEST(Arm64Image, TheInitrdStaysInTheKernels32GiBWindow) {
    auto h = parseImageHeader(makeImage(0, 40 * MiB, kFlags4kAnywhere));
    ASSERT_TRUE(h);
    AddressRange big{0x4000'0000, 64 * GiB};
    auto p = placeBoot(*h, 64 * KiB, big, 100 * MiB);
    ASSERT_TRUE(p) << p.error().describe();
    // The window is [1 GiB, 33 GiB): the kernel's 1 GiB-aligned base + 32 GiB.
    EXPECT_EQ(p->fdtSlot.end(), 33 * GiB);
    EXPECT_LE(p->initrd->end(), 33 * GiB);
    EXPECT_GE(p->initrd->base, 1 * GiB);
}

TEST(Arm64Image, SaysWhatDoesNotFit) {
    auto huge = parseImageHeader(makeImage(0, 300 * MiB, 0));
    ASSERT_TRUE(huge);
    auto k = placeBoot(*huge, 64 * KiB, kRam256, 0);
    ASSERT_FALSE(k);
    EXPECT_NE(k.error().what().find("too large"), std::string::npos) << k.error().what();

    auto noDtbRoom = parseImageHeader(makeImage(0, 255 * MiB, 0));
    ASSERT_TRUE(noDtbRoom);
    auto d = placeBoot(*noDtbRoom, 64 * KiB, kRam256, 0);
    ASSERT_FALSE(d);
    EXPECT_NE(d.error().what().find("device tree"), std::string::npos) << d.error().what();

    auto h = parseImageHeader(makeImage(0, 30 * MiB, 0));
    ASSERT_TRUE(h);
    auto i = placeBoot(*h, 64 * KiB, kRam256, 230 * MiB);
    ASSERT_FALSE(i);
    EXPECT_NE(i.error().what().find("initrd"), std::string::npos) << i.error().what();
    // Just fitting: everything between the kernel's end and the DTB.
    EXPECT_TRUE(placeBoot(*h, 64 * KiB, kRam256, 224 * MiB));
}

TEST(Arm64Image, LoadImageCopiesKernelAndInitrdIntoGuestRam) {
    auto mem = memory::GuestMemory::create({kRam256}, {});
    ASSERT_TRUE(mem) << mem.error().describe();
    auto image = makeImage(0, 8 * MiB, kFlags4kAnywhere, 128 * KiB);
    std::vector<uint8_t> initrd(3 * MiB + 5);
    for (size_t i = 0; i < initrd.size(); ++i) initrd[i] = static_cast<uint8_t>(i * 7);
    auto l = loadImage(*mem, kRam256, image, initrd);
    ASSERT_TRUE(l) << l.error().describe();
    std::vector<uint8_t> back(image.size());
    ASSERT_TRUE(mem->read(l->placement.kernel, back));
    EXPECT_EQ(back, image);
    std::vector<uint8_t> backInitrd(initrd.size());
    ASSERT_TRUE(mem->read(l->placement.initrd->base, backInitrd));
    EXPECT_EQ(backInitrd, initrd);
}

// Debian's arm64 cloud kernel, when tests/integration/fetch-debian-kernel.sh --arch arm64 has
// fetched it (the arm64 bed's guest): a real header, placed in 256 MiB with a 2 MiB initrd.
TEST(Arm64Image, ParsesDebiansCloudKernel) {
    const char* home = std::getenv("HOME");
    std::string path = home ? std::string(home) + "/.cache/conduit/arm64-guest/current/Image" : "";
    FILE* f = path.empty() ? nullptr : std::fopen(path.c_str(), "rb");
    if (!f) GTEST_SKIP() << "no arm64 guest kernel at " << path;
    std::vector<uint8_t> image;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) image.insert(image.end(), buf, buf + n);
    std::fclose(f);
    auto h = parseImageHeader(image);
    ASSERT_TRUE(h) << h.error().describe();
    EXPECT_FALSE(h->legacy);
    EXPECT_GE(h->imageSize, image.size());
    EXPECT_EQ(h->pageSizeKiB, 4u);
    auto p = placeBoot(*h, image.size(), kRam256, 2 * MiB);
    ASSERT_TRUE(p) << p.error().describe();
    EXPECT_EQ(p->kernel, 0x4000'0000u + h->textOffset);
    std::printf("%s: %s\n", path.c_str(), h->describe().c_str());
}

}  // namespace
}  // namespace conduit::vmm::arm64
