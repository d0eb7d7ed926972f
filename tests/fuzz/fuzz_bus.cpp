// libFuzzer target: devices::Bus dispatch. The input is a program of insert / remove / read / write
// operations over a small address window (so ranges collide) and the top of the address space (so
// ranges wrap). Every result is checked against a reference model (a std::map of ranges): insert
// succeeds exactly when the range is non-empty, does not wrap and overlaps nothing; an access is
// claimed exactly when it lies inside one range, and the device sees the offset from that range's
// base. One device kind removes its own range from inside its write handler (what a BAR move does).
#include <cstring>
#include <map>
#include <memory>

#include "base/log.h"
#include "devices/bus.h"
#include "tests/fuzz/fuzz_input.h"

using namespace conduit;
using conduit::devices::Bus;

namespace {

struct Recorder : devices::BusDevice {
    explicit Recorder(int id) : id(id) {}
    std::string name() const override { return "dev" + std::to_string(id); }
    void read(uint64_t offset, std::span<uint8_t> data) override {
        last = offset;
        lastSize = data.size();
        ++calls;
        std::memset(data.data(), id, data.size());
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        last = offset;
        lastSize = data.size();
        ++calls;
        if (selfRemove && bus) removedOk = bus->remove(base).ok();
    }
    int id;
    uint64_t last = ~0ull;
    size_t lastSize = 0;
    uint64_t calls = 0;
    bool selfRemove = false;
    Bus* bus = nullptr;
    uint64_t base = 0;
    bool removedOk = false;
};

struct Range {
    uint64_t last;
    std::shared_ptr<Recorder> dev;
};

uint64_t address(fuzz::Input& in) {
    const uint8_t sel = in.u8();
    const uint64_t low = in.u16();
    switch (sel & 3) {
    case 0: return low;                    // the crowded window
    case 1: return UINT64_MAX - low;       // near the top: wrap-around
    case 2: return 0x100000000ull + low;   // across 4 GiB
    default: return in.u64();              // anywhere
    }
}

uint64_t length(fuzz::Input& in) {
    const uint8_t sel = in.u8();
    if (sel & 0x80) return 1ull << (sel & 63);
    return sel & 0x7f;  // includes 0
}

// The model's answer: the range containing [addr, addr + len - 1], if one does entirely.
const std::pair<const uint64_t, Range>* claim(const std::map<uint64_t, Range>& m, uint64_t addr, uint64_t len) {
    if (len - 1 > UINT64_MAX - addr) return nullptr;
    auto it = m.upper_bound(addr);
    if (it == m.begin()) return nullptr;
    --it;
    if (addr + (len - 1) > it->second.last) return nullptr;
    return &*it;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    log::setLevel("off");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::Input in(data, size);
    Bus bus("fuzz");
    std::map<uint64_t, Range> model;
    int nextId = 1;
    for (int steps = 0; !in.done() && steps < 256; ++steps) {
        const uint8_t op = in.u8();
        switch (op % 5) {
        case 0:
        case 4: {  // insert
            const uint64_t base = address(in);
            const uint64_t len = length(in);
            auto dev = std::make_shared<Recorder>(nextId++);
            dev->selfRemove = op & 0x80;
            dev->bus = &bus;
            dev->base = base;
            bool expect = len != 0 && len - 1 <= UINT64_MAX - base;
            if (expect) {
                const uint64_t last = base + (len - 1);
                auto next = model.lower_bound(base);
                if (next != model.end() && next->first <= last) expect = false;
                if (expect && next != model.begin() && std::prev(next)->second.last >= base) expect = false;
            }
            const bool got = bus.insert(dev, base, len).ok();
            FUZZ_CHECK(got == expect);
            if (got) model[base] = Range{base + (len - 1), dev};
            break;
        }
        case 1: {  // remove (often an existing base)
            uint64_t base = address(in);
            if ((op & 0x80) && !model.empty()) {
                auto it = model.begin();
                std::advance(it, base % model.size());
                base = it->first;
            }
            const bool got = bus.remove(base).ok();
            FUZZ_CHECK(got == (model.count(base) == 1));
            model.erase(base);
            break;
        }
        case 2:
        case 3: {  // read / write
            static constexpr size_t kSizes[] = {1, 2, 4, 8};
            const size_t len = kSizes[(op >> 3) & 3];
            uint64_t addr = address(in);
            if ((op & 0x80) && !model.empty()) {  // aim inside an existing range
                auto it = model.begin();
                std::advance(it, addr % model.size());
                addr = it->first + (it->second.last - it->first ? in.u64() % (it->second.last - it->first + 1) : 0);
            }
            const auto* hit = claim(model, addr, len);
            uint8_t buf[8] = {};
            bool got;
            if (op % 5 == 2) {
                got = bus.read(addr, std::span<uint8_t>(buf, len));
                if (hit) FUZZ_CHECK(buf[0] == static_cast<uint8_t>(hit->second.dev->id));
            } else {
                got = bus.write(addr, std::span<const uint8_t>(buf, len));
            }
            FUZZ_CHECK(got == (hit != nullptr));
            if (hit) {
                auto dev = hit->second.dev;
                FUZZ_CHECK(dev->last == addr - hit->first);
                FUZZ_CHECK(dev->lastSize == len);
                if (op % 5 == 3 && dev->selfRemove) {  // the handler removed its own range
                    FUZZ_CHECK(dev->removedOk);
                    const uint64_t base = hit->first;  // `hit` points into the model
                    model.erase(base);
                }
            }
            break;
        }
        }
        // The bus's view equals the model's.
        if ((op & 0x40) || in.done()) {
            auto entries = bus.entries();
            FUZZ_CHECK(entries.size() == model.size());
            auto it = model.begin();
            for (const auto& e : entries) {
                FUZZ_CHECK(e.base == it->first && e.base + (e.size - 1) == it->second.last);
                FUZZ_CHECK(e.device == it->second.dev);
                ++it;
            }
        }
    }
    return 0;
}
