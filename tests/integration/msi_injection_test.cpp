// Host-injected MSIs reach a guest handler: the msi payload waits at CPL3 and counts interrupts on
// vector 0x41 while the test, in-process, injects them through the Machine's Vm two ways:
// KVM_SIGNAL_MSI, and an eventfd bound as irqfd to a GSI routed to the same MSI message (the path
// every passthrough interrupt takes).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "base/event_fd.h"
#include "tests/integration/test_env.h"
#include "vmm/config.h"
#include "tests/hostsim/vmm_hosts.h"
#include "vmm/machine.h"

namespace conduit::test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMsiAddress = 0xFEE00000;  // fixed delivery to APIC ID 0
constexpr uint32_t kMsiVector = 0x41;         // what the msi payload listens on

// Waits until the serial log contains `line`; false on timeout.
bool waitForLine(const std::filesystem::path& log, const std::string& line, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        std::ifstream in(log);
        std::stringstream ss;
        ss << in.rdbuf();
        if (ss.str().find(line) != std::string::npos) return true;
        std::this_thread::sleep_for(2ms);
    }
    return false;
}

std::string readAll(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

TEST(MsiInjection, SignalMsiAndIrqfdRouteBothReachTheGuestHandler) {
    REQUIRE_KVM();
    TempDir dir;
    const auto log = dir.path() / "serial.log";
    vmm::VmConfig config;
    config.vcpus = 1;
    config.memory.sizeBytes = 64ull << 20;
    config.payload = vmm::PayloadConfig{};
    config.payload->path = payloadPath("msi");
    config.serial.output = vmm::SerialOutput::File;
    config.serial.path = log;

    auto machine = vmm::Machine::create(config, hostsim::simulatedVfioHosts());
    ASSERT_TRUE(machine.ok()) << machine.error().describe();
    vmm::Machine& m = **machine;

    // The irqfd path: a GSI routed to the MSI message and an eventfd bound to it.
    auto gsi = m.vm().routing().addMsi({kMsiAddress, kMsiVector});
    ASSERT_TRUE(gsi.ok()) << gsi.error().describe();
    auto event = EventFd::create();
    ASSERT_TRUE(event.ok());
    auto irqfd = m.vm().registerIrqfd(*event, *gsi);
    ASSERT_TRUE(irqfd.ok()) << irqfd.error().describe();

    auto outcome = std::async(std::launch::async, [&] { return m.run(); });
    auto stopOnFailure = [&] { m.requestStop(); };

    if (!waitForLine(log, "msi: ready vector 0x41 count 4", 60s)) {
        stopOnFailure();
        FAIL() << "the payload never got ready:\n" << readAll(log);
    }
    // Alternate the two paths. The payload prints "msi: irq k" as it counts; the next injection
    // waits for it, since two pending MSIs on one vector merge into one (LAPIC IRR).
    for (int k = 1; k <= 4; ++k) {
        if (k % 2) {
            auto delivered = m.vm().signalMsi({kMsiAddress, kMsiVector});
            ASSERT_TRUE(delivered.ok()) << delivered.error().describe();
            EXPECT_EQ(*delivered, 1) << "KVM_SIGNAL_MSI did not deliver";
        } else {
            ASSERT_TRUE(event->signal().ok());
        }
        if (!waitForLine(log, "msi: irq " + std::to_string(k) + "\n", 30s)) {
            stopOnFailure();
            FAIL() << "interrupt " << k << " did not reach the handler:\n" << readAll(log);
        }
    }
    auto result = outcome.get();
    ASSERT_TRUE(result.ok()) << result.error().describe();
    EXPECT_EQ(*result, 0) << readAll(log);
    EXPECT_NE(readAll(log).find("msi: done, 4 interrupts"), std::string::npos);
}

}  // namespace
}  // namespace conduit::test
