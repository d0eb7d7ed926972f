#include "vmm/arch/arm64/layout.h"

#include <gtest/gtest.h>

namespace conduit::vmm::arm64 {
namespace {

using memory::AddressRange;

TEST(Arm64Layout, PlacesTheItsTranslaterFrameAtTheHostMsiDoorbell) {
    auto l = Layout::create(256 * MiB, 2);
    ASSERT_TRUE(l) << l.error().describe();
    EXPECT_EQ(l->gicIts(), (AddressRange{0x07FF'0000, 128 * KiB}));
    // GITS_TRANSLATER is at offset 0x40 of the ITS's second 64 KiB frame.
    EXPECT_EQ(l->gicIts().base + 64 * KiB, 0x0800'0000u);
    EXPECT_EQ(l->msiWindow(), (AddressRange{0x0800'0000, 1 * MiB}));
}

TEST(Arm64Layout, NothingButTheItsFrameInTheMsiWindowAndNeverRam) {
    for (uint64_t ram : {2 * MiB, 256 * MiB, 3 * GiB + 64 * KiB, 64 * GiB}) {
        auto l = Layout::create(ram, 4);
        ASSERT_TRUE(l) << l.error().describe();
        EXPECT_FALSE(l->isRam(0x0800'0000, 1));
        for (auto& r : l->describe()) {
            if (!r.range.overlaps(l->msiWindow())) continue;
            EXPECT_TRUE(r.name == "gic-its" || r.name == "msi-reserved") << r.name << " " << r.range.toString();
            EXPECT_NE(r.kind, memory::RangeKind::Ram);
        }
    }
}

TEST(Arm64Layout, TheMapHasTheBriefsAddressesAndNoOverlaps) {
    auto l = Layout::create(3 * GiB + 64 * KiB, 8);
    ASSERT_TRUE(l) << l.error().describe();
    EXPECT_EQ(l->gicDist(), (AddressRange{0x0700'0000, 64 * KiB}));
    EXPECT_EQ(l->gicRedist(), (AddressRange{0x0710'0000, 8 * 128 * KiB}));
    EXPECT_EQ(l->uart().base, 0x0900'0000u);
    EXPECT_EQ(l->exitDevice().base, 0x0901'0000u);
    EXPECT_EQ(l->mmio32Window(), (AddressRange{0x1000'0000, 512 * MiB}));
    EXPECT_EQ(l->pciEcam(), (AddressRange{0x3000'0000, 256 * MiB}));
    ASSERT_EQ(l->ramRanges().size(), 1u);
    EXPECT_EQ(l->ramRanges()[0], (AddressRange{0x4000'0000, 3 * GiB + 64 * KiB}));
    // 64-bit window: the first 1 GiB boundary at or above the end of RAM (4 GiB + 64 KiB -> 5 GiB).
    EXPECT_EQ(l->mmio64Window(), (AddressRange{5 * GiB, 64 * GiB}));
    EXPECT_EQ(l->end(), 69 * GiB);
    auto small = Layout::create(256 * MiB, 1);
    ASSERT_TRUE(small);
    EXPECT_EQ(small->mmio64Window().base, 4 * GiB);  // never below 4 GiB

    auto all = l->describe();
    for (size_t i = 1; i < all.size(); ++i) {
        EXPECT_LE(all[i - 1].range.base, all[i].range.base);
        EXPECT_LE(all[i - 1].range.end(), all[i].range.base) << all[i - 1].name << " overlaps " << all[i].name;
    }
}

TEST(Arm64Layout, RedistributorsForTheMostVcpusStayBelowTheIts) {
    EXPECT_EQ(Layout::kMaxVcpus, 112u);
    auto l = Layout::create(256 * MiB, Layout::kMaxVcpus);
    ASSERT_TRUE(l) << l.error().describe();
    EXPECT_EQ(l->gicRedist().end(), 0x07F0'0000u);
    EXPECT_LE(l->gicRedist().end(), l->gicIts().base);
}

TEST(Arm64Layout, RefusesWhatDoesNotFit) {
    auto tooMany = Layout::create(256 * MiB, Layout::kMaxVcpus + 1);
    ASSERT_FALSE(tooMany);
    EXPECT_NE(tooMany.error().what().find("113 vCPUs"), std::string::npos) << tooMany.error().what();
    EXPECT_FALSE(Layout::create(256 * MiB, 0));
    auto odd = Layout::create(256 * MiB + 4 * KiB, 1);
    ASSERT_FALSE(odd);
    EXPECT_NE(odd.error().what().find("64 KiB"), std::string::npos);
    EXPECT_FALSE(Layout::create(1 * MiB, 1));
    EXPECT_FALSE(Layout::create(Layout::kMaxRam + GiB, 1));
}

TEST(Arm64Layout, EachSlotHasItsOwnIntxSpi) {
    EXPECT_EQ(Layout::intxSpi(0), Layout::kPciIntxSpiBase);
    EXPECT_EQ(Layout::intxSpi(1), Layout::kPciIntxSpiBase + 1);
    EXPECT_EQ(Layout::intxSpi(16), Layout::kPciIntxSpiBase);  // 16 SPIs, shared from slot 16 on
    for (unsigned slot = 0; slot < 32; ++slot) {
        uint32_t spi = Layout::intxSpi(slot);
        EXPECT_GE(spi, Layout::kPciIntxSpiBase);
        EXPECT_LT(spi, Layout::kPciIntxSpiBase + Layout::kPciIntxSpiCount);
        EXPECT_LT(spi, Layout::kSpiCount);
        EXPECT_NE(spi, Layout::kUartSpi);
    }
}

}  // namespace
}  // namespace conduit::vmm::arm64
