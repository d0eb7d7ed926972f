// devices/smmuv3/virtual_smmu.h against a recording StreamBinding and real guest memory: the IDRs
// derived from the host's, Linux's probe and reset sequence, GBPA and SMMUEN, CFGI_STE/RANGE/ALL
// over linear and 2-level tables, invalidation batching per CMD_SYNC and a host failure at the k-th
// command, illegal commands, and event delivery with wrap and overflow.
#include <atomic>
#include <thread>

#include "tests/unit/devices/smmuv3_fixture.h"

using namespace conduit;
using namespace conduit::devices::smmuv3;
using namespace conduit::devices::smmuv3::test;
using Call = RecordingBinding::Call;

namespace {

constexpr Ste kBypass = kSteBypass;
constexpr Ste kAbort{0, 0};

}  // namespace

// ---- identity ------------------------------------------------------------------------------------

TEST(VirtualSmmuIdrs, DerivedFromQemuHostWithinNesting) {
    auto mem = take(memory::GuestMemory::create({{kRam, 0x10000}}, {}));
    RecordingBinding b;
    auto smmu = take(VirtualSmmu::create("v", qemuHost(), mem, b, {}));
    const auto idr = smmu->idrs();
    // Stage 1 only, AArch64 LE tables, COHACC/ASID16 from the host, 2-level stream table, no stall,
    // TERM_MODEL from the host; no S2P, VMID16, MSI, SEV, ATS, PRI, HYP, BTM, HTTU.
    EXPECT_EQ(idr[0], v::kIdr0S1p | (2u << 2) | (1u << 4) | v::kIdr0Asid16 | (2u << 21) | (1u << 24) | (1u << 26) |
                          (1u << 27));
    EXPECT_EQ(v::field(idr[1], reg::kIdr1SidSize), 16u);
    EXPECT_EQ(v::field(idr[1], reg::kIdr1SsidSize), 0u);
    EXPECT_GE(v::field(idr[1], reg::kIdr1CmdqS), 7u);  // Linux needs more than 64 entries
    EXPECT_GE(v::field(idr[1], reg::kIdr1EvtqS), 7u);
    EXPECT_EQ(idr[1] & (reg::kIdr1TablesPreset | reg::kIdr1QueuesPreset | reg::kIdr1Rel | reg::kIdr1PriqS), 0u);
    EXPECT_EQ(idr[3], v::kIdr3Ril | reg::kIdr3Had | (2u << 11));  // RIL, HAD, BBML2; no FWB
    EXPECT_EQ(idr[5], 0x74u);  // OAS 44, 4K/16K/64K
    EXPECT_EQ(idr[2], 0u);
    EXPECT_EQ(idr[4], 0u);
}

TEST(VirtualSmmuIdrs, SubstreamsAreTheSmallerOfHostAndDevice) {
    auto mem = take(memory::GuestMemory::create({{kRam, 0x10000}}, {}));
    RecordingBinding b;
    HostSmmuIds host = qemuHost(5);
    host.idr[1] |= 20u << v::kIdr1SsidSizeShift;
    host.idr[0] |= reg::kIdr0Cd2l | reg::kIdr0Msi | reg::kIdr0Pri | v::kIdr0Ats | reg::kIdr0Sev;
    host.idr[3] &= ~v::kIdr3Ril;
    auto smmu = take(VirtualSmmu::create("v", host, mem, b, {}));
    auto idr = smmu->idrs();
    EXPECT_EQ(v::field(idr[1], reg::kIdr1SsidSize), 5u);
    EXPECT_TRUE(idr[0] & reg::kIdr0Cd2l);
    EXPECT_EQ(idr[0] & (reg::kIdr0Msi | reg::kIdr0Pri | v::kIdr0Ats | reg::kIdr0Sev | v::kIdr0S2p), 0u);
    EXPECT_EQ(idr[3] & v::kIdr3Ril, 0u);
    host.maxPasidLog2 = 31;
    host.idr[1] = (host.idr[1] & ~reg::kIdr1SsidSize) | (3u << v::kIdr1SsidSizeShift);
    smmu = take(VirtualSmmu::create("v", host, mem, b, {}));
    EXPECT_EQ(v::field(smmu->idrs()[1], reg::kIdr1SsidSize), 3u);
}

TEST(VirtualSmmuIdrs, RefusesAHostWithoutStage1) {
    auto mem = take(memory::GuestMemory::create({{kRam, 0x10000}}, {}));
    RecordingBinding b;
    HostSmmuIds host = qemuHost();
    host.idr[0] &= ~v::kIdr0S1p;
    EXPECT_FALSE(VirtualSmmu::create("v", host, mem, b, {}).ok());
}

