// devices/smmuv3/stream_table.h: finding a StreamID's STE in a linear or 2-level table in guest
// memory, sanitizing it to the nesting masks, and the invariant the host relies on: no STE bit
// outside kSte0NestingAllowed / kSte1NestingAllowed ever reaches StreamBinding::setStream().
#include <random>

#include "tests/unit/devices/smmuv3_fixture.h"

using namespace conduit;
using namespace conduit::devices::smmuv3;
using namespace conduit::devices::smmuv3::test;

namespace {

constexpr uint64_t kV = v::kSte0V;
constexpr uint64_t cfg(unsigned c) { return v::prep(v::kSte0Cfg, c); }

class StreamTable : public ::testing::Test {
protected:
    StreamTable() : mem(take(memory::GuestMemory::create({{kRam, kRamSize}}, {}))) {}
    memory::GuestMemory mem;
};

}  // namespace

TEST_F(StreamTable, Linear) {
    const StreamTableConfig t{kLinear, v::prep(reg::kStrtabCfgLog2Size, 6), 16};
    ASSERT_TRUE(mem.writeObj(kLinear + 63 * 64, Ste{0x11, 0x22}).ok());
    auto r = readSte(mem, t, 63);
    EXPECT_EQ(r.status, SteLookup::Found);
    EXPECT_EQ(r.ste, (Ste{0x11, 0x22}));
    EXPECT_EQ(readSte(mem, t, 64).status, SteLookup::BadStreamId);
    // LOG2SIZE above SIDSIZE counts as SIDSIZE.
    const StreamTableConfig big{kLinear, v::prep(reg::kStrtabCfgLog2Size, 40), 16};
    EXPECT_EQ(readSte(mem, big, 0x10000).status, SteLookup::BadStreamId);
    EXPECT_EQ(readSte(mem, big, 0xffff).status, SteLookup::Found);  // 4 MiB + 4 MiB of table: within RAM
    const StreamTableConfig outside{0x7000000000ull, v::prep(reg::kStrtabCfgLog2Size, 6), 16};
    r = readSte(mem, outside, 2);
    EXPECT_EQ(r.status, SteLookup::FetchFault);
    EXPECT_EQ(r.fetchAddr, 0x7000000000ull + 128);
}

TEST_F(StreamTable, TwoLevel) {
    const auto cfg2 = [](uint32_t split, uint32_t log2) {
        return v::prep(reg::kStrtabCfgFmt, reg::kStrtab2Lvl) | v::prep(reg::kStrtabCfgSplit, split) |
               v::prep(reg::kStrtabCfgLog2Size, log2);
    };
    const StreamTableConfig t{kL1, static_cast<uint32_t>(cfg2(8, 16)), 16};
    // sid 0x305: L1 index 3, L2 index 5.
    EXPECT_EQ(readSte(mem, t, 0x305).status, SteLookup::NoL2);  // Span 0
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + 3 * 8, kL2Base | 3).ok());  // Span 3: 4 STEs
    ASSERT_TRUE(mem.writeObj(kL2Base + 2 * 64, Ste{0xaa, 0xbb}).ok());
    ASSERT_TRUE(mem.writeObj(kL2Base + 5 * 64, Ste{0xcc, 0xdd}).ok());
    EXPECT_EQ(readSte(mem, t, 0x302).ste, (Ste{0xaa, 0xbb}));
    EXPECT_EQ(readSte(mem, t, 0x305).status, SteLookup::NoL2);  // past the span
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + 3 * 8, kL2Base | 9).ok());
    EXPECT_EQ(readSte(mem, t, 0x305).ste, (Ste{0xcc, 0xdd}));
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + 3 * 8, kL2Base | 10).ok());  // Span above SPLIT+1: reserved
    EXPECT_EQ(readSte(mem, t, 0x305).status, SteLookup::NoL2);
    // SPLIT 6: sid 0x305 is L1 index 12, L2 index 5.
    const StreamTableConfig t6{kL1, static_cast<uint32_t>(cfg2(6, 16)), 16};
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + 12 * 8, (kL2Base + 0x10000) | 7).ok());
    ASSERT_TRUE(mem.writeObj(kL2Base + 0x10000 + 5 * 64, Ste{0xee, 0xff}).ok());
    EXPECT_EQ(readSte(mem, t6, 0x305).ste, (Ste{0xee, 0xff}));
    EXPECT_EQ(readSte(mem, {kL1, static_cast<uint32_t>(cfg2(7, 16)), 16}, 0x305).status, SteLookup::NoL2);
    EXPECT_EQ(readSte(mem, {kL1, static_cast<uint32_t>(cfg2(8, 9)), 16}, 0x305).status, SteLookup::BadStreamId);
    // The L1 table or the L2 table outside RAM.
    EXPECT_EQ(readSte(mem, {0x7000000000ull, static_cast<uint32_t>(cfg2(8, 16)), 16}, 0x305).status,
              SteLookup::FetchFault);
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + 3 * 8, 0x7000000000ull | 9).ok());
    auto r = readSte(mem, t, 0x305);
    EXPECT_EQ(r.status, SteLookup::FetchFault);
    EXPECT_EQ(r.fetchAddr, 0x7000000000ull + 5 * 64);
}

TEST(SanitizeSte, CanonicalAbortAndBypass) {
    const SteLimits lim{0, 44, false};
    for (const Ste& abort : {Ste{0, 0}, Ste{~kV, ~0ull}, Ste{kV | cfg(v::kCfgAbort) | (1ull << 60), ~0ull}}) {
        auto s = sanitizeSte(abort, lim);
        EXPECT_EQ(s.ste, kSteAbort);
        EXPECT_FALSE(s.refused);
    }
    auto s = sanitizeSte({kV | cfg(v::kCfgBypass) | v::kSte0S1CtxPtr, ~0ull}, lim);
    EXPECT_EQ(s.ste, kSteBypass);
    EXPECT_FALSE(s.refused);
}

