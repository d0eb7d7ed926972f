// bench (d): MSI-X delivery latency of a passed-through device, host eventfd write -> guest
// handler, as a ratio to KVM_SIGNAL_MSI of the same message in the same run; and (e) the VMM exits
// each kind of guest operation on a passed-through device costs. bench/README.md has the figures.
//
// One vmm::Machine, assembled from a config written here: 1 vCPU, the simulated VFIO host with one
// edu function passed through (iommufd backend by default), the guest payload bench_msix
// (tests/guest/payloads/bench_msix.c). The bench adds two devices to the Machine's PIO bus:
//   0x520  markers: the payload writes one before and after each phase of K operations; the device
//          snapshots Machine::stats() (exit counts per reason, per device) on the vCPU thread;
//   0xe0   the first instruction of the payload's MSI-X handler is `out %al, $0xe0`; the device
//          takes the host clock (CLOCK_MONOTONIC) when that exit reaches it.
// Latency: the injector thread takes the clock, then either
//   eventfd : makes the simulated edu raise MSI-X vector 0 (register 0x70). The device model
//             writes the eventfd VFIO was given, which is the irqfd of the vector's KVM GSI route,
//             exactly what vfio-pci's interrupt handler does for a real device's MSI-X message;
//   signal  : KVM_SIGNAL_MSI with the address/data of that same GSI route (read back from the
//             VM's routing table, so both paths deliver the identical message);
// and spins until the handler's `out` has been seen. Both paths alternate (order flipped every
// pair), N of each, with a pause between injections so the guest is back waiting each time: in
// `sti; hlt` (default: the vCPU thread sleeps in KVM, as an idle guest's does) or spinning at CPL3
// with IF=1 (--wait spin). The vCPU thread and the injector are pinned to different CPUs (kvm-here REPORT.md G9).
// What the latency includes on both paths: interrupt injection and vCPU kick, the guest's entry
// into its ring-0 handler (emulated on this nested host), one PIO exit to userspace and the bus
// dispatch to the timestamp device. The difference between the paths is the eventfd + irqfd
// (and, for `eventfd`, the edu model's register write: a few function calls and one write(2)).
//
// Thread safety of the injection: the simulated host is single-threaded (Passthrough serialises
// the vCPU threads' calls with a lock this bench cannot reach). The bench touches the sim device
// only while the guest is spinning at CPL3 in the latency phase, when no vCPU thread is inside it.
#include <sched.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include "base/log.h"

#include "bench/bench_util.h"
#include "devices/bus.h"
#include "devices/bus_device.h"
#include "tests/hostsim/sim_host.h"
#include "vmm/config.h"
#include "vmm/machine.h"

using namespace conduit;
using namespace conduit::bench;

namespace {

// Shared with tests/guest/payloads/bench_msix.c.
constexpr uint16_t kMarkPort = 0x520;
constexpr uint16_t kIrqPort = 0xe0;
constexpr uint32_t kVector = 0x50;
constexpr unsigned kOps = 1000;  // BENCH_OPS
enum Mark : uint32_t {
    kStart = 1, kMmapRead, kMmapWrite, kTrapRead, kTrapWrite, kMask, kToggle, kEndOps, kReady, kFail = 0xff
};
constexpr const char* kDeviceBdf = "0000:01:00.0";
constexpr uint64_t kEduFireVector = 0x70;  // simulated edu: fire MSI/MSI-X vector N

// Port 0xe0: the handler's first act. Records when, and how many.
class IrqStampDevice : public devices::BusDevice {
public:
    std::string name() const override { return "bench-irq@0xe0"; }
    void read(uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0, data.size()); }
    void write(uint64_t, std::span<const uint8_t>) override {
        lastNs.store(nowNs(), std::memory_order_relaxed);
        count.fetch_add(1, std::memory_order_release);
    }
    std::atomic<int64_t> lastNs{0};
    std::atomic<uint64_t> count{0};
};

