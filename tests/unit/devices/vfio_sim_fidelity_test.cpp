// VfioPciDevice against simulated-host modes that model what the real kernel did under QEMU
// (docs/testing.md, "Differences between the simulated host and the real kernel"): an mmappable
// register BAR, Linux 6.12's missing iommufd P2P, and a device without a reset method.
#include <gtest/gtest.h>

#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/common/log_capture.h"
#include "tests/hostsim/sim_host.h"
#include "tests/unit/devices/passthrough_fixture.h"
#include "vfio/backend.h"

using namespace conduit;
using conduit::test::LogCapture;

namespace {

constexpr const char* kBdf = "0000:00:03.0";  // on the root bus, as edu is on q35's

class VfioSimFidelity : public test::PassthroughFixture {
protected:
    void open(hostsim::SimHostConfig hc, hostsim::SimDeviceConfig dc) {
        dc.bdf = kBdf;
        dc.msixVectors = 0;  // BAR2 wholly mmappable: BAR0 is the only candidate for a trap
        sim = std::make_unique<hostsim::SimHost>(hc);
        sim->addDevice(dc);
        ASSERT_NO_FATAL_FAILURE(openBackend(*sim));
        createDevice(kBdf);
    }
};

// The real edu's BAR0 is mmappable: Conduit maps it as guest memory and traps nothing.
TEST_P(VfioSimFidelity, MmappableRegisterBarIsMappedNotTrapped) {
    {
        open({}, {});
        enableDecode();
        auto s = device->stats();
        EXPECT_EQ(s.trappedRanges, 1u) << "default: BAR0 trapped";
        EXPECT_EQ(s.memslots, 1u);
        EXPECT_EQ(mapper.live.count(0xc0000000), 0u);
        TearDown();
    }
    hostsim::SimDeviceConfig dc;
    dc.registerBarMmap = true;
    open({}, dc);
    enableDecode();
    auto s = device->stats();
    EXPECT_EQ(s.trappedRanges, 0u);
    EXPECT_EQ(s.memslots, 2u);
    ASSERT_EQ(mapper.live.count(0xc0000000), 1u);
    EXPECT_EQ(mapper.live[0xc0000000].size, 1u << 20);
    EXPECT_EQ(s.p2pMappings, 2u) << "both BARs are DMA-mapped for P2P";
}

// Linux 6.12: iommufd cannot DMA-map a BAR (no dma-buf export, PFNMAP refused). Conduit logs the
// refusal per BAR area and carries on: the BAR is still guest-mapped, only P2P to it is missing.
TEST_P(VfioSimFidelity, Linux612LeavesBarsOutOfTheIommuAndCarriesOn) {
    LogCapture logs;
    hostsim::SimHostConfig hc;
    hc.kernel = hostsim::HostKernel::Linux6_12;
    open(hc, {});
    const size_t before = sim->dmaMappingCount();
    enableDecode();
    auto s = device->stats();
    EXPECT_EQ(s.memslots, 1u);
    if (GetParam() == vfio::BackendKind::Type1) {
        // type1 pins the BAR mmap through its PFNMAP path on 6.12 as well.
        EXPECT_EQ(s.p2pMappings, 1u);
        EXPECT_EQ(sim->dmaMappingCount(), before + 1);
        return;
    }
    EXPECT_EQ(s.p2pMappings, 0u);
    EXPECT_EQ(sim->dmaMappingCount(), before);
    const std::string text = logs.all();
    EXPECT_NE(text.find("is not DMA-mapped"), std::string::npos) << text;
    EXPECT_NE(text.find("VFIO_DEVICE_FEATURE(DMA_BUF)"), std::string::npos) << text;
    EXPECT_NE(text.find("EFAULT"), std::string::npos) << text;
    // The device keeps working: its BAR memory is still reachable by the guest, and its own DMA
    // to the BAR's address faults in the IOMMU rather than landing.
    uint32_t word = 0x11223344;
    EXPECT_FALSE(sim->dmaWrite(*sim->device(kBdf), 0xc0100000, &word, 4));
    ASSERT_FALSE(sim->dmaFaults().empty());
    EXPECT_EQ(sim->dmaFaults().back().iova, 0xc0100000u);
}

// A device without a reset method (edu on q35's root bus): Conduit still creates it.
TEST_P(VfioSimFidelity, DeviceWithoutResetMethodIsStillUsable) {
    LogCapture logs;
    hostsim::SimDeviceConfig dc;
    dc.resetSupported = false;
    open({}, dc);
    EXPECT_EQ(sim->device(kBdf)->resetCount(), 0u);
    EXPECT_EQ(device->stats().resets, 0u);
    // On the root bus there is no hot reset either; the log says so, the device is used as it is.
    EXPECT_NE(logs.all().find("00:01.0: not reset at start: no function reset (VFIO_DEVICE_FLAGS_RESET clear), and "
                              "no hot reset: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO 0000:00:03.0: No such device (ENODEV)"),
              std::string::npos)
        << logs.all();
    enableDecode();
    EXPECT_EQ(device->stats().memslots, 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, VfioSimFidelity, ::testing::Values(vfio::BackendKind::Type1, vfio::BackendKind::Iommufd),
                         [](const auto& info) { return info.param == vfio::BackendKind::Type1 ? "type1" : "iommufd"; });

}  // namespace