TEST(SanitizeSte, RefusesWhatIsNotOffered) {
    const SteLimits lim{4, 44, false};
    const uint64_t s1 = kV | cfg(v::kCfgS1Trans);
    auto refused = [&](const Ste& ste) { return sanitizeSte(ste, lim).refused; };
    for (unsigned c : {1u, 2u, 3u, 6u, 7u}) EXPECT_TRUE(refused({kV | cfg(c), 0})) << c;
    EXPECT_TRUE(refused({s1 | v::prep(v::kSte0S1CdMax, 5), 0}));                               // > SSIDSIZE
    EXPECT_FALSE(refused({s1 | v::prep(v::kSte0S1CdMax, 4), 0}));
    EXPECT_TRUE(refused({s1 | v::prep(v::kSte0S1CdMax, 4) | v::prep(v::kSte0S1Fmt, 1), 0}));  // no CD2L
    EXPECT_FALSE(sanitizeSte({s1 | v::prep(v::kSte0S1CdMax, 4) | v::prep(v::kSte0S1Fmt, 1), 0}, {4, 44, true}).refused);
    EXPECT_TRUE(refused({s1 | v::prep(v::kSte0S1CdMax, 4) | v::prep(v::kSte0S1Fmt, 3), 0}));
    EXPECT_TRUE(refused({s1 | v::prep(v::kSte0S1CdMax, 4), v::prep(v::kSte1S1Dss, 3)}));
    EXPECT_FALSE(refused({s1, v::prep(v::kSte1S1Dss, 3)}));  // S1DSS matters only with substreams
    EXPECT_TRUE(refused({s1 | (1ull << 44), 0}));              // context pointer beyond OAS 44
    EXPECT_FALSE(refused({s1 | (1ull << 43), 0}));
}

TEST(SanitizeSte, Stage1KeepsOnlyAllowedFieldsWithoutEats) {
    const SteLimits lim{20, 52, true};
    const Ste guest{(~0ull & ~v::kSte0Cfg & ~v::kSte0S1Fmt & ~v::kSte0S1CdMax) | cfg(v::kCfgS1Trans) | v::prep(v::kSte0S1CdMax, 20),
                    ~0ull & ~v::kSte1S1Dss};
    auto s = sanitizeSte(guest, lim);
    ASSERT_FALSE(s.refused);
    EXPECT_EQ(s.ste[0], (guest[0] & v::kSte0NestingAllowed));
    EXPECT_EQ(s.ste[1], v::kSte1NestingAllowed & ~v::kSte1Eats & ~v::kSte1S1Dss);
}

// The invariant, over the pure function: millions of random STEs, biased so that half of them
// take the stage-1 path (V and Cfg=S1 forced) with every other bit random.
TEST(SanitizeSte, NoBitOutsideTheNestingMasksEver) {
    std::mt19937_64 rng(13);
    uint64_t s1Accepted = 0;
    for (const SteLimits& lim : {SteLimits{0, 44, false}, SteLimits{20, 52, true}, SteLimits{5, 48, true}}) {
        for (int i = 0; i < 1'500'000; ++i) {
            Ste ste{rng(), rng()};
            if (i & 1) ste[0] = (ste[0] & ~v::kSte0Cfg) | kV | cfg(v::kCfgS1Trans);
            if (i & 2) ste[0] = (ste[0] & ~v::kSte0S1CdMax) | v::prep(v::kSte0S1CdMax, rng() % (lim.ssidBits + 1));
            if (i & 4) ste[0] &= v::mask(lim.oasBits - 1, 0) | v::mask(63, 52);
            const auto s = sanitizeSte(ste, lim);
            ASSERT_TRUE(nestingClean(s.ste)) << std::hex << ste[0] << " " << ste[1];
            ASSERT_EQ(s.ste[1] & v::kSte1Eats, 0u);
            if (v::steConfig(s.ste) == v::kCfgS1Trans) ++s1Accepted;
        }
    }
    EXPECT_GT(s1Accepted, 500'000u);  // the stage-1 path was really exercised
}

// The same invariant end to end: random STEs written into the guest's 2-level and linear tables,
// picked up by CFGI_STE, CFGI_ALL and SMMUEN transitions; the recording binding counts any STE
// that breaks the masks.
TEST_F(SmmuFixture, NoBitOutsideTheNestingMasksReachesSetStream) {
    std::mt19937_64 rng(7);
    for (bool twoLevel : {true, false}) {
        probeLikeLinux(twoLevel);
        for (int i = 0; i < 20000; ++i) {
            const uint32_t sid = binding.sids[rng() % 2];
            Ste ste{rng(), rng()};
            if (i & 1) ste[0] = (ste[0] & ~v::kSte0Cfg & ~v::mask(63, 59) & ~v::mask(51, 44)) | kV | cfg(v::kCfgS1Trans);
            writeSte(sid, ste);
            switch (i % 5) {
                case 0: case 1: case 2: issue({cfgiSte(sid), cmdSync()}); break;
                case 3: issue({cfgiAll(), cmdSync()}); break;
                case 4:
                    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn);
                    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
                    break;
            }
            w32(reg::kEvtqCons, r32(reg::kEvtqProd));  // keep the event queue drained
        }
    }
    EXPECT_EQ(binding.dirty, 0u);
    uint64_t s1 = 0;
    for (const auto& c : binding.sets()) s1 += v::steConfig(c.ste) == v::kCfgS1Trans;
    EXPECT_GT(s1, 5000u);
    EXPECT_GT(smmu->stats().eventsDelivered, 1000u);  // refusals were reported
}
