#include "vmm/irq_routing.h"

#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "base/log.h"
#include "vmm/kvm.h"
#include "vmm/kvm_uapi.h"

namespace conduit::vmm {

GsiRoutingTable::GsiRoutingTable(int vmFd, uint32_t maxGsis, IrqchipRoutes irqchip)
    : vmFd_(vmFd), maxGsis_(maxGsis), irqchip_(std::move(irqchip)) {}

bool GsiRoutingTable::isIrqchipGsi(uint32_t gsi) const {
    for (auto& e : irqchip_.entries)
        if (e.gsi == gsi) return true;
    return false;
}

std::vector<kvm_irq_routing_entry> GsiRoutingTable::entriesLocked() const {
    std::vector<kvm_irq_routing_entry> out = irqchip_.entries;
    for (auto& [gsi, m] : msi_) {
        kvm_irq_routing_entry e{};
        e.gsi = gsi;
        e.type = KVM_IRQ_ROUTING_MSI;
        e.u.msi.address_lo = static_cast<uint32_t>(m.address);
        e.u.msi.address_hi = static_cast<uint32_t>(m.address >> 32);
        e.u.msi.data = m.data;
        out.push_back(e);
    }
    return out;
}

std::vector<kvm_irq_routing_entry> GsiRoutingTable::entries() const {
    std::lock_guard lock(mutex_);
    return entriesLocked();
}

Result<void> GsiRoutingTable::commitLocked() {
    if (deferrals_ > 0) {
        dirty_ = true;
        return success();
    }
    ++pushes_;
    auto entries = entriesLocked();
    auto buf = uapi::flexBuffer(static_cast<uint32_t>(entries.size()), entries.data(), entries.size());
    TRY(kvmIoctl(vmFd_, uapi::kSetGsiRouting, buf.data(), "KVM_SET_GSI_ROUTING", "vm",
                 fmt::format("{} entries, {} MSI", entries.size(), msi_.size())));
    return success();
}

Result<void> GsiRoutingTable::commit() {
    std::lock_guard lock(mutex_);
    return commitLocked();
}

Result<uint32_t> GsiRoutingTable::addMsi(const MsiMessage& msi) {
    std::lock_guard lock(mutex_);
    uint32_t gsi = irqchip_.firstMsiGsi;
    for (auto& [used, m] : msi_) {
        if (used != gsi) break;
        ++gsi;
    }
    if (gsi >= maxGsis_) return Error(fmt::format("GSI routing: all {} GSIs are in use", maxGsis_), ENOSPC);
    msi_[gsi] = msi;
    auto pushed = commitLocked();
    if (!pushed) {
        msi_.erase(gsi);
        return std::move(pushed).error().withContext(
            fmt::format("adding MSI route GSI {} (address {:#x} data {:#x})", gsi, msi.address, msi.data));
    }
    log::get("vmm").debug("GSI {} -> MSI address {:#x} data {:#x}", gsi, msi.address, msi.data);
    return gsi;
}

Result<void> GsiRoutingTable::updateMsi(uint32_t gsi, const MsiMessage& msi) {
    std::lock_guard lock(mutex_);
    auto it = msi_.find(gsi);
    if (it == msi_.end()) return Error(fmt::format("GSI routing: GSI {} is not an allocated MSI route", gsi), ENOENT);
    if (it->second == msi) return success();
    MsiMessage old = std::exchange(it->second, msi);
    auto pushed = commitLocked();
    if (!pushed) {
        it->second = old;
        return std::move(pushed).error().withContext(fmt::format("updating MSI route GSI {}", gsi));
    }
    return success();
}

Result<void> GsiRoutingTable::removeMsi(uint32_t gsi) {
    std::lock_guard lock(mutex_);
    auto it = msi_.find(gsi);
    if (it == msi_.end()) return Error(fmt::format("GSI routing: GSI {} is not an allocated MSI route", gsi), ENOENT);
    MsiMessage old = it->second;
    msi_.erase(it);
    auto pushed = commitLocked();
    if (!pushed) {
        msi_[gsi] = old;
        return std::move(pushed).error().withContext(fmt::format("removing MSI route GSI {}", gsi));
    }
    return success();
}

std::optional<MsiMessage> GsiRoutingTable::msi(uint32_t gsi) const {
    std::lock_guard lock(mutex_);
    auto it = msi_.find(gsi);
    if (it == msi_.end()) return std::nullopt;
    return it->second;
}

uint64_t GsiRoutingTable::pushes() const {
    std::lock_guard lock(mutex_);
    return pushes_;
}

GsiRoutingTable::Deferral::Deferral(GsiRoutingTable& table) : table_(&table) {
    std::lock_guard lock(table.mutex_);
    ++table.deferrals_;
}

GsiRoutingTable::Deferral::~Deferral() {
    if (auto r = end(); !r) log::get("vmm").error("GSI routing: the deferred push: {}", r.error().describe());
}

Result<void> GsiRoutingTable::Deferral::end() {
    GsiRoutingTable* t = std::exchange(table_, nullptr);
    if (!t) return success();
    std::lock_guard lock(t->mutex_);
    if (--t->deferrals_ > 0 || !t->dirty_) return success();
    t->dirty_ = false;
    TRY_CTX(t->commitLocked(), fmt::format("the deferred push of {} MSI routes", t->msi_.size()));
    return success();
}

size_t GsiRoutingTable::msiCount() const {
    std::lock_guard lock(mutex_);
    return msi_.size();
}

}  // namespace conduit::vmm
