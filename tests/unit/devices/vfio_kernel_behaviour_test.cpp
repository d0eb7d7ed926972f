// VfioPciDevice against what the kernel really does in three places the simulated host now models:
// a BAR smaller than a page that vfio-pci lets us mmap (its whole host page; KVM takes whole
// pages only), a host short of MSI/MSI-X vectors (VFIO_DEVICE_SET_IRQS returns the smaller count
// and enables nothing), and what the guest sees of a 4 KiB config space with extended
// capabilities and of an expansion ROM.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <poll.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "base/event_fd.h"
#include "base/log.h"
#include "devices/bus.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

using namespace conduit;
using namespace conduit::devices;
using namespace conduit::devices::pci;
using conduit::devices::vfio_pci::IrqMode;
using conduit::devices::vfio_pci::VfioPciDevice;

namespace {

constexpr const char* kBdf = "0000:01:00.0";
constexpr uint32_t kMsi = 0x40, kMsix = 0x60;  // the simulated device's capabilities

bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

// A guest mapper with KVM's rule: KVM_SET_USER_MEMORY_REGION refuses a slot whose guest address or
// size is not page-aligned (EINVAL).
struct KvmLikeMapper : GuestMapper {
    struct Rec {
        uint64_t size;
        void* host;
    };
    std::map<uint64_t, Rec> live;
    struct M : GuestMapping {
        KvmLikeMapper& m;
        uint64_t gpa;
        M(KvmLikeMapper& m, uint64_t g) : m(m), gpa(g) {}
        ~M() override { m.live.erase(gpa); }
    };
    Result<std::unique_ptr<GuestMapping>> map(uint64_t gpa, uint64_t size, void* host, const std::string& name) override {
        if ((gpa | size) & 0xfff)
            return Error(fmt::format("KVM_SET_USER_MEMORY_REGION {} gpa {:#x} size {:#x}", name, gpa, size), EINVAL);
        live[gpa] = {size, host};
        return std::unique_ptr<GuestMapping>(std::make_unique<M>(*this, gpa));
    }
};

struct FakeMsiRouter : MsiRouter {
    struct Route : MsiRoute {
        FakeMsiRouter& r;
        EventFd ev;
        MsiMessage msg;
        bool m;
        Route(FakeMsiRouter& r, EventFd e, MsiMessage msg, bool masked) : r(r), ev(std::move(e)), msg(msg), m(masked) {
            r.live.push_back(this);
        }
        ~Route() override { r.live.erase(std::find(r.live.begin(), r.live.end(), this)); }
        int eventFd() const override { return ev.fd(); }
        Result<void> setMessage(const MsiMessage& x) override {
            msg = x;
            return success();
        }
        Result<void> setMasked(bool x) override {
            m = x;
            return success();
        }
        bool masked() const override { return m; }
        bool pending() const override { return m && readable(ev.fd()); }
    };
    std::vector<Route*> live;
    Result<std::unique_ptr<MsiRoute>> createRoute(const MsiMessage& msg, bool masked, const std::string&) override {
        return std::unique_ptr<MsiRoute>(std::make_unique<Route>(*this, TRY(EventFd::create()), msg, masked));
    }
};

struct FakeIntxRouter : IntxRouter {
    struct Route : IntxRoute {
        EventFd trig, res;
        uint32_t g;
        Route(EventFd t, EventFd r, uint32_t g) : trig(std::move(t)), res(std::move(r)), g(g) {}
        int triggerFd() const override { return trig.fd(); }
        int resampleFd() const override { return res.fd(); }
        uint32_t gsi() const override { return g; }
    };
    Result<std::unique_ptr<IntxRoute>> createRoute(uint32_t gsi, const std::string&) override {
        return std::unique_ptr<IntxRoute>(std::make_unique<Route>(TRY(EventFd::create()), TRY(EventFd::create()), gsi));
    }
};

// Some other device's range on the MMIO bus.
struct OtherDevice final : BusDevice {
    std::string name() const override { return "other device"; }
    void read(uint64_t, std::span<uint8_t> d) override { std::fill(d.begin(), d.end(), 0); }
    void write(uint64_t, std::span<const uint8_t>) override {}
};

// Passes every call to the simulated host, except that the nth VFIO_DEVICE_SET_IRQS enabling
// MSI-X answers `answer` itself (a host whose vector supply changes between two calls).
struct ScriptedHost final : vfio::HostInterface {
    vfio::HostInterface& in;
    unsigned nth = 0, seen = 0;
    int answer = 0;
    explicit ScriptedHost(vfio::HostInterface& h) : in(h) {}
    Result<int> open(const std::string& p, int f) override { return in.open(p, f); }
    void close(int fd) override { in.close(fd); }
    Result<int> ioctl(int fd, unsigned long req, uintptr_t arg) override {
        if (req == VFIO_DEVICE_SET_IRQS) {
            auto* s = reinterpret_cast<const vfio_irq_set*>(arg);
            if (s->index == VFIO_PCI_MSIX_IRQ_INDEX && (s->flags & VFIO_IRQ_SET_DATA_EVENTFD) && ++seen == nth) return answer;
        }
        return in.ioctl(fd, req, arg);
    }
    Result<void*> mmap(void* a, size_t l, int p, int f, int fd, off_t o) override { return in.mmap(a, l, p, f, fd, o); }
    void munmap(void* a, size_t l) override { in.munmap(a, l); }
    Result<size_t> pread(int fd, void* b, size_t c, off_t o) override { return in.pread(fd, b, c, o); }
    Result<size_t> pwrite(int fd, const void* b, size_t c, off_t o) override { return in.pwrite(fd, b, c, o); }
    Result<int> eventfd(unsigned i, int f) override { return in.eventfd(i, f); }
    Result<std::string> readFile(const std::filesystem::path& p) override { return in.readFile(p); }
    Result<std::filesystem::path> readLink(const std::filesystem::path& p) override { return in.readLink(p); }
    Result<std::vector<std::string>> listDirectory(const std::filesystem::path& p) override { return in.listDirectory(p); }
    bool exists(const std::filesystem::path& p) override { return in.exists(p); }
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

class KernelBehaviour : public ::testing::TestWithParam<vfio::BackendKind> {
protected:
    void open(hostsim::SimDeviceConfig cfg = {}) {
        cfg.bdf = kBdf;
        sim = std::make_unique<hostsim::SimHost>();
        sim->addDevice(cfg);
        scripted = std::make_unique<ScriptedHost>(*sim);
        auto b = vfio::openBackend(*scripted, GetParam(), sim->paths());
        ASSERT_TRUE(b.ok()) << b.error().describe();
        backend = std::move(b).value();
        auto d = backend->openDevice(kBdf);
        ASSERT_TRUE(d.ok()) << d.error().describe();
        vfio_pci::VfioPciPlatform platform;
        platform.mmio = &mmio;
        platform.pio = &pio;
        platform.mapper = &mapper;
        platform.msi = &msi;
        platform.intx = &intx;
        platform.intxGsi = 17;
        platform.dma = backend.get();
        auto dev = VfioPciDevice::create(std::move(d).value(), platform, "00:01.0");
        ASSERT_TRUE(dev.ok()) << dev.error().describe();
        device = std::move(dev).value();
    }
    void TearDown() override {
        device.reset();
        backend.reset();
        scripted.reset();
    }
    hostsim::SimDevice& simDev() { return *sim->device(kBdf); }
    uint32_t cfg(uint32_t off, size_t n = 4) {
        uint32_t v = 0;
        device->configRead(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
        return v;
    }
    void setCfg(uint32_t off, uint32_t v, size_t n = 4) {
        device->configWrite(off, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
    }
    uint32_t mmioRead(uint64_t a, size_t n = 4) {
        uint64_t v = 0;
        EXPECT_TRUE(mmio.read(a, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n))) << std::hex << a;
        return static_cast<uint32_t>(v);
    }
    void mmioWrite(uint64_t a, uint64_t v, size_t n = 4) {
        EXPECT_TRUE(mmio.write(a, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), n))) << std::hex << a;
    }
    std::vector<std::pair<uint64_t, uint64_t>> busRanges() {
        std::vector<std::pair<uint64_t, uint64_t>> out;
        for (auto& e : mmio.entries()) out.push_back({e.base, e.size});
        return out;
    }
    // BAR0 (registers) at 0xc0000000, BAR2 (memory, MSI-X at its top) at 0xc0100000, decode on.
    void enable() {
        setCfg(PCI_BASE_ADDRESS_0, 0xc0000000);
        setCfg(PCI_BASE_ADDRESS_2, 0xc0100000);
        setCfg(PCI_BASE_ADDRESS_3, 0);
        setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    }
    uint64_t tableAddr() const { return 0xc0100000 + 0xfe000; }
    void programMsixEntries(unsigned n) {
        for (unsigned v = 0; v < n; ++v) {
            mmioWrite(tableAddr() + 16 * v, 0xfee00000);
            mmioWrite(tableAddr() + 16 * v + 4, 0);
            mmioWrite(tableAddr() + 16 * v + 8, 0x40 + v);
            mmioWrite(tableAddr() + 16 * v + 12, 0);
        }
    }

