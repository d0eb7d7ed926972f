#include "tests/faultinject/host_call_faults.h"

#include <fmt/format.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <utility>

namespace conduit::faultinject {

namespace {

struct State {
    std::mutex mutex;
    bool counting = false;
    bool tracking = false;
    std::optional<CallTarget> failAt;
    std::vector<std::string> calls;
    std::map<std::string, size_t> counts;  // calls so far, per name
    std::optional<InjectedCall> injected;
    std::map<uintptr_t, size_t> mappings;              // start -> length
    std::map<std::pair<int, unsigned>, unsigned long long> memslots;  // (vm fd, slot) -> size
    std::vector<std::string> simLeftovers;
};

State& state() {
    static State s;
    return s;
}

// The simulated host's calls for Conduit, and what each simulated host held at its end.
class SimObserver final : public hostsim::HostCallObserver {
public:
    int beforeCall(const std::string& call) override {
        int err = EIO;  // ioctls, pread, pwrite
        if (call.rfind("open ", 0) == 0) err = EACCES;
        if (call == "mmap") err = ENOMEM;
        if (call == "eventfd") err = EMFILE;
        return decide(call, err);
    }
    void hostDestroyed(const hostsim::SimHostLeftovers& l) override {
        State& s = state();
        std::lock_guard lock(s.mutex);
        if (!s.tracking) return;
        if (l.fds || l.mmaps || l.dmaMappings || l.iommufdObjects || l.dmaMappingsDroppedByClose)
            s.simLeftovers.push_back(fmt::format(
                "simulated host destroyed holding {} fds, {} BAR mmaps, {} IOMMU mappings, {} iommufd objects; "
                "{} IOMMU mappings were dropped by closing their container/IOAS",
                l.fds, l.mmaps, l.dmaMappings, l.iommufdObjects, l.dmaMappingsDroppedByClose));
    }
};

SimObserver g_simObserver;

}  // namespace

namespace {
// A call's name without what differs from run to run: the simulated host's mkdtemp() root.
std::string stableName(const std::string& name) {
    static const std::string root = "conduit-hostsim-";
    const size_t at = name.find(root);
    if (at == std::string::npos) return name;
    const size_t end = name.find('/', at);
    return name.substr(0, at + root.size()) + "*" + (end == std::string::npos ? "" : name.substr(end));
}
}  // namespace

std::vector<CallTarget> targetsOf(const std::vector<std::string>& calls) {
    std::map<std::string, size_t> counts;
    std::vector<CallTarget> out;
    out.reserve(calls.size());
    for (auto& c : calls) {
        std::string key = stableName(c);
        const size_t n = ++counts[key];
        out.push_back({std::move(key), n});
    }
    return out;
}

void startCounting(std::optional<CallTarget> failAt) {
    State& s = state();
    {
        std::lock_guard lock(s.mutex);
        s.counting = true;
        s.tracking = true;
        s.failAt = std::move(failAt);
        s.calls.clear();
        s.counts.clear();
        s.injected.reset();
        s.mappings.clear();
        s.memslots.clear();
        s.simLeftovers.clear();
    }
    hostsim::setHostCallObserver(&g_simObserver);
}

void stopCounting() {
    State& s = state();
    std::lock_guard lock(s.mutex);
    s.counting = false;
}

std::vector<std::string> finish() {
    State& s = state();
    std::lock_guard lock(s.mutex);
    s.counting = false;
    s.tracking = false;
    return s.calls;
}

std::optional<InjectedCall> injected() {
    State& s = state();
    std::lock_guard lock(s.mutex);
    return s.injected;
}

std::vector<std::string> leftovers() {
    State& s = state();
    std::lock_guard lock(s.mutex);
    std::vector<std::string> out = s.simLeftovers;
    for (auto& [start, len] : s.mappings) out.push_back(fmt::format("mmap [{:#x}, +{:#x}) never unmapped", start, len));
    for (auto& [key, size] : s.memslots)
        out.push_back(fmt::format("KVM memslot {} (size {:#x}) of vm fd {} never deleted", key.second, size, key.first));
    return out;
}

int decide(const std::string& name, int errnoIfInjected) {
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (!s.counting) return 0;
    s.calls.push_back(name);
    std::string key = stableName(name);
    const size_t n = ++s.counts[key];
    const CallTarget call{std::move(key), n};
    if (!s.failAt || call != *s.failAt) return 0;
    s.injected = InjectedCall{call, name, errnoIfInjected};
    return errnoIfInjected;
}

void trackMmap(void* addr, size_t length) {
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (s.tracking) s.mappings[reinterpret_cast<uintptr_t>(addr)] = length;
}

void trackMunmap(void* addr, size_t length) {
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (!s.tracking) return;
    // Remove [addr, addr + length) from every tracked mapping, splitting where it cuts one.
    const uintptr_t lo = reinterpret_cast<uintptr_t>(addr), hi = lo + length;
    std::map<uintptr_t, size_t> kept;
    for (auto& [start, len] : s.mappings) {
        const uintptr_t end = start + len;
        if (end <= lo || start >= hi) {
            kept[start] = len;
            continue;
        }
        if (start < lo) kept[start] = lo - start;
        if (end > hi) kept[hi] = end - hi;
    }
    s.mappings = std::move(kept);
}

void trackMemslot(int vmFd, unsigned slot, unsigned long long size) {
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (!s.tracking) return;
    if (size)
        s.memslots[{vmFd, slot}] = size;
    else
        s.memslots.erase({vmFd, slot});
}

}  // namespace conduit::faultinject
