#include "base/result.h"

#include <gtest/gtest.h>

namespace conduit {
namespace {

Result<int> half(int v) {
    if (v % 2) return Error("half of odd " + std::to_string(v), EINVAL);
    return v / 2;
}

Result<int> quarter(int v) {
    int h = TRY_CTX(half(v), "quarter");
    return TRY(half(h));
}

TEST(Result, PropagatesValuesAndErrorsWithContext) {
    auto ok = quarter(8);
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(ok.value(), 2);

    auto bad = quarter(6);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code(), EINVAL);
    EXPECT_EQ(bad.error().what(), "half of odd 3");

    auto badOuter = quarter(5);
    ASSERT_FALSE(badOuter.ok());
    EXPECT_EQ(badOuter.error().what(), "quarter: half of odd 5");
    EXPECT_EQ(badOuter.error().describe(), "quarter: half of odd 5: Invalid argument (EINVAL)");
}

TEST(Result, DescribeWithoutErrnoIsJustTheMessage) {
    EXPECT_EQ(Error("bad value").describe(), "bad value");
    EXPECT_EQ(errnoName(ENOENT), "ENOENT");
}

}  // namespace
}  // namespace conduit