    std::unique_ptr<hostsim::SimHost> sim;
    std::unique_ptr<ScriptedHost> scripted;
    std::unique_ptr<vfio::VfioBackend> backend;
    Bus mmio{"mmio"}, pio{"pio"};
    KvmLikeMapper mapper;
    FakeMsiRouter msi;
    FakeIntxRouter intx;
    std::shared_ptr<VfioPciDevice> device;
};

// ------------------------------------------------------------------ item 1: sub-page BARs

hostsim::SimDeviceConfig withSubPageBar4() {
    hostsim::SimDeviceConfig c;
    c.bars[4] = hostsim::BarConfig{hostsim::BarKind::Memory, 0x100, false, false, true, {}};
    return c;
}

// Placed page-aligned, the BAR is its host page as one memslot; the rest of the guest page is
// claimed on the bus so nothing decoded there later hides under the memslot.
TEST_P(KernelBehaviour, SubPageBarPlacedPageAlignedIsItsHostPage) {
    open(withSubPageBar4());
    enable();
    setCfg(PCI_BASE_ADDRESS_4, 0xc0200000);
    ASSERT_EQ(device->activeBar(4), 0xc0200000u) << "the BAR is on";
    ASSERT_EQ(mapper.live.count(0xc0200000), 1u);
    EXPECT_EQ(mapper.live[0xc0200000].size, 0x1000u) << "the whole page";
    // The memslot is the device's BAR.
    static_cast<uint8_t*>(mapper.live[0xc0200000].host)[0x20] = 0xa5;
    EXPECT_EQ(simDev().barMemory(4)[0x20], 0xa5);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200100, 0xf00}))
        << "the rest of the page is claimed";
    EXPECT_THAT(device->trappedAreas(4), ::testing::SizeIs(1));
    auto s = device->stats();
    EXPECT_EQ(s.memslots, 2u) << "BAR2 below its MSI-X pages, and BAR4's page";
    EXPECT_EQ(s.trappedRanges, 2u) << "BAR0 and BAR2's MSI-X pages; BAR4 is not trapped";
    // Another range in the rest of that page is refused by the bus, naming the claim.
    auto other = mmio.insert(std::make_shared<OtherDevice>(), 0xc0200800, 0x100);
    ASSERT_FALSE(other.ok());
    EXPECT_NE(other.error().describe().find("BAR4 rest of its page"), std::string::npos) << other.error().describe();
    // P2P: type1 maps the page through its PFNMAP path; iommufd has no way (the dma-buf must lie
    // within the BAR, and IOAS_MAP of an mmap is EFAULT).
    EXPECT_EQ(s.p2pMappings, GetParam() == vfio::BackendKind::Type1 ? 2u : 1u);
    // Decode off: memslot and claim go.
    setCfg(PCI_COMMAND, 0, 2);
    EXPECT_TRUE(mapper.live.empty());
    EXPECT_TRUE(mmio.entries().empty());
}

