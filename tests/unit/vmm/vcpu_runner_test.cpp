// The vCPU run loop on real KVM with tiny hand-assembled 64-bit guests: bus dispatch, unclaimed
// accesses, ioeventfd without exits, stop/pause from another thread, and fatal exits.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <regex>
#include <thread>

#include "devices/bus.h"
#include "kvm_test_util.h"
#include "vmm/arch/x86_64/exits.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/vcpu_runner.h"

using namespace conduit;
using namespace conduit::vmm;
using namespace conduit::vmm::test;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

namespace {

// Records writes; answers reads with `readValue`; calls `onWrite` after recording.
class TestDevice : public devices::BusDevice {
public:
    explicit TestDevice(std::string name, uint64_t readValue = 0) : name_(std::move(name)), readValue_(readValue) {}
    std::string name() const override { return name_; }
    void read(uint64_t, std::span<uint8_t> data) override {
        std::memcpy(data.data(), &readValue_, data.size());
        ++reads;
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        uint64_t v = 0;
        std::memcpy(&v, data.data(), data.size());
        size_t n;
        {
            std::lock_guard lock(mutex);
            writes.push_back({offset, v, data.size()});
            n = writes.size();
        }
        if (onWrite) onWrite(n);
    }
    struct Write {
        uint64_t offset, value;
        size_t size;
        bool operator==(const Write&) const = default;
    };
    std::vector<Write> snapshot() {
        std::lock_guard lock(mutex);
        return writes;
    }

    std::function<void(size_t)> onWrite;
    std::atomic<int> reads{0};

private:
    std::string name_;
    uint64_t readValue_;
    std::mutex mutex;
    std::vector<Write> writes;
};

// Waits (bounded) for every vCPU loop to end; on timeout stops them and fails.
void waitAll(VcpuRunner& runner, std::chrono::seconds limit = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < runner.size(); ++i) all &= runner.outcome(i).has_value();
        if (all) break;
        if (std::chrono::steady_clock::now() > deadline) {
            runner.requestStop();
            runner.join();
            FAIL() << "vCPU loops did not end in time";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    runner.join();
}

struct Bytes : std::vector<uint8_t> {
    Bytes& operator()(std::initializer_list<uint8_t> b) {
        insert(end(), b);
        return *this;
    }
    Bytes& movRbx(uint64_t v) {
        (*this)({0x48, 0xbb});
        for (int i = 0; i < 8; ++i) push_back(static_cast<uint8_t>(v >> (8 * i)));
        return *this;
    }
    Bytes& movEax(uint32_t v) {
        push_back(0xb8);
        for (int i = 0; i < 4; ++i) push_back(static_cast<uint8_t>(v >> (8 * i)));
        return *this;
    }
    Bytes& movDx(uint16_t v) { return (*this)({0x66, 0xba, uint8_t(v), uint8_t(v >> 8)}); }
};

struct RunnerFixture : ::testing::Test {
    TestVm t;
    devices::Bus pio{"pio"};
    devices::Bus mmio{"mmio"};
    ExitStats stats;
    x86::X86Exits arch{pio, stats};  // port I/O and "rip" come from the x86 platform
    std::shared_ptr<TestDevice> out = std::make_shared<TestDevice>("test@0x10", 0x99);
    std::shared_ptr<TestDevice> done = std::make_shared<TestDevice>("done@0x14");
    std::vector<std::unique_ptr<Vcpu>> vcpus;  // before the runner: it is destroyed after it
    std::unique_ptr<VcpuRunner> runner;

    void SetUp() override {
        REQUIRE_KVM();
        ASSERT_TRUE(pio.insert(out, 0x10, 4).ok());
        ASSERT_TRUE(pio.insert(done, 0x14, 1).ok());
        done->onWrite = [this](size_t) { runner->requestStop(); };
    }
    void start(const std::vector<uint8_t>& code, unsigned n = 1, bool irqchip = false, bool withArch = true) {
        t.init(irqchip);
        t.loadCode(code);
        std::vector<Vcpu*> raw;
        for (unsigned i = 0; i < n; ++i) {
            vcpus.push_back(t.longModeVcpu(i));
            ASSERT_TRUE(vcpus.back());
            raw.push_back(vcpus.back().get());
        }
        runner = std::make_unique<VcpuRunner>(raw, mmio, stats, withArch ? &arch : nullptr);
        ASSERT_TRUE(runner->start().ok());
    }
    void TearDown() override {
        if (runner) {
            runner->requestStop();
            runner->join();
        }
    }
};

}  // namespace

