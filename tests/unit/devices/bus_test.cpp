#include "devices/bus.h"

#include <gtest/gtest.h>

#include <chrono>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace conduit::devices {
namespace {

// Records every access it receives; reads return `fill`.
class RecordingDevice : public BusDevice {
public:
    explicit RecordingDevice(std::string name, uint8_t fill = 0xab) : name_(std::move(name)), fill_(fill) {}
    std::string name() const override { return name_; }
    void read(uint64_t offset, std::span<uint8_t> data) override {
        std::lock_guard l(m);
        reads.push_back({offset, data.size()});
        for (auto& b : data) b = fill_;
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        std::lock_guard l(m);
        writes.push_back({offset, data.size()});
    }
    struct Access {
        uint64_t offset;
        size_t size;
        bool operator==(const Access&) const = default;
    };
    std::mutex m;
    std::vector<Access> reads, writes;

private:
    std::string name_;
    uint8_t fill_;
};

TEST(Bus, DispatchesWithOffsetRelativeToBase) {
    Bus bus("pio");
    auto dev = std::make_shared<RecordingDevice>("uart", 0x5a);
    ASSERT_TRUE(bus.insert(dev, 0x3f8, 8).ok());
    uint8_t buf[2] = {0, 0};
    EXPECT_TRUE(bus.read(0x3fd, buf));
    EXPECT_EQ(buf[0], 0x5a);
    EXPECT_EQ(buf[1], 0x5a);
    uint8_t w[1] = {1};
    EXPECT_TRUE(bus.write(0x3f8, w));
    ASSERT_EQ(dev->reads.size(), 1u);
    EXPECT_EQ(dev->reads[0], (RecordingDevice::Access{5, 2}));
    ASSERT_EQ(dev->writes.size(), 1u);
    EXPECT_EQ(dev->writes[0], (RecordingDevice::Access{0, 1}));
}

TEST(Bus, UnclaimedAccesses) {
    Bus bus("pio");
    auto a = std::make_shared<RecordingDevice>("a");
    auto b = std::make_shared<RecordingDevice>("b");
    ASSERT_TRUE(bus.insert(a, 0x100, 0x10).ok());
    ASSERT_TRUE(bus.insert(b, 0x110, 0x10).ok());
    uint8_t buf4[4];
    uint8_t buf1[1];
    EXPECT_FALSE(bus.read(0xff, buf1));        // just below
    EXPECT_FALSE(bus.read(0x120, buf1));       // just after the last range
    EXPECT_FALSE(bus.read(0x10e, buf4));       // straddles a and b
    EXPECT_FALSE(bus.write(0x11e, buf4));      // runs past the end of b
    EXPECT_TRUE(bus.read(0x10c, buf4));        // last four bytes of a
    EXPECT_TRUE(bus.read(0x110, buf4));        // first four of b
    EXPECT_TRUE(a->writes.empty());
    EXPECT_TRUE(b->writes.empty());
    EXPECT_EQ(a->reads.size(), 1u);
    EXPECT_EQ(b->reads.size(), 1u);
}

TEST(Bus, RefusesOverlapNamingBothRanges) {
    Bus bus("mmio");
    ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>("first"), 0x1000, 0x1000).ok());
    auto r = bus.insert(std::make_shared<RecordingDevice>("second"), 0x1800, 0x1000);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(),
              "mmio bus: cannot insert second at [0x1800, 0x27ff]: overlaps first at [0x1000, 0x1fff]");
    // Overlap from below, containment, and enclosing.
    EXPECT_FALSE(bus.insert(std::make_shared<RecordingDevice>("x"), 0x800, 0x801).ok());
    EXPECT_FALSE(bus.insert(std::make_shared<RecordingDevice>("x"), 0x1100, 0x10).ok());
    EXPECT_FALSE(bus.insert(std::make_shared<RecordingDevice>("x"), 0x0, 0x10000).ok());
    EXPECT_FALSE(bus.insert(std::make_shared<RecordingDevice>("x"), 0x1fff, 1).ok());
    EXPECT_EQ(bus.entries().size(), 1u);
}

TEST(Bus, AdjacentRangesAreFine) {
    Bus bus("mmio");
    ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>("mid"), 0x1000, 0x1000).ok());
    EXPECT_TRUE(bus.insert(std::make_shared<RecordingDevice>("below"), 0x0, 0x1000).ok());
    EXPECT_TRUE(bus.insert(std::make_shared<RecordingDevice>("above"), 0x2000, 0x1000).ok());
    auto e = bus.entries();
    ASSERT_EQ(e.size(), 3u);
    EXPECT_EQ(e[0].device->name(), "below");
    EXPECT_EQ(e[1].device->name(), "mid");
    EXPECT_EQ(e[2].device->name(), "above");
    EXPECT_EQ(e[2].base, 0x2000u);
    EXPECT_EQ(e[2].size, 0x1000u);
}