// Anywhere else the BAR is trapped whole and reaches the device through the region.
TEST_P(KernelBehaviour, SubPageBarNotPageAlignedIsTrappedAndMovesBetweenTheTwo) {
    open(withSubPageBar4());
    enable();
    setCfg(PCI_BASE_ADDRESS_4, 0xc0200100);
    ASSERT_EQ(device->activeBar(4), 0xc0200100u) << "the BAR is on";
    EXPECT_EQ(mapper.live.count(0xc0200000), 0u);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200100, 0x100}));
    mmioWrite(0xc0200140, 0x12345678);
    EXPECT_EQ(std::memcmp(simDev().barMemory(4) + 0x40, "\x78\x56\x34\x12", 4), 0);
    simDev().barMemory(4)[0xfc] = 0x3c;
    EXPECT_EQ(mmioRead(0xc02001fc, 1), 0x3cu);
    EXPECT_EQ(device->stats().trappedReads[4], 1u);
    // Moved to a page boundary: the page replaces the trap; and back.
    setCfg(PCI_BASE_ADDRESS_4, 0xc0300000);
    EXPECT_EQ(mapper.live.count(0xc0300000), 1u);
    EXPECT_THAT(busRanges(), ::testing::Not(::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200100, 0x100})));
    setCfg(PCI_BASE_ADDRESS_4, 0xc0300200);  // naturally aligned (0x100), not page-aligned
    EXPECT_EQ(mapper.live.count(0xc0300000), 0u);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0300200, 0x100}));
    EXPECT_THAT(busRanges(), ::testing::Not(::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0300100, 0xf00})));
    EXPECT_EQ(device->stats().relocations, 2u);
}

