// bench (b): the cost of a trapped port-I/O exit through Conduit's vCPU loop and bus, as a ratio
// to a raw KVM_RUN loop doing the same exits in the same process.
//
// Two VMs, set up alike (one 2 MiB memslot at GPA 0, KVM_SET_TSS_ADDR, no irqchip, one vCPU in
// real mode at 0000:1000), run the same endless 18-byte guest:
//     outer: mov ecx, N ; mov dx, 0x510
//     inner: out dx, al ; dec ecx ; jnz inner     <- N timed exits
//            inc dx ; out dx, al ; jmp outer      <- one "segment done" exit on port 0x511
//   raw     : KVM_CREATE_VM/..., KVM_RUN on this thread, KVM_EXIT_IO handled inline; a segment
//             ends when the loop sees port 0x511;
//   conduit : vmm::Vm / vmm::Vcpu / vmm::VcpuRunner (its own long-lived vCPU thread, ExitStats,
//             KVM_EXIT_IO dispatch) with a devices::Bus holding a trivial counting BusDevice on
//             0x510, a handoff device on 0x511 that parks the vCPU thread until the next segment,
//             and two idle devices at the UART and exit-device ports, as in a real machine.
// Both take the clock at the 1st and the Nth exit of a segment: (t_N - t_1) / (N - 1) is the
// steady-state cost of one exit round trip. Segments alternate raw/conduit (the order flips every
// pair) and the process, hence also the vCPU thread, is pinned to one CPU, so both paths run on
// the same CPU and only one of them runs at a time.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstring>
#include <functional>

#include <CLI/CLI.hpp>

#include "base/log.h"
#include "bench/bench_util.h"
#include "devices/bus.h"
#include "devices/bus_device.h"
#include "vmm/arch/x86_64/exits.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/exit_stats.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"
#include "vmm/vcpu_runner.h"
#include "vmm/vm.h"

using namespace conduit;
using namespace conduit::bench;

namespace {

constexpr uint64_t kRamSize = 2 << 20;
constexpr uint64_t kCodeGpa = 0x1000;
constexpr uint16_t kPort = 0x510;

constexpr uint16_t kSyncPort = kPort + 1;

// The guest above, hand-assembled (checked with objdump -D -b binary -mi8086):
//    0: 66 b9 NN NN NN NN   mov ecx, N
//    6: ba 10 05            mov dx, 0x510
//    9: ee                  out dx, al
//    a: 66 49               dec ecx
//    c: 75 fb               jnz 0x9
//    e: 42                  inc dx
//    f: ee                  out dx, al
//   10: eb ee               jmp 0x0
std::vector<uint8_t> guestCode(uint32_t n) {
    return {0x66, 0xb9, uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24),
            0xba, uint8_t(kPort), uint8_t(kPort >> 8),
            0xee, 0x66, 0x49, 0x75, 0xfb,
            0x42, 0xee, 0xeb, 0xee};
}

// What both paths do on each exit: count, and take the clock at the first and the Nth.
struct ExitClock {
    uint32_t n = 0;
    uint32_t count = 0;
    int64_t first = 0;
    int64_t last = 0;
    void reset(uint32_t total) {
        n = total;
        count = 0;
        first = last = 0;
    }
    inline void tick() {
        ++count;
        if (count == 1) first = nowNs();
        if (count == n) last = nowNs();
    }
    double perExitNs() const { return double(last - first) / double(n - 1); }
};

class CountingDevice : public devices::BusDevice {
public:
    explicit CountingDevice(ExitClock& clock) : clock_(clock) {}
    std::string name() const override { return "bench@0x510"; }
    void read(uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0, data.size()); }
    void write(uint64_t, std::span<const uint8_t>) override { clock_.tick(); }

private:
    ExitClock& clock_;
};

class NullDevice : public devices::BusDevice {
public:
    explicit NullDevice(std::string name) : name_(std::move(name)) {}
    std::string name() const override { return name_; }
    void read(uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0xff, data.size()); }
    void write(uint64_t, std::span<const uint8_t>) override {}

private:
    std::string name_;
};

