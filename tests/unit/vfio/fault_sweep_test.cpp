// Fault injection: every ioctl of a full bring-up is made to fail in turn, for both backends. Each
// failure must come back as a clean error naming the ioctl that failed, and after teardown nothing
// may be left: no fd, no mmap, no DMA mapping, no iommufd object.
#include <gtest/gtest.h>

#include "tests/hostsim/bringup.h"
#include "tests/hostsim/sim_host.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;

namespace {

constexpr const char* kBdf = "0000:00:03.0";

class FaultSweep : public ::testing::TestWithParam<BackendKind> {};

TEST_P(FaultSweep, EveryBringUpIoctlFailsCleanly) {
    size_t total;
    {
        SimHost host;
        host.addDevice({});
        BringUp up;
        auto r = bringUp(host, GetParam(), host.paths(), kBdf, up);
        ASSERT_TRUE(r.ok()) << r.error().describe();
        total = host.ioctlCount();
    }
    ASSERT_GT(total, 15u);
    std::set<std::string> covered;
    for (unsigned n = 1; n <= total; ++n) {
        SCOPED_TRACE("failing ioctl #" + std::to_string(n));
        SimHost host;
        host.addDevice({});
        host.failNthIoctl(n, EIO);
        {
            BringUp up;
            auto r = bringUp(host, GetParam(), host.paths(), kBdf, up);
            ASSERT_FALSE(r.ok());
            ASSERT_EQ(host.injected().size(), 1u);
            const auto& name = host.injected()[0].name;
            ASSERT_NE(name, "?");
            covered.insert(name);
            EXPECT_EQ(r.error().code(), EIO) << r.error().describe();
            EXPECT_NE(r.error().describe().find(name), std::string::npos)
                << "error does not name " << name << ": " << r.error().describe();
        }
        EXPECT_EQ(host.openFdCount(), 0u);
        EXPECT_EQ(host.mmapCount(), 0u);
        EXPECT_EQ(host.dmaMappingCount(), 0u);
        EXPECT_EQ(host.iommufdObjectCount(), 0u);
    }
    // The sweep reached the calls that matter for each backend.
    if (GetParam() == BackendKind::Type1) {
        for (auto n : {"VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_GROUP_GET_STATUS",
                       "VFIO_GROUP_SET_CONTAINER", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_DEVICE_FD", "VFIO_IOMMU_GET_INFO",
                       "VFIO_IOMMU_MAP_DMA"})
            EXPECT_TRUE(covered.count(n)) << n;
    } else {
        for (auto n : {"IOMMU_IOAS_ALLOC", "VFIO_DEVICE_BIND_IOMMUFD", "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                       "IOMMU_GET_HW_INFO", "IOMMU_IOAS_IOVA_RANGES", "IOMMU_IOAS_MAP"})
            EXPECT_TRUE(covered.count(n)) << n;
    }
    for (auto n : {"VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_IRQ_INFO",
                   "VFIO_DEVICE_SET_IRQS"})
        EXPECT_TRUE(covered.count(n)) << n;
}

TEST_P(FaultSweep, ByRequestNumberAndNthCall) {
    SimHost host;
    host.addDevice({});
    // The third REGION_INFO call fails (BAR2, which has a capability chain).
    host.failIoctl(VFIO_DEVICE_GET_REGION_INFO, ENOMEM, 3);
    {
        BringUp up;
        auto r = bringUp(host, GetParam(), host.paths(), kBdf, up);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code(), ENOMEM);
        EXPECT_NE(r.error().what().find("VFIO_DEVICE_GET_REGION_INFO"), std::string::npos) << r.error().describe();
        EXPECT_NE(r.error().what().find("BAR2"), std::string::npos) << r.error().describe();
    }
    EXPECT_EQ(host.openFdCount(), 0u);
    EXPECT_EQ(host.iommufdObjectCount(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, FaultSweep, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](auto& info) { return std::string(backendKindName(info.param)); });

}  // namespace
