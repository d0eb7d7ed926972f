// Boots the guest payloads of tests/guest/ on the real /dev/kvm through the conduit binary and
// checks what they print on the serial port and the status they hand to the exit device.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/integration/test_env.h"

namespace conduit::test {
namespace {

using namespace std::chrono_literals;

std::string payloadConfig(const std::string& payload, unsigned vcpus = 1, const std::string& extraPayload = "",
                          const std::string& serial = R"({"output": "stdout"})") {
    return R"({"vcpus": )" + std::to_string(vcpus) + R"(, "memory": {"size_mib": 64}, "payload": {"path": ")" +
           payloadPath(payload) + "\"" + extraPayload + R"(}, "serial": )" + serial + "}";
}

TEST(PayloadBoot, HelloPrintsAndExitsZero) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("hello.json", payloadConfig("hello")), 60s);
    ASSERT_EQ(r.exitStatus, 0) << describe(r);
    EXPECT_NE(r.out.find("Hello from a Conduit guest\n"), std::string::npos) << r.out;
    // The payload reads its vCPU count and RAM size from the boot info Conduit wrote.
    EXPECT_NE(r.out.find("hello: vcpus=1 ram_low=67108864 ram_high=0 ram_mib=64"), std::string::npos) << r.out;
}

TEST(PayloadBoot, TwoVcpusBothReport) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("smp.json", payloadConfig("smp", 2)), 90s);
    ASSERT_EQ(r.exitStatus, 0) << describe(r);
    EXPECT_NE(r.out.find("vcpu 0 of 2 up"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("vcpu 1 of 2 up"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("smp: all 2 vcpus checked in"), std::string::npos) << r.out;
}

TEST(PayloadBoot, RealModePayloadRunsAndExits42) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(
        dir.write("real16.json", payloadConfig("real16", 1, R"(, "mode": "real16", "load_address": "0x8000")")), 30s);
    ASSERT_EQ(r.exitStatus, 42) << describe(r);  // 43 would mean CR0.PE was set: not real mode
    EXPECT_NE(r.out.find("real16: hello from real mode"), std::string::npos) << r.out;
}

TEST(PayloadBoot, ExceptionHandlerReportsPageFaultAndExits) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("fault.json", payloadConfig("fault")), 30s);
    ASSERT_EQ(r.exitStatus, 0xee) << describe(r);  // 0xe0 + vector 14
    EXPECT_NE(r.out.find("rt: EXCEPTION #PF vector=14 error=0x6"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("cr2=0x400000000000"), std::string::npos) << r.out;
}

TEST(PayloadBoot, UartThreAndRxInterruptsReachTheGuest) {
    REQUIRE_KVM();
    TempDir dir;
    auto config = dir.write("uart.json", payloadConfig("uart_irq", 1, "", R"({"output": "stdout", "input": "stdin"})"));
    auto r = runConduit(config, 60s, {}, "ping\n", /*keepStdinOpen=*/true);
    ASSERT_EQ(r.exitStatus, 0) << describe(r);
    EXPECT_NE(r.out.find("uart_irq: rx \"ping\\x0a\""), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("uart_irq: ok thre="), std::string::npos) << r.out;
}

TEST(PayloadBoot, StatsFileCountsTheExits) {
    REQUIRE_KVM();
    TempDir dir;
    const std::string stats = (dir.path() / "stats.json").string();
    auto r = runConduit(dir.write("hello.json", payloadConfig("hello")), 60s, {"--stats", stats});
    ASSERT_EQ(r.exitStatus, 0) << describe(r);
    std::ifstream in(stats);
    ASSERT_TRUE(in) << "no stats file";
    auto j = nlohmann::json::parse(in);
    // Every serial byte is a trapped port write: at least the greeting's length.
    ASSERT_TRUE(j.contains("exits")) << j.dump(2);
    EXPECT_GE(j["exits"].value("IO", 0), static_cast<int>(std::strlen("Hello from a Conduit guest\n"))) << j.dump(2);
}

TEST(PayloadBoot, BadConfigIsRefusedWithPositionAnd125) {
    TempDir dir;
    auto config = dir.write("bad.json", "{\n  \"vcpus\": \"two\"\n}\n");
    auto r = runConduit(config, 10s);
    EXPECT_EQ(r.exitStatus, 125) << describe(r);
    EXPECT_NE(r.err.find(config + ":2:12: /vcpus:"), std::string::npos) << r.err;
}

TEST(PayloadBoot, VmmErrorIsOneLineAnd125) {
    REQUIRE_KVM();
    TempDir dir;
    // A payload loaded past the end of RAM: the boot refuses it before any vCPU runs.
    auto config = dir.write("far.json", payloadConfig("hello", 1, R"(, "load_address": "0x3fff000")"));
    auto r = runConduit(config, 10s);
    EXPECT_EQ(r.exitStatus, 125) << describe(r);
    auto lastErr = lastLine(r.err);
    EXPECT_EQ(lastErr.rfind("conduit: error: ", 0), 0u) << r.err;
}

}  // namespace
}  // namespace conduit::test
