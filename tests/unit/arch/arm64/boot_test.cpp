#include "vmm/arch/arm64/boot.h"

#include <libfdt.h>

#include <cstring>

#include <gtest/gtest.h>

namespace conduit::vmm::arm64 {
namespace {

std::vector<uint8_t> syntheticImage(uint64_t imageSize, size_t fileSize) {
    std::vector<uint8_t> b(fileSize, 0x5a);
    std::memset(b.data(), 0, 64);
    for (int i = 0; i < 8; ++i) b[16 + i] = static_cast<uint8_t>(imageSize >> (8 * i));
    b[24] = 1 << 1;  // 4K pages, little-endian
    std::memcpy(b.data() + 0x38, "ARM\x64", 4);
    return b;
}

TEST(Arm64Boot, LoadsKernelInitrdAndATreeThatNamesThem) {
    auto layout = Layout::create(128 * MiB, 2);
    ASSERT_TRUE(layout);
    auto mem = memory::GuestMemory::create(layout->ramRanges(), {});
    ASSERT_TRUE(mem) << mem.error().describe();
    auto image = syntheticImage(20 * MiB, 256 * KiB);
    std::vector<uint8_t> initrd(1 * MiB, 0x77);
    LinuxBootInput in{image, initrd, "console=ttyS0 quiet", {0x8000'0000, 0x8000'0001}};
    auto plan = loadLinux(*mem, *layout, in);
    ASSERT_TRUE(plan) << plan.error().describe();
    EXPECT_EQ(plan->entry, Layout::kRamBase);
    EXPECT_EQ(plan->fdt, Layout::kRamBase + 126 * MiB);
    EXPECT_NE(plan->description.find("initrd 1048576 bytes"), std::string::npos) << plan->description;

    // The tree in guest memory: valid, and its chosen node points at the initrd that was written.
    std::vector<uint8_t> fdt(plan->fdtSize);
    ASSERT_TRUE(mem->read(plan->fdt, fdt));
    ASSERT_EQ(fdt_check_header(fdt.data()), 0);
    int chosen = fdt_path_offset(fdt.data(), "/chosen");
    ASSERT_GE(chosen, 0);
    const char* bootargs = static_cast<const char*>(fdt_getprop(fdt.data(), chosen, "bootargs", nullptr));
    EXPECT_STREQ(bootargs, "console=ttyS0 quiet");
    // FDT properties are only 4-byte aligned: fdt64_ld reads the 64-bit value without an unaligned load.
    auto* start = static_cast<const fdt64_t*>(fdt_getprop(fdt.data(), chosen, "linux,initrd-start", nullptr));
    ASSERT_NE(start, nullptr);
    uint8_t first = 0;
    ASSERT_TRUE(mem->read(fdt64_ld(start), std::span<uint8_t>(&first, 1)));
    EXPECT_EQ(first, 0x77);
}

TEST(Arm64Boot, RefusesAMismatchedCpuList) {
    auto layout = Layout::create(128 * MiB, 2);
    ASSERT_TRUE(layout);
    auto mem = memory::GuestMemory::create(layout->ramRanges(), {});
    ASSERT_TRUE(mem);
    auto image = syntheticImage(4 * MiB, 64 * KiB);
    auto plan = loadLinux(*mem, *layout, LinuxBootInput{image, {}, "", {0x8000'0000}});
    ASSERT_FALSE(plan);
    EXPECT_NE(plan.error().what().find("1 MPIDRs for 2 vCPUs"), std::string::npos) << plan.error().what();
}

}  // namespace
}  // namespace conduit::vmm::arm64
