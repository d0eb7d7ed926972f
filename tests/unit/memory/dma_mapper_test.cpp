// DmaMapper: guest RAM in IOVA space at IOVA == GPA through either backend, with every check made
// before anything is mapped, kept in step with hot add/remove, and all unmapped on teardown.
#include "memory/dma_mapper.h"

#include <gtest/gtest.h>

#include "memory/guest_memory.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

using namespace conduit;
using namespace conduit::memory;
using namespace conduit::hostsim;

namespace {

constexpr const char* kBdf = "0000:00:03.0";

struct Fixture {
    explicit Fixture(vfio::BackendKind kind, SimHostConfig cfg = {}) : host(std::move(cfg)) {
        host.addDevice({});
        backend = vfio::openBackend(host, kind, host.paths()).value();
        device = backend->openDevice(kBdf).value();
    }
    SimHost host;
    std::unique_ptr<vfio::VfioBackend> backend;
    std::unique_ptr<vfio::VfioDevice> device;
};

class DmaMapperTest : public ::testing::TestWithParam<vfio::BackendKind> {};

TEST_P(DmaMapperTest, GuestRamIsDmaAbleAtItsGpa) {
    Fixture f(GetParam());
    auto mem = GuestMemory::create({{0, 16 * MiB}, {4 * GiB, 8 * MiB}}, {}).value();
    {
        DmaMapper mapper(*f.backend);
        ASSERT_TRUE(mem.addListener(&mapper).ok());
        EXPECT_EQ(mapper.mappingCount(), 2u);  // one mapping per region
        EXPECT_EQ(f.host.dmaMappingCount(), 2u);
        // The device writes at a GPA; the guest sees it there.
        uint32_t v = 0xabcd1234;
        ASSERT_TRUE(f.host.dmaWrite(*f.host.device(kBdf), 4 * GiB + 0x1000, &v, 4));
        EXPECT_EQ(mem.readObj<uint32_t>(4 * GiB + 0x1000).value(), 0xabcd1234u);
        // Hot add and remove follow.
        ASSERT_TRUE(mem.addRegion("hot", {64 * MiB, 2 * MiB}).ok());
        EXPECT_EQ(f.host.dmaMappingCount(), 3u);
        EXPECT_TRUE(f.host.dmaWrite(*f.host.device(kBdf), 64 * MiB, &v, 4));
        ASSERT_TRUE(mem.removeRegion(64 * MiB).ok());
        EXPECT_EQ(f.host.dmaMappingCount(), 2u);
        EXPECT_FALSE(f.host.dmaWrite(*f.host.device(kBdf), 64 * MiB, &v, 4));
        mem.removeListener(&mapper);
        EXPECT_EQ(f.host.dmaMappingCount(), 0u);
    }
    {
        // Used without GuestMemory's bookkeeping, the destructor still unmaps what it mapped.
        DmaMapper mapper(*f.backend);
        for (auto& r : mem.regions()) ASSERT_TRUE(mapper.regionAdded(*r).ok());
        EXPECT_EQ(f.host.dmaMappingCount(), 2u);
    }
    EXPECT_EQ(f.host.dmaMappingCount(), 0u);
}

TEST_P(DmaMapperTest, ReservedRangeCollisionIsRefusedWithTheRangeNamed) {
    SimHostConfig cfg;
    cfg.reserved.push_back({0x800000, 0x8fffff, "direct"});
    Fixture f(GetParam(), cfg);
    auto mem = GuestMemory::create({{0, 16 * MiB}}, {}).value();
    DmaMapper mapper(*f.backend);
    auto r = mem.addListener(&mapper);
    ASSERT_FALSE(r.ok());
    // type1 reports the range outside its valid IOVA list; iommufd likewise; either way the
    // reserved region (or the hole it leaves) is named.
    const auto& msg = r.error().what();
    EXPECT_TRUE(msg.find("0x800000") != std::string::npos || msg.find("0x7fffff") != std::string::npos) << msg;
    EXPECT_NE(msg.find("ram0"), std::string::npos) << msg;
    EXPECT_EQ(f.host.dmaMappingCount(), 0u);
}

TEST_P(DmaMapperTest, ValidRangesHoldButReservedRegionStillRefused) {
    // A "direct-relaxable" region is not carved out of the valid ranges, but the mapper refuses it.
    SimHostConfig cfg;
    cfg.reserved.push_back({0x100000, 0x1fffff, "direct-relaxable"});
    Fixture f(GetParam(), cfg);
    auto mem = GuestMemory::create({{0, 16 * MiB}}, {}).value();
    DmaMapper mapper(*f.backend);
    auto r = mem.addListener(&mapper);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("collides with reserved IOVA range [0x100000, 0x1fffff] (direct-relaxable) of "
                                    "IOMMU group 7"),
              std::string::npos)
        << r.error().what();
    EXPECT_EQ(r.error().code(), EADDRINUSE);
}

TEST_P(DmaMapperTest, BeyondTheApertureIsRefused) {
    SimHostConfig cfg;
    cfg.apertureLast = (1ull << 32) - 1;  // a 32-bit IOMMU
    Fixture f(GetParam(), cfg);
    auto mem = GuestMemory::create({{0, 16 * MiB}, {4 * GiB, 2 * MiB}}, {}).value();
    DmaMapper mapper(*f.backend);
    auto r = mem.addListener(&mapper);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("ram1"), std::string::npos) << r.error().what();
    EXPECT_EQ(f.host.dmaMappingCount(), 0u);  // ram0 was rolled back
}

INSTANTIATE_TEST_SUITE_P(Backends, DmaMapperTest,
                         ::testing::Values(vfio::BackendKind::Type1, vfio::BackendKind::Iommufd),
                         [](auto& info) { return std::string(vfio::backendKindName(info.param)); });

TEST(DmaMapperType1, DmaAvailIsCheckedBeforeMapping) {
    SimHostConfig cfg;
    cfg.dmaEntryLimit = 1;
    Fixture f(vfio::BackendKind::Type1, cfg);
    auto mem = GuestMemory::create({{0, 16 * MiB}, {32 * MiB, 16 * MiB}}, {}).value();
    DmaMapper mapper(*f.backend);
    auto r = mem.addListener(&mapper);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOSPC);
    EXPECT_NE(r.error().what().find("dma_avail 0"), std::string::npos) << r.error().what();
    EXPECT_EQ(f.host.dmaMappingCount(), 0u);
}

}  // namespace
