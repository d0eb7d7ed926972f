#include "vmm/kvm_pci_platform.h"

#include <poll.h>

#include <fmt/format.h>

#include "base/log.h"

namespace conduit::vmm {

namespace {

class SlotMapping final : public devices::pci::GuestMapping {
public:
    explicit SlotMapping(MemorySlot slot) : slot_(std::move(slot)) {}

private:
    MemorySlot slot_;
};

class KvmMsiRoute final : public devices::pci::MsiRoute {
public:
    KvmMsiRoute(Vm& vm, EventFd event, uint32_t gsi, std::string name)
        : vm_(vm), event_(std::move(event)), gsi_(gsi), name_(std::move(name)) {}
    ~KvmMsiRoute() override {
        irqfd_.reset();  // unbind before the GSI is freed
        if (auto r = vm_.routing().removeMsi(gsi_); !r) log::get("vmm").warn("{}: {}", name_, r.error().describe());
    }

    int eventFd() const override { return event_.fd(); }
    Result<void> setMessage(const devices::pci::MsiMessage& m) override {
        MsiMessage msg{m.address, m.data};
        if (vm_.routing().msi(gsi_) == msg) return success();
        return vm_.routing().updateMsi(gsi_, msg);
    }
    Result<void> setMasked(bool masked) override {
        if (masked == masked_) return success();
        if (masked) {
            irqfd_.reset();
        } else {
            // Take what arrived while masked ourselves: KVM would inject a pending count when the
            // irqfd is bound again but leave the counter set, and a later mask would then show a
            // stale pending bit. The held interrupt is delivered once, as the PCI spec asks.
            const bool held = event_.consume() > 0;
            irqfd_ = TRY_CTX(vm_.registerIrqfd(event_, gsi_), name_ + ": unmask");
            if (held) {
                if (auto msg = vm_.routing().msi(gsi_)) {
                    // EPERM before any vCPU exists; 0 while the LAPIC is off: the guest cannot take it.
                    if (auto r = vm_.signalMsi(*msg); !r)
                        log::get("vmm").warn("{}: delivering the message held while masked: {}", name_, r.error().describe());
                }
            }
        }
        masked_ = masked;
        return success();
    }
    bool masked() const override { return masked_; }
    bool pending() const override {
        if (!masked_) return false;
        pollfd p{event_.fd(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
    }
    Result<void> bind() {
        irqfd_ = TRY(vm_.registerIrqfd(event_, gsi_));
        return success();
    }
    void setMaskedFlag(bool m) { masked_ = m; }

private:
    Vm& vm_;
    EventFd event_;
    uint32_t gsi_;
    std::string name_;
    IrqFd irqfd_;
    bool masked_ = false;
};

class KvmRouteBatch final : public devices::pci::MsiRouteBatch {
public:
    explicit KvmRouteBatch(GsiRoutingTable& table) : deferral_(table.defer()) {}
    Result<void> finish() override { return deferral_.end(); }

private:
    GsiRoutingTable::Deferral deferral_;
};

class KvmIntxRoute final : public devices::pci::IntxRoute {
public:
    KvmIntxRoute(EventFd trigger, EventFd resample, IrqFd irqfd, uint32_t gsi)
        : trigger_(std::move(trigger)), resample_(std::move(resample)), irqfd_(std::move(irqfd)), gsi_(gsi) {}
    int triggerFd() const override { return trigger_.fd(); }
    int resampleFd() const override { return resample_.fd(); }
    uint32_t gsi() const override { return gsi_; }

private:
    EventFd trigger_, resample_;
    IrqFd irqfd_;
    uint32_t gsi_;
};

}  // namespace

Result<std::unique_ptr<devices::pci::GuestMapping>> KvmGuestMapper::map(uint64_t gpa, uint64_t size, void* host,
                                                                        const std::string& name) {
    auto slot = TRY(vm_.mapMemory(gpa, size, host, name));
    return std::unique_ptr<devices::pci::GuestMapping>(std::make_unique<SlotMapping>(std::move(slot)));
}

Result<std::unique_ptr<devices::pci::MsiRoute>> KvmMsiRouter::createRoute(const devices::pci::MsiMessage& message, bool masked,
                                                                          const std::string& name) {
    auto event = TRY(EventFd::create());
    const uint32_t gsi = TRY_CTX(vm_.routing().addMsi({message.address, message.data}), name);
    auto route = std::make_unique<KvmMsiRoute>(vm_, std::move(event), gsi, name);
    if (!masked) TRY_CTX(route->bind(), name);
    route->setMaskedFlag(masked);
    return std::unique_ptr<devices::pci::MsiRoute>(std::move(route));
}

std::unique_ptr<devices::pci::MsiRouteBatch> KvmMsiRouter::batch() {
    return std::make_unique<KvmRouteBatch>(vm_.routing());
}

Result<std::unique_ptr<devices::pci::IntxRoute>> KvmIntxRouter::createRoute(uint32_t gsi, const std::string& name) {
    if (!vm_.routing().isIrqchipGsi(gsi))
        return Error(fmt::format("{}: GSI {} is not routed to an irqchip pin", name, gsi), EINVAL);
    auto trigger = TRY(EventFd::create());
    auto resample = TRY(EventFd::create());
    auto irqfd = TRY_CTX(vm_.registerResampleIrqfd(trigger, gsi, resample), name);
    return std::unique_ptr<devices::pci::IntxRoute>(
        std::make_unique<KvmIntxRoute>(std::move(trigger), std::move(resample), std::move(irqfd), gsi));
}

}  // namespace conduit::vmm
