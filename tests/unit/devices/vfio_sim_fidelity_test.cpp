// VfioPciDevice against simulated-host modes that model what the real kernel did under QEMU
// (docs/testing.md, "Differences between the simulated host and the real kernel"): an mmappable
// register BAR, Linux 6.12's missing iommufd P2P, and a device without a reset method.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>
#include <map>

#include "base/log.h"
#include "devices/bus.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

using namespace conduit;
using namespace conduit::devices;
using namespace conduit::devices::pci;
using conduit::devices::vfio_pci::VfioPciDevice;

namespace {

constexpr const char* kBdf = "0000:00:03.0";

struct Mapper : GuestMapper {
    std::map<uint64_t, uint64_t> live;  // gpa -> size
    struct M : GuestMapping {
        Mapper& m;
        uint64_t gpa;
        M(Mapper& m, uint64_t g) : m(m), gpa(g) {}
        ~M() override { m.live.erase(gpa); }
    };
    Result<std::unique_ptr<GuestMapping>> map(uint64_t gpa, uint64_t size, void*, const std::string&) override {
        live[gpa] = size;
        return std::unique_ptr<GuestMapping>(std::make_unique<M>(*this, gpa));
    }
};
struct NoMsi : MsiRouter {
    Result<std::unique_ptr<MsiRoute>> createRoute(const MsiMessage&, bool, const std::string&) override {
        return Error("no MSI in this test", ENOTSUP);
    }
};

// Captures what the "devices" logger says while alive.
struct LogCapture {
    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
    LogCapture() { log::get("devices").sinks().push_back(sink); }
    ~LogCapture() {
        auto& s = log::get("devices").sinks();
        s.erase(std::remove(s.begin(), s.end(), sink), s.end());
    }
    std::string all() const {
        std::string out;
        for (auto& l : sink->last_formatted()) out += l;
        return out;
    }
};

struct Rig {
    std::unique_ptr<hostsim::SimHost> sim;
    std::unique_ptr<vfio::VfioBackend> backend;
    Bus mmio{"mmio"}, pio{"pio"};
    Mapper mapper;
    NoMsi msi;
    std::shared_ptr<VfioPciDevice> device;