// Page-aligned, but something already decodes in the rest of the page: trapped.
TEST_P(KernelBehaviour, SubPageBarWhosePageIsSharedIsTrapped) {
    open(withSubPageBar4());
    ASSERT_TRUE(mmio.insert(std::make_shared<OtherDevice>(), 0xc0200800, 0x100).ok());
    enable();
    setCfg(PCI_BASE_ADDRESS_4, 0xc0200000);
    ASSERT_EQ(device->activeBar(4), 0xc0200000u);
    EXPECT_EQ(mapper.live.count(0xc0200000), 0u) << "a memslot would hide the other range";
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0200000, 0x100}));
    simDev().barMemory(4)[0] = 0x77;
    EXPECT_EQ(mmioRead(0xc0200000, 1), 0x77u);
}

// ------------------------------------------------------------------ item 2: fewer host vectors

TEST_P(KernelBehaviour, MsixWithFewerHostVectorsRunsWithWhatTheHostOffers) {
    LogCapture logs;
    hostsim::SimDeviceConfig c;
    c.hostIrqVectors = 4;  // the device has 8
    open(c);
    enable();
    programMsixEntries(8);
    setCfg(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_MSIX_IRQ_INDEX)) << "MSI-X is on at the device";
    EXPECT_EQ(simDev().allocatedVectors(), 4u);
    EXPECT_EQ(device->irqMode(), IrqMode::Msix);
    auto s = device->stats();
    EXPECT_EQ(s.vectors, 4u);
    EXPECT_EQ(s.setIrqsCalls, 5u) << "INTx trigger and resample at start, INTx off, MSI-X refused, MSI-X with 4";
    ASSERT_EQ(msi.live.size(), 4u);
    EXPECT_EQ(msi.live[3]->msg, (MsiMessage{0xfee00000, 0x43}));
    const std::string text = logs.all();
    EXPECT_NE(text.find("00:01.0: MSI-X: VFIO_DEVICE_SET_IRQS: the host has 4 of the 8 vectors the guest enabled; "
                        "running with 4 (vectors 4 to 7 will not fire)"),
              std::string::npos)
        << text;
    // Vector 3 fires through its route; the entries beyond have none and changing them is harmless.
    mmioWrite(0xc0000070, 3);
    EXPECT_TRUE(readable(msi.live[3]->eventFd()));
    mmioWrite(tableAddr() + 16 * 6 + 8, 0x99);
    mmioWrite(tableAddr() + 16 * 6 + 12, 1);
    EXPECT_EQ(msi.live.size(), 4u);
    EXPECT_EQ(mmioRead(tableAddr() + 0x1000) & 0xf0, 0u) << "no pending bit for a vector without a route";
    // Off and on again: same outcome, INTx in between.
    setCfg(kMsix + PCI_MSIX_FLAGS, 0, 2);
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
    setCfg(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
    EXPECT_EQ(simDev().allocatedVectors(), 4u);
    EXPECT_EQ(device->stats().vectors, 4u);
}

