#include "devices/exit_device.h"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

namespace conduit::devices {
namespace {

TEST(ExitDevice, ValueWidthsAreZeroExtended) {
    std::vector<uint32_t> got;
    ExitDevice dev([&](uint32_t v) { got.push_back(v); });
    const uint8_t b1[1] = {0xfe};
    const uint8_t b2[2] = {0x34, 0x92};
    const uint8_t b4[4] = {0x78, 0x56, 0x34, 0x92};
    dev.write(0, b1);
    dev.write(0, b2);
    dev.write(0, b4);
    EXPECT_EQ(got, (std::vector<uint32_t>{0xfe, 0x9234, 0x92345678}));
}

TEST(ExitDevice, IgnoresOtherOffsetsAndWidths) {
    int calls = 0;
    ExitDevice dev([&](uint32_t) { ++calls; });
    const uint8_t b1[1] = {1};
    const uint8_t b8[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    dev.write(1, b1);
    dev.write(0, b8);
    EXPECT_EQ(calls, 0);
}

TEST(ExitDevice, ReadsReturnZero) {
    ExitDevice dev([](uint32_t) {});
    uint8_t buf[4] = {0xff, 0xff, 0xff, 0xff};
    dev.read(0, buf);
    EXPECT_EQ(buf[0] | buf[1] | buf[2] | buf[3], 0);
    EXPECT_EQ(dev.name(), "exit@0x700");
}

}  // namespace
}  // namespace conduit::devices