// ---- registers -------------------------------------------------------------------------------------

TEST_F(SmmuFixture, RegisterFileAccessSizes) {
    // The IDRs, IIDR and AIDR read back as derived; 64-bit registers as one 64-bit or two 32-bit
    // accesses; bytes and halfwords are RAZ/WI.
    for (unsigned i = 0; i < 6; ++i) EXPECT_EQ(r32(4 * i), smmu->idrs()[i]);
    EXPECT_EQ(r32(reg::kAidr), 1u);
    w64(reg::kCmdqBase, 0x4000000000012345ull | (1ull << 63) | (1ull << 55));  // RES0 bits dropped
    EXPECT_EQ(r64(reg::kCmdqBase), 0x4000000000012345ull);
    w32(reg::kStrtabBase, 0x12345fc0);
    w32(reg::kStrtabBase + 4, 0x40000abc);
    EXPECT_EQ(r64(reg::kStrtabBase), 0x40000abc12345fc0ull);
    EXPECT_EQ(r32(reg::kStrtabBase + 4), 0x40000abcu);
    uint16_t h = 0xffff;
    smmu->write(reg::kCr2, std::span(reinterpret_cast<const uint8_t*>(&h), 2));
    EXPECT_EQ(r32(reg::kCr2), 0u);
    uint8_t b = 0x55;
    smmu->read(reg::kIdr0, std::span(&b, 1));
    EXPECT_EQ(b, 0u);
    EXPECT_EQ(r32(reg::kIdr0 + 2), 0u);  // misaligned
    w32(reg::kIdr0, 0);                   // read-only
    EXPECT_EQ(r32(reg::kIdr0), smmu->idrs()[0]);
    // Page 1's EVTQ pointers are not on page 0.
    w32(reg::kEvtqCons, 5);
    EXPECT_EQ(r32(reg::kEvtqCons), 5u);
    EXPECT_EQ(r32(reg::kEvtqCons - reg::kPage1), 0u);
}

TEST_F(SmmuFixture, LinuxProbeAndResetSequence) {
    probeLikeLinux();
    EXPECT_EQ(r32(reg::kCr0Ack), reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    EXPECT_EQ(r32(reg::kCr1), 0xd75u);
    EXPECT_EQ(r32(reg::kCr2), 0x6u);
    EXPECT_EQ(r32(reg::kCmdqCons), r32(reg::kCmdqProd));  // both CMD_SYNCs completed synchronously
    EXPECT_EQ(r32(reg::kCmdqProd), 4u);
    EXPECT_EQ(r32(reg::kGerror), 0u);
    const auto sets = binding.sets();
    // CFGI_ALL with SMMUEN clear: GBPA (bypass at reset) for both bound streams; SMMUEN set: the
    // 2-level table has no L2 for them yet (Linux adds one when the device probes): abort.
    ASSERT_EQ(sets.size(), 4u);
    EXPECT_EQ(sets[0].ste, kBypass);
    EXPECT_EQ(sets[1].ste, kBypass);
    EXPECT_EQ(sets[2].ste, kAbort);
    EXPECT_EQ(sets[3].ste, kAbort);
    const auto inv = binding.invalidations();
    ASSERT_EQ(inv.size(), 1u);  // TLBI_NSNH_ALL; CFGI_ALL and CMD_SYNC are the model's own
    ASSERT_EQ(inv[0].commands.size(), 1u);
    EXPECT_EQ(v::opcode(inv[0].commands[0]), v::kOpTlbiNsnhAll);
    const auto st = smmu->stats();
    EXPECT_EQ(st.commands, 4u);
    EXPECT_EQ(st.syncs, 2u);
    EXPECT_EQ(st.invalidateCalls, 1u);
    EXPECT_EQ(st.steConfigs, 4u);
    EXPECT_EQ(evtqIrq.edges + gerrorIrq.edges + syncIrq.edges, 0);
    EXPECT_EQ(binding.dirty, 0u);
}

TEST_F(SmmuFixture, GbpaUpdateSelfClearsAndAppliesWhileDisabled) {
    EXPECT_EQ(r32(reg::kGbpa), reg::kGbpaReset);
    w32(reg::kGbpa, reg::kGbpaAbort);  // no UPDATE: no effect
    EXPECT_EQ(r32(reg::kGbpa), reg::kGbpaReset);
    EXPECT_TRUE(binding.calls.empty());
    w32(reg::kGbpa, reg::kGbpaUpdate | reg::kGbpaAbort);
    EXPECT_EQ(r32(reg::kGbpa), reg::kGbpaAbort);  // UPDATE already clear: arm_smmu_update_gbpa() is done
    ASSERT_EQ(binding.sets().size(), 2u);
    EXPECT_EQ(binding.sets()[0].ste, kAbort);
    EXPECT_EQ(binding.sets()[0].sid, 0x10u);
    EXPECT_EQ(binding.sets()[1].sid, 0x108u);
    w32(reg::kGbpa, reg::kGbpaUpdate | reg::kGbpaAbort);  // unchanged: nothing sent again
    EXPECT_EQ(binding.sets().size(), 2u);
    w32(reg::kGbpa, reg::kGbpaUpdate);
    ASSERT_EQ(binding.sets().size(), 4u);
    EXPECT_EQ(binding.sets()[3].ste, kBypass);

    // While SMMUEN is set, GBPA changes nothing the streams see; clearing SMMUEN applies it.
    probeLikeLinux();
    writeSte(0x10, s1Ste(kRam + 0x7000));
    issue({cfgiSte(0x10), cmdSync()});
    const size_t before = binding.sets().size();
    w32(reg::kGbpa, reg::kGbpaUpdate | reg::kGbpaAbort);
    EXPECT_EQ(binding.sets().size(), before);
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn);
    const auto sets = binding.sets();
    ASSERT_EQ(sets.size(), before + 1);  // 0x108 was already abort
    EXPECT_EQ(sets.back().sid, 0x10u);
    EXPECT_EQ(sets.back().ste, kAbort);
    // SMMUEN 0->1 re-reads the table.
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    EXPECT_EQ(binding.sets().back().sid, 0x10u);
    EXPECT_EQ(binding.sets().back().ste[0] & v::kSte0S1CtxPtr, kRam + 0x7000);
    EXPECT_EQ(binding.dirty, 0u);
}

