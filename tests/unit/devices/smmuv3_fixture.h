// What the virtual SMMUv3's unit tests share: a StreamBinding that records every call and checks
// the nesting masks on each STE it receives, interrupt lines that count edges, real guest memory,
// and a small "guest driver" that lays out stream tables and queues and issues commands the way
// Linux's arm-smmu-v3 does.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "devices/smmuv3/registers.h"
#include "devices/smmuv3/stream_table.h"
#include "devices/smmuv3/virtual_smmu.h"
#include "memory/guest_memory.h"

namespace conduit::devices::smmuv3::test {

namespace v = vfio::smmuv3;

// The value of a Result that must be there.
template <class T>
T take(Result<T> r) {
    if (!r.ok()) ADD_FAILURE() << r.error().describe();
    return std::move(r).value();
}

// The host IDRs QEMU 10.0 reports with arm-smmuv3.stage=nested (../shared/smmunest/REPORT.md).
inline HostSmmuIds qemuHost(uint8_t maxPasidLog2 = 0) {
    HostSmmuIds h;
    h.idr = {0x0d44101b, 0x02730010, 0, 0x1414, 0, 0x74};
    h.aidr = 0x1;
    h.maxPasidLog2 = maxPasidLog2;
    return h;
}

// Whether `ste` is one the host may receive: only the nesting-allowed bits, abort/bypass/S1.
inline bool nestingClean(const Ste& ste) {
    if (ste[0] & ~v::kSte0NestingAllowed) return false;
    if (ste[1] & ~v::kSte1NestingAllowed) return false;
    const auto cfg = v::steConfig(ste);
    return cfg == v::kCfgAbort || cfg == v::kCfgBypass || cfg == v::kCfgS1Trans;
}

struct RecordingBinding final : StreamBinding {
    struct Call {
        enum Kind { Set, Invalidate } kind;
        uint32_t sid = 0;
        Ste ste{};
        std::vector<Command> commands;
    };
    std::vector<uint32_t> sids{0x10, 0x108};
    std::vector<Call> calls;
    uint64_t dirty = 0;  // STEs that broke the nesting masks
    std::optional<uint32_t> failInvalidateAt;  // index of the command the host refuses
    bool failSetStream = false;                 // refuse every non-abort STE

