// Shared harness of the PCI passthrough fuzz targets (fuzz_pci_config, fuzz_msix, fuzz_bar_reloc):
// a VfioPciDevice over the simulated host (tests/hostsim), with fake guest-mapper / MSI / INTx
// services that enforce what KVM would (no overlapping memslots, page-aligned slots).
//
// The simulated hosts and VFIO backends are created once per process (four of them: type1 or
// iommufd, times a device whose MSI-X table pages are mmappable or one with sparse mmap areas and
// PCIe capabilities); every input opens the device, creates a fresh VfioPciDevice, runs the
// input's program and destroys it, then checks that nothing leaked: no simulated fd, mmap or DMA
// mapping beyond the baseline, no bus range, guest mapping or interrupt route left.
#pragma once

#include <linux/pci_regs.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "base/event_fd.h"
#include "base/log.h"
#include "devices/bus.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

namespace conduit::fuzz {

using devices::Bus;
using devices::pci::GuestMapper;
using devices::pci::GuestMapping;
using devices::pci::IntxRoute;
using devices::pci::IntxRouter;
using devices::pci::MsiMessage;
using devices::pci::MsiRoute;
using devices::pci::MsiRouter;
using devices::vfio_pci::VfioPciDevice;

inline constexpr const char* kBdf = "0000:01:00.0";
inline constexpr const char* kPeerBdf = "0000:02:00.0";
inline constexpr uint64_t kPage = 4096;
inline constexpr uint64_t kDmaIova = 0x40000;

// KVM's memslot rules: page-aligned, non-empty, no overlap with another slot.
struct FakeMapper : GuestMapper {
    std::map<uint64_t, uint64_t> live;  // gpa -> size
    struct M : GuestMapping {
        FakeMapper& m;
        uint64_t gpa;
        M(FakeMapper& m, uint64_t g) : m(m), gpa(g) {}
        ~M() override { m.live.erase(gpa); }
    };
    Result<std::unique_ptr<GuestMapping>> map(uint64_t gpa, uint64_t size, void* host, const std::string& name) override {
        FUZZ_CHECK(gpa % kPage == 0 && size % kPage == 0 && size != 0 && host != nullptr);
        FUZZ_CHECK(size - 1 <= UINT64_MAX - gpa);
        auto next = live.lower_bound(gpa);
        if ((next != live.end() && next->first <= gpa + size - 1) ||
            (next != live.begin() && std::prev(next)->first + std::prev(next)->second > gpa))
            return Error("KVM_SET_USER_MEMORY_REGION " + name + ": overlaps a slot", EEXIST);
        live[gpa] = size;
        return std::unique_ptr<GuestMapping>(std::make_unique<M>(*this, gpa));
    }
};

inline bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

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
            if (!x) ev.consume();  // KVM delivers what was held while masked
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
        int* liveCount;
        Route(EventFd t, EventFd r, uint32_t g, int* lc) : trig(std::move(t)), res(std::move(r)), g(g), liveCount(lc) { ++*liveCount; }
        ~Route() override { --*liveCount; }
        int triggerFd() const override { return trig.fd(); }
        int resampleFd() const override { return res.fd(); }
        uint32_t gsi() const override { return g; }
    };
    int live = 0;
    Result<std::unique_ptr<IntxRoute>> createRoute(uint32_t gsi, const std::string&) override {
        return std::unique_ptr<IntxRoute>(std::make_unique<Route>(TRY(EventFd::create()), TRY(EventFd::create()), gsi, &live));
    }
};

struct HostContext {
    std::unique_ptr<hostsim::SimHost> sim;
    std::unique_ptr<vfio::VfioBackend> backend;
    std::unique_ptr<vfio::VfioDevice> peer;
    size_t fds = 0, mmaps = 0, dmaMappings = 0;
};

