// Kvm and Vm objects against the real /dev/kvm: capabilities, irqchip/PIT order, memslots through
// the GuestMemory listener, GSI routing, irqfd, ioeventfd registration, MSI, the KVM VFIO device.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kvm_test_util.h"
#include "vmm/kvm_interrupt_line.h"

using namespace conduit;
using namespace conduit::vmm;
using namespace conduit::vmm::test;
using ::testing::HasSubstr;

TEST(Kvm, OpensChecksCapabilitiesAndReadsCpuid) {
    REQUIRE_KVM();
    auto kvm = Kvm::open();
    ASSERT_TRUE(kvm.ok()) << kvm.error().describe();
    EXPECT_GT(kvm->checkExtension(KVM_CAP_IRQCHIP).value(), 0);
    EXPECT_TRUE(kvm->requireExtension(KVM_CAP_IRQFD).ok());
    EXPECT_GE(kvm->vcpuMmapSize(), sizeof(kvm_run));
    EXPECT_GT(kvm->maxMemslots(), 2u);
    for (unsigned cap : x86::requiredCapabilities()) EXPECT_TRUE(kvm->requireExtension(cap).ok()) << capabilityName(cap);
    auto cpuid = x86::supportedCpuid(*kvm);
    ASSERT_TRUE(cpuid.ok()) << cpuid.error().describe();
    ASSERT_FALSE(cpuid->empty());
    bool leaf0 = false;
    for (auto& e : *cpuid) leaf0 |= e.function == 0;
    EXPECT_TRUE(leaf0) << "KVM_GET_SUPPORTED_CPUID has no leaf 0";
}

TEST(Kvm, MissingCapabilityIsNamed) {
    REQUIRE_KVM();
    auto kvm = Kvm::open();
    ASSERT_TRUE(kvm.ok());
    auto r = kvm->requireExtension(99999);  // no such capability
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().describe(), HasSubstr("KVM_CAP_99999"));
    EXPECT_THAT(r.error().describe(), HasSubstr("not supported by /dev/kvm"));
    EXPECT_EQ(capabilityName(KVM_CAP_SIGNAL_MSI), "KVM_CAP_SIGNAL_MSI");
}

TEST(Kvm, OpenFailureNamesThePath) {
    auto kvm = Kvm::open("/nonexistent/kvm");
    ASSERT_FALSE(kvm.ok());
    EXPECT_THAT(kvm.error().describe(), HasSubstr("open /nonexistent/kvm"));
    EXPECT_EQ(kvm.error().code(), ENOENT);
}

TEST(Vm, PitNeedsIrqchipFirst) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    auto early = x86::createPit2(*vm);
    ASSERT_FALSE(early.ok());
    EXPECT_THAT(early.error().describe(), HasSubstr("irqchip must be created first"));
    EXPECT_FALSE(vm->hasIrqchip());

    ASSERT_TRUE(x86::setIdentityMapAddr(*vm).ok());
    ASSERT_TRUE(x86::setTssAddr(*vm).ok());
    auto chip = x86::createIrqchip(*vm);
    ASSERT_TRUE(chip.ok()) << chip.error().describe();
    EXPECT_TRUE(vm->hasIrqchip());
    EXPECT_TRUE(vm->routing().isIrqchipGsi(23));
    EXPECT_FALSE(vm->routing().isIrqchipGsi(24));
    EXPECT_EQ(vm->routing().firstMsiGsi(), 24u);
    auto pit = x86::createPit2(*vm);
    ASSERT_TRUE(pit.ok()) << pit.error().describe();
    // A kernel refusal names the ioctl, the object and errno.
    auto again = x86::createPit2(*vm);
    ASSERT_FALSE(again.ok());
    EXPECT_THAT(again.error().describe(), HasSubstr("KVM_CREATE_PIT2 on vm"));
    EXPECT_NE(again.error().code(), 0);
}

namespace {
struct RecordingListener : memory::GuestMemoryListener {
    std::vector<std::string> events;
    Result<void> regionAdded(const memory::GuestRegion& r) override {
        events.push_back("add " + r.name());
        return success();
    }
    void regionRemoved(const memory::GuestRegion& r) override { events.push_back("remove " + r.name()); }
};
}  // namespace

