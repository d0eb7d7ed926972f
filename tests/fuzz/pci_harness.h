// Shared harness of the PCI passthrough fuzz targets (fuzz_pci_config, fuzz_msix, fuzz_bar_reloc):
// a VfioPciDevice over the simulated host (tests/hostsim), in the fake VMM the passthrough unit
// tests use too (tests/common/passthrough_fakes.h), whose memslots follow KVM's rules (page-aligned,
// non-overlapping).
//
// The simulated hosts and VFIO backends are created once per process (four of them: type1 or
// iommufd, times a device whose MSI-X table pages are mmappable or one with sparse mmap areas and
// PCIe capabilities); every input opens the device, creates a fresh VfioPciDevice, runs the
// input's program and destroys it, then checks that nothing leaked: no simulated fd, mmap or DMA
// mapping beyond the baseline, no bus range, guest mapping or interrupt route left.
#pragma once

#include <linux/pci_regs.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "base/log.h"
#include "devices/bus.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/common/passthrough_fakes.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

namespace conduit::fuzz {

using test::kDeviceBdf;
using test::kGuestPage;
using test::kPeerBdf;

inline constexpr uint64_t kDmaIova = 0x40000;

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
        if (variant & 2) {
            cfg.msixMappable = false;
            cfg.pcieCaps = true;
            cfg.msixVectors = 16;
        }
        c.sim = test::simHostWithPeer(cfg);
        auto b = vfio::openBackend(*c.sim, (variant & 1) ? vfio::BackendKind::Iommufd : vfio::BackendKind::Type1,
                                   c.sim->paths());
        if (!b.ok()) {
            std::fprintf(stderr, "fuzz: backend: %s\n", b.error().describe().c_str());
            std::abort();
        }
        c.backend = std::move(b).value();
        auto p = c.backend->openDevice(kPeerBdf);  // kept open: holds the container / IOAS (and the DMA map)
        if (!p.ok()) {
            std::fprintf(stderr, "fuzz: openDevice peer: %s\n", p.error().describe().c_str());
            std::abort();
        }
        c.peer = std::move(p).value();
        // Guest RAM for the device's DMA engine (edu: BAR0 0x80..0x98): one page at IOVA 0x40000
        // between two PROT_NONE guard pages, so a DMA that the simulated IOMMU let through past
        // the mapping would fault (and a libFuzzer crash would record the input).
        auto* ram = static_cast<uint8_t*>(::mmap(nullptr, 3 * kGuestPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (ram == MAP_FAILED || ::mprotect(ram + kGuestPage, kGuestPage, PROT_READ | PROT_WRITE) != 0) std::abort();
        if (auto m = c.backend->mapDma(kDmaIova, kGuestPage, ram + kGuestPage, true); !m.ok()) {
            std::fprintf(stderr, "fuzz: mapDma: %s\n", m.error().describe().c_str());
            std::abort();
        }
        // The backend keeps a group (type1) open after its first device closes: open and close the
        // device once so the baseline includes that, and a leak per input still shows.
        if (auto warm = c.backend->openDevice(kDeviceBdf); !warm.ok()) {
            std::fprintf(stderr, "fuzz: openDevice: %s\n", warm.error().describe().c_str());
            std::abort();
        }
        c.fds = c.sim->openFdCount();
        c.mmaps = c.sim->mmapCount();
        c.dmaMappings = c.sim->dmaMappingCount();
    }
    return c;
}

// One VfioPciDevice for one input, in the fake VMM of tests/common/passthrough_fakes.h.
class Session : public test::FakeVmm {
public:
    explicit Session(unsigned variant) : host_(hostContext(variant)) {
        if (auto r = createDevice(*host_.backend, kDeviceBdf, "00:01.0 (" + std::string(kDeviceBdf) + ")"); !r.ok()) {
            std::fprintf(stderr, "fuzz: creating the device: %s\n", r.error().describe().c_str());
            std::abort();
        }
    }
    // Teardown leaves nothing behind.
    ~Session() {
        device.reset();
        checkMemslotRequests();
        FUZZ_CHECK(mmio.entries().empty());
        FUZZ_CHECK(pio.entries().empty());
        FUZZ_CHECK(mapper.live.empty());
        FUZZ_CHECK(msi.live.empty());
        FUZZ_CHECK(intx.live == 0);
        FUZZ_CHECK(host_.sim->openFdCount() == host_.fds);
        FUZZ_CHECK(host_.sim->mmapCount() == host_.mmaps);
        FUZZ_CHECK(host_.sim->dmaMappingCount() == host_.dmaMappings);
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
    // Every trapped range and every guest mapping lies inside a BAR that is decoded now, and the
    // device's counters agree with what the fakes hold.
    void checkConsistent() const {
        checkMemslotRequests();
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
        for (const auto& [gpa, slot] : mapper.live) FUZZ_CHECK(inActiveBar(gpa, slot.size));
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

    // The device asked for no memslot KVM refuses as malformed (EINVAL). One overlapping another
    // (EEXIST) is the guest's doing, with BARs programmed over each other, and the device copes.
    void checkMemslotRequests() const {
        for (const auto& r : mapper.invalid) std::fprintf(stderr, "fuzz: memslot request KVM refuses: %s\n", r.c_str());
        FUZZ_CHECK(mapper.invalid.empty());
    }

    HostContext& host_;
};

}  // namespace conduit::fuzz