// variant bit 0: iommufd (else type1); bit 1: sparse mmap + PCIe capabilities (FLR) device.
inline HostContext& hostContext(unsigned variant) {
    static HostContext contexts[4];
    HostContext& c = contexts[variant & 3];
    if (!c.sim) {
        log::setLevel("off");
        hostsim::SimDeviceConfig cfg;
        cfg.bdf = kBdf;
        cfg.group = 7;
        cfg.msiVectors = 4;
        if (variant & 2) {
            cfg.msixMappable = false;
            cfg.pcieCaps = true;
            cfg.msixVectors = 16;
        }
        c.sim = std::make_unique<hostsim::SimHost>();
        c.sim->addDevice(cfg);
        hostsim::SimDeviceConfig peer;  // kept open: holds the container / IOAS (and the DMA map)
        peer.bdf = kPeerBdf;
        peer.group = 8;
        c.sim->addDevice(peer);
        auto b = vfio::openBackend(*c.sim, (variant & 1) ? vfio::BackendKind::Iommufd : vfio::BackendKind::Type1,
                                   c.sim->paths());
        if (!b.ok()) {
            std::fprintf(stderr, "fuzz: backend: %s\n", b.error().describe().c_str());
            std::abort();
        }
        c.backend = std::move(b).value();
        auto p = c.backend->openDevice(kPeerBdf);
        if (!p.ok()) {
            std::fprintf(stderr, "fuzz: openDevice peer: %s\n", p.error().describe().c_str());
            std::abort();
        }
        c.peer = std::move(p).value();
        // Guest RAM for the device's DMA engine (edu: BAR0 0x80..0x98): one page at IOVA 0x40000
        // between two PROT_NONE guard pages, so a DMA that the simulated IOMMU let through past
        // the mapping would fault (and a libFuzzer crash would record the input).
        auto* ram = static_cast<uint8_t*>(::mmap(nullptr, 3 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (ram == MAP_FAILED || ::mprotect(ram + kPage, kPage, PROT_READ | PROT_WRITE) != 0) std::abort();
        if (auto m = c.backend->mapDma(kDmaIova, kPage, ram + kPage, true); !m.ok()) {
            std::fprintf(stderr, "fuzz: mapDma: %s\n", m.error().describe().c_str());
            std::abort();
        }
        // The backend keeps a group (type1) open after its first device closes: open and close the
        // device once so the baseline includes that, and a leak per input still shows.
        if (auto warm = c.backend->openDevice(kBdf); !warm.ok()) {
            std::fprintf(stderr, "fuzz: openDevice: %s\n", warm.error().describe().c_str());
            std::abort();
        }
        c.fds = c.sim->openFdCount();
        c.mmaps = c.sim->mmapCount();
        c.dmaMappings = c.sim->dmaMappingCount();
    }
    return c;
}

// One VfioPciDevice for one input.
class Session {
public:
    explicit Session(unsigned variant) : host_(hostContext(variant)) {
        auto d = host_.backend->openDevice(kBdf);
        if (!d.ok()) {
            std::fprintf(stderr, "fuzz: openDevice: %s\n", d.error().describe().c_str());
            std::abort();
        }
        devices::vfio_pci::VfioPciPlatform platform;
        platform.mmio = &mmio;
        platform.pio = &pio;
        platform.mapper = &mapper;
        platform.msi = &msi;
        platform.intx = &intx;
        platform.intxGsi = 17;
        platform.dma = host_.backend.get();
        auto dev = VfioPciDevice::create(std::move(d).value(), platform, "00:01.0 (" + std::string(kBdf) + ")");
        if (!dev.ok()) {
            std::fprintf(stderr, "fuzz: create: %s\n", dev.error().describe().c_str());
            std::abort();
        }
        device = std::move(dev).value();
    }
    // Teardown leaves nothing behind.
    ~Session() {
        device.reset();
        FUZZ_CHECK(mmio.entries().empty());
        FUZZ_CHECK(pio.entries().empty());
        FUZZ_CHECK(mapper.live.empty());
        FUZZ_CHECK(msi.live.empty());
        FUZZ_CHECK(intx.live == 0);
        FUZZ_CHECK(host_.sim->openFdCount() == host_.fds);
        FUZZ_CHECK(host_.sim->mmapCount() == host_.mmaps);
        FUZZ_CHECK(host_.sim->dmaMappingCount() == host_.dmaMappings);
    }

    uint32_t cfgRead(uint32_t off, size_t n) {
        uint32_t v = 0;
        device->configRead(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
        return v;
    }
    void cfgWrite(uint32_t off, uint32_t v, size_t n) {
        device->configWrite(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), n));
    }
    // A config access as the PCI root delivers it: 1, 2 or 4 bytes, naturally aligned, inside
    // configSize().
    void cfgOp(Input& in, bool write, uint16_t rawOffset, uint8_t sizeSel) {
        static constexpr size_t kSizes[] = {1, 2, 4, 4};
        const size_t n = kSizes[sizeSel & 3];
        const uint32_t off = (rawOffset % device->configSize()) & ~static_cast<uint32_t>(n - 1);
        if (write)
            cfgWrite(off, in.u32(), n);
        else
            cfgRead(off, n);
    }
    // An MMIO access of 1, 2, 4 or 8 bytes at `addr` (claimed or not).
    void mmioOp(uint64_t addr, bool write, uint8_t sizeSel, uint64_t value) {
        static constexpr size_t kSizes[] = {1, 2, 4, 8};
        const size_t n = kSizes[sizeSel & 3];
        if (write)
            mmio.write(addr, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), n));
        else {
            uint64_t v = 0;
            mmio.read(addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n));
        }
    }
    // Where a BAR's bytes are now: its active address, else its programmed one.
    uint64_t barBase(unsigned index) const {
        auto a = device->activeBar(index);
        return a ? *a : device->programmedBar(index);
    }
    // BARs at fixed addresses and memory decoding on (what firmware leaves).
    void enableDecode() {
        cfgWrite(PCI_BASE_ADDRESS_0, 0xc0000000, 4);
        cfgWrite(PCI_BASE_ADDRESS_2, 0xc0100000, 4);
        cfgWrite(PCI_BASE_ADDRESS_3, 0, 4);
        cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    }
    // Every trapped range and every guest mapping lies inside a BAR that is decoded now, and the
    // device's counters agree with what the fakes hold.
    void checkConsistent() const {
        auto inActiveBar = [&](uint64_t base, uint64_t size) {
            for (unsigned i = 0; i <= devices::pci::kRomBar; ++i) {
                auto a = device->activeBar(i);
                if (!a) continue;
                const uint64_t barSize = i == devices::pci::kRomBar ? device->romSize() : device->bar(i).size;
                if (base >= *a && size <= barSize && base - *a <= barSize - size) return true;
            }
            return false;
        };
        for (const auto& e : mmio.entries()) FUZZ_CHECK(inActiveBar(e.base, e.size));
        for (const auto& [gpa, size] : mapper.live) FUZZ_CHECK(inActiveBar(gpa, size));
        const auto s = device->stats();
        FUZZ_CHECK(s.memslots == mapper.live.size());
        FUZZ_CHECK(s.trappedRanges == mmio.entries().size() + pio.entries().size());
        if (s.irqMode == devices::vfio_pci::IrqMode::Msix || s.irqMode == devices::vfio_pci::IrqMode::Msi)
            FUZZ_CHECK(msi.live.size() == s.vectors);
        else
            FUZZ_CHECK(msi.live.empty());
    }
    // Fires a random live MSI route's eventfd (what the device does on an interrupt), so masked
    // vectors become pending.
    void fireRoute(uint8_t which) {
        if (msi.live.empty()) return;
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(msi.live[which % msi.live.size()]->eventFd(), &one, 8);
    }

    HostContext& host_;
    Bus mmio{"mmio"}, pio{"pio"};
    FakeMapper mapper;
    FakeMsiRouter msi;
    FakeIntxRouter intx;
    std::shared_ptr<VfioPciDevice> device;
};

}  // namespace conduit::fuzz