// Port 0x511: the guest finished a segment. Parks the vCPU thread (outside KVM_RUN, inside the
// bus dispatch) until the bench asks for the next segment or stops.
class HandoffDevice : public devices::BusDevice {
public:
    std::string name() const override { return "handoff@0x511"; }
    void read(uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0, data.size()); }
    void write(uint64_t, std::span<const uint8_t>) override {
        std::unique_lock lock(mutex_);
        done_ = true;
        go_ = false;
        cv_.notify_all();
        cv_.wait(lock, [&] { return go_ || stopping_; });
    }
    // Main thread: waits for the segment in flight (the first one starts with the runner).
    void waitDone() {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return done_; });
    }
    // Main thread: lets one more segment run and waits for it.
    void runSegment() {
        std::unique_lock lock(mutex_);
        done_ = false;
        go_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return done_; });
    }
    void release() {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        cv_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false, go_ = false, stopping_ = false;
};

int xioctl(int fd, unsigned long req, unsigned long arg, const char* what) {
    int r = ioctl(fd, req, arg);
    if (r < 0) fail(fmt::format("{}: {}", what, errnoText(errno)));
    return r;
}

void setRealMode(kvm_sregs& s) {
    s.cs.base = 0;
    s.cs.selector = 0;
    s.ds.base = s.es.base = s.ss.base = 0;
    s.ds.selector = s.es.selector = s.ss.selector = 0;
}

kvm_regs startRegs() {
    kvm_regs r{};
    r.rip = kCodeGpa;
    r.rflags = 0x2;
    r.rsp = 0x8000;
    return r;
}

// ---- raw path ----
// The raw loop: KVM_RUN on the calling thread until the guest's "segment done" exit, KVM_EXIT_IO
// handled inline.
void rawSegment(int vcpuFd, kvm_run* run, ExitClock& clock) {
    for (;;) {
        if (ioctl(vcpuFd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fail("raw KVM_RUN: " + errnoText(errno));
        }
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
            if (run->io.port == kPort) {
                clock.tick();
                continue;
            }
            if (run->io.port == kSyncPort) return;
        }
        fail(fmt::format("raw: unexpected exit reason {}", run->exit_reason));
    }
}

struct RawVm {
    int kvm = -1, vm = -1, vcpu = -1;
    void* ram = nullptr;
    kvm_run* run = nullptr;
    size_t runSize = 0;

