// Passthrough on real KVM: the KVM implementations of the PCI device services (memslot mapper,
// MSI routes with irqfd masking, INTx resample irqfd) and a Machine assembled from a config with
// the simulated VFIO host.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>

#include <filesystem>
#include <fstream>

#include "kvm_test_util.h"
#include "tests/hostsim/sim_host.h"
#include "vmm/kvm_pci_platform.h"
#include "tests/hostsim/vmm_hosts.h"
#include "vmm/machine.h"

using namespace conduit;
using namespace conduit::vmm;

namespace {
bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}
}  // namespace

TEST(PassthroughKvm, MsiRouteMaskHoldsPendingAndUnmaskDelivers) {
    REQUIRE_KVM();
    vmm::test::TestVm t;
    t.init(true);
    auto vcpu = t.longModeVcpu();  // KVM_SIGNAL_MSI needs a vCPU to exist
    KvmMsiRouter router(*t.vm);
    auto r = router.createRoute({0xfee00000, 0x41}, true, "test");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    auto& route = **r;
    EXPECT_EQ(t.vm->routing().msiCount(), 1u);
    uint64_t one = 1;
    ASSERT_EQ(::write(route.eventFd(), &one, 8), 8);
    EXPECT_TRUE(route.pending()) << "masked: the irqfd is unbound, the eventfd holds the signal";
    auto um = route.setMasked(false);
    ASSERT_TRUE(um.ok()) << um.error().describe();
    // KVM consumes the count when the irqfd is bound again (it injects at once).
    for (int i = 0; i < 100 && readable(route.eventFd()); ++i) ::usleep(1000);
    EXPECT_FALSE(readable(route.eventFd()));
    EXPECT_FALSE(route.pending());
    ASSERT_TRUE(route.setMessage({0xfee00000, 0x42}).ok());
    EXPECT_EQ(t.vm->routing().msi(24)->data, 0x42u);
    r->reset();
    EXPECT_EQ(t.vm->routing().msiCount(), 0u);
}

TEST(PassthroughKvm, IntxRouteAndGuestMapper) {
    REQUIRE_KVM();
    vmm::test::TestVm t;
    t.init(true);
    KvmIntxRouter intx(*t.vm);
    auto route = intx.createRoute(18, "intx");
    ASSERT_TRUE(route.ok()) << route.error().describe();
    EXPECT_EQ((*route)->gsi(), 18u);
    EXPECT_FALSE(intx.createRoute(40, "bad").ok());
    KvmGuestMapper mapper(*t.vm);
    void* p = ::mmap(nullptr, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    const size_t before = t.vm->slotsInUse();
    {
        auto m = mapper.map(0xc0000000, 0x2000, p, "bar");
        ASSERT_TRUE(m.ok()) << m.error().describe();
        EXPECT_EQ(t.vm->slotsInUse(), before + 1);
    }
    EXPECT_EQ(t.vm->slotsInUse(), before);
    ::munmap(p, 0x2000);
}

TEST(PassthroughMachine, SimulatedHostDevicesOnBusZero) {
    REQUIRE_KVM();
    auto dir = std::filesystem::temp_directory_path() / ("conduit-pt-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::vector<uint8_t> spin = {0xeb, 0xfe};
    std::ofstream(dir / "p.bin", std::ios::binary).write(reinterpret_cast<const char*>(spin.data()), spin.size());
    const std::string json = R"({"memory": {"size_mib": 64}, "payload": {"path": "p.bin"}, "serial": {"output": "none"},
      "vfio_host": {"kind": "simulated", "devices": [{"bdf": "0000:01:00.0"}, {"bdf": "0000:02:00.0", "msix_vectors": 0}]},
      "devices": [{"type": "vfio-pci", "host": "0000:01:00.0", "backend": "iommufd", "slot": 4},
                  {"type": "vfio-pci", "host": "/dev/vfio/devices/vfio1", "backend": "auto"}]})";
    auto cfg = parseConfig(json, dir / "vm.json");
    ASSERT_TRUE(cfg.ok()) << cfg.error().describe();
    auto m = Machine::create(*cfg, hostsim::simulatedVfioHosts());
    ASSERT_TRUE(m.ok()) << m.error().describe();
    auto s = (*m)->stats()["passthrough"];
    EXPECT_EQ(s["host"], "simulated");
    ASSERT_EQ(s["devices"].size(), 2u);
    EXPECT_EQ(s["devices"][0]["guest"], "00:04.0");
    EXPECT_EQ(s["devices"][0]["backend"], "iommufd");
    EXPECT_EQ(s["devices"][1]["guest"], "00:01.0");
    EXPECT_EQ(s["devices"][1]["host"], "0000:02:00.0");
    // BARs placed by "firmware" inside the 32-bit window, decode still off.
    for (auto& d : s["devices"]) {
        for (auto& b : d["bars"]) {
            const uint64_t at = b["programmed"];
            EXPECT_GE(at, 0xc0000000u);
            EXPECT_LT(at, 0xe0000000u);
            EXPECT_EQ(at % b["size"].get<uint64_t>(), 0u);
            EXPECT_TRUE(b["address"].is_null());
        }
    }
    // Config space through the PCI root: the device is at 00:04.0.
    uint32_t id = 0;
    auto ecam = (*m)->layout().pciEcam().base;
    ASSERT_TRUE((*m)->mmioBus().read(ecam + (4 << 15), std::span<uint8_t>(reinterpret_cast<uint8_t*>(&id), 4)));
    EXPECT_EQ(id, 0x11e81234u);
    m->reset();
    std::filesystem::remove_all(dir);
}

TEST(PassthroughMachine, UnknownHostDeviceIsAClearError) {
    REQUIRE_KVM();
    auto dir = std::filesystem::temp_directory_path() / ("conduit-pt2-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "p.bin", std::ios::binary) << "\xeb\xfe";
    const std::string json = R"({"payload": {"path": "p.bin"}, "serial": {"output": "none"},
      "vfio_host": {"kind": "simulated", "devices": [{"bdf": "0000:01:00.0"}]},
      "devices": [{"type": "vfio-pci", "host": "0000:05:00.0"}]})";
    // The config check refuses it first (validate says what run would)...
    auto refused = parseConfig(json, dir / "vm.json");
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(refused.error().describe(), ::testing::HasSubstr("0000:05:00.0 is not a device of the simulated host"));
    // ...and a machine given such a config anyway (a library user) says so too.
    auto cfg = parseConfig(R"({"payload": {"path": "p.bin"}, "serial": {"output": "none"},
      "vfio_host": {"kind": "simulated", "devices": [{"bdf": "0000:01:00.0"}]},
      "devices": [{"type": "vfio-pci", "host": "0000:01:00.0"}]})", dir / "vm.json");
    ASSERT_TRUE(cfg.ok()) << cfg.error().describe();
    cfg->devices[0].vfioPci->host = cfg->devices[0].vfioPci->bdf = "0000:05:00.0";
    auto m = Machine::create(*cfg, hostsim::simulatedVfioHosts());
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(m.error().describe(), ::testing::HasSubstr("no PCI device 0000:05:00.0 on this simulated host"));
    std::filesystem::remove_all(dir);
}
