// MSI device ids on the KVM side (devices/msi_message.h, vmm/irq_routing.h): an MSI's route and
// KVM_SIGNAL_MSI form carry KVM_MSI_VALID_DEVID and the id exactly when the VM uses device ids and
// the message has one; the table refuses a message without one when they are in use; x86 KVM
// does not use them (KVM_CAP_MSI_DEVID is arm64's with an ITS).
#include <gtest/gtest.h>

#include "kvm_test_util.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/irq_routing.h"

using namespace conduit;
using namespace conduit::vmm;

namespace {
const MsiMessage kWithId{0x0800'0040, 0x21, devices::pciRequesterId(0, 0x18)};
const MsiMessage kWithoutId{0x0800'0040, 0x22};
}  // namespace

TEST(GsiRouting, MsiRouteCarriesTheDeviceIdOnlyWhenTheVmUsesThemAndTheMessageHasOne) {
    auto e = msiRoutingEntry(30, kWithId, true);
    EXPECT_EQ(e.gsi, 30u);
    EXPECT_EQ(e.type, uint32_t(KVM_IRQ_ROUTING_MSI));
    EXPECT_EQ(e.flags, uint32_t(KVM_MSI_VALID_DEVID));
    EXPECT_EQ(e.u.msi.devid, 0x18u);
    EXPECT_EQ(e.u.msi.address_lo, 0x0800'0040u);
    EXPECT_EQ(e.u.msi.data, 0x21u);

    auto none = msiRoutingEntry(31, kWithoutId, true);
    EXPECT_EQ(none.flags, 0u);
    EXPECT_EQ(none.u.msi.devid, 0u);
    auto x86 = msiRoutingEntry(32, kWithId, false);
    EXPECT_EQ(x86.flags, 0u) << "a VM without device ids never gets the flag";
    EXPECT_EQ(x86.u.msi.devid, 0u);

    auto m = kvmMsi(kWithId, true);
    EXPECT_EQ(m.flags, uint32_t(KVM_MSI_VALID_DEVID));
    EXPECT_EQ(m.devid, 0x18u);
    EXPECT_EQ(m.data, 0x21u);
    EXPECT_EQ(kvmMsi(kWithoutId, true).flags, 0u);
    EXPECT_EQ(kvmMsi(kWithId, false).flags, 0u);
    EXPECT_EQ(kvmMsi(kWithId, false).devid, 0u);
}

// No KVM needed: the table's changes are held back by a deferral, so nothing is pushed to the
// (absent) VM until its end, which then fails.
TEST(GsiRouting, TableWithDeviceIdsRoutesThemAndRefusesMessagesWithout) {
    GsiRoutingTable table(-1, 64, IrqchipRoutes{{}, 24});
    table.setDeviceIds(true);
    auto hold = table.defer();
    auto gsi = table.addMsi(kWithId);
    ASSERT_TRUE(gsi.ok()) << gsi.error().describe();
    auto missing = table.addMsi(kWithoutId);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code(), EINVAL);
    EXPECT_NE(missing.error().describe().find("KVM_CAP_MSI_DEVID"), std::string::npos) << missing.error().describe();
    EXPECT_FALSE(table.updateMsi(*gsi, kWithoutId).ok()) << "nor may an update drop it";
    EXPECT_EQ(table.msi(*gsi), kWithId);
    auto find = [&](uint32_t g) {
        for (auto& e : table.entries())
            if (e.gsi == g) return e;
        ADD_FAILURE() << "no entry for GSI " << g;
        return kvm_irq_routing_entry{};
    };
    EXPECT_EQ(find(*gsi).flags, uint32_t(KVM_MSI_VALID_DEVID));
    EXPECT_EQ(find(*gsi).u.msi.devid, 0x18u);
    table.setDeviceIds(false);
    EXPECT_EQ(find(*gsi).flags, 0u);
    EXPECT_TRUE(table.addMsi(kWithoutId).ok()) << "without device ids a message needs none";
    EXPECT_FALSE(hold.end().ok()) << "the push at the end has no VM";
}

// x86 KVM answers KVM_CAP_MSI_DEVID with 0: the table learns that at its first MSI route and the
// routes KVM gets carry no device id, though the messages (from a PCI function) have one.
TEST(GsiRouting, X86KvmTakesNoDeviceIds) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    ASSERT_TRUE(x86::createIrqchip(*vm).ok());
    EXPECT_EQ(vm->checkExtension(KVM_CAP_MSI_DEVID).value(), 0);
    auto& table = vm->routing();
    auto gsi = table.addMsi({0xfee00000, 0x41, devices::pciRequesterId(0, 0x18)});
    ASSERT_TRUE(gsi.ok()) << gsi.error().describe();
    EXPECT_FALSE(table.deviceIds());
    for (auto& e : table.entries())
        if (e.gsi == *gsi) {
            EXPECT_EQ(e.flags, 0u);
        }
    EXPECT_TRUE(table.addMsi({0xfee00000, 0x42}).ok()) << "a message without a device id is fine too";
}
