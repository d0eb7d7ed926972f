// The VM's GSI routing table. KVM_SET_GSI_ROUTING replaces the whole table, so this object keeps
// the complete picture: the irqchip routes the platform gives (what KVM installs by default for
// its irqchip; dropping them would silently break KVM_IRQ_LINE and INTx irqfds) plus the MSI
// routes devices add, and pushes all of it on every change. Thread-safe: MSI-X table writes arrive
// on vCPU threads.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "base/result.h"

namespace conduit::vmm {

struct MsiMessage {
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const MsiMessage&) const = default;
};

// The irqchip's part of the table, from the platform (vmm/arch/platform.h): KVM_IRQ_ROUTING_IRQCHIP
// entries (a GSI may have several, e.g. PIC and IOAPIC), and the first GSI MSI routes may use.
struct IrqchipRoutes {
    std::vector<kvm_irq_routing_entry> entries;
    uint32_t firstMsiGsi = 0;
};

class GsiRoutingTable {
public:
    // `vmFd` must outlive the table. `maxGsis` bounds allocation (KVM_CAP_IRQ_ROUTING answer).
    GsiRoutingTable(int vmFd, uint32_t maxGsis, IrqchipRoutes irqchip);

    // True when `gsi` is routed to an irqchip pin (INTx and line interrupts go there).
    bool isIrqchipGsi(uint32_t gsi) const;
    uint32_t firstMsiGsi() const { return irqchip_.firstMsiGsi; }

    // Allocates the lowest free GSI >= firstMsiGsi(), routes it to `msi` and pushes the table.
    Result<uint32_t> addMsi(const MsiMessage& msi);
    // Re-targets an allocated MSI GSI (e.g. the guest rewrote an MSI-X entry) and pushes.
    Result<void> updateMsi(uint32_t gsi, const MsiMessage& msi);
    // Frees an MSI GSI and pushes; irqfds bound to it must be unregistered first.
    Result<void> removeMsi(uint32_t gsi);

    std::optional<MsiMessage> msi(uint32_t gsi) const;
    // The full table as it is (or will be) pushed: irqchip entries then MSI entries by GSI.
    std::vector<kvm_irq_routing_entry> entries() const;
    // Pushes the current table (KVM_SET_GSI_ROUTING); done implicitly by every change.
    Result<void> commit();
    size_t msiCount() const;
    // KVM_SET_GSI_ROUTING calls made so far (tests and the MSI-X bench count them).
    uint64_t pushes() const;

    // Holds pushes back: changes made while one is alive update this table at once and reach KVM
    // in one push, when the last one ends. KVM copies the whole table on every push, so a device
    // enabling N vectors one by one would otherwise copy it N times (quadratic in N). A push that
    // fails at the end leaves KVM with the table from before the batch; the next change pushes
    // everything again.
    class Deferral {
    public:
        explicit Deferral(GsiRoutingTable& table);
        Deferral(Deferral&& o) noexcept : table_(std::exchange(o.table_, nullptr)) {}
        Deferral& operator=(Deferral&&) = delete;
        ~Deferral();  // end(), a failure logged
        Result<void> end();

    private:
        GsiRoutingTable* table_;
    };
    Deferral defer() { return Deferral(*this); }

private:
    std::vector<kvm_irq_routing_entry> entriesLocked() const;
    Result<void> commitLocked();

    int vmFd_;
    uint32_t maxGsis_;
    const IrqchipRoutes irqchip_;
    mutable std::mutex mutex_;
    std::map<uint32_t, MsiMessage> msi_;
    unsigned deferrals_ = 0;
    bool dirty_ = false;  // changed while deferred, not pushed yet
    uint64_t pushes_ = 0;
};

}  // namespace conduit::vmm