TEST_F(SmmuFixture, IrqCtrlMirroredAndGerrorIrqOnlyWhenEnabled) {
    writeSync(reg::kIrqCtrl, reg::kIrqCtrlAck, reg::kIrqCtrlGerrorIrqEn | reg::kIrqCtrlEvtqIrqEn);
    w32(reg::kIrqCtrl, 0xff);
    EXPECT_EQ(r32(reg::kIrqCtrlAck), reg::kIrqCtrlGerrorIrqEn | reg::kIrqCtrlEvtqIrqEn);  // no PRIQ
    w32(reg::kIrqCtrl, 0);
    probeLikeLinux();
    writeSync(reg::kIrqCtrl, reg::kIrqCtrlAck, 0);
    issue({cmd(0x7f)});
    EXPECT_EQ(r32(reg::kGerror) & reg::kGerrorCmdqErr, reg::kGerrorCmdqErr);
    EXPECT_EQ(gerrorIrq.edges, 0);
}

// ---- stream table entries ----------------------------------------------------------------------------

TEST_F(SmmuFixture, CfgiSteTwoLevelSanitizesAndSetsOnlyOnChange) {
    probeLikeLinux();
    binding.calls.clear();
    Ste guest = s1Ste(kRam + 0x8000, 0);
    guest[0] |= 1ull << 58;                                    // reserved bit of dword 0
    guest[1] |= (3ull << 30) | (1ull << 44) | v::prep(v::kSte1Eats, 1);  // STRW=EL2, SHCFG, EATS
    writeSte(0x108, guest);
    issue({cfgiSte(0x108), cmdSync()});
    auto sets = binding.sets();
    ASSERT_EQ(sets.size(), 1u);
    EXPECT_EQ(sets[0].sid, 0x108u);
    EXPECT_EQ(sets[0].ste[0], s1Ste(kRam + 0x8000)[0]);
    EXPECT_EQ(sets[0].ste[1], s1Ste(kRam + 0x8000)[1]);
    issue({cfgiSte(0x108), cmdSync()});  // same STE: nothing to do
    EXPECT_EQ(binding.sets().size(), 1u);
    writeSte(0x108, {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgBypass), 1ull << 44});
    issue({cfgiSte(0x108), cmdSync()});
    ASSERT_EQ(binding.sets().size(), 2u);
    EXPECT_EQ(binding.sets()[1].ste, kBypass);
    issue({cfgiSte(0x55), cmdSync()});  // not an assigned device's stream: the guest's business
    EXPECT_EQ(binding.sets().size(), 2u);
    EXPECT_EQ(r32(reg::kCmdqCons), r32(reg::kCmdqProd));
    EXPECT_EQ(binding.dirty, 0u);
}