    explicit RawVm(const std::vector<uint8_t>& code) {
        kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (kvm < 0) fail("open /dev/kvm: " + errnoText(errno));
        vm = xioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
        xioctl(vm, KVM_SET_TSS_ADDR, vmm::x86::kTssAddr, "KVM_SET_TSS_ADDR");
        ram = mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (ram == MAP_FAILED) fail("mmap guest RAM: " + errnoText(errno));
        std::memcpy(static_cast<uint8_t*>(ram) + kCodeGpa, code.data(), code.size());
        kvm_userspace_memory_region region{0, 0, 0, kRamSize, reinterpret_cast<uint64_t>(ram)};
        xioctl(vm, KVM_SET_USER_MEMORY_REGION, reinterpret_cast<unsigned long>(&region), "KVM_SET_USER_MEMORY_REGION");
        vcpu = xioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
        runSize = size_t(xioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"));
        void* p = mmap(nullptr, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
        if (p == MAP_FAILED) fail("mmap kvm_run: " + errnoText(errno));
        run = static_cast<kvm_run*>(p);
        kvm_sregs s{};
        xioctl(vcpu, KVM_GET_SREGS, reinterpret_cast<unsigned long>(&s), "KVM_GET_SREGS");
        setRealMode(s);
        xioctl(vcpu, KVM_SET_SREGS, reinterpret_cast<unsigned long>(&s), "KVM_SET_SREGS");
    }
    ~RawVm() {
        if (run) munmap(run, runSize);
        if (vcpu >= 0) close(vcpu);
        if (vm >= 0) close(vm);
        if (ram) munmap(ram, kRamSize);
        if (kvm >= 0) close(kvm);
    }

    void start() {
        kvm_regs r = startRegs();
        xioctl(vcpu, KVM_SET_REGS, reinterpret_cast<unsigned long>(&r), "KVM_SET_REGS");
    }
    void runSegment(ExitClock& clock) { rawSegment(vcpu, run, clock); }
};

// ---- conduit path ----
struct ConduitVm {
    vmm::Kvm kvm;
    std::unique_ptr<vmm::Vm> vm;
    Mapping ram;
    std::optional<vmm::MemorySlot> slot;
    std::unique_ptr<vmm::Vcpu> vcpu;
    devices::Bus pio{"pio"};
    devices::Bus mmio{"mmio"};
    vmm::ExitStats stats;
    vmm::x86::X86Exits arch{pio, stats};
    std::shared_ptr<HandoffDevice> handoff = std::make_shared<HandoffDevice>();
    std::unique_ptr<vmm::VcpuRunner> runner;

    template <class T>
    static T take(Result<T> r, const char* what) {
        if (!r) fail(fmt::format("{}: {}", what, r.error().describe()));
        return std::move(*r);
    }
    static void check(Result<void> r, const char* what) {
        if (!r) fail(fmt::format("{}: {}", what, r.error().describe()));
    }

    ConduitVm(const std::vector<uint8_t>& code, ExitClock& clock)
        : kvm(take(vmm::Kvm::open(), "Kvm::open")) {
        vm = take(vmm::Vm::create(kvm), "Vm::create");
        check(vmm::x86::setTssAddr(*vm), "setTssAddr");
        ram = take(Mapping::map(kRamSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
                                "guest RAM"),
                   "mmap");
        std::memcpy(ram.data() + kCodeGpa, code.data(), code.size());
        slot.emplace(take(vm->mapMemory(0, kRamSize, ram.data(), "bench RAM"), "mapMemory"));
        vcpu = take(vm->createVcpu(0), "createVcpu");
        auto s = take(vmm::x86::getSregs(*vcpu), "getSregs");
        setRealMode(s);
        check(vmm::x86::setSregs(*vcpu, s), "setSregs");
        check(pio.insert(std::make_shared<NullDevice>("uart@0x3f8"), 0x3f8, 8), "bus insert uart");
        check(pio.insert(std::make_shared<CountingDevice>(clock), kPort, 1), "bus insert bench");
        check(pio.insert(handoff, kSyncPort, 1), "bus insert handoff");
        check(pio.insert(std::make_shared<NullDevice>("exit@0x700"), 0x700, 4), "bus insert exit");
    }
    ~ConduitVm() {
        if (runner) {
            handoff->release();
            runner->requestStop();
            runner->join();
        }
        runner.reset();
        vcpu.reset();
        slot.reset();
    }

    // Starts the vCPU thread; it runs the first segment at once.
    void start() {
        check(vmm::x86::setRegs(*vcpu, startRegs()), "setRegs");
        runner = std::make_unique<vmm::VcpuRunner>(std::vector<vmm::Vcpu*>{vcpu.get()}, mmio, stats, &arch);
        check(runner->start(), "VcpuRunner::start");
    }
    void checkRunning() {
        if (auto outcome = runner->outcome(0)) fail("conduit: the vCPU loop ended: " + outcome->message);
    }

};

// The user-space work VcpuRunner adds to one port-I/O exit, without KVM: the same calls its
// handleIo makes (ExitStats::countExit, Bus::write to the counting device, ExitStats::countAccess)
// on a bus laid out like the bench VM's, timed over many iterations.
double dispatchCostNs(int iterations) {
    ExitClock clock;
    clock.reset(0);
    devices::Bus pio("pio");
    (void)pio.insert(std::make_shared<NullDevice>("uart@0x3f8"), 0x3f8, 8);
    (void)pio.insert(std::make_shared<CountingDevice>(clock), kPort, 1);
    (void)pio.insert(std::make_shared<NullDevice>("exit@0x700"), 0x700, 4);
    vmm::ExitStats stats;
    uint8_t byte = 0;
    std::span<uint8_t> data(&byte, 1);
    int64_t t0 = nowNs();
    for (int i = 0; i < iterations; ++i) {
        stats.countExit(KVM_EXIT_IO);
        bool claimed = pio.write(kPort, data);
        stats.countAccess(vmm::BusSpace::Pio, kPort, true, claimed);
    }
    int64_t t = nowNs() - t0;
    if (clock.count != uint32_t(iterations)) fail("dispatch cost: the device missed writes");
    return double(t) / iterations;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench (b): port-I/O exit cost, Conduit's VcpuRunner + Bus vs a raw KVM_RUN loop"};
    uint32_t n = 2000;
    int reps = 41;
    int cpu = -1;
    app.add_option("-n,--exits", n, "timed port-I/O exits per segment")->check(CLI::Range(2u, 100000000u));
    app.add_option("--reps", reps, "interleaved segments of each path")->check(CLI::Range(1, 10000));
    app.add_option("--cpu", cpu, "pin to this CPU (default: the last one; -2: no pinning)");
    CLI11_PARSE(app, argc, argv);
    log::setLevel("warn");

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpu == -1) cpu = int(ncpu - 1);
    bool pinned = cpu >= 0 && pinToCpu(cpu);

    try {
        auto code = guestCode(n);
        ExitClock rawClock, conduitClock;
        RawVm raw(code);
        ConduitVm con(code, conduitClock);

        // One unmeasured segment each: thread start, first-touch faults of the code page, shadow
        // page tables.
        rawClock.reset(n);
        raw.start();
        raw.runSegment(rawClock);
        conduitClock.reset(n);
        con.start();
        con.handoff->waitDone();

        // Per repetition, one segment of each, in rotating order:
        //   raw     : the raw loop on the raw VM;
        //   conduit : Conduit's vCPU thread on the Conduit VM;
        //   same    : the raw loop on the Conduit VM's vCPU (while Conduit's thread is parked in the
        //             handoff device, outside KVM_RUN): same VM and vCPU as `conduit`, so the
        //             conduit/same ratio holds only the difference in user-space loop and thread.
        std::vector<double> rawExit, conExit, sameExit, pairRatio, samePairRatio;
        ExitClock sameClock;
        for (int r = 0; r < reps; ++r) {
            double re = 0, ce = 0, se = 0;
            auto doRaw = [&] {
                rawClock.reset(n);
                raw.runSegment(rawClock);
                if (rawClock.count != n) fail(fmt::format("raw: {} exits counted, expected {}", rawClock.count, n));
                re = rawClock.perExitNs();
                rawExit.push_back(re);
            };
            auto doConduit = [&] {
                conduitClock.reset(n);
                con.checkRunning();
                con.handoff->runSegment();
                if (conduitClock.count != n)
                    fail(fmt::format("conduit: {} exits counted, expected {}", conduitClock.count, n));
                ce = conduitClock.perExitNs();
                conExit.push_back(ce);
            };
            auto doSame = [&] {
                sameClock.reset(n);
                rawSegment(con.vcpu->fd(), con.vcpu->run(), sameClock);
                if (sameClock.count != n)
                    fail(fmt::format("raw on conduit's vCPU: {} exits counted, expected {}", sameClock.count, n));
                se = sameClock.perExitNs();
                sameExit.push_back(se);
            };
            std::function<void()> order[3] = {doRaw, doConduit, doSame};
            for (int k = 0; k < 3; ++k) order[(r + k) % 3]();
            pairRatio.push_back(ce / re);
            samePairRatio.push_back(ce / se);
        }
        double softNs = dispatchCostNs(1'000'000);
        uint64_t ioExits = con.stats.exits(KVM_EXIT_IO);
        double mr = median(rawExit), mc = median(conExit);
        std::printf("(b) trapped port-I/O exits (out dx,al to port %#x at real-mode CPL0), N=%u per segment, "
                    "median of %d interleaved segments%s\n",
                    kPort, n, reps, pinned ? fmt::format(", pinned to CPU {}", cpu).c_str() : ", not pinned");
        std::printf("    raw KVM_RUN loop     %8.3f us/exit  [%.3f .. %.3f]\n", mr / 1e3,
                    *std::min_element(rawExit.begin(), rawExit.end()) / 1e3,
                    *std::max_element(rawExit.begin(), rawExit.end()) / 1e3);
        std::printf("    conduit runner+bus   %8.3f us/exit  [%.3f .. %.3f]  (%lu IO exits counted by ExitStats)\n",
                    mc / 1e3, *std::min_element(conExit.begin(), conExit.end()) / 1e3,
                    *std::max_element(conExit.begin(), conExit.end()) / 1e3, (unsigned long)ioExits);
        double ms_ = median(sameExit);
        std::printf("    raw loop, conduit VM %8.3f us/exit  [%.3f .. %.3f]  (the raw loop driving Conduit's vCPU)\n",
                    ms_ / 1e3, *std::min_element(sameExit.begin(), sameExit.end()) / 1e3,
                    *std::max_element(sameExit.begin(), sameExit.end()) / 1e3);
        std::printf("    ratio conduit / raw             = %.3fx (median of per-repetition ratios %.3fx)   "
                    "goal: <= 1.05x\n",
                    mc / mr, median(pairRatio));
        std::printf("    ratio conduit / raw, same vCPU  = %.3fx (median of per-repetition ratios %.3fx)   "
                    "goal: <= 1.05x\n",
                    mc / ms_, median(samePairRatio));
        std::printf("    (raw loop: conduit VM / raw VM  = %.3fx: two VMs set up alike differ by this much)\n", ms_ / mr);
        std::printf("    of which Conduit's own dispatch (ExitStats + Bus lookup + device call, no KVM): %.0f ns/exit "
                    "= %.3fx of a raw exit\n",
                    softNs, softNs / mr);

    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_pio: %s\n", e.what());
        return 1;
    }
    return 0;
}
