// The x86_64 platform's guest-physical map (vmm/arch/x86_64/layout.h).
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/platform.h"

#include <gtest/gtest.h>

namespace conduit::vmm::x86 {
using memory::AddressRange;
using memory::GiB;
using memory::MiB;
namespace {

TEST(AddressLayout, SmallRamIsOneLowRegionAndWindowsFollowTheMap) {
    auto l = addressLayout(256 * MiB);
    ASSERT_TRUE(l.ok()) << l.error().describe();
    ASSERT_EQ(l->ramRanges().size(), 1u);
    EXPECT_EQ(l->ramRanges()[0], (AddressRange{0, 256 * MiB}));
    EXPECT_EQ(l->mmio32Window(), (AddressRange{0xC000'0000, 512 * MiB}));
    EXPECT_EQ(l->pciEcam(), (AddressRange{0xE000'0000, 256 * MiB}));
    EXPECT_EQ(l->mmio64Window().base, 4 * GiB);  // nothing above 4 GiB: the 64-bit window starts there
    EXPECT_TRUE(l->isRam(0x100000, 4096));
    EXPECT_FALSE(l->isRam(256 * MiB - 8, 16));  // straddles the end of RAM
}

TEST(AddressLayout, LargeRamSplitsAroundTheHoleAndNothingOverlaps) {
    auto l = addressLayout(5 * GiB);
    ASSERT_TRUE(l.ok());
    ASSERT_EQ(l->ramRanges().size(), 2u);
    EXPECT_EQ(l->ramRanges()[0], (AddressRange{0, 3 * GiB}));
    EXPECT_EQ(l->ramRanges()[1], (AddressRange{4 * GiB, 2 * GiB}));
    EXPECT_EQ(l->mmio64Window().base, 6 * GiB);
    EXPECT_EQ(l->end(), 6 * GiB + kMmio64Size);
    auto all = l->describe();
    for (size_t i = 1; i < all.size(); ++i) {
        SCOPED_TRACE(all[i].name);
        EXPECT_LE(all[i - 1].range.end(), all[i].range.base) << all[i - 1].name << " overlaps " << all[i].name;
    }
    // The MSI window is never RAM, whatever the size.
    EXPECT_FALSE(l->isRam(kMsiWindowBase, 4));
    // ... and it is a reserved IOVA range, as data generic code can act on.
    ASSERT_EQ(l->reservedIova().size(), 1u);
    EXPECT_EQ(l->reservedIova()[0].range, (AddressRange{kMsiWindowBase, kMsiWindowSize}));
}

TEST(AddressLayout, RefusesImpossibleSizes) {
    auto tiny = addressLayout(1 * MiB);
    ASSERT_FALSE(tiny.ok());
    EXPECT_EQ(tiny.error().what(), "memory size 1 MiB is outside the supported 2..1048576 MiB");
    auto odd = addressLayout(64 * MiB + 100);
    ASSERT_FALSE(odd.ok());
    EXPECT_EQ(odd.error().what(), "memory size 0x4000064 is not a multiple of 4 KiB");
}

}  // namespace
}  // namespace conduit::vmm::x86

// The virtual IOMMU (config "viommu") is an arm64 device: x86 refuses it, saying why, before any
// host object exists (Passthrough asks the platform first).
TEST(X86Platform, HasNoVirtualIommuAndSaysWhy) {
    auto platform = conduit::vmm::arch::hostPlatform();
    auto slot = platform->viommuSlot(conduit::vmm::ViommuConfig::Type::SmmuV3);
    ASSERT_FALSE(slot.ok());
    EXPECT_EQ(slot.error().code(), EOPNOTSUPP);
    EXPECT_NE(slot.error().describe().find("no IORT/DMAR/IVRS"), std::string::npos) << slot.error().describe();
}