TEST(Bus, RefusesZeroSizeAndWrapAround) {
    Bus bus("mmio");
    auto r = bus.insert(std::make_shared<RecordingDevice>("z"), 0x1000, 0);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("size is zero"), std::string::npos);
    r = bus.insert(std::make_shared<RecordingDevice>("w"), UINT64_MAX - 0xf, 0x20);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("wraps"), std::string::npos);
    // A range ending exactly at the top of the address space is fine.
    EXPECT_TRUE(bus.insert(std::make_shared<RecordingDevice>("top"), UINT64_MAX - 0xf, 0x10).ok());
    uint8_t b[1];
    EXPECT_TRUE(bus.read(UINT64_MAX, b));
    uint8_t b2[2];
    EXPECT_FALSE(bus.read(UINT64_MAX, b2));  // would wrap
}

TEST(Bus, RemoveByExactBase) {
    Bus bus("pio");
    auto dev = std::make_shared<RecordingDevice>("d");
    ASSERT_TRUE(bus.insert(dev, 0x70, 2).ok());
    EXPECT_FALSE(bus.remove(0x71).ok());
    EXPECT_TRUE(bus.remove(0x70).ok());
    uint8_t b[1];
    EXPECT_FALSE(bus.read(0x70, b));
    EXPECT_FALSE(bus.remove(0x70).ok());
    EXPECT_TRUE(bus.insert(dev, 0x70, 2).ok());  // the range is free again
}

// A device that moves itself from inside its own handler (like a BAR relocation).
class RelocatingDevice : public BusDevice {
public:
    RelocatingDevice(Bus& bus) : bus_(bus) {}
    std::string name() const override { return "relocating"; }
    void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0); }
    void write(uint64_t, std::span<const uint8_t> data) override {
        uint64_t newBase = data[0] * 0x100ull;
        ASSERT_TRUE(bus_.remove(base).ok());
        ASSERT_TRUE(bus_.insert(self.lock(), newBase, 0x10).ok());
        base = newBase;
    }
    Bus& bus_;
    uint64_t base = 0;
    std::weak_ptr<BusDevice> self;
};

TEST(Bus, DeviceMayEditTheBusFromItsHandler) {
    Bus bus("mmio");
    auto dev = std::make_shared<RelocatingDevice>(bus);
    dev->self = dev;
    dev->base = 0x100;
    ASSERT_TRUE(bus.insert(dev, 0x100, 0x10).ok());
    uint8_t v[1] = {5};
    EXPECT_TRUE(bus.write(0x100, v));
    uint8_t b[1];
    EXPECT_FALSE(bus.read(0x100, b));
    EXPECT_TRUE(bus.read(0x500, b));
}

TEST(Bus, ConcurrentDispatchWhileInserting) {
    Bus bus("mmio");
    auto fixed = std::make_shared<RecordingDevice>("fixed", 0x11);
    ASSERT_TRUE(bus.insert(fixed, 0x0, 0x1000).ok());
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> bad{0};
    std::atomic<uint64_t> readsDone{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t) {
        readers.emplace_back([&] {
            uint8_t b[4];
            while (!stop.load()) {
                if (!bus.read(0x10, b) || b[0] != 0x11) bad++;
                readsDone++;
            }
        });
    }
    // Churn at least 2000 times and until the readers have overlapped it (on a loaded machine the
    // reader threads may not be scheduled before 2000 quick iterations end); bounded by a deadline.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int i = 0; i < 2000 || (readsDone.load() < 10000 && std::chrono::steady_clock::now() < deadline); ++i) {
        uint64_t base = 0x10000 + (i % 64) * 0x100;
        auto d = std::make_shared<RecordingDevice>("churn");
        ASSERT_TRUE(bus.insert(d, base, 0x100).ok());
        uint8_t b[1];
        EXPECT_TRUE(bus.read(base + 0x80, b));
        ASSERT_TRUE(bus.remove(base).ok());
    }
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(bad.load(), 0u);
    EXPECT_GT(fixed->reads.size(), 0u);
    EXPECT_EQ(bus.entries().size(), 1u);
}

}  // namespace
}  // namespace conduit::devices
