// "ap_start": "sipi" on real KVM: the sipi payload (tests/guest/payloads/sipi.c) starts its APs
// itself with INIT/SIPI through a real-mode trampoline, and each AP checks in from long mode.
// The same payload with "ap_start": "entry" must refuse (its APs were already running), so a VMM
// that ignored the option, or started the APs itself, cannot pass the first test.
#include <gtest/gtest.h>

#include <string>

#include "tests/integration/test_env.h"

namespace conduit::test {
namespace {

using namespace std::chrono_literals;

std::string sipiConfig(unsigned vcpus, const std::string& apStart) {
    return R"({"vcpus": )" + std::to_string(vcpus) + R"(, "memory": {"size_mib": 64}, "payload": {"path": ")" +
           payloadPath("sipi") + R"(", "ap_start": ")" + apStart + R"("}, "serial": {"output": "stdout"}})";
}

bool has(const std::string& out, const std::string& s) { return out.find(s) != std::string::npos; }

TEST(Sipi, TwoVcpusApStartedByInitSipi) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("sipi.json", sipiConfig(2, "sipi")), 120s);
    ASSERT_EQ(r.exitStatus, 0) << describe(r);
    EXPECT_TRUE(has(r.out, "sipi: starting 1 APs by INIT/SIPI, trampoline at 0x8000 vector 0x08\n")) << r.out;
    EXPECT_TRUE(has(r.out, "sipi: vcpu 1 started by INIT/SIPI, apic id 1\n")) << r.out;
    EXPECT_TRUE(has(r.out, "sipi: all 1 APs checked in\n")) << r.out;
    EXPECT_FALSE(has(r.out, "entered at the payload entry")) << r.out;
}

TEST(Sipi, ThreeVcpusStartedOneAfterTheOther) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("sipi3.json", sipiConfig(3, "sipi")), 180s);
    ASSERT_EQ(r.exitStatus, 0) << describe(r);
    EXPECT_TRUE(has(r.out, "sipi: vcpu 1 started by INIT/SIPI, apic id 1\n")) << r.out;
    EXPECT_TRUE(has(r.out, "sipi: vcpu 2 started by INIT/SIPI, apic id 2\n")) << r.out;
    EXPECT_TRUE(has(r.out, "sipi: all 2 APs checked in\n")) << r.out;
}

// With "entry" Conduit starts vCPU 1 at the entry point itself: the payload sees a busy TSS
// descriptor, sends no INIT/SIPI and exits 2; nothing may claim an INIT/SIPI start.
TEST(Sipi, ApStartEntryIsDetectedAndRefused) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("entry.json", sipiConfig(2, "entry")), 120s);
    ASSERT_EQ(r.exitStatus, 2) << describe(r);
    EXPECT_TRUE(has(r.out, "sipi: vcpu 1 was already started by the VMM (TSS descriptor type 11, not 9)")) << r.out;
    EXPECT_FALSE(has(r.out, "started by INIT/SIPI")) << r.out;
    EXPECT_FALSE(has(r.out, "sipi: starting")) << r.out;
}

TEST(Sipi, OneVcpuHasNothingToStart) {
    REQUIRE_KVM();
    TempDir dir;
    auto r = runConduit(dir.write("one.json", sipiConfig(1, "sipi")), 60s);
    ASSERT_EQ(r.exitStatus, 1) << describe(r);
    EXPECT_TRUE(has(r.out, "sipi: needs at least 2 vcpus, got 1")) << r.out;
}

}  // namespace
}  // namespace conduit::test