TEST_F(RunnerFixture, DispatchesPortIoAndMmioToTheBuses) {
    auto mmioDev = std::make_shared<TestDevice>("mmio-test", 0x12345678);
    ASSERT_TRUE(mmio.insert(mmioDev, 0xd0000000, 0x1000).ok());
    Bytes code;
    code({0xb0, 0x42, 0xe6, 0x10})        // mov al, 0x42; out 0x10, al
        ({0xe4, 0x11, 0xe6, 0x10})        // in al, 0x11 (device: 0x99); out 0x10, al
        ({0xe4, 0x20, 0xe6, 0x10})        // in al, 0x20 (unclaimed: 0xff); out 0x10, al
        .movRbx(0xd0000008)
        .movEax(0xdeadbeef)({0x89, 0x03})  // mov [rbx], eax  (MMIO write)
        ({0x8b, 0x03})                     // mov eax, [rbx]  (MMIO read: 0x12345678)
        .movDx(0x10)({0xef})               // out dx, eax
        .movRbx(0xe0000000)({0x8b, 0x03})  // unclaimed MMIO read: all-ones
        ({0xef})                           // out dx, eax
        ({0xe6, 0x14, 0xeb, 0xfe});        // out 0x14, al; jmp $
    start(code);
    waitAll(*runner);
    ASSERT_EQ(runner->outcome(0)->kind, VcpuStop::Requested) << runner->outcome(0)->message;
    using W = TestDevice::Write;
    EXPECT_EQ(out->snapshot(), (std::vector<W>{{0, 0x42, 1}, {0, 0x99, 1}, {0, 0xff, 1}, {0, 0x12345678, 4},
                                               {0, 0xffffffff, 4}}));
    EXPECT_EQ(mmioDev->snapshot(), (std::vector<W>{{8, 0xdeadbeef, 4}}));
    EXPECT_EQ(mmioDev->reads.load(), 1);

    EXPECT_EQ(stats.unclaimed(BusSpace::Pio), 1u);
    EXPECT_EQ(stats.unclaimed(BusSpace::Mmio), 1u);
    EXPECT_EQ(stats.exits(KVM_EXIT_IO), 8u);
    EXPECT_EQ(stats.exits(KVM_EXIT_MMIO), 3u);
    auto j = stats.toJson(&pio, &mmio);
    EXPECT_EQ(j["pio"]["devices"]["test@0x10"]["writes"], 5);
    EXPECT_EQ(j["pio"]["devices"]["test@0x10"]["reads"], 1);
    EXPECT_EQ(j["pio"]["unclaimed"]["reads"], 1);
    EXPECT_EQ(j["pio"]["unclaimed"]["addresses"]["0x20"], 1);
    EXPECT_EQ(j["mmio"]["devices"]["mmio-test"]["writes"], 1);
    EXPECT_EQ(j["mmio"]["unclaimed"]["addresses"]["0xe0000000"], 1);
    EXPECT_EQ(j["exits"]["IO"], 8);
}

// The generic loop knows MMIO only: without the platform's exit handler (an architecture with no
// port I/O) MMIO still reaches the bus, and a port access is an unexpected exit, named, with no
// "at rip" (only the platform knows where a vCPU is).
TEST_F(RunnerFixture, WithoutAnExitHandlerTheLoopIsMmioOnly) {
    auto mmioDev = std::make_shared<TestDevice>("mmio-test", 0x12345678);
    ASSERT_TRUE(mmio.insert(mmioDev, 0xd0000000, 0x1000).ok());
    Bytes code;
    code.movRbx(0xd0000008).movEax(0xdeadbeef)({0x89, 0x03})  // mov [rbx], eax  (MMIO write)
        ({0x8b, 0x03})                                       // mov eax, [rbx]  (MMIO read)
        .movRbx(0xd000000c)({0x89, 0x03})                    // write back what was read
        ({0xe6, 0x10, 0xeb, 0xfe});                          // out 0x10, al; jmp $
    start(code, 1, false, /*withArch=*/false);
    waitAll(*runner);
    ASSERT_EQ(runner->outcome(0)->kind, VcpuStop::Failed) << runner->outcome(0)->message;
    EXPECT_EQ(runner->outcome(0)->message, "vcpu0: unexpected exit KVM_EXIT_IO (2)");
    using W = TestDevice::Write;
    EXPECT_EQ(mmioDev->snapshot(), (std::vector<W>{{8, 0xdeadbeef, 4}, {12, 0x12345678, 4}}));
    EXPECT_TRUE(out->snapshot().empty());
    EXPECT_EQ(stats.exits(KVM_EXIT_MMIO), 3u);
}

TEST_F(RunnerFixture, IoeventfdWritesDoNotExit) {
    auto pioEv = EventFd::create().value();
    auto mmioEv = EventFd::create().value();
    auto port = std::make_shared<TestDevice>("port600");
    ASSERT_TRUE(pio.insert(port, 0x600, 4).ok());
    Bytes code;
    code.movDx(0x600).movEax(0x1234)({0xef, 0xef})  // two matching writes: eventfd only
        .movEax(0x5678)({0xef})                        // no match: exits to the bus device
        .movRbx(0xd0001000)({0x89, 0x03})              // MMIO ioeventfd, any value
        ({0xe6, 0x14, 0xeb, 0xfe});
    t.init(false);
    auto a = t.vm->registerIoeventfd(pioEv, IoSpace::Pio, 0x600, 4, 0x1234);
    ASSERT_TRUE(a.ok()) << a.error().describe();
    auto b = t.vm->registerIoeventfd(mmioEv, IoSpace::Mmio, 0xd0001000, 4);
    ASSERT_TRUE(b.ok()) << b.error().describe();
    t.loadCode(code);
    vcpus.push_back(t.longModeVcpu());
    runner = std::make_unique<VcpuRunner>(std::vector<Vcpu*>{vcpus[0].get()}, mmio, stats, &arch);
    ASSERT_TRUE(runner->start().ok());
    waitAll(*runner);
    ASSERT_EQ(runner->outcome(0)->kind, VcpuStop::Requested) << runner->outcome(0)->message;
    EXPECT_EQ(pioEv.consume(), 2u);
    EXPECT_EQ(mmioEv.consume(), 1u);
    EXPECT_EQ(port->snapshot(), (std::vector<TestDevice::Write>{{0, 0x5678, 4}}));
    EXPECT_EQ(stats.exits(KVM_EXIT_IO), 2u);  // the non-matching write and the done port
    EXPECT_EQ(stats.exits(KVM_EXIT_MMIO), 0u);
}

