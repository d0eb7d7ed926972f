// bench (f): what a passed-through device's MSI-X costs the VMM as its table grows. A device with a
// 2,048-entry table whose guest uses 8 vectors, against a device with an 8-entry table using all
// 8 (the baseline), in the same run on the same KVM. Each round builds a VM with an in-kernel
// irqchip and the device afresh (the simulated VFIO host, iommufd backend; KVM's real GSI routing
// and irqfds) and times what Linux's MSI-X setup does to the device: MSI-X on with the function
// masked, the 8 entries written and unmasked one by one, then the function unmasked. Printed per
// case: the median time, and what the host and KVM were asked for (host interrupt vectors, KVM
// routes, KVM_SET_GSI_ROUTING pushes, VFIO_DEVICE_SET_IRQS calls). A third case is the same
// 2,048-entry device on a host without dynamic MSI-X (NORESIZE set), where every vector must be
// allocated when MSI-X goes on: the cost Conduit paid everywhere before it allocated on unmask.
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <vector>

#include <CLI/CLI.hpp>
#include "base/log.h"

#include "base/fd_limit.h"
#include "base/log.h"
#include "devices/bus.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/kvm.h"
#include "vmm/kvm_pci_platform.h"
#include "vmm/vm.h"

using namespace conduit;

namespace {

constexpr const char* kBdf = "0000:01:00.0";
constexpr uint64_t kBar0 = 0xc0000000, kBar2 = 0xc0100000;
constexpr uint32_t kMsixCap = 0x60;  // the simulated device's MSI-X capability
constexpr unsigned kInUse = 8;

template <typename T>
T must(Result<T> r, const char* what) {
    if (!r) throw std::runtime_error(fmt::format("{}: {}", what, r.error().describe()));
    return std::move(r).value();
}

struct Case {
    const char* name;
    unsigned tableSize;
    bool dynamicMsix;
};

struct Cost {
    double us = 0;
    unsigned hostVectors = 0, routes = 0;
    uint64_t pushes = 0, setIrqs = 0;
};

// One round: a fresh VM and device, the guest's MSI-X setup timed.
Cost round(vmm::Kvm& kvm, const Case& c) {
    auto vm = must(vmm::Vm::create(kvm), "VM");
    if (auto r = vmm::x86::createIrqchip(*vm); !r) throw std::runtime_error(r.error().describe());
    hostsim::SimHostConfig hc;
    hc.dynamicMsix = c.dynamicMsix;
    hostsim::SimHost sim(hc);
    hostsim::SimDeviceConfig dc;
    dc.bdf = kBdf;
    dc.msixVectors = c.tableSize;
    // Table and PBA in the top 64 KiB of the 1 MiB memory BAR (2,048 entries take 32 KiB).
    dc.msixTableOffset = 0xf0000;
    dc.msixPbaOffset = 0xf8000;
    sim.addDevice(dc);
    auto backend = must(vfio::openBackend(sim, vfio::BackendKind::Iommufd, sim.paths()), "iommufd backend");
    devices::Bus mmio("mmio"), pio("pio");
    vmm::KvmGuestMapper mapper(*vm);
    vmm::KvmMsiRouter msi(*vm);
    vmm::KvmIntxRouter intx(*vm);
    // No P2P (dma): the bench is about interrupts.
    const devices::vfio_pci::VfioPciPlatform platform{
        .mmio = &mmio, .pio = &pio, .mapper = &mapper, .msi = &msi, .intx = &intx, .intxGsi = 17};
    auto device = must(devices::vfio_pci::VfioPciDevice::create(must(backend->openDevice(kBdf), kBdf), platform, "bench"),
                       "device");
    auto cfgWrite = [&](uint32_t off, uint32_t v, size_t n) {
        device->configWrite(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), n));
    };
    auto mmioWrite = [&](uint64_t a, uint32_t v) {
        if (!mmio.write(a, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4)))
            throw std::runtime_error(fmt::format("no device at {:#x}", a));
    };
    cfgWrite(PCI_BASE_ADDRESS_0, kBar0, 4);
    cfgWrite(PCI_BASE_ADDRESS_2, kBar2, 4);
    cfgWrite(PCI_BASE_ADDRESS_3, 0, 4);
    cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);

    auto& routing = vm->routing();
    const uint64_t pushes0 = routing.pushes(), setIrqs0 = device->stats().setIrqsCalls;
    const uint64_t table = kBar2 + dc.msixTableOffset;
    const auto t0 = std::chrono::steady_clock::now();
    cfgWrite(kMsixCap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);
    for (unsigned v = 0; v < kInUse; ++v) {
        mmioWrite(table + 16 * v, 0xfee00000);
        mmioWrite(table + 16 * v + 4, 0);
        mmioWrite(table + 16 * v + 8, 0x40 + v);
        mmioWrite(table + 16 * v + 12, 0);  // unmask: the driver's request_irq()
    }
    cfgWrite(kMsixCap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    const auto t1 = std::chrono::steady_clock::now();
    Cost cost;
    cost.us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    cost.hostVectors = sim.device(kBdf)->allocatedVectors();
    cost.routes = static_cast<unsigned>(routing.msiCount());
    cost.pushes = routing.pushes() - pushes0;
    cost.setIrqs = device->stats().setIrqsCalls - setIrqs0;
    if (device->stats().vectors < kInUse) throw std::runtime_error(fmt::format("{}: only {} vectors in use", c.name, device->stats().vectors));
    device.reset();
    return cost;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench (f): MSI-X cost against table size: a 2,048-entry table with 8 vectors in use vs an 8-entry table"};
    int rounds = 15;
    app.add_option("--rounds", rounds, "rounds per case (the median is printed)")->check(CLI::Range(1, 1000));
    CLI11_PARSE(app, argc, argv);
    log::setLevel("warn");
    // The simulated host holds a duplicate of every eventfd it is given (the kernel holds a
    // reference instead), so the NORESIZE case needs twice 2,048 fds: as root, more than the hard
    // limit the machine set; otherwise what the hard limit allows.
    rlimit l{65536, 65536};
    if (::setrlimit(RLIMIT_NOFILE, &l) != 0)
        if (auto r = raiseFdLimit(); !r) std::fprintf(stderr, "bench_msix_table: %s\n", r.error().describe().c_str());
    try {
        auto kvm = must(vmm::Kvm::open(), "/dev/kvm");
        const std::vector<Case> cases = {
            {"8-entry table, 8 in use (baseline)", kInUse, true},
            {"2,048-entry table, 8 in use", 2048, true},
            {"2,048-entry table, host without dynamic MSI-X", 2048, false},
        };
        std::printf("bench (f): MSI-X setup as Linux does it (enable masked, 8 entries unmasked, function unmasked), "
                    "median of %d rounds\n",
                    rounds);
        std::printf("  %-48s %10s %7s %12s %8s %9s %8s\n", "case", "time", "ratio", "host vectors", "routes",
                    "GSI pushes", "SET_IRQS");
        // One unmeasured round of each (first-touch costs), then the cases in turn, round by round,
        // so that a slow spell of the machine falls on all of them alike.
        for (auto& c : cases) (void)round(kvm, c);
        std::vector<std::vector<Cost>> costs(cases.size());
        for (int i = 0; i < rounds; ++i)
            for (size_t k = 0; k < cases.size(); ++k) costs[k].push_back(round(kvm, cases[k]));
        double base = 0;
        for (size_t k = 0; k < cases.size(); ++k) {
            const Case& c = cases[k];
            std::sort(costs[k].begin(), costs[k].end(), [](const Cost& a, const Cost& b) { return a.us < b.us; });
            const Cost& m = costs[k][costs[k].size() / 2];
            if (base == 0) base = m.us;
            std::printf("  %-48s %8.0f us %6.2fx %12u %8u %9llu %8llu\n", c.name, m.us, m.us / base, m.hostVectors, m.routes,
                        static_cast<unsigned long long>(m.pushes), static_cast<unsigned long long>(m.setIrqs));
        }
        std::printf("  goal: the 2,048-entry table with dynamic MSI-X costs about what the 8-entry one does (ratio ~1x, "
                    "the same host vectors, routes and pushes)\n");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_msix_table: %s\n", e.what());
        return 1;
    }
    return 0;
}
