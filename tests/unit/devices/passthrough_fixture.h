// The GoogleTest base of the suites that drive one VfioPciDevice at a time over the simulated host,
// once per VFIO backend (the test's parameter): the fakes of tests/common/passthrough_fakes.h, guest
// MMIO that must land in a claimed range, and a teardown that fails the test on any memslot
// request KVM would have refused.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tests/common/passthrough_fakes.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

namespace conduit::test {

class PassthroughFixture : public ::testing::TestWithParam<vfio::BackendKind>, public FakeVmm {
protected:
    static constexpr uint32_t kMsi = 0x40, kMsix = 0x60;  // the simulated device's capabilities

    // The test's backend over `host`: `sim` itself, or something in front of it.
    void openBackend(vfio::HostInterface& host) {
        auto b = vfio::openBackend(host, GetParam(), sim->paths());
        ASSERT_TRUE(b.ok()) << b.error().describe();
        backend = std::move(b).value();
    }
    void createDevice(const std::string& bdf) {
        auto r = FakeVmm::createDevice(*backend, bdf);
        ASSERT_TRUE(r.ok()) << r.error().describe();
    }
    // A suite that holds more (a host in front of `sim`, other VFIO devices) drops what uses the
    // backend first, then calls this, then drops the rest.
    void TearDown() override {
        device.reset();
        EXPECT_THAT(mapper.invalid, ::testing::IsEmpty()) << "memslot requests KVM refuses with EINVAL";
        EXPECT_THAT(mapper.overlapping, ::testing::IsEmpty()) << "memslot requests KVM refuses with EEXIST";
        backend.reset();
    }

    uint32_t mmioRead(uint64_t a, size_t n = 4) {
        uint64_t v = 0;
        EXPECT_TRUE(mmio.read(a, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n))) << std::hex << a;
        return static_cast<uint32_t>(v);
    }
    void mmioWrite(uint64_t a, uint64_t v, size_t n = 4) {
        EXPECT_TRUE(mmio.write(a, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), n))) << std::hex << a;
    }
    // BAR2's MSI-X table (the PBA is the page above).
    static uint64_t tableAddr(uint64_t bar2 = kBar2Address) { return bar2 + 0xfe000; }
    // MSI-X entries 0 to n - 1 unmasked, vector v with message data 0x40 + v to 0xfee00000.
    void programMsixEntries(unsigned n) {
        for (unsigned v = 0; v < n; ++v) {
            mmioWrite(tableAddr() + 16 * v, 0xfee00000);
            mmioWrite(tableAddr() + 16 * v + 4, 0);
            mmioWrite(tableAddr() + 16 * v + 8, 0x40 + v);
            mmioWrite(tableAddr() + 16 * v + 12, 0);
        }
    }

    std::unique_ptr<hostsim::SimHost> sim;
    std::unique_ptr<vfio::VfioBackend> backend;
};

}  // namespace conduit::test
