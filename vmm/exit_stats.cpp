#include "vmm/exit_stats.h"

#include <linux/kvm.h>

#include <fmt/format.h>

#include "devices/bus.h"

namespace conduit::vmm {

std::string exitReasonName(uint32_t reason) {
    switch (reason) {
#define R(name)           \
    case KVM_EXIT_##name: \
        return #name;
        R(UNKNOWN)
        R(EXCEPTION)
        R(IO)
        R(HYPERCALL)
        R(DEBUG)
        R(HLT)
        R(MMIO)
        R(IRQ_WINDOW_OPEN)
        R(SHUTDOWN)
        R(FAIL_ENTRY)
        R(INTR)
        R(SET_TPR)
        R(TPR_ACCESS)
        R(NMI)
        R(INTERNAL_ERROR)
        R(SYSTEM_EVENT)
        R(IOAPIC_EOI)
        R(HYPERV)
        R(X86_RDMSR)
        R(X86_WRMSR)
        R(DIRTY_RING_FULL)
        R(AP_RESET_HOLD)
        R(X86_BUS_LOCK)
        R(XEN)
#undef R
        default:
            return fmt::format("EXIT_{}", reason);
    }
}

void ExitStats::countExit(uint32_t reason) {
    if (reason < kMaxReasons)
        reasons_[reason].fetch_add(1, std::memory_order_relaxed);
    else
        otherReasons_.fetch_add(1, std::memory_order_relaxed);
}

void ExitStats::countAccess(BusSpace space, uint64_t addr, bool write, bool claimed) {
    std::lock_guard lock(mutex_);
    SpaceCounts& s = space == BusSpace::Pio ? pio_ : mmio_;
    auto& map = claimed ? s.claimed : s.unclaimed;
    Counts* c;
    auto it = map.find(addr);
    if (it != map.end())
        c = &it->second;
    else if (map.size() < kMaxAddresses)
        c = &map[addr];
    else
        c = claimed ? &s.otherClaimed : &s.otherUnclaimed;
    (write ? c->writes : c->reads)++;
    if (!claimed) s.unclaimedTotal++;
}

uint64_t ExitStats::exits(uint32_t reason) const {
    return reason < kMaxReasons ? reasons_[reason].load(std::memory_order_relaxed) : 0;
}

uint64_t ExitStats::totalExits() const {
    uint64_t n = otherReasons_.load(std::memory_order_relaxed);
    for (auto& r : reasons_) n += r.load(std::memory_order_relaxed);
    return n;
}

uint64_t ExitStats::unclaimed(BusSpace space) const {
    std::lock_guard lock(mutex_);
    return (space == BusSpace::Pio ? pio_ : mmio_).unclaimedTotal;
}

nlohmann::json ExitStats::spaceJson(const SpaceCounts& s, const devices::Bus* bus) const {
    std::vector<devices::Bus::Entry> entries;
    if (bus) entries = bus->entries();
    std::map<std::string, Counts> perDevice;
    auto add = [&](const std::string& key, const Counts& c) {
        auto& d = perDevice[key];
        d.reads += c.reads;
        d.writes += c.writes;
    };
    for (auto& [addr, c] : s.claimed) {
        std::string key = fmt::format("{:#x}", addr);
        for (auto& e : entries)
            if (addr >= e.base && addr - e.base < e.size) key = e.device->name();
        add(key, c);
    }
    if (s.otherClaimed.reads || s.otherClaimed.writes) add("other", s.otherClaimed);
    nlohmann::json devicesJson = nlohmann::json::object();
    for (auto& [name, c] : perDevice) devicesJson[name] = {{"reads", c.reads}, {"writes", c.writes}};

    nlohmann::json unclaimed = {{"reads", uint64_t{0}}, {"writes", uint64_t{0}}, {"addresses", nlohmann::json::object()}};
    auto addUnclaimed = [&](const std::string& key, const Counts& c) {
        unclaimed["reads"] = unclaimed["reads"].get<uint64_t>() + c.reads;
        unclaimed["writes"] = unclaimed["writes"].get<uint64_t>() + c.writes;
        unclaimed["addresses"][key] = c.reads + c.writes;
    };
    for (auto& [addr, c] : s.unclaimed) addUnclaimed(fmt::format("{:#x}", addr), c);
    if (s.otherUnclaimed.reads || s.otherUnclaimed.writes) addUnclaimed("other", s.otherUnclaimed);
    return {{"devices", devicesJson}, {"unclaimed", unclaimed}};
}

nlohmann::json ExitStats::toJson(const devices::Bus* pio, const devices::Bus* mmio) const {
    nlohmann::json exits = nlohmann::json::object();
    for (uint32_t r = 0; r < kMaxReasons; ++r)
        if (uint64_t n = reasons_[r].load(std::memory_order_relaxed)) exits[exitReasonName(r)] = n;
    if (uint64_t n = otherReasons_.load(std::memory_order_relaxed)) exits["other"] = n;
    std::lock_guard lock(mutex_);
    return {{"total_exits", totalExits()}, {"exits", exits}, {"pio", spaceJson(pio_, pio)}, {"mmio", spaceJson(mmio_, mmio)}};
}

}  // namespace conduit::vmm