// Port 0x520: phase markers; snapshots the Machine's stats at each.
class MarkDevice : public devices::BusDevice {
public:
    MarkDevice(vmm::Machine& m, int vcpuCpu, uint32_t waitMode) : machine_(m), vcpuCpu_(vcpuCpu), waitMode_(waitMode) {}
    std::string name() const override { return "bench-mark@0x520"; }
    // The payload asks how to wait in the latency phase: 0 spin at CPL3, 1 hlt.
    void read(uint64_t, std::span<uint8_t> data) override {
        std::memset(data.data(), 0, data.size());
        std::memcpy(data.data(), &waitMode_, std::min(data.size(), sizeof waitMode_));
    }
    void write(uint64_t, std::span<const uint8_t> data) override {
        uint32_t v = 0;
        std::memcpy(&v, data.data(), std::min(data.size(), sizeof v));
        if (v == kStart && vcpuCpu_ >= 0) pinnedOk = pinToCpu(vcpuCpu_);  // this is the vCPU thread
        nlohmann::json s = machine_.stats();
        std::lock_guard lock(mutex_);
        snaps[v] = std::move(s);
        last = v;
        cv_.notify_all();
    }
    // Waits until marker `v` (or kFail) arrived; false on timeout.
    bool waitFor(uint32_t v, std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return snaps.count(v) || snaps.count(kFail); }) && snaps.count(v);
    }
    nlohmann::json snap(uint32_t v) {
        std::lock_guard lock(mutex_);
        return snaps.at(v);
    }
    std::atomic<bool> pinnedOk{false};

private:
    vmm::Machine& machine_;
    int vcpuCpu_;
    uint32_t waitMode_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<uint32_t, nlohmann::json> snaps;
    uint32_t last = 0;
};

uint64_t num(const nlohmann::json& j, std::initializer_list<const char*> path) {
    const nlohmann::json* at = &j;
    for (const char* k : path) {
        if (!at->is_object() || !at->contains(k)) return 0;
        at = &(*at)[k];
    }
    return at->is_number() ? at->get<uint64_t>() : 0;
}