TEST_F(SmmuFixture, CfgiSteLinearTable) {
    probeLikeLinux(false);
    binding.calls.clear();
    writeSte(0x10, s1Ste(kRam + 0x9000, 0));
    writeSte(0x108, {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgBypass), 0});
    issue({cfgiSte(0x10), cfgiSte(0x108), cmdSync()});
    auto sets = binding.sets();
    ASSERT_EQ(sets.size(), 2u);
    EXPECT_EQ(sets[0].ste, s1Ste(kRam + 0x9000));
    EXPECT_EQ(sets[1].ste, kBypass);
    // A StreamID beyond LOG2SIZE: abort, and C_BAD_STREAMID in the event queue.
    useStreamTable(false, 8);  // ignored: SMMUEN is set
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn);
    useStreamTable(false, 8);
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    EXPECT_EQ(binding.sets().back().sid, 0x108u);
    EXPECT_EQ(binding.sets().back().ste, kAbort);
    EXPECT_EQ(v::field(readEvent(0)[0], v::kEvt0Id), reg::kEvtCBadStreamId);
    EXPECT_EQ(v::field(readEvent(0)[0], v::kEvt0Sid), 0x108u);
}

TEST_F(SmmuFixture, CfgiRangeAndAllTouchOnlyBoundStreamsInRange) {
    binding.sids = {0x10, 0x11, 0x20, 0x108};
    probeLikeLinux();
    for (uint32_t sid : binding.sids) writeSte(sid, s1Ste(kRam + 0x1000 * (sid + 1)));
    binding.calls.clear();
    issue({cfgiRange(0x11, 0), cmdSync()});  // 2 StreamIDs: 0x10, 0x11
    auto sets = binding.sets();
    ASSERT_EQ(sets.size(), 2u);
    EXPECT_EQ(sets[0].sid, 0x10u);
    EXPECT_EQ(sets[1].sid, 0x11u);
    issue({cfgiRange(0x1f, 4), cmdSync()});  // 32 StreamIDs from 0: 0x20 is outside
    EXPECT_EQ(binding.sets().size(), 2u);  // 0x10 and 0x11 are unchanged
    issue({cfgiAll(), cmdSync()});
    sets = binding.sets();
    ASSERT_EQ(sets.size(), 4u);
    EXPECT_EQ(sets[2].sid, 0x20u);
    EXPECT_EQ(sets[3].sid, 0x108u);
    EXPECT_EQ(sets[3].ste, s1Ste(kRam + 0x1000 * 0x109));
}

TEST_F(SmmuFixture, TwoLevelWithoutL2IsAbortAndUnreadableTableIsFetchFault) {
    probeLikeLinux();
    writeSte(0x10, s1Ste(kRam + 0x8000));
    issue({cfgiSte(0x10), cmdSync()});
    EXPECT_EQ(binding.sets().back().ste, s1Ste(kRam + 0x8000));
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1, 0).ok());  // L1 descriptor invalid (Span 0)
    issue({cfgiSte(0x10), cmdSync()});
    EXPECT_EQ(binding.sets().back().ste, kAbort);
    EXPECT_EQ(smmu->stats().eventsDelivered, 0u);  // an absent STE is not an error to report
    // L2 pointer outside guest RAM.
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1, 0x7000000000ull | 9).ok());
    writeSte(0x108, s1Ste(kRam + 0x8000));
    ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + 8, 0x7000000000ull | 9).ok());
    issue({cfgiSte(0x108), cmdSync()});
    EXPECT_EQ(binding.sets().back().ste, kAbort);
    const Event e = readEvent(0);
    EXPECT_EQ(v::field(e[0], v::kEvt0Id), reg::kEvtFSteFetch);
    EXPECT_EQ(e[3], 0x7000000000ull + 8 * 64);
}

TEST_F(SmmuFixture, RefusedSteIsAbortWithCBadSteEvent) {
    probeLikeLinux();
    writeSte(0x10, s1Ste(kRam + 0x8000));
    issue({cfgiSte(0x10), cmdSync()});
    binding.calls.clear();
    const int edges = evtqIrq.edges;
    writeSte(0x10, {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgS2Trans), 0});  // stage 2 is not offered
    issue({cfgiSte(0x10), cmdSync()});
    ASSERT_EQ(binding.sets().size(), 1u);
    EXPECT_EQ(binding.sets()[0].ste, kAbort);
    EXPECT_EQ(r32(reg::kEvtqProd), 1u);
    EXPECT_EQ(v::field(readEvent(0)[0], v::kEvt0Id), v::kEvtCBadSte);
    EXPECT_EQ(v::field(readEvent(0)[0], v::kEvt0Sid), 0x10u);
    EXPECT_EQ(evtqIrq.edges, edges + 1);
    // S1CDMax beyond SSIDSIZE (0 here) is illegal as well.
    writeSte(0x108, s1Ste(kRam + 0x8000, 3));
    issue({cfgiSte(0x108), cmdSync()});
    EXPECT_EQ(r32(reg::kEvtqProd), 2u);
    EXPECT_EQ(v::field(readEvent(1)[0], v::kEvt0Sid), 0x108u);
}