    std::vector<uint32_t> streams() const override { return sids; }
    Result<void> setStream(uint32_t sid, const Ste& ste) override {
        if (!nestingClean(ste)) ++dirty;
        calls.push_back({Call::Set, sid, ste, {}});
        if (failSetStream && ste != Ste{0, 0}) return Error("IOMMU_HWPT_ALLOC nested: EIO", EIO);
        return success();
    }
    Result<void> invalidate(std::span<const Command> commands, uint32_t* done) override {
        calls.push_back({Call::Invalidate, 0, {}, {commands.begin(), commands.end()}});
        if (failInvalidateAt && *failInvalidateAt < commands.size()) {
            *done = *failInvalidateAt;
            return Error("IOMMU_HWPT_INVALIDATE: EIO", EIO);
        }
        *done = static_cast<uint32_t>(commands.size());
        return success();
    }
    std::vector<Call> sets() const {
        std::vector<Call> out;
        for (const auto& c : calls)
            if (c.kind == Call::Set) out.push_back(c);
        return out;
    }
    std::vector<Call> invalidations() const {
        std::vector<Call> out;
        for (const auto& c : calls)
            if (c.kind == Call::Invalidate) out.push_back(c);
        return out;
    }
};

struct EdgeLine final : InterruptLine {
    bool level = false;
    int edges = 0;
    void setLevel(bool asserted) override {
        if (asserted && !level) ++edges;
        level = asserted;
    }
};

// Guest-physical layout of the tests.
constexpr uint64_t kRam = 0x40000000;
constexpr uint64_t kRamSize = 8ull << 20;
constexpr uint64_t kCmdq = kRam + 0x10000;    // 256 x 16 bytes
constexpr uint64_t kEvtq = kRam + 0x20000;    // 256 x 32 bytes
constexpr uint64_t kL1 = kRam + 0x40000;      // 2-level: L1 descriptors
constexpr uint64_t kL2Base = kRam + 0x100000;  // 2-level: one 16 KiB L2 table per L1 index (256 STEs)
constexpr uint64_t kLinear = kRam + 0x400000;  // linear: 2^LOG2SIZE STEs

inline Command cmd(uint8_t op, uint64_t d0 = 0, uint64_t d1 = 0) { return {op | d0, d1}; }
inline Command cfgiSte(uint32_t sid) { return cmd(v::kOpCfgiSte, v::prep(v::kCfgi0Sid, sid), v::kCfgi1Leaf); }
inline Command cfgiRange(uint32_t sid, uint32_t range) {
    return cmd(v::kOpCfgiAll, v::prep(v::kCfgi0Sid, sid), v::prep(reg::kCfgi1Range, range));
}
inline Command cfgiAll() { return cfgiRange(0, 31); }
inline Command cmdSync(uint8_t cs = reg::kSyncCsSev) { return cmd(v::kOpCmdSync, v::prep(reg::kSync0Cs, cs)); }
inline Command tlbiVa(uint16_t asid, uint64_t va) {
    return cmd(v::kOpTlbiNhVa, v::prep(v::kTlbi0Asid, asid), va & v::kTlbi1VaMask);
}
inline Ste s1Ste(uint64_t cdTable, uint8_t cdMax = 0) {
    return {v::kSte0V | v::prep(v::kSte0Cfg, v::kCfgS1Trans) | (cdTable & v::kSte0S1CtxPtr) |
                v::prep(v::kSte0S1CdMax, cdMax),
            v::prep(v::kSte1S1Cir, 1) | v::prep(v::kSte1S1Cor, 1) | v::prep(v::kSte1S1Csh, 3)};
}

// A guest driver's 32- and 64-bit accesses to the SMMU's registers, and arm_smmu_write_reg_sync():
// write, then the ACK register must read the same.
inline uint32_t mmioRead32(BusDevice& d, uint64_t off) {
    uint32_t x = 0;
    d.read(off, std::span(reinterpret_cast<uint8_t*>(&x), 4));
    return x;
}
inline uint64_t mmioRead64(BusDevice& d, uint64_t off) {
    uint64_t x = 0;
    d.read(off, std::span(reinterpret_cast<uint8_t*>(&x), 8));
    return x;
}
inline void mmioWrite32(BusDevice& d, uint64_t off, uint32_t x) {
    d.write(off, std::span(reinterpret_cast<const uint8_t*>(&x), 4));
}
inline void mmioWrite64(BusDevice& d, uint64_t off, uint64_t x) {
    d.write(off, std::span(reinterpret_cast<const uint8_t*>(&x), 8));
}
inline void writeSync(BusDevice& d, uint32_t off, uint32_t ack, uint32_t value) {
    mmioWrite32(d, off, value);
    EXPECT_EQ(mmioRead32(d, ack), value) << "register " << std::hex << off;
}

// Writes commands at PROD of the CMDQ at kCmdq (256 entries) and publishes them with one CMDQ_PROD
// write, like arm_smmu_cmdq_issue_cmdlist().
inline void issueCommands(BusDevice& d, const memory::GuestMemory& mem, const std::vector<Command>& cmds) {
    uint32_t prod = mmioRead32(d, reg::kCmdqProd);
    for (const auto& c : cmds) {
        ASSERT_TRUE(mem.writeObj(kCmdq + (prod & 0xff) * 16, c).ok());
        prod = (prod + 1) & 0x1ff;
    }
    mmioWrite32(d, reg::kCmdqProd, prod);
}

class SmmuFixture : public ::testing::Test {
protected:
    SmmuFixture() : mem(take(memory::GuestMemory::create({{kRam, kRamSize}}, {}))) {}

    void SetUp() override { make(qemuHost()); }
    void make(const HostSmmuIds& host) {
        auto r = VirtualSmmu::create("vsmmu-test", host, mem, binding, {&evtqIrq, &gerrorIrq, &syncIrq});
        ASSERT_TRUE(r.ok()) << r.error().describe();
        smmu = std::move(*r);
    }

