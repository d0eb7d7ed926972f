// AddressLayout as data: what create() accepts and refuses, whatever the architecture.
#include "memory/address_layout.h"

#include <gtest/gtest.h>

namespace conduit::memory {
namespace {

AddressLayout::Spec twoRamRanges() {
    AddressLayout::Spec s;
    s.ramBytes = 3 * GiB;
    s.ram = {{"ram-a", RangeKind::Ram, {1 * GiB, 1 * GiB}}, {"ram-b", RangeKind::Ram, {4 * GiB, 2 * GiB}}};
    s.mmio32.range = {0x1000'0000, 256 * MiB};
    s.ecam.range = {0x3000'0000, 256 * MiB};
    s.mmio64.range = {8 * GiB, 8 * GiB};
    s.platform = {{"gic", RangeKind::Platform, {0x0800'0000, 64 * KiB}}};
    s.reservedIova = {{"doorbell", RangeKind::ReservedIova, {0x0800'0000, 4 * KiB}}};
    return s;
}

TEST(AddressLayoutSpec, AcceptsAConsistentMapAndReportsItSorted) {
    auto l = AddressLayout::create(twoRamRanges());
    ASSERT_TRUE(l.ok()) << l.error().describe();
    EXPECT_EQ(l->ramRanges().size(), 2u);
    EXPECT_EQ(l->end(), 16 * GiB);
    EXPECT_TRUE(l->isRam(4 * GiB, 4096));
    EXPECT_FALSE(l->isRam(2 * GiB, 4096));
    auto all = l->describe();
    ASSERT_EQ(all.size(), 6u);  // reserved IOVA ranges are not part of the map
    EXPECT_EQ(all.front().name, "gic");
    EXPECT_EQ(all.back().name, "pci-mmio64");
}

TEST(AddressLayoutSpec, RefusesOverlapsRamMismatchAndReservedIovaOverRam) {
    auto overlap = twoRamRanges();
    overlap.ecam.range = {0x1800'0000, 256 * MiB};  // inside the 32-bit window
    auto r = AddressLayout::create(overlap);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(),
              "address layout: pci-mmio32 [0x10000000, 0x20000000) overlaps pci-ecam [0x18000000, 0x28000000)");

    auto mismatch = twoRamRanges();
    mismatch.ramBytes = 2 * GiB;
    EXPECT_FALSE(AddressLayout::create(mismatch).ok());

    auto iova = twoRamRanges();
    iova.reservedIova.push_back({"bad", RangeKind::ReservedIova, {1 * GiB, 4 * KiB}});
    r = AddressLayout::create(iova);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("reserved IOVA range bad"), std::string::npos) << r.error().what();
}

TEST(AddressLayoutSpec, RefusesImpossibleRamSizes) {
    auto tiny = AddressLayout::checkRamSize(1 * MiB);
    ASSERT_FALSE(tiny.ok());
    EXPECT_EQ(tiny.error().what(), "memory size 1 MiB is outside the supported 2..1048576 MiB");
}

}  // namespace
}  // namespace conduit::memory