TEST_F(SmmuFixture, HostRefusalIsCBadSteAndFallsBackToAbort) {
    probeLikeLinux();
    binding.failSetStream = true;
    binding.calls.clear();
    writeSte(0x10, s1Ste(kRam + 0x8000));
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn);  // GBPA bypass: refused too
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    binding.calls.clear();
    issue({cfgiSte(0x10), cmdSync()});
    const auto sets = binding.sets();
    ASSERT_EQ(sets.size(), 1u);  // refused, and the stream already is abort: nothing more to send
    EXPECT_EQ(sets[0].ste, s1Ste(kRam + 0x8000));
    EXPECT_EQ(v::field(readEvent(r32(reg::kEvtqProd) - 1)[0], v::kEvt0Id), v::kEvtCBadSte);
    // From a working configuration, a refusal falls back to abort rather than keep the old one.
    binding.failSetStream = false;
    writeSte(0x10, s1Ste(kRam + 0x9000));
    issue({cfgiSte(0x10), cmdSync()});
    binding.failSetStream = true;
    binding.calls.clear();
    writeSte(0x10, s1Ste(kRam + 0xa000));
    issue({cfgiSte(0x10), cmdSync()});
    ASSERT_EQ(binding.sets().size(), 2u);
    EXPECT_EQ(binding.sets()[1].ste, kAbort);
}

// ---- invalidations and errors ---------------------------------------------------------------------------

TEST_F(SmmuFixture, InvalidationsBatchedPerSync) {
    probeLikeLinux();
    binding.calls.clear();
    const auto before = smmu->stats();
    std::vector<Command> cmds;
    for (int i = 0; i < 20; ++i) cmds.push_back(tlbiVa(7, 0x1000ull * i));
    cmds.push_back(cmd(v::kOpCfgiCd, v::prep(v::kCfgi0Sid, 0x10)));
    cmds.push_back(cmd(v::kOpPrefetchCfg));  // a hint: ignored, not forwarded
    cmds.push_back(cmdSync());
    issue(cmds);
    const auto inv = binding.invalidations();
    ASSERT_EQ(inv.size(), 1u);
    ASSERT_EQ(inv[0].commands.size(), 21u);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(inv[0].commands[i], tlbiVa(7, 0x1000ull * i));
    EXPECT_EQ(v::opcode(inv[0].commands[20]), v::kOpCfgiCd);
    const auto st = smmu->stats();
    EXPECT_EQ(st.invalidateCalls - before.invalidateCalls, 1u);
    EXPECT_EQ(st.invalidationsForwarded - before.invalidationsForwarded, 21u);
    EXPECT_EQ(st.commands - before.commands, 23u);
    EXPECT_EQ(r32(reg::kCmdqCons), r32(reg::kCmdqProd));
}

TEST_F(SmmuFixture, CfgiCdOfAStreamTheHostDoesNotFrontIsNotSent) {
    probeLikeLinux();
    binding.calls.clear();
    const Command mine = cmd(v::kOpCfgiCd, v::prep(v::kCfgi0Sid, 0x108));
    const Command other = cmd(v::kOpCfgiCdAll, v::prep(v::kCfgi0Sid, 0x30));
    issue({other, mine, cmd(v::kOpCfgiCd, v::prep(v::kCfgi0Sid, 0x31)), cmdSync()});
    const auto inv = binding.invalidations();
    ASSERT_EQ(inv.size(), 1u);
    EXPECT_EQ(inv[0].commands, std::vector<Command>{mine});
    EXPECT_EQ(r32(reg::kCmdqCons), r32(reg::kCmdqProd));
    EXPECT_EQ(r32(reg::kGerror), 0u);
}

