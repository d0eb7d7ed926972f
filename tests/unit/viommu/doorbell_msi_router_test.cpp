// DoorbellMsiRouter (vmm/doorbell_msi_router.h): a device behind the vSMMU programs stage-1 IOVAs
// as MSI addresses; KVM gets the ITS doorbell instead, with the data and device id unchanged.
#include <gtest/gtest.h>

#include "tests/common/passthrough_fakes.h"
#include "vmm/doorbell_msi_router.h"

using namespace conduit;

TEST(DoorbellMsiRouter, RoutesEveryProgrammedAddressToTheDoorbell) {
    test::FakeMsiRouter inner;
    vmm::DoorbellMsiRouter router(inner, 0x08000040);
    // Linux's first MSI page of a DMA domain: an IOVA near the top of the 32-bit space.
    auto route = router.createRoute({0xfffff040, 0x21, 0x18}, false, "vector 0").value();
    ASSERT_EQ(inner.live.size(), 1u);
    EXPECT_EQ(inner.live[0]->msg, (devices::MsiMessage{0x08000040, 0x21, 0x18}));
    ASSERT_TRUE(route->setMessage({0xffffe040, 0x22, 0x18}).ok());
    EXPECT_EQ(inner.live[0]->msg, (devices::MsiMessage{0x08000040, 0x22, 0x18}));
    // Not programmed yet: nothing to send anywhere.
    ASSERT_TRUE(route->setMessage({0, 0, 0x18}).ok());
    EXPECT_EQ(inner.live[0]->msg.address, 0u);
    ASSERT_TRUE(route->setMasked(true).ok());
    EXPECT_TRUE(inner.live[0]->isMasked);
    EXPECT_EQ(route->eventFd(), inner.live[0]->eventFd());
    route.reset();
    EXPECT_TRUE(inner.live.empty());
}