TEST(Vm, MemslotsFollowGuestMemory) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    auto mem = memory::GuestMemory::create({{0, 2 * memory::MiB}, {4 * memory::MiB, 2 * memory::MiB}}, {}).value();
    ASSERT_TRUE(mem.addListener(vm.get()).ok());
    auto slots = vm->regionSlots();
    ASSERT_EQ(slots.size(), 2u);
    EXPECT_EQ(slots[0].gpa, 0u);
    EXPECT_EQ(slots[1].gpa, 4 * memory::MiB);
    EXPECT_NE(slots[0].slot, slots[1].slot);

    ASSERT_TRUE(mem.addRegion("hot", {16 * memory::MiB, 2 * memory::MiB}).ok());
    EXPECT_EQ(vm->regionSlots().size(), 3u);
    EXPECT_EQ(vm->slotsInUse(), 3u);
    ASSERT_TRUE(mem.removeRegion(16 * memory::MiB).ok());
    EXPECT_EQ(vm->regionSlots().size(), 2u);
    EXPECT_EQ(vm->slotsInUse(), 2u);

    // A freed slot number is reused.
    uint32_t freed = vm->regionSlots()[1].slot;
    ASSERT_TRUE(mem.removeRegion(4 * memory::MiB).ok());
    auto again = mem.addRegion("again", {8 * memory::MiB, 2 * memory::MiB});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(vm->regionSlots().back().slot, freed);

    mem.removeListener(vm.get());
    EXPECT_EQ(vm->slotsInUse(), 0u);
}

TEST(Vm, RefusedMemslotRollsBackTheRegion) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    memory::GuestMemory mem({});
    RecordingListener before;
    ASSERT_TRUE(mem.addListener(&before).ok());
    ASSERT_TRUE(mem.addListener(vm.get()).ok());
    ASSERT_TRUE(mem.addRegion("ram0", {0, 2 * memory::MiB}).ok());

    // A slot KVM already has at 8 MiB makes the region's slot overlap: KVM refuses it.
    std::vector<uint8_t> backing(2 * memory::MiB + 4096);
    void* host = reinterpret_cast<void*>(memory::alignUp(reinterpret_cast<uint64_t>(backing.data()), 4096));
    auto manual = vm->mapMemory(8 * memory::MiB, 1 * memory::MiB, host, "manual");
    ASSERT_TRUE(manual.ok()) << manual.error().describe();
    EXPECT_EQ(vm->slotsInUse(), 2u);

    auto r = mem.addRegion("clash", {8 * memory::MiB, 2 * memory::MiB});
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().describe(), HasSubstr("KVM_SET_USER_MEMORY_REGION on vm"));
    EXPECT_THAT(r.error().describe(), HasSubstr("clash"));
    EXPECT_EQ(mem.regions().size(), 1u);
    EXPECT_EQ(vm->regionSlots().size(), 1u);
    EXPECT_EQ(vm->slotsInUse(), 2u);  // the failed slot number went back to the pool
    EXPECT_EQ(before.events, (std::vector<std::string>{"add ram0", "add clash", "remove clash"}));

    manual->reset();
    EXPECT_EQ(vm->slotsInUse(), 1u);
    mem.removeListener(vm.get());
    mem.removeListener(&before);
}

TEST(GsiRouting, KeepsIrqchipEntriesAndManagesMsiRoutes) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    ASSERT_TRUE(x86::createIrqchip(*vm).ok());
    auto& table = vm->routing();

    auto countType = [&](uint32_t type, uint32_t chip) {
        size_t n = 0;
        for (auto& e : table.entries()) n += e.type == type && (type != KVM_IRQ_ROUTING_IRQCHIP || e.u.irqchip.irqchip == chip);
        return n;
    };
    EXPECT_EQ(countType(KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC), 24u);
    EXPECT_EQ(countType(KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_PIC_MASTER), 8u);
    EXPECT_EQ(countType(KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_PIC_SLAVE), 8u);

    auto a = table.addMsi({0xfee00000, 0x41});
    ASSERT_TRUE(a.ok()) << a.error().describe();
    auto b = table.addMsi({0xfee01000, 0x42});
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(*a, 24u);
    EXPECT_EQ(*b, 25u);
    bool found = false;
    for (auto& e : table.entries())
        if (e.gsi == 25) {
            found = true;
            EXPECT_EQ(e.type, uint32_t(KVM_IRQ_ROUTING_MSI));
            EXPECT_EQ(e.u.msi.address_lo, 0xfee01000u);
            EXPECT_EQ(e.u.msi.data, 0x42u);
        }
    EXPECT_TRUE(found);

    ASSERT_TRUE(table.updateMsi(24, {0xfee00000, 0x51}).ok());
    EXPECT_EQ(table.msi(24)->data, 0x51u);
    ASSERT_TRUE(table.removeMsi(24).ok());
    EXPECT_FALSE(table.msi(24).has_value());
    EXPECT_EQ(table.addMsi({0xfee00000, 0x61}).value(), 24u);  // lowest free GSI again
    auto bad = table.updateMsi(99, {0xfee00000, 0});
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code(), ENOENT);

    // The irqchip routes survived the pushes: KVM_IRQ_LINE on an ISA GSI still works.
    EXPECT_TRUE(vm->irqLine(4, true).ok());
    EXPECT_TRUE(vm->irqLine(4, false).ok());
}