TEST_P(KernelBehaviour, MsiWithFewerHostVectorsRunsWithWhatTheHostOffers) {
    LogCapture logs;
    hostsim::SimDeviceConfig c;
    c.msiVectors = 4;
    c.msixVectors = 0;
    c.hostIrqVectors = 2;
    open(c);
    enable();
    setCfg(kMsi + PCI_MSI_ADDRESS_LO, 0xfee00000);
    setCfg(kMsi + PCI_MSI_ADDRESS_HI, 0);
    setCfg(kMsi + PCI_MSI_DATA_64, 0x60, 2);
    setCfg(kMsi + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | (2 << 4), 2);  // the guest enables 4
    EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_MSI_IRQ_INDEX));
    EXPECT_EQ(simDev().allocatedVectors(), 2u);
    EXPECT_EQ(device->irqMode(), IrqMode::Msi);
    EXPECT_EQ(device->stats().vectors, 2u);
    ASSERT_EQ(msi.live.size(), 2u);
    EXPECT_EQ(msi.live[0]->msg, (MsiMessage{0xfee00000, 0x60}));
    EXPECT_EQ(msi.live[1]->msg, (MsiMessage{0xfee00000, 0x61}));
    EXPECT_NE(logs.all().find("MSI: VFIO_DEVICE_SET_IRQS: the host has 2 of the 4 vectors the guest enabled"),
              std::string::npos)
        << logs.all();
    mmioWrite(0xc0000070, 1);
    EXPECT_TRUE(readable(msi.live[1]->eventFd()));
}