TEST_F(RunnerFixture, StopFromAnotherThreadWhileTheGuestSpins) {
    start(Bytes()({0xeb, 0xfe}));  // jmp $
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(runner->outcome(0).has_value());
    auto t0 = std::chrono::steady_clock::now();
    runner->requestStop();
    waitAll(*runner, std::chrono::seconds(5));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
    ASSERT_TRUE(runner->outcome(0));
    EXPECT_EQ(runner->outcome(0)->kind, VcpuStop::Requested);
    EXPECT_EQ(runner->outcome(0)->message, "vcpu0: stopped by request");
}

TEST_F(RunnerFixture, PauseParksVcpusOutsideKvmRun) {
    start(Bytes()({0xeb, 0xfe}));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    runner->pause();
    // Parked: a vCPU ioctl from this thread does not block behind KVM_RUN.
    auto regs = x86::getRegs(*vcpus[0]);
    ASSERT_TRUE(regs.ok());
    EXPECT_EQ(regs->rip, kCode);
    EXPECT_FALSE(runner->outcome(0).has_value());
    runner->resume();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(runner->outcome(0).has_value());
    runner->requestStop();
    waitAll(*runner, std::chrono::seconds(5));
    EXPECT_EQ(runner->outcome(0)->kind, VcpuStop::Requested);
}

TEST_F(RunnerFixture, TwoVcpusWithIrqchip) {
    // Each vCPU writes its index (rsi) to port 0x10; the second write stops the run.
    out->onWrite = [this](size_t n) {
        if (n == 2) runner->requestStop();
    };
    start(Bytes()({0x89, 0xf0, 0xe7, 0x10, 0xeb, 0xfe}), 2, true);  // mov eax, esi; out 0x10, eax; jmp $
    waitAll(*runner);
    auto w = out->snapshot();
    ASSERT_EQ(w.size(), 2u);
    EXPECT_EQ(w[0].value + w[1].value, 1u);  // indices 0 and 1, in either order
    EXPECT_EQ(runner->outcome(1)->message, "vcpu1: stopped by request");
}

TEST_F(RunnerFixture, HaltWithoutIrqchipEndsTheLoop) {
    start(Bytes()({0xf4}));
    waitAll(*runner);
    EXPECT_EQ(runner->outcome(0)->kind, VcpuStop::Halted);
    EXPECT_EQ(runner->outcome(0)->message, "vcpu0: halted (KVM_EXIT_HLT) at rip 0x100001");
}

TEST_F(RunnerFixture, TripleFaultIsReportedWithRip) {
    start(Bytes()({0x0f, 0x0b}));  // ud2 with no IDT: #UD -> #DF -> triple fault
    waitAll(*runner);
    auto o = *runner->outcome(0);
    if (o.kind == VcpuStop::Failed && o.message.find("INTERNAL_ERROR") != std::string::npos)
        GTEST_SKIP() << "this KVM could not deliver the exception: " << o.message;
    EXPECT_EQ(o.kind, VcpuStop::Shutdown) << o.message;
    EXPECT_THAT(o.message, MatchesRegex("vcpu0: KVM_EXIT_SHUTDOWN \\(triple fault or reset\\) at rip 0x[0-9a-f]+"));
}

TEST_F(RunnerFixture, InternalErrorNamesSuberrorAndRip) {
    // A jump to a guest address with no memory behind it: every KVM (ring 0 run natively, or
    // emulated as on a PVM host) must fetch the next instruction from MMIO, which its emulator
    // cannot do, so the vCPU stops with an emulation failure at that address.
    start(Bytes()({0x48, 0xb8, 0, 0, 0, 0x40, 0, 0, 0, 0, 0xff, 0xe0}));  // mov rax, 0x40000000; jmp rax
    waitAll(*runner);
    auto o = *runner->outcome(0);
    EXPECT_EQ(o.kind, VcpuStop::Failed) << o.message;
    EXPECT_THAT(o.message, MatchesRegex("vcpu0: KVM_EXIT_INTERNAL_ERROR \\(emulation failure\\) at rip 0x40000000"
                                        "( insn bytes( [0-9a-f]{2})*| data( 0x[0-9a-f]+)*)?"))
        << o.message;
}