const nlohmann::json* device(const nlohmann::json& stats) {
    const auto& pt = stats["passthrough"];
    if (!pt.is_object() || !pt.contains("devices")) return nullptr;
    for (const auto& d : pt["devices"])
        if (d.value("host", "") == kDeviceBdf) return &d;
    return nullptr;
}

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    if (v.empty()) return 0;
    size_t i = size_t(p * double(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench (d)+(e): MSI-X delivery latency (eventfd vs KVM_SIGNAL_MSI) and exits per guest operation "
                 "on a passed-through device"};
    std::string payload;
    std::string backend = "iommufd";
    int n = 300;
    int gapUs = 500;
    int vcpuCpu = -1, injectCpu = 0;
    std::string wait = "hlt";
    app.add_option("--payload", payload, "bench_msix.bin (tests/guest)")->required()->check(CLI::ExistingFile);
    app.add_option("--backend", backend, "VFIO backend of the passed-through edu")->check(CLI::IsMember({"type1", "iommufd"}));
    app.add_option("-n,--samples", n, "interrupts per path")->check(CLI::Range(10, 100000));
    app.add_option("--gap-us", gapUs, "pause between injections (guest back at CPL3)")->check(CLI::Range(50, 1000000));
    app.add_option("--vcpu-cpu", vcpuCpu, "CPU for the vCPU thread (-1: the last CPU, -2: no pinning)");
    app.add_option("--inject-cpu", injectCpu, "CPU for the injecting thread (-2: no pinning)");
    app.add_option("--wait", wait, "how the guest waits for the interrupt: hlt (vCPU thread asleep in KVM, as an "
                                   "idle guest) or spin (at CPL3 with IF=1, vCPU thread always running)")
        ->check(CLI::IsMember({"hlt", "spin"}));
    CLI11_PARSE(app, argc, argv);
    log::setLevel("warn");

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (vcpuCpu == -1) vcpuCpu = int(ncpu - 1);
    if (vcpuCpu == injectCpu && vcpuCpu >= 0)
        std::fprintf(stderr, "bench_msix: warning: vCPU and injector pinned to the same CPU %d\n", vcpuCpu);

    try {
        // ---- the Machine ----
        const std::string json = fmt::format(
            R"({{"vcpus": 1, "memory": {{"size_mib": 256}},
                "payload": {{"path": "{}", "load_address": "0x100000", "mode": "long64"}},
                "serial": {{"output": "stdout", "input": "none"}}, "exit_device": {{"enabled": true}},
                "vfio_host": {{"kind": "simulated", "devices": [{{"bdf": "{}", "model": "edu"}}]}},
                "devices": [{{"type": "vfio-pci", "host": "{}", "backend": "{}"}}]}})",
            std::filesystem::absolute(payload).string(), kDeviceBdf, kDeviceBdf, backend);
        auto cfg = vmm::parseConfig(json, std::filesystem::current_path() / "bench_msix.json");
        if (!cfg) fail("config: " + cfg.error().describe());
        auto created = vmm::Machine::create(*cfg);
        if (!created) fail("Machine::create: " + created.error().describe());
        vmm::Machine& m = **created;
        auto stamp = std::make_shared<IrqStampDevice>();
        auto marks = std::make_shared<MarkDevice>(m, vcpuCpu >= 0 ? vcpuCpu : -1, wait == "hlt" ? 1u : 0u);
        if (auto r = m.pioBus().insert(stamp, kIrqPort, 1); !r) fail("bus insert 0xe0: " + r.error().describe());
        if (auto r = m.pioBus().insert(marks, kMarkPort, 4); !r) fail("bus insert 0x520: " + r.error().describe());
        hostsim::SimHost* sim = m.passthrough().simHost();
        hostsim::SimDevice* edu = sim ? sim->device(kDeviceBdf) : nullptr;
        if (!edu) fail("the simulated host has no edu at " + std::string(kDeviceBdf));

        bool injectPinned = injectCpu >= 0 && pinToCpu(injectCpu);  // before run(): the vCPU thread re-pins itself
        Result<int> runResult = 0;
        std::atomic<bool> runDone{false};
        std::thread runner([&] {
            runResult = m.run();
            runDone = true;
        });
        struct Stopper {
            vmm::Machine& m;
            std::thread& t;
            ~Stopper() {
                m.requestStop();
                if (t.joinable()) t.join();
            }
        } stopper{m, runner};

        // ---- (e) exits per operation: the payload drives the phases ----
        for (int s = 0; !marks->waitFor(kReady, std::chrono::seconds(1)); ++s) {
            if (runDone || s >= 120)
                fail(fmt::format("the payload did not reach its latency phase (see its serial output above){}",
                                 !runDone ? ""
                                 : runResult ? fmt::format("; the VM exited with {}", *runResult)
                                             : "; the VM stopped: " + runResult.error().describe()));
        }
        struct Phase {
            Mark end;
            const char* what;
            unsigned ops;
            const char* goal;
        };
        const Phase phases[] = {
            {kMmapRead, "mmapped BAR read (memslot)", kOps, "0"},
            {kMmapWrite, "mmapped BAR write (memslot)", kOps, "0"},
            {kTrapRead, "trapped BAR0 read (pread on the device fd)", kOps, "1"},
            {kTrapWrite, "trapped BAR0 write (pwrite)", kOps, "1"},
            {kMask, "MSI-X table write, mask already set", kOps, "1"},
            {kToggle, "MSI-X table write, mask/unmask (route change)", 2 * kOps, "1"},
        };
        // Printed after (d), whose order in the output matches bench/README.md.
        std::string exitsTable = fmt::format(
            "(e) VMM exits per guest operation on a passed-through edu ({} backend, simulated host), "
            "{} operations per phase, from the guest at CPL3\n",
            backend, kOps);
        exitsTable += fmt::format("    {:<48} {:>10} {:>10} {:>8}  {}\n", "operation", "exits", "MMIO", "per op", "goal");
        nlohmann::json prev = marks->snap(kStart);
        for (const auto& p : phases) {
            nlohmann::json cur = marks->snap(p.end);
            // The closing marker's own `out` is one IO exit.
            int64_t total = int64_t(num(cur, {"total_exits"})) - int64_t(num(prev, {"total_exits"})) - 1;
            int64_t mmio = int64_t(num(cur, {"exits", "MMIO"})) - int64_t(num(prev, {"exits", "MMIO"}));
            exitsTable += fmt::format("    {:<48} {:>10} {:>10} {:>8.3f}  {}\n", p.what, total, mmio,
                                      double(total) / p.ops, p.goal);
            prev = std::move(cur);
        }
        nlohmann::json ready = marks->snap(kReady);
        const nlohmann::json* devReady = device(ready);
        uint64_t maskChanges = devReady ? num(*devReady, {"route_mask_changes"}) : 0;
        uint64_t tableWrites = devReady ? num(*devReady, {"msix_table_writes"}) : 0;
        uint64_t setIrqs = devReady ? num(*devReady, {"set_irqs_calls"}) : 0;

        // ---- (d) latency ----
        // The route KVM holds for vector 0: the message KVM_SIGNAL_MSI sends too.
        std::optional<vmm::MsiMessage> msg;
        uint32_t routeGsi = 0;
        for (uint32_t gsi = m.vm().routing().firstMsiGsi(); gsi < 4096 && !msg; ++gsi)
            if (auto r = m.vm().routing().msi(gsi); r && (r->data & 0xff) == kVector) {
                msg = *r;
                routeGsi = gsi;
            }
        if (!msg) fail(fmt::format("no MSI route with vector {:#x} in the VM's routing table", kVector));

        std::vector<double> viaEventfd, viaSignal, pairRatio;
        auto inject = [&](bool eventfd) -> double {
            uint64_t before = stamp->count.load(std::memory_order_acquire);
            int64_t t0 = nowNs();
            if (eventfd) {
                edu->regWrite(kEduFireVector, 0, 4);
            } else {
                auto r = m.vm().signalMsi(*msg);
                if (!r) fail("KVM_SIGNAL_MSI: " + r.error().describe());
                if (*r <= 0) fail("KVM_SIGNAL_MSI: the guest did not accept the message");
            }
            int64_t deadline = t0 + 2'000'000'000;
            while (stamp->count.load(std::memory_order_acquire) == before) {
                if (nowNs() > deadline) fail(eventfd ? "eventfd path: no interrupt within 2 s" : "KVM_SIGNAL_MSI: no interrupt within 2 s");
                _mm_pause();
            }
            if (stamp->count.load() != before + 1) fail("more than one interrupt per injection");
            return double(stamp->lastNs.load(std::memory_order_relaxed) - t0);
        };
        auto gap = [&] { std::this_thread::sleep_for(std::chrono::microseconds(gapUs)); };
        for (int w = 0; w < 10; ++w) {  // warm-up, unmeasured
            inject(w & 1);
            gap();
        }
        uint64_t stampsBefore = stamp->count.load();
        nlohmann::json before = m.stats();
        const nlohmann::json* devBefore = device(before);
        uint64_t sigBefore = devBefore ? num(*devBefore, {"sim_interrupts_delivered"}) : 0;
        for (int i = 0; i < n; ++i) {
            double e = 0, s = 0;
            bool eventfdFirst = (i & 1) == 0;
            for (int k = 0; k < 2; ++k) {
                bool useEventfd = (k == 0) == eventfdFirst;
                double t = inject(useEventfd);
                (useEventfd ? e : s) = t;
                gap();
            }
            viaEventfd.push_back(e);
            viaSignal.push_back(s);
            pairRatio.push_back(e / s);
        }
        nlohmann::json after = m.stats();
        uint64_t stamps = stamp->count.load() - stampsBefore;
        const nlohmann::json* devAfter = device(after);
        uint64_t sigAfter = devAfter ? num(*devAfter, {"sim_interrupts_delivered"}) : 0;

        double me = median(viaEventfd), ms = median(viaSignal);
        std::printf("(d) MSI-X delivery latency, host -> first instruction of the guest handler (its `out` "
                    "reaching the VMM), N=%d per path interleaved, %d us apart, guest waits by %s, vCPU thread %s, "
                    "injector %s\n",
                    n, gapUs, wait == "hlt" ? "hlt" : "spinning at CPL3", marks->pinnedOk ? fmt::format("on CPU {}", vcpuCpu).c_str() : "not pinned",
                    injectPinned ? fmt::format("on CPU {}", injectCpu).c_str() : "not pinned");
        std::printf("    message: GSI %u, address %#llx data %#x (vector 0 of the edu's MSI-X table)\n", routeGsi,
                    (unsigned long long)msg->address, msg->data);
        std::printf("    %-44s median %8.2f us   p90 %8.2f us   [%.2f .. %.2f]\n",
                    "eventfd -> KVM irqfd -> guest (VFIO path)", me / 1e3, percentile(viaEventfd, 0.9) / 1e3,
                    *std::min_element(viaEventfd.begin(), viaEventfd.end()) / 1e3,
                    *std::max_element(viaEventfd.begin(), viaEventfd.end()) / 1e3);
        std::printf("    %-44s median %8.2f us   p90 %8.2f us   [%.2f .. %.2f]\n", "KVM_SIGNAL_MSI -> guest (baseline)",
                    ms / 1e3, percentile(viaSignal, 0.9) / 1e3,
                    *std::min_element(viaSignal.begin(), viaSignal.end()) / 1e3,
                    *std::max_element(viaSignal.begin(), viaSignal.end()) / 1e3);
        std::printf("    ratio eventfd / KVM_SIGNAL_MSI = %.3fx median, %.3fx p90 (median of per-pair ratios %.3fx)"
                    "   goal: ~1x\n",
                    me / ms, percentile(viaEventfd, 0.9) / percentile(viaSignal, 0.9), median(pairRatio));

        // Exits during the latency phase other than the handlers' timestamp `out`s.
        int64_t total = int64_t(num(after, {"total_exits"})) - int64_t(num(before, {"total_exits"}));
        std::printf("    exits during the measured phase: %lld for %llu interrupts; besides the timestamp `out` "
                    "(1 per interrupt, the bench's own probe): %lld  ->  %.3f per MSI-X delivery   goal: 0\n",
                    (long long)total, (unsigned long long)stamps, (long long)(total - int64_t(stamps)),
                    double(total - int64_t(stamps)) / double(stamps));
        std::printf("    the edu signalled its eventfd %llu times for the %d eventfd-path interrupts "
                    "(VFIO_DEVICE_SET_IRQS calls so far: %llu)\n",
                    (unsigned long long)(sigAfter - sigBefore), n, (unsigned long long)setIrqs);
        std::printf("    before the latency phase: %llu MSI-X table writes trapped, %llu route mask changes "
                    "(the toggle phase: %u unmask+mask pairs)\n",
                    (unsigned long long)tableWrites, (unsigned long long)maskChanges, kOps);
        std::printf("    INTx EOI exits: not measured by this bench (the edu's payload uses MSI-X). Design: the EOI goes to "
                    "KVM's resample irqfd, 0 exits; linux.nvme.intx shows INTx end to end in the bed.\n");
        std::printf("\n%s", exitsTable.c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_msix: %s\n", e.what());
        return 1;
    }
    return 0;
}
