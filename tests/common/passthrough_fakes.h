// A VfioPciDevice over the simulated host (tests/hostsim) inside a fake VMM: MMIO and port buses, a
// guest mapper that holds KVM's memslot rules, MSI and INTx routes that behave as KVM's irqfd routes
// do. The passthrough unit tests (tests/unit/devices) and the PCI fuzz targets
// (tests/fuzz/pci_harness.h) share it, so both hold the device to the same KVM.
//
// Nothing here asserts, so that gtest and libFuzzer code can both use it: what KVM would refuse is
// answered with KVM's errno, as the real one would, and recorded; each caller checks the record
// with its own means (EXPECT_*, FUZZ_CHECK).
#pragma once

#include <fmt/format.h>
#include <linux/pci_regs.h>
#include <poll.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/event_fd.h"
#include "base/result.h"
#include "devices/bus.h"
#include "devices/pci/platform.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

namespace conduit::test {

inline constexpr uint64_t kGuestPage = 4096;

// True when the eventfd `fd` holds a signal (a read would not block).
inline bool signalled(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

// A GuestMapper with KVM_SET_USER_MEMORY_REGION's rules. A request KVM would refuse gets KVM's
// errno, which the device must cope with as it would on the real KVM, and is recorded by kind:
//   invalid      EINVAL: guest address or size not page-aligned, an empty or wrapping slot, no host
//                memory. The device knows these rules, so each one is a bug in it.
//   overlapping  EEXIST: the slot overlaps a live one. A guest can cause this (BARs programmed over
//                each other), so whether it is a bug is for the test to say.
class KvmRuleMapper final : public devices::pci::GuestMapper {
public:
    struct Slot {
        uint64_t size;
        void* host;
    };
    std::map<uint64_t, Slot> live;  // by guest-physical address
    std::vector<std::string> invalid, overlapping;  // the refused requests, as KVM's error describes them

    Result<std::unique_ptr<devices::pci::GuestMapping>> map(uint64_t gpa, uint64_t size, void* host,
                                                            const std::string& name) override {
        if (gpa % kGuestPage || size % kGuestPage || size == 0 || size - 1 > UINT64_MAX - gpa || host == nullptr)
            return refuse(invalid, Error(call(gpa, size, name), EINVAL));
        auto next = live.lower_bound(gpa);
        if ((next != live.end() && next->first <= gpa + (size - 1)) ||
            (next != live.begin() && std::prev(next)->second.size > gpa - std::prev(next)->first))
            return refuse(overlapping, Error(call(gpa, size, name) + ": overlaps a slot", EEXIST));
        live[gpa] = {size, host};
        return std::unique_ptr<devices::pci::GuestMapping>(std::make_unique<Handle>(*this, gpa));
    }

private:
    struct Handle final : devices::pci::GuestMapping {
        KvmRuleMapper& mapper;
        uint64_t gpa;
        Handle(KvmRuleMapper& m, uint64_t g) : mapper(m), gpa(g) {}
        ~Handle() override { mapper.live.erase(gpa); }
    };
    static std::string call(uint64_t gpa, uint64_t size, const std::string& name) {
        return fmt::format("KVM_SET_USER_MEMORY_REGION {} gpa {:#x} size {:#x}", name, gpa, size);
    }
    static Error refuse(std::vector<std::string>& record, Error e) {
        record.push_back(e.describe());
        return e;
    }
};

// MSI routes as KVM's GSI routes with an irqfd behave. A signal while unmasked stays on the eventfd
// (for the test to see); one while masked is pending, and KVM delivers it when the route is
// unmasked, which is when this fake drains the eventfd and counts it in `delivered`.
class FakeMsiRouter final : public devices::pci::MsiRouter {
public:
    struct Route final : devices::pci::MsiRoute {
        FakeMsiRouter& router;
        EventFd ev;
        devices::pci::MsiMessage msg;
        bool isMasked;
        uint64_t delivered = 0;
        Route(FakeMsiRouter& r, EventFd e, devices::pci::MsiMessage m, bool masked)
            : router(r), ev(std::move(e)), msg(m), isMasked(masked) {
            router.live.push_back(this);
        }
        ~Route() override { router.live.erase(std::find(router.live.begin(), router.live.end(), this)); }
        int eventFd() const override { return ev.fd(); }
        Result<void> setMessage(const devices::pci::MsiMessage& m) override {
            msg = m;
            return success();
        }
        Result<void> setMasked(bool masked) override {
            isMasked = masked;
            if (!masked) delivered += ev.consume();
            return success();
        }
        bool masked() const override { return isMasked; }
        bool pending() const override { return isMasked && signalled(ev.fd()); }
    };
    std::vector<Route*> live;  // in creation order: the device creates vector 0 first

    Result<std::unique_ptr<devices::pci::MsiRoute>> createRoute(const devices::pci::MsiMessage& msg, bool masked,
                                                                const std::string&) override {
        return std::unique_ptr<devices::pci::MsiRoute>(std::make_unique<Route>(*this, TRY(EventFd::create()), msg, masked));
    }
};

// INTx routes: a trigger and a resample eventfd per route, as KVM's irqfd with KVM_IRQFD_FLAG_RESAMPLE.
class FakeIntxRouter final : public devices::pci::IntxRouter {
public:
    struct Route final : devices::pci::IntxRoute {
        FakeIntxRouter& router;
        EventFd trigger, resample;
        uint32_t pin;
        Route(FakeIntxRouter& r, EventFd t, EventFd s, uint32_t gsi)
            : router(r), trigger(std::move(t)), resample(std::move(s)), pin(gsi) {
            ++router.live;
        }
        ~Route() override { --router.live; }
        int triggerFd() const override { return trigger.fd(); }
        int resampleFd() const override { return resample.fd(); }
        uint32_t gsi() const override { return pin; }
    };
    int live = 0;            // routes not yet dropped
    Route* last = nullptr;   // the newest route (dangles once it is dropped)

    Result<std::unique_ptr<devices::pci::IntxRoute>> createRoute(uint32_t gsi, const std::string&) override {
        auto r = std::make_unique<Route>(*this, TRY(EventFd::create()), TRY(EventFd::create()), gsi);
        last = r.get();
        return std::unique_ptr<devices::pci::IntxRoute>(std::move(r));
    }
};

// The simulated host of the device tests and the fuzz targets: the device under test at
// kDeviceBdf (IOMMU group 7, 4 MSI vectors, the rest as `device` says) and a peer at kPeerBdf in
// group 8, a second device in the same container / IOAS for P2P DMA once opened.
inline constexpr const char* kDeviceBdf = "0000:01:00.0";
inline constexpr const char* kPeerBdf = "0000:02:00.0";
inline std::unique_ptr<hostsim::SimHost> simHostWithPeer(hostsim::SimDeviceConfig device = {}) {
    device.bdf = kDeviceBdf;
    device.group = 7;
    device.msiVectors = 4;
    auto sim = std::make_unique<hostsim::SimHost>();
    sim->addDevice(device);
    hostsim::SimDeviceConfig peer;
    peer.bdf = kPeerBdf;
    peer.group = 8;
    sim->addDevice(peer);
    return sim;
}

// A VfioPciDevice plugged into fakes of all it needs from the VMM, and the guest's accesses to its
// config space. The device holds the VFIO device it was opened from: whoever owns the backend
// resets `device` before the backend goes.
struct FakeVmm {
    static constexpr uint32_t kIntxGsi = 17;
    static constexpr uint64_t kBar0Address = 0xc0000000, kBar2Address = 0xc0100000;

    devices::Bus mmio{"mmio"}, pio{"pio"};
    KvmRuleMapper mapper;
    FakeMsiRouter msi;
    FakeIntxRouter intx;
    std::shared_ptr<devices::vfio_pci::VfioPciDevice> device;

    // Opens `bdf` through `backend` and creates the device on these fakes; its BARs are DMA-mapped
    // through `backend` for P2P. `name` starts the device's log lines.
    Result<void> createDevice(vfio::VfioBackend& backend, const std::string& bdf, const std::string& name = "00:01.0") {
        auto vfioDevice = TRY(backend.openDevice(bdf));
        devices::vfio_pci::VfioPciPlatform platform;
        platform.mmio = &mmio;
        platform.pio = &pio;
        platform.mapper = &mapper;
        platform.msi = &msi;
        platform.intx = &intx;
        platform.intxGsi = kIntxGsi;
        platform.dma = &backend;
        device = TRY(devices::vfio_pci::VfioPciDevice::create(std::move(vfioDevice), platform, name));
        return success();
    }

    uint32_t cfgRead(uint32_t offset, size_t size = 4) const {
        uint32_t v = 0;
        device->configRead(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
        return v;
    }
    void cfgWrite(uint32_t offset, uint32_t value, size_t size = 4) {
        device->configWrite(offset, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), size));
    }
    // What firmware leaves: BAR0 (the registers) at kBar0Address, the 64-bit BAR2 (memory, its top
    // pages the MSI-X table and PBA) at `bar2`, memory decode and bus mastering on.
    void enableDecode(uint64_t bar2 = kBar2Address) {
        cfgWrite(PCI_BASE_ADDRESS_0, kBar0Address);
        cfgWrite(PCI_BASE_ADDRESS_2, static_cast<uint32_t>(bar2));
        cfgWrite(PCI_BASE_ADDRESS_3, static_cast<uint32_t>(bar2 >> 32));
        cfgWrite(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    }
};

}  // namespace conduit::test