TEST_F(SmmuFixture, CfgiSteFlushesEarlierInvalidationsFirst) {
    probeLikeLinux();
    writeSte(0x10, s1Ste(kRam + 0x8000));
    binding.calls.clear();
    issue({tlbiVa(1, 0x1000), cfgiSte(0x10), tlbiVa(1, 0x2000), cmdSync()});
    ASSERT_EQ(binding.calls.size(), 3u);
    EXPECT_EQ(binding.calls[0].kind, Call::Invalidate);
    EXPECT_EQ(binding.calls[0].commands, std::vector<Command>{tlbiVa(1, 0x1000)});
    EXPECT_EQ(binding.calls[1].kind, Call::Set);
    EXPECT_EQ(binding.calls[2].kind, Call::Invalidate);
    EXPECT_EQ(binding.calls[2].commands, std::vector<Command>{tlbiVa(1, 0x2000)});
}

TEST_F(SmmuFixture, PartialFailureStopsAtTheFailingCommand) {
    probeLikeLinux();
    binding.calls.clear();
    binding.failInvalidateAt = 3;
    const uint32_t start = r32(reg::kCmdqProd);  // 4
    std::vector<Command> cmds;
    for (int i = 0; i < 6; ++i) cmds.push_back(tlbiVa(2, 0x1000ull * i));
    cmds.push_back(cmdSync(reg::kSyncCsIrq));
    issue(cmds);
    const uint32_t cons = r32(reg::kCmdqCons);
    EXPECT_EQ(cons & 0xffffff, start + 3);  // the 4th invalidation
    EXPECT_EQ(v::field(cons, reg::kCmdqConsErr), reg::kCerrorIll);
    EXPECT_EQ(r32(reg::kGerror) ^ r32(reg::kGerrorN), reg::kGerrorCmdqErr);
    EXPECT_EQ(gerrorIrq.edges, 1);
    EXPECT_EQ(syncIrq.edges, 0);  // the CMD_SYNC was not reached
    EXPECT_EQ(smmu->stats().commandErrors, 1u);
    // Stopped: more commands wait.
    issue({tlbiVa(3, 0)});
    EXPECT_EQ(binding.invalidations().size(), 1u);
    EXPECT_EQ(r32(reg::kCmdqCons) & 0xffffff, start + 3);
    // Linux's gerror handler: turn the command at CONS into a CMD_SYNC, then ack through GERRORN.
    binding.failInvalidateAt.reset();
    ASSERT_TRUE(mem.writeObj(kCmdq + (start + 3) * 16, cmdSync()).ok());
    w32(reg::kGerrorN, r32(reg::kGerror));
    EXPECT_EQ(r32(reg::kCmdqCons) & 0xffffff, r32(reg::kCmdqProd));
    const auto inv = binding.invalidations();
    ASSERT_EQ(inv.size(), 3u);  // the failed batch, the rest up to the CMD_SYNC, the one after
    EXPECT_EQ(inv[1].commands, (std::vector<Command>{tlbiVa(2, 0x4000), tlbiVa(2, 0x5000)}));
    EXPECT_EQ(inv[2].commands, std::vector<Command>{tlbiVa(3, 0)});
    EXPECT_EQ(syncIrq.edges, 1);  // CS=IRQ
    EXPECT_EQ(r32(reg::kGerror) ^ r32(reg::kGerrorN), 0u);
}

TEST_F(SmmuFixture, IllegalCommandsStopTheQueue) {
    probeLikeLinux();
    for (uint8_t op : std::initializer_list<uint8_t>{v::kOpTlbiEl2All, v::kOpTlbiS12Vmall, v::kOpTlbiS2Ipa, v::kOpAtcInv, v::kOpPriResp,
                       v::kOpResume, uint8_t{0x7f}, uint8_t{0}}) {
        binding.calls.clear();
        const uint32_t start = r32(reg::kCmdqProd);
        issue({tlbiVa(1, 0), cmd(op), cmdSync()});
        const uint32_t cons = r32(reg::kCmdqCons);
        EXPECT_EQ(cons & 0x1ff, (start + 1) & 0x1ff) << int(op);
        EXPECT_EQ(v::field(cons, reg::kCmdqConsErr), reg::kCerrorIll) << int(op);
        EXPECT_EQ(binding.invalidations().size(), 1u) << int(op);  // what came before was sent
        ASSERT_TRUE(mem.writeObj(kCmdq + ((start + 1) & 0xff) * 16, cmdSync()).ok());
        w32(reg::kGerrorN, r32(reg::kGerror));
        EXPECT_EQ(r32(reg::kCmdqCons) & 0x1ff, r32(reg::kCmdqProd)) << int(op);
    }
    EXPECT_EQ(binding.dirty, 0u);
}