// When the retry fails too, the error names the ioctl and both counts and INTx is back on.
TEST_P(KernelBehaviour, MsixRetryThatFailsIsAnErrorAndIntxIsBackOn) {
    hostsim::SimDeviceConfig c;
    c.hostIrqVectors = 4;
    {
        // The host offers 4 of 8, then the retry with 4 is refused outright.
        LogCapture logs;
        open(c);
        enable();
        sim->failIoctl(VFIO_DEVICE_SET_IRQS, EBUSY, 3);  // INTx off, MSI-X with 8, the retry
        setCfg(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        EXPECT_EQ(device->irqMode(), IrqMode::Intx);
        EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
        EXPECT_TRUE(msi.live.empty());
        EXPECT_NE(logs.all().find("00:01.0: enabling MSI-X: retry with the 4 of 8 vectors the host offered: "
                                  "VFIO_DEVICE_SET_IRQS 0000:01:00.0 MSI-X enable with eventfds for vectors 0..4: "
                                  "Device or resource busy (EBUSY)"),
                  std::string::npos)
            << logs.all();
        TearDown();
    }
    {
        // The host offers 4 of 8, then 2 of those 4.
        LogCapture logs;
        open(c);
        enable();
        scripted->nth = 2;
        scripted->answer = 2;
        setCfg(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        EXPECT_EQ(device->irqMode(), IrqMode::Intx);
        EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
        EXPECT_NE(logs.all().find("00:01.0: enabling MSI-X: VFIO_DEVICE_SET_IRQS 0000:01:00.0 MSI-X: the host offered 4 "
                                  "of 8 vectors, then 2 of those 4 on the retry: No space left on device (ENOSPC)"),
                  std::string::npos)
            << logs.all();
        TearDown();
    }
    {
        // No vector at all: ENOSPC from the first call.
        LogCapture logs;
        c.hostIrqVectors = 0;
        open(c);
        enable();
        setCfg(kMsix + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
        EXPECT_EQ(device->irqMode(), IrqMode::Intx);
        EXPECT_EQ(simDev().activeIrqIndex(), uint32_t(VFIO_PCI_INTX_IRQ_INDEX));
        EXPECT_NE(logs.all().find("00:01.0: enabling MSI-X: VFIO_DEVICE_SET_IRQS 0000:01:00.0 MSI-X enable with eventfds "
                                  "for vectors 0..8: No space left on device (ENOSPC)"),
                  std::string::npos)
            << logs.all();
    }
}

// ------------------------------------------------------------------ item 10: extended caps, ROM

// Extended capabilities: those Conduit supports stay (AER, vendor-specific, DSN), the others are
// unlinked (ACS, ATS); a hidden first one leaves a null capability at 0x100 pointing on.
TEST_P(KernelBehaviour, ExtendedCapabilitiesAreFilteredAndRelinked) {
    hostsim::SimDeviceConfig c;
    c.pcieCaps = true;
    std::vector<uint8_t> aer(0x44, 0);
    aer[0x08 - 4] = 0x30;  // uncorrectable error mask: a recognisable byte
    c.extCaps = {{PCI_EXT_CAP_ID_ACS, 1, 0x100, {0x1f, 0x00, 0x00, 0x00}},
                 {PCI_EXT_CAP_ID_ERR, 2, 0x140, aer},
                 {PCI_EXT_CAP_ID_ATS, 1, 0x190, {0x20, 0x00, 0x00, 0x00}},
                 {PCI_EXT_CAP_ID_VNDR, 1, 0x1a0, {0x01, 0x00, 0x01, 0x01}},
                 {PCI_EXT_CAP_ID_DSN, 1, 0x1c0, {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}}};
    open(c);
    EXPECT_EQ(device->configSize(), 4096u);
    EXPECT_THAT(device->extendedCapabilities(), ::testing::ElementsAre(0x140, 0x1a0, 0x1c0));
    // The chain as the guest walks it (pci_find_ext_capability()).
    std::vector<std::pair<uint32_t, uint32_t>> chain;  // (offset, id)
    for (uint32_t at = 0x100; at;) {
        const uint32_t h = cfg(at);
        chain.push_back({at, PCI_EXT_CAP_ID(h)});
        at = PCI_EXT_CAP_NEXT(h);
        ASSERT_LT(chain.size(), 10u);
    }
    EXPECT_THAT(chain, ::testing::ElementsAre(std::pair<uint32_t, uint32_t>{0x100, 0},  // null capability
                                              std::pair<uint32_t, uint32_t>{0x140, PCI_EXT_CAP_ID_ERR},
                                              std::pair<uint32_t, uint32_t>{0x1a0, PCI_EXT_CAP_ID_VNDR},
                                              std::pair<uint32_t, uint32_t>{0x1c0, PCI_EXT_CAP_ID_DSN}));
    EXPECT_EQ(cfg(0x100), 0x14000000u) << "ID 0, version 0, next 0x140";
    EXPECT_EQ(cfg(0x140), 0x1a020001u) << "AER keeps its version; next rewritten from 0x190 to 0x1a0";
    EXPECT_EQ(cfg(0x1a0), 0x1c01000bu);
    EXPECT_EQ(cfg(0x1c0), 0x00010003u) << "the last one ends the chain";
    // The kept capabilities' registers are the device's.
    EXPECT_EQ(cfg(0x140 + PCI_ERR_UNCOR_MASK), 0x30u);
    EXPECT_EQ(cfg(0x1c0 + 4), 0x44332211u);
    EXPECT_EQ(cfg(0x1a0 + 4), 0x01010001u);
    // A header write changes nothing the guest sees (read-only, and the next pointer emulated).
    setCfg(0x140, 0xffffffff);
    EXPECT_EQ(cfg(0x140), 0x1a020001u);

    // First capability kept: 0x100 is it, with its next pointer rewritten past the hidden one.
    TearDown();
    c.extCaps = {{PCI_EXT_CAP_ID_ERR, 2, 0x100, aer},
                 {PCI_EXT_CAP_ID_ACS, 1, 0x148, {0x1f, 0, 0, 0}},
                 {PCI_EXT_CAP_ID_VNDR, 1, 0x160, {0x01, 0x00, 0x01, 0x01}}};
    open(c);
    EXPECT_THAT(device->extendedCapabilities(), ::testing::ElementsAre(0x100, 0x160));
    EXPECT_EQ(cfg(0x100), 0x16020001u);
    EXPECT_EQ(cfg(0x160), 0x0001000bu);
    EXPECT_EQ(cfg(0x100 + PCI_ERR_UNCOR_MASK), 0x30u);
}

// The expansion ROM: the ROM BAR sizes as the region's size, decodes only with its enable bit and
// memory decode, reads the ROM's bytes (0xff past the image) and ignores writes.
TEST_P(KernelBehaviour, RomBarSizesEnablesAndReadsTheRom) {
    hostsim::SimDeviceConfig c;
    c.rom.assign(2048, 0);
    for (size_t i = 0; i < c.rom.size(); ++i) c.rom[i] = static_cast<uint8_t>(i * 13 + 1);
    c.rom[0] = 0x55, c.rom[1] = 0xaa, c.rom[2] = 4;
    c.rom[0x18] = 0x1c, c.rom[0x19] = 0;  // PCIR at 0x1c
    std::memcpy(&c.rom[0x1c], "PCIR", 4);
    c.rom[0x1c + 16] = 4, c.rom[0x1c + 17] = 0;  // 4 x 512 bytes
    c.rom[0x1c + 21] = 0x80;                     // last image
    c.romBarSize = 0x10000;
    open(c);
    EXPECT_EQ(device->romSize(), 0x10000u);
    // Sizing: all ones (enable clear) reads back the size mask.
    setCfg(PCI_ROM_ADDRESS, PCI_ROM_ADDRESS_MASK);
    EXPECT_EQ(cfg(PCI_ROM_ADDRESS), 0xffff0000u);
    setCfg(PCI_ROM_ADDRESS, 0xc0400000);
    EXPECT_EQ(cfg(PCI_ROM_ADDRESS), 0xc0400000u);
    enable();
    EXPECT_FALSE(device->activeBar(kRomBar)) << "enable bit clear";
    setCfg(PCI_ROM_ADDRESS, 0xc0400000 | PCI_ROM_ADDRESS_ENABLE);
    EXPECT_EQ(cfg(PCI_ROM_ADDRESS), 0xc0400001u);
    ASSERT_EQ(device->activeBar(kRomBar), 0xc0400000u);
    EXPECT_THAT(busRanges(), ::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0400000, 0x10000}));
    EXPECT_EQ(mmioRead(0xc0400000, 2), 0xaa55u);
    uint32_t want;
    std::memcpy(&want, &c.rom[0x123 & ~3u], 4);
    EXPECT_EQ(mmioRead(0xc0400000 + (0x123 & ~3u)), want);
    EXPECT_EQ(mmioRead(0xc0400000 + 0x7ff, 1), c.rom[0x7ff]);
    EXPECT_EQ(mmioRead(0xc0400000 + 0x800), 0xffffffffu) << "past the image";
    EXPECT_EQ(mmioRead(0xc0400000 + 0xfffc), 0xffffffffu);
    mmioWrite(0xc0400010, 0);  // dropped
    EXPECT_EQ(mmioRead(0xc0400010, 1), c.rom[0x10]);
    EXPECT_EQ(device->stats().trappedWrites[kRomBar], 1u);
    // Memory decode off, or enable bit clear: the ROM is gone from the bus.
    setCfg(PCI_COMMAND, 0, 2);
    EXPECT_FALSE(device->activeBar(kRomBar));
    setCfg(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
    EXPECT_EQ(device->activeBar(kRomBar), 0xc0400000u);
    setCfg(PCI_ROM_ADDRESS, 0xc0400000);
    EXPECT_FALSE(device->activeBar(kRomBar));
    EXPECT_THAT(busRanges(), ::testing::Not(::testing::Contains(std::pair<uint64_t, uint64_t>{0xc0400000, 0x10000})));
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelBehaviour, ::testing::Values(vfio::BackendKind::Type1, vfio::BackendKind::Iommufd),
                         [](const auto& info) { return std::string(vfio::backendKindName(info.param)); });

}  // namespace