    uint32_t r32(uint64_t off) { return mmioRead32(*smmu, off); }
    uint64_t r64(uint64_t off) { return mmioRead64(*smmu, off); }
    void w32(uint64_t off, uint32_t v) { mmioWrite32(*smmu, off, v); }
    void w64(uint64_t off, uint64_t v) { mmioWrite64(*smmu, off, v); }
    void writeSync(uint32_t off, uint32_t ack, uint32_t value) { test::writeSync(*smmu, off, ack, value); }

    // arm_smmu_device_hw_probe() and arm_smmu_device_reset() in Linux 7.3, in its order and access
    // sizes (CMDQS 8, EVTQS 8; the stream table 2-level with SPLIT 8 over SIDSIZE 16, or linear).
    void probeLikeLinux(bool twoLevel = true) {
        for (uint32_t off : {0x0u, 0x4u, 0xcu, 0x14u, 0x18u}) (void)r32(off);
        (void)r32(reg::kCr0);
        writeSync(reg::kCr0, reg::kCr0Ack, 0);
        w32(reg::kCr1, 0xd75);
        w32(reg::kCr2, 0x6);
        useStreamTable(twoLevel);
        w64(reg::kCmdqBase, reg::kQBaseRa | kCmdq | 8);
        w32(reg::kCmdqProd, 0);
        w32(reg::kCmdqCons, 0);
        writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn);
        issue({cfgiAll(), cmdSync()});
        issue({cmd(v::kOpTlbiNsnhAll), cmdSync()});
        w64(reg::kEvtqBase, reg::kQBaseRa | kEvtq | 8);
        w32(reg::kEvtqProd, 0);
        w32(reg::kEvtqCons, 0);
        writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn);
        writeSync(reg::kIrqCtrl, reg::kIrqCtrlAck, 0);
        w64(reg::kGerrorIrqCfg0, 0);
        w64(reg::kEvtqIrqCfg0, 0);
        writeSync(reg::kIrqCtrl, reg::kIrqCtrlAck, reg::kIrqCtrlEvtqIrqEn | reg::kIrqCtrlGerrorIrqEn);
        writeSync(reg::kCr0, reg::kCr0Ack, reg::kCr0CmdqEn | reg::kCr0EvtqEn | reg::kCr0SmmuEn);
    }

    void useStreamTable(bool twoLevel, uint32_t linearLog2 = 10) {
        twoLevel_ = twoLevel;
        if (twoLevel) {
            w64(reg::kStrtabBase, reg::kStrtabBaseRa | kL1);
            w32(reg::kStrtabBaseCfg, v::prep(reg::kStrtabCfgFmt, reg::kStrtab2Lvl) | v::prep(reg::kStrtabCfgSplit, 8) |
                                         v::prep(reg::kStrtabCfgLog2Size, 16));
        } else {
            w64(reg::kStrtabBase, reg::kStrtabBaseRa | kLinear);
            w32(reg::kStrtabBaseCfg, v::prep(reg::kStrtabCfgLog2Size, linearLog2));
        }
    }

    // Writes the STE of `sid` (2-level: making its L2 table valid with Span 9, as Linux does).
    void writeSte(uint32_t sid, const Ste& ste) {
        uint64_t addr;
        if (twoLevel_) {
            const uint64_t l2 = kL2Base + (sid >> 8) * 0x4000;
            ASSERT_TRUE(mem.writeObj<uint64_t>(kL1 + (sid >> 8) * 8, l2 | 9).ok());
            addr = l2 + (sid & 0xff) * 64;
        } else {
            addr = kLinear + uint64_t{sid} * 64;
        }
        ASSERT_TRUE(mem.writeObj(addr, ste).ok());
    }

    void issue(const std::vector<Command>& cmds) { issueCommands(*smmu, mem, cmds); }

    Event readEvent(uint32_t index) { return take(mem.readObj<Event>(kEvtq + (index & 0xff) * 32)); }

    memory::GuestMemory mem;
    RecordingBinding binding;
    EdgeLine evtqIrq, gerrorIrq, syncIrq;
    std::unique_ptr<VirtualSmmu> smmu;
    bool twoLevel_ = true;
};

}  // namespace conduit::devices::smmuv3::test