TEST_F(SmmuFixture, CommandFetchAbort) {
    probeLikeLinux();
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    w64(reg::kCmdqBase, 0x7000000000ull | 8);  // not guest RAM
    w32(reg::kCmdqProd, 0);
    w32(reg::kCmdqCons, 0);
    writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    w32(reg::kCmdqProd, 1);
    EXPECT_EQ(v::field(r32(reg::kCmdqCons), reg::kCmdqConsErr), reg::kCerrorAbt);
    EXPECT_EQ(r32(reg::kCmdqCons) & 0x1ff, 0u);
    EXPECT_TRUE(r32(reg::kGerror) & reg::kGerrorCmdqErr);
}

// F9 (docs/reliability.md): CONS.ERR is the model's report, never what the guest wrote.
TEST_F(SmmuFixture, CmdqConsErrIsNotTheGuests) {
    w32(reg::kCmdqCons, v::prep(reg::kCmdqConsErr, 0x55) | 7);
    EXPECT_EQ(r32(reg::kCmdqCons), 7u);
    probeLikeLinux();
    issue({cmd(0x7f)});
    const uint32_t cons = r32(reg::kCmdqCons);
    w32(reg::kCmdqCons, cons & 0x1ff);  // stopped: the guest may move CONS, not clear ERR
    EXPECT_EQ(r32(reg::kCmdqCons), cons);
}

TEST_F(SmmuFixture, QueueWrapsAndSyncInterruptOnlyForCsIrq) {
    probeLikeLinux();
    binding.calls.clear();
    // 300 commands in batches of 3: PROD and CONS wrap past 256 with the wrap bit.
    for (int i = 0; i < 100; ++i) issue({tlbiVa(1, 0x1000ull * i), cmd(v::kOpTlbiNhAsid), cmdSync(i % 2 ? reg::kSyncCsIrq : reg::kSyncCsSev)});
    EXPECT_EQ(r32(reg::kCmdqProd), (4u + 300u) & 0x1ff);
    EXPECT_EQ(r32(reg::kCmdqCons), r32(reg::kCmdqProd));
    EXPECT_EQ(binding.invalidations().size(), 100u);
    EXPECT_EQ(syncIrq.edges, 50);
}

// ---- events ------------------------------------------------------------------------------------------------

TEST_F(SmmuFixture, EventsDeliveredWithWrapAndInterrupt) {
    probeLikeLinux();
    uint32_t cons = 0;
    for (int round = 0; round < 3; ++round) {
        std::vector<Event> evs;
        for (int i = 0; i < 200; ++i)
            evs.push_back({v::prep(v::kEvt0Id, v::kEvtFTranslation) | v::prep(v::kEvt0Sid, 0x10), uint64_t(round),
                           uint64_t(i), 0});
        const int edges = evtqIrq.edges;
        smmu->deliverEvents(evs, 0);
        EXPECT_EQ(evtqIrq.edges, edges + 1);
        const uint32_t prod = r32(reg::kEvtqProd);
        EXPECT_EQ(prod, (cons + 200) & 0x1ff);
        EXPECT_EQ(prod & reg::kQOverflowFlag, 0u);
        for (uint32_t i = 0; i < 200; ++i) EXPECT_EQ(readEvent(cons + i)[2], i);
        cons = prod;
        w32(reg::kEvtqCons, cons);  // the guest consumed them
    }
    EXPECT_EQ(smmu->stats().eventsDelivered, 600u);
    EXPECT_EQ(smmu->stats().eventsLost, 0u);
}

TEST_F(SmmuFixture, EventOverflowTogglesOnceUntilAcknowledged) {
    probeLikeLinux();
    std::vector<Event> evs(300, Event{v::kEvtFTranslation, 0, 0, 0});
    smmu->deliverEvents(evs, 0);
    uint32_t prod = r32(reg::kEvtqProd);
    EXPECT_EQ(prod & 0x1ff, 256u);  // full: index 0 with the wrap bit
    EXPECT_EQ(prod & reg::kQOverflowFlag, reg::kQOverflowFlag);
    EXPECT_EQ(smmu->stats().eventsLost, 44u);
    smmu->deliverEvents(std::span(evs).first(1), 0);  // not acknowledged yet: no second toggle
    EXPECT_EQ(r32(reg::kEvtqProd), prod);
    // Linux: drain, then copy OVFLG into CONS.OVACKFLG (queue_sync_cons_ovf()).
    w32(reg::kEvtqCons, 256 | reg::kQOverflowFlag);
    smmu->deliverEvents(std::span(evs).first(2), 5);  // room, but 5 lost by the host: overflow again
    prod = r32(reg::kEvtqProd);
    EXPECT_EQ(prod & 0x1ff, 258u);
    EXPECT_EQ(prod & reg::kQOverflowFlag, 0u);
    EXPECT_EQ(smmu->stats().eventsLost, 45u + 5u);
    EXPECT_EQ(smmu->stats().eventsDelivered, 258u);
}

