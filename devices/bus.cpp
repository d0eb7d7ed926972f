#include "devices/bus.h"

#include <boost/intrusive/set.hpp>
#include <fmt/format.h>

#include <mutex>

#include "base/log.h"

namespace conduit::devices {

namespace bi = boost::intrusive;

// One registered range. Nodes are owned by the set (deleted through its disposer); the device is
// shared so a lookup can keep it alive after dropping the lock.
struct Bus::Node : bi::set_base_hook<bi::link_mode<bi::normal_link>> {
    Node(uint64_t b, uint64_t s, std::shared_ptr<BusDevice> d) : base(b), size(s), device(std::move(d)) {}
    uint64_t base;
    uint64_t size;
    std::shared_ptr<BusDevice> device;

    // Inclusive last address: base + size may be 2^64 (a range that ends at the top of the space).
    uint64_t last() const { return base + (size - 1); }
};

namespace {

struct NodeBase {
    using type = uint64_t;
    template <class N>
    type operator()(const N& n) const {
        return n.base;
    }
};

struct Deleter {
    template <class N>
    void operator()(N* n) const {
        delete n;
    }
};

std::string describeRange(uint64_t base, uint64_t last) { return fmt::format("[{:#x}, {:#x}]", base, last); }

}  // namespace

struct Bus::Impl {
    using Set = bi::set<Node, bi::key_of_value<NodeBase>>;
    Set set;
    ~Impl() { set.clear_and_dispose(Deleter{}); }
};

Bus::Bus(std::string name) : name_(std::move(name)), impl_(std::make_unique<Impl>()) {}

Bus::~Bus() = default;

Result<void> Bus::insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size) {
    const std::string devName = device ? device->name() : std::string("(null device)");
    if (!device) return Error(fmt::format("{} bus: cannot insert a null device at {:#x}", name_, base));
    if (size == 0)
        return Error(fmt::format("{} bus: cannot insert {} at {:#x}: size is zero", name_, devName, base));
    if (size - 1 > UINT64_MAX - base)
        return Error(fmt::format("{} bus: cannot insert {} at {:#x} size {:#x}: range wraps around the address space",
                                 name_, devName, base, size));
    const uint64_t last = base + (size - 1);

    std::unique_lock lock(mutex_);
    auto& set = impl_->set;
    // The first range starting above `base`, and the one before it, are the only candidates.
    auto next = set.upper_bound(base);
    auto conflict = set.end();
    if (next != set.end() && next->base <= last) conflict = next;
    if (conflict == set.end() && next != set.begin()) {
        auto prev = std::prev(next);
        if (prev->last() >= base) conflict = prev;
    }
    if (conflict != set.end()) {
        return Error(fmt::format("{} bus: cannot insert {} at {}: overlaps {} at {}", name_, devName,
                                 describeRange(base, last), conflict->device->name(),
                                 describeRange(conflict->base, conflict->last())),
                     EEXIST);
    }
    set.insert(*new Node(base, size, std::move(device)));
    log::get("devices").debug("{} bus: {} at {}", name_, devName, describeRange(base, last));
    return success();
}

Result<void> Bus::remove(uint64_t base) {
    std::shared_ptr<BusDevice> removed;  // released after the lock: its destructor may touch the bus
    {
        std::unique_lock lock(mutex_);
        auto it = impl_->set.find(base);
        if (it == impl_->set.end())
            return Error(fmt::format("{} bus: no range starts at {:#x}", name_, base), ENOENT);
        removed = std::move(it->device);
        impl_->set.erase_and_dispose(it, Deleter{});
    }
    log::get("devices").debug("{} bus: removed {} at {:#x}", name_, removed->name(), base);
    return success();
}

Bus::Lookup Bus::find(uint64_t addr, uint64_t len) const {
    if (len == 0 || len - 1 > UINT64_MAX - addr) return {};
    const uint64_t lastByte = addr + (len - 1);
    std::shared_lock lock(mutex_);
    auto& set = impl_->set;
    auto it = set.upper_bound(addr);  // first range starting above addr
    if (it == set.begin()) return {};
    --it;
    if (addr < it->base || lastByte > it->last()) return {};  // beyond its end, or straddling
    return {it->device, addr - it->base};
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
    auto hit = find(addr, data.size());
    if (!hit.device) return false;
    hit.device->read(hit.offset, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
    auto hit = find(addr, data.size());
    if (!hit.device) return false;
    hit.device->write(hit.offset, data);
    return true;
}

std::vector<Bus::Entry> Bus::entries() const {
    std::shared_lock lock(mutex_);
    std::vector<Entry> out;
    out.reserve(impl_->set.size());
    for (const auto& n : impl_->set) out.push_back({n.base, n.size, n.device});
    return out;
}

}  // namespace conduit::devices