    void open(vfio::BackendKind kind, hostsim::SimHostConfig hc, hostsim::SimDeviceConfig dc) {
        dc.bdf = kBdf;
        dc.msixVectors = 0;  // BAR2 wholly mmappable: BAR0 is the only candidate for a trap
        sim = std::make_unique<hostsim::SimHost>(hc);
        sim->addDevice(dc);
        auto b = vfio::openBackend(*sim, kind, sim->paths());
        ASSERT_TRUE(b.ok()) << b.error().describe();
        backend = std::move(b).value();
        auto d = backend->openDevice(kBdf);
        ASSERT_TRUE(d.ok()) << d.error().describe();
        vfio_pci::VfioPciPlatform platform;
        platform.mmio = &mmio;
        platform.pio = &pio;
        platform.mapper = &mapper;
        platform.msi = &msi;
        platform.dma = backend.get();
        auto dev = VfioPciDevice::create(std::move(d).value(), platform, "00:01.0");
        ASSERT_TRUE(dev.ok()) << dev.error().describe();
        device = std::move(dev).value();
    }
    void setCfg(uint32_t off, uint32_t v, size_t n = 4) {
        device->configWrite(off, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
    }
    void enable() {
        setCfg(PCI_BASE_ADDRESS_0, 0xc0000000);
        setCfg(PCI_BASE_ADDRESS_2, 0xc0100000);
        setCfg(PCI_BASE_ADDRESS_3, 0);
        setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    }
    ~Rig() {
        device.reset();
        backend.reset();
    }
};

class VfioSimFidelity : public ::testing::TestWithParam<vfio::BackendKind> {};

// The real edu's BAR0 is mmappable: Conduit maps it as guest memory and traps nothing.
TEST_P(VfioSimFidelity, MmappableRegisterBarIsMappedNotTrapped) {
    {
        Rig r;
        r.open(GetParam(), {}, {});
        r.enable();
        auto s = r.device->stats();
        EXPECT_EQ(s.trappedRanges, 1u) << "default: BAR0 trapped";
        EXPECT_EQ(s.memslots, 1u);
        EXPECT_EQ(r.mapper.live.count(0xc0000000), 0u);
    }
    Rig r;
    hostsim::SimDeviceConfig dc;
    dc.registerBarMmap = true;
    r.open(GetParam(), {}, dc);
    r.enable();
    auto s = r.device->stats();
    EXPECT_EQ(s.trappedRanges, 0u);
    EXPECT_EQ(s.memslots, 2u);
    ASSERT_EQ(r.mapper.live.count(0xc0000000), 1u);
    EXPECT_EQ(r.mapper.live[0xc0000000], 1u << 20);
    EXPECT_EQ(s.p2pMappings, 2u) << "both BARs are DMA-mapped for P2P";
}

// Linux 6.12: iommufd cannot DMA-map a BAR (no dma-buf export, PFNMAP refused). Conduit logs the
// refusal per BAR area and carries on: the BAR is still guest-mapped, only P2P to it is missing.
TEST_P(VfioSimFidelity, Linux612LeavesBarsOutOfTheIommuAndCarriesOn) {
    LogCapture logs;
    Rig r;
    hostsim::SimHostConfig hc;
    hc.kernel = hostsim::HostKernel::Linux6_12;
    r.open(GetParam(), hc, {});
    const size_t before = r.sim->dmaMappingCount();
    r.enable();
    auto s = r.device->stats();
    EXPECT_EQ(s.memslots, 1u);
    if (GetParam() == vfio::BackendKind::Type1) {
        // type1 pins the BAR mmap through its PFNMAP path on 6.12 as well.
        EXPECT_EQ(s.p2pMappings, 1u);
        EXPECT_EQ(r.sim->dmaMappingCount(), before + 1);
        return;
    }
    EXPECT_EQ(s.p2pMappings, 0u);
    EXPECT_EQ(r.sim->dmaMappingCount(), before);
    const std::string text = logs.all();
    EXPECT_NE(text.find("is not DMA-mapped"), std::string::npos) << text;
    EXPECT_NE(text.find("VFIO_DEVICE_FEATURE(DMA_BUF)"), std::string::npos) << text;
    EXPECT_NE(text.find("EFAULT"), std::string::npos) << text;
    // The device keeps working: its BAR memory is still reachable by the guest, and its own DMA
    // to the BAR's address faults in the IOMMU rather than landing.
    uint32_t word = 0x11223344;
    EXPECT_FALSE(r.sim->dmaWrite(*r.sim->device(kBdf), 0xc0100000, &word, 4));
    ASSERT_FALSE(r.sim->dmaFaults().empty());
    EXPECT_EQ(r.sim->dmaFaults().back().iova, 0xc0100000u);
}

// A device without a reset method (edu on q35's root bus): Conduit still creates it.
TEST_P(VfioSimFidelity, DeviceWithoutResetMethodIsStillUsable) {
    LogCapture logs;
    Rig r;
    hostsim::SimDeviceConfig dc;
    dc.resetSupported = false;
    r.open(GetParam(), {}, dc);
    EXPECT_EQ(r.sim->device(kBdf)->resetCount(), 0u);
    EXPECT_EQ(r.device->stats().resets, 0u);
    // On the root bus there is no hot reset either; the log says so, the device is used as it is.
    EXPECT_NE(logs.all().find("00:01.0: not reset at start: no function reset (VFIO_DEVICE_FLAGS_RESET clear), and "
                              "no hot reset: VFIO_DEVICE_GET_PCI_HOT_RESET_INFO 0000:00:03.0: No such device (ENODEV)"),
              std::string::npos)
        << logs.all();
    r.enable();
    EXPECT_EQ(r.device->stats().memslots, 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, VfioSimFidelity, ::testing::Values(vfio::BackendKind::Type1, vfio::BackendKind::Iommufd),
                         [](const auto& info) { return info.param == vfio::BackendKind::Type1 ? "type1" : "iommufd"; });

}  // namespace
