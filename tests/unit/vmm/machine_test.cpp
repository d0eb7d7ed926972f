// Machine end to end on real KVM with tiny flat 64-bit payloads (vmm/arch/x86_64 payload boot).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "devices/uart16550.h"
#include "kvm_test_util.h"
#include "vmm/machine.h"

using namespace conduit;
using namespace conduit::vmm;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

namespace {

struct MachineTest : ::testing::Test {
    std::filesystem::path dir;
    void SetUp() override {
        REQUIRE_KVM();
        dir = std::filesystem::temp_directory_path() /
              ("conduit-machine-test-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir);
    }
    void TearDown() override {
        if (!dir.empty()) std::filesystem::remove_all(dir);
    }
    VmConfig payloadConfig(const std::vector<uint8_t>& code, unsigned vcpus = 1) {
        auto bin = dir / "payload.bin";
        std::ofstream(bin, std::ios::binary).write(reinterpret_cast<const char*>(code.data()), code.size());
        VmConfig c;
        c.vcpus = vcpus;
        c.memory.sizeBytes = 64 << 20;
        c.payload = PayloadConfig{bin};
        c.serial.output = SerialOutput::File;
        c.serial.path = dir / "serial.txt";
        return c;
    }
    std::string serialText() {
        std::ifstream in(dir / "serial.txt");
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
};

// mov dx, 0x3f8; mov al, 'K'; out dx, al; mov al, '\n'; out dx, al;
// mov dx, 0x700; mov eax, 42; out dx, eax; jmp $
const std::vector<uint8_t> kHello = {0x66, 0xba, 0xf8, 0x03, 0xb0, 'K', 0xee, 0xb0, '\n', 0xee, 0x66, 0xba, 0x00,
                                     0x07, 0xb8, 42,   0,    0,    0,   0xef, 0xeb, 0xfe};
const std::vector<uint8_t> kSpin = {0xeb, 0xfe};

}  // namespace

TEST_F(MachineTest, PayloadWritesSerialAndExitsWithValue) {
    auto m = Machine::create(payloadConfig(kHello));
    ASSERT_TRUE(m.ok()) << m.error().describe();
    EXPECT_EQ((*m)->vm().regionSlots().size(), (*m)->memory().regions().size());
    auto r = (*m)->run();
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(*r, 42);
    EXPECT_EQ(serialText(), "K\n");
    auto s = (*m)->stats();
    EXPECT_EQ(s["uart"]["bytes_transmitted"], 2);
    EXPECT_EQ(s["pio"]["devices"]["uart@0x3f8"]["writes"], 2);
    EXPECT_EQ(s["exit_value"], 42);
    EXPECT_GE(s["exits"]["IO"].get<int>(), 3);
}

TEST_F(MachineTest, RequestStopFromAnotherThread) {
    auto m = Machine::create(payloadConfig(kSpin, 2));
    ASSERT_TRUE(m.ok()) << m.error().describe();
    Machine& machine = **m;
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        machine.requestStop();
    });
    auto r = machine.run();
    stopper.join();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "stopped by request");
}

TEST_F(MachineTest, SigtermStopsTheRun) {
    auto m = Machine::create(payloadConfig(kSpin));
    ASSERT_TRUE(m.ok()) << m.error().describe();
    std::thread killer([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        ::kill(::getpid(), SIGTERM);
    });
    auto r = (*m)->run();
    killer.join();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "interrupted by signal SIGTERM");
}

TEST_F(MachineTest, VcpuFailureIsTheRunError) {
    // A jump to a guest address with no memory: an emulation failure on every KVM (see
    // RunnerFixture.InternalErrorNamesSuberrorAndRip).
    auto m = Machine::create(payloadConfig({0x48, 0xb8, 0, 0, 0, 0x40, 0, 0, 0, 0, 0xff, 0xe0}));  // mov rax, 0x40000000; jmp rax
    ASSERT_TRUE(m.ok()) << m.error().describe();
    auto r = (*m)->run();
    ASSERT_FALSE(r.ok()) << "run returned " << *r;
    EXPECT_THAT(r.error().what(), MatchesRegex("vcpu0: KVM_EXIT_INTERNAL_ERROR \\(emulation failure\\) at rip 0x40000000.*"));
}

TEST_F(MachineTest, InvalidConfigIsRefused) {
    VmConfig c;
    c.vcpus = 0;
    auto m = Machine::create(c);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(m.error().what(), HasSubstr("0 vCPUs"));
}

// The guest ends the run through the ACPI PM block and the keyboard controller (what Linux's
// poweroff and reboot do, devices/acpi_pm.h); a reset is 0 or an error as "on_reboot" says.
TEST_F(MachineTest, PowerOffAndResetThroughTheirPortsEndTheRunAsConfigured) {
    // mov dx, 0x604; mov ax, 0x3400 (SLP_TYP 5, SLP_EN); out dx, ax; jmp $
    const std::vector<uint8_t> powerOff = {0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef, 0xeb, 0xfe};
    // mov dx, 0x60c; mov al, 1; out dx, al; jmp $  (the FADT's reset register and value)
    const std::vector<uint8_t> acpiReset = {0x66, 0xba, 0x0c, 0x06, 0xb0, 0x01, 0xee, 0xeb, 0xfe};
    // mov al, 0xfe; out 0x64, al; jmp $  (pulse the reset line)
    const std::vector<uint8_t> kbdReset = {0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe};
    auto runWith = [&](const std::vector<uint8_t>& code, RebootAction onReboot) -> Result<int> {
        VmConfig c = payloadConfig(code);
        c.onReboot = onReboot;
        auto m = Machine::create(c);
        if (!m.ok()) return m.error();
        return (*m)->run();
    };
    for (RebootAction a : {RebootAction::Exit, RebootAction::Error}) {
        auto off = runWith(powerOff, a);
        ASSERT_TRUE(off.ok()) << off.error().describe();
        EXPECT_EQ(*off, 0) << "power-off is never an error";
    }
    auto r = runWith(acpiReset, RebootAction::Exit);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(*r, 0);
    r = runWith(kbdReset, RebootAction::Exit);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(*r, 0);
    r = runWith(acpiReset, RebootAction::Error);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "guest reset (ACPI reset register) (on_reboot: error)");
    r = runWith(kbdReset, RebootAction::Error);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "guest reset (keyboard controller reset (0x64 <- 0xfe)) (on_reboot: error)");
}