// A device enabling many vectors at once pushes the table once (KVM copies all of it per push).
TEST(GsiRouting, DeferralPushesOnceWhenTheLastOneEnds) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    ASSERT_TRUE(x86::createIrqchip(*vm).ok());
    auto& table = vm->routing();
    const uint64_t start = table.pushes();
    ASSERT_TRUE(table.addMsi({0xfee00000, 0x30}).ok());
    EXPECT_EQ(table.pushes(), start + 1) << "without a deferral every change is pushed";
    {
        auto outer = table.defer();
        {
            auto inner = table.defer();
            for (uint32_t v = 0; v < 64; ++v) ASSERT_TRUE(table.addMsi({0xfee00000, 0x40 + v}).ok());
            ASSERT_TRUE(table.updateMsi(25, {0xfee00000, 0x99}).ok());
            ASSERT_TRUE(table.removeMsi(26).ok());
            EXPECT_TRUE(inner.end().ok());
        }
        EXPECT_EQ(table.pushes(), start + 1) << "nothing pushed while a deferral is alive";
        EXPECT_EQ(table.msiCount(), 64u) << "the table itself changed at once";
        EXPECT_EQ(table.msi(25)->data, 0x99u);
        EXPECT_TRUE(outer.end().ok());
        EXPECT_EQ(table.pushes(), start + 2) << "one push for all 66 changes";
        EXPECT_TRUE(outer.end().ok()) << "ending twice is harmless";
    }
    EXPECT_EQ(table.pushes(), start + 2);
    { auto idle = table.defer(); }
    EXPECT_EQ(table.pushes(), start + 2) << "a deferral without changes pushes nothing";
    EXPECT_TRUE(vm->irqLine(4, true).ok()) << "the irqchip routes survived the deferred push";
    EXPECT_TRUE(vm->irqLine(4, false).ok());
}

TEST(GsiRouting, AllocationIsBounded) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    ASSERT_TRUE(x86::createIrqchip(*vm).ok());
    GsiRoutingTable small(vm->fd(), 26, x86::irqchipRoutes());
    EXPECT_TRUE(small.addMsi({0xfee00000, 1}).ok());
    EXPECT_TRUE(small.addMsi({0xfee00000, 2}).ok());
    auto full = small.addMsi({0xfee00000, 3});
    ASSERT_FALSE(full.ok());
    EXPECT_EQ(full.error().code(), ENOSPC);
    EXPECT_EQ(small.msiCount(), 2u);
}

TEST(IrqFd, RegistersAndUnregisters) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    ASSERT_TRUE(x86::createIrqchip(*vm).ok());
    uint32_t gsi = vm->routing().addMsi({0xfee00000, 0x40}).value();
    auto ev = EventFd::create().value();
    {
        auto fd = vm->registerIrqfd(ev, gsi);
        ASSERT_TRUE(fd.ok()) << fd.error().describe();
        // KVM refuses the same eventfd twice: proof the first registration is live.
        auto dup = vm->registerIrqfd(ev, gsi);
        ASSERT_FALSE(dup.ok());
        EXPECT_THAT(dup.error().describe(), HasSubstr("KVM_IRQFD on vm"));
        EXPECT_EQ(dup.error().code(), EBUSY);
        // Moving keeps one registration.
        IrqFd moved = std::move(fd).value();
        EXPECT_TRUE(moved.valid());
    }
    // Unregistered by the destructor: the eventfd can be bound again.
    auto again = vm->registerIrqfd(ev, gsi);
    EXPECT_TRUE(again.ok()) << again.error().describe();
}