TEST_F(SmmuFixture, EventsDroppedWhileQueueDisabled) {
    smmu->deliverEvents(std::vector<Event>(3), 2);
    EXPECT_EQ(smmu->stats().eventsLost, 5u);
    EXPECT_EQ(r32(reg::kEvtqProd), 0u);
    EXPECT_EQ(evtqIrq.edges, 0);
}

TEST_F(SmmuFixture, RebindStreamsForgetsOldAndSetsNew) {
    probeLikeLinux();
    writeSte(0x20, s1Ste(kRam + 0x8000));
    binding.sids = {0x10, 0x20};
    binding.calls.clear();
    smmu->rebindStreams();
    ASSERT_EQ(binding.sets().size(), 1u);  // 0x10 is unchanged (abort); 0x20 is new
    EXPECT_EQ(binding.sets()[0].sid, 0x20u);
    EXPECT_EQ(binding.sets()[0].ste, s1Ste(kRam + 0x8000));
}

// ---- threads ---------------------------------------------------------------------------------------------

// The binding may deliver events from inside its own calls (its event thread racing a vCPU, here
// on the same thread): the model holds no lock deliverEvents() needs across a binding call.
TEST_F(SmmuFixture, BindingMayDeliverEventsFromInsideItsCalls) {
    struct Reentrant final : StreamBinding {
        VirtualSmmu* smmu = nullptr;
        int sets = 0, invalidations = 0;
        std::vector<uint32_t> streams() const override { return {0x10}; }
        Result<void> setStream(uint32_t, const Ste&) override {
            ++sets;
            const Event e{v::kEvtFTranslation, 0, 0, 0};
            smmu->deliverEvents(std::span(&e, 1), 0);
            return success();
        }
        Result<void> invalidate(std::span<const Command> c, uint32_t* done) override {
            ++invalidations;
            smmu->deliverEvents({}, 1);
            *done = static_cast<uint32_t>(c.size());
            return success();
        }
    } reentrant;
    smmu = take(VirtualSmmu::create("v", qemuHost(), mem, reentrant, {&evtqIrq, &gerrorIrq, &syncIrq}));
    reentrant.smmu = smmu.get();
    probeLikeLinux();  // would deadlock if a binding call ran under the register lock
    writeSte(0x10, s1Ste(kRam + 0x8000));
    issue({tlbiVa(1, 0), cfgiSte(0x10), cmdSync()});
    EXPECT_EQ(reentrant.sets, 3);  // bypass (CFGI_ALL), abort (SMMUEN), S1
    EXPECT_EQ(reentrant.invalidations, 2);
    EXPECT_EQ(smmu->stats().eventsDelivered, 2u);  // from the abort and S1 settings (SMMUEN set)
}

// Events from a host thread while a vCPU issues commands and drains the queue: every record
// offered is either delivered or counted lost, and no STE is dirty.
TEST_F(SmmuFixture, EventsFromAnotherThreadWhileCommandsRun) {
    probeLikeLinux();
    writeSte(0x10, s1Ste(kRam + 0x8000));
    std::atomic<bool> stop{false};
    uint64_t offered = 0;
    std::thread host([&] {
        const std::vector<Event> evs(7, Event{v::kEvtFTranslation | v::prep(v::kEvt0Sid, 0x10), 0, 0, 0});
        for (int i = 0; i < 5000; ++i) {
            smmu->deliverEvents(evs, i % 3);
            offered += evs.size() + i % 3;
        }
        stop = true;
    });
    uint64_t rounds = 0;
    while (!stop || rounds < 100) {
        writeSte(0x10, s1Ste(kRam + 0x1000 * (1 + rounds % 4)));
        issue({tlbiVa(1, rounds << 12), cfgiSte(0x10), cmdSync()});
        w32(reg::kEvtqCons, r32(reg::kEvtqProd));
        ++rounds;
    }
    host.join();
    const auto st = smmu->stats();
    EXPECT_EQ(st.eventsDelivered + st.eventsLost, offered);
    EXPECT_EQ(st.syncs, 2 + rounds);
    EXPECT_EQ(r32(reg::kCmdqCons), r32(reg::kCmdqProd));
    EXPECT_EQ(binding.dirty, 0u);
}