TEST(IrqFd, ResampleOnIoapicPin) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    ASSERT_TRUE(x86::createIrqchip(*vm).ok());
    auto ev = EventFd::create().value();
    auto resample = EventFd::create().value();
    auto fd = vm->registerResampleIrqfd(ev, 10, resample);
    ASSERT_TRUE(fd.ok()) << fd.error().describe();
    fd->reset();
    EXPECT_FALSE(fd->valid());
    EXPECT_TRUE(vm->registerResampleIrqfd(ev, 10, resample).ok());
}

TEST(IoEventFd, RegistersAndUnregisters) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    auto ev = EventFd::create().value();
    {
        auto io = vm->registerIoeventfd(ev, IoSpace::Pio, 0x600, 4, 0x1234);
        ASSERT_TRUE(io.ok()) << io.error().describe();
        auto dup = vm->registerIoeventfd(ev, IoSpace::Pio, 0x600, 4, 0x1234);
        ASSERT_FALSE(dup.ok());
        EXPECT_THAT(dup.error().describe(), HasSubstr("KVM_IOEVENTFD on vm (PIO 0x600 len 4 datamatch 0x1234)"));
        EXPECT_EQ(dup.error().code(), EEXIST);
        auto mmio = vm->registerIoeventfd(ev, IoSpace::Mmio, 0xd0000000, 4);
        ASSERT_TRUE(mmio.ok()) << mmio.error().describe();
    }
    EXPECT_TRUE(vm->registerIoeventfd(ev, IoSpace::Pio, 0x600, 4, 0x1234).ok());
}

TEST(Vm, SignalMsiAfterVcpuExists) {
    REQUIRE_KVM();
    TestVm t;
    t.init(true);
    auto vcpu = t.longModeVcpu();
    ASSERT_TRUE(vcpu);
    auto r = t.vm->signalMsi({0xfee00000, 0x40});
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_GE(*r, 0);
    // KvmInterruptLine drives KVM_IRQ_LINE; an out-of-range GSI is logged, not fatal.
    KvmInterruptLine line(*t.vm, 4);
    line.setLevel(true);
    line.setLevel(false);
    EXPECT_EQ(line.gsi(), 4u);
}

TEST(Vm, VfioPseudoDevice) {
    REQUIRE_KVM();
    auto kvm = Kvm::open().value();
    auto vm = Vm::create(kvm).value();
    auto dev = vm->createVfioDevice();
    ASSERT_TRUE(dev.ok()) << dev.error().describe();
    EXPECT_GE(dev->fd(), 0);
    // Not a VFIO group: KVM refuses, and the message says what was attempted.
    auto ev = EventFd::create().value();
    auto r = dev->addGroup(ev.fd());
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.error().describe(), HasSubstr("KVM_SET_DEVICE_ATTR on kvm-vfio device (KVM_DEV_VFIO_GROUP_ADD fd"));
    EXPECT_NE(r.error().code(), 0);
}

TEST(Vcpu, StateRoundTrips) {
    REQUIRE_KVM();
    TestVm t;
    t.init(true);
    auto vcpu = t.longModeVcpu(0, 0x123456);
    ASSERT_TRUE(vcpu);
    EXPECT_EQ(vcpu->name(), "vcpu0");
    EXPECT_EQ(x86::getRegs(*vcpu)->rip, 0x123456u);
    EXPECT_EQ(x86::getSregs(*vcpu)->cr3, kPml4);
    EXPECT_EQ(vcpu->getMpState()->mp_state, uint32_t(KVM_MP_STATE_RUNNABLE));
    auto lapic = x86::getLapic(*vcpu);
    ASSERT_TRUE(lapic.ok());
    EXPECT_TRUE(x86::setLapic(*vcpu, *lapic).ok());
    auto fpu = x86::getFpu(*vcpu);
    ASSERT_TRUE(fpu.ok());
    EXPECT_TRUE(x86::setFpu(*vcpu, *fpu).ok());
    // The AP starts uninitialized with the in-kernel irqchip (until made runnable).
    auto ap = t.vm->createVcpu(1);
    ASSERT_TRUE(ap.ok());
    EXPECT_EQ((*ap)->getMpState()->mp_state, uint32_t(KVM_MP_STATE_UNINITIALIZED));
    auto dupId = t.vm->createVcpu(1);
    ASSERT_FALSE(dupId.ok());
    EXPECT_THAT(dupId.error().describe(), HasSubstr("KVM_CREATE_VCPU on vm (id 1)"));
}
