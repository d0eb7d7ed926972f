#include <gtest/gtest.h>

#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/cpu_state.h"
#include "vmm/arch/x86_64/payload_abi.h"
#include "x86_test_util.h"

namespace conduit::vmm::x86 {
namespace {

using memory::GiB;
using memory::MiB;
using test::Guest;
using test::makeGuest;
using test::readGuest;
using test::TempFile;

std::vector<uint8_t> someCode(size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
    return v;
}

PayloadConfig config(const TempFile& f, uint64_t load = 0x100000, std::optional<uint64_t> entry = {},
                     PayloadMode mode = PayloadMode::Long64) {
    PayloadConfig c;
    c.path = f.path();
    c.loadAddress = load;
    c.entry = entry;
    c.mode = mode;
    return c;
}

TEST(PayloadBoot, LoadsImageAndSetsEntryStatePerVcpu) {
    Guest g = makeGuest(64 * MiB);
    auto code = someCode(5000);
    TempFile f(code);
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x200000, 0x200010), 3);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    ASSERT_EQ(plan->vcpus.size(), 3u);

    std::vector<uint8_t> back(code.size());
    ASSERT_TRUE(g.mem.read(0x200000, back).ok());
    EXPECT_EQ(back, code);

    for (unsigned i = 0; i < 3; ++i) {
        SCOPED_TRACE(i);
        const VcpuBootState& s = plan->vcpus[i];
        EXPECT_TRUE(s.runnable);
        EXPECT_EQ(s.regs.rip, 0x200010u);
        EXPECT_EQ(s.regs.rdi, CONDUIT_BOOT_INFO_ADDR);
        EXPECT_EQ(s.regs.rsi, i);
        EXPECT_EQ(s.regs.rsp, 0x9f000u - i * 0x4000u);
        EXPECT_EQ(s.regs.rflags, 0x2u);
        EXPECT_EQ(s.sregs.cs.selector, CONDUIT_SEL_KCODE);
        EXPECT_EQ(s.sregs.cs.l, 1);
        EXPECT_EQ(s.sregs.cs.db, 0);
        EXPECT_EQ(s.sregs.ds.selector, CONDUIT_SEL_KDATA);
        EXPECT_EQ(s.sregs.ss.selector, CONDUIT_SEL_KDATA);
        EXPECT_EQ(s.sregs.tr.selector, CONDUIT_SEL_TSS(i));
        EXPECT_EQ(s.sregs.tr.type, 11);
        EXPECT_EQ(s.sregs.tr.base, CONDUIT_TSS_ADDR + 128 * i);
        EXPECT_EQ(s.sregs.gdt.base, CONDUIT_GDT_ADDR);
        EXPECT_EQ(s.sregs.gdt.limit, 0x28 + 16 * 3 - 1);
        EXPECT_EQ(s.sregs.idt.limit, 0);
        EXPECT_EQ(s.sregs.cr3, CONDUIT_PML4_ADDR);
        EXPECT_EQ(s.sregs.efer, (1u << 0) | (1u << 8) | (1u << 10));
        EXPECT_EQ(s.sregs.cr0 & 0x80000001u, 0x80000001u);  // PG and PE
        EXPECT_TRUE(s.sregs.cr4 & (1u << 5));                // PAE
        // xAPIC at 0xFEE00000 and enabled (a zero apic_base disables the LAPIC); BSP flag on vCPU 0.
        EXPECT_EQ(s.sregs.apic_base, i == 0 ? 0xFEE00900u : 0xFEE00800u);
    }
}

TEST(PayloadBoot, EntryDefaultsToLoadAddress) {
    Guest g = makeGuest(32 * MiB);
    TempFile f(someCode(64));
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x180000), 1);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_EQ(plan->vcpus[0].regs.rip, 0x180000u);
}

TEST(PayloadBoot, BootInfoDescribesTheLayout) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(300));
    ASSERT_TRUE(loadPayload(g.mem, g.layout, config(f), 2).ok());
    auto info = readGuest<conduit_boot_info>(g.mem, CONDUIT_BOOT_INFO_ADDR);
    EXPECT_EQ(info.magic, CONDUIT_BOOT_INFO_MAGIC);
    EXPECT_EQ(info.version, CONDUIT_BOOT_INFO_VERSION);
    EXPECT_EQ(info.vcpu_count, 2u);
    EXPECT_EQ(info.ram_low_size, 64 * MiB);
    EXPECT_EQ(info.ram_high_size, 0u);
    EXPECT_EQ(info.ecam_base, 0xE0000000u);
    EXPECT_EQ(info.ecam_size, 256 * MiB);
    EXPECT_EQ(info.mmio32_base, 0xC0000000u);
    EXPECT_EQ(info.mmio32_size, 512 * MiB);
    EXPECT_EQ(info.mmio64_base, 4 * GiB);
    EXPECT_EQ(info.mmio64_size, 64 * GiB);
    EXPECT_EQ(info.identity_map_end, 68 * GiB);  // covers the whole 64-bit window
    EXPECT_EQ(info.payload_base, 0x100000u);
    EXPECT_EQ(info.payload_size, 300u);
}

TEST(PayloadBoot, BootInfoWithHighRam) {
    Guest g = makeGuest(3 * GiB + 512 * MiB);
    TempFile f(someCode(16));
    ASSERT_TRUE(loadPayload(g.mem, g.layout, config(f), 1).ok());
    auto info = readGuest<conduit_boot_info>(g.mem, CONDUIT_BOOT_INFO_ADDR);
    EXPECT_EQ(info.ram_low_size, 3 * GiB);
    EXPECT_EQ(info.ram_high_size, 512 * MiB);
    EXPECT_EQ(info.mmio64_base, 5 * GiB);
    EXPECT_EQ(info.identity_map_end, 69 * GiB);
}

TEST(PayloadBoot, PageTablesIdentityMapEverythingForUserMode) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(16));
    auto plan = loadPayload(g.mem, g.layout, config(f), 1);
    ASSERT_TRUE(plan.ok());
    uint64_t cr3 = plan->vcpus[0].sregs.cr3;
    auto info = readGuest<conduit_boot_info>(g.mem, CONDUIT_BOOT_INFO_ADDR);
    const uint64_t samples[] = {0,          0x1000,      0x100000,     0x1234567,      64 * MiB - 8,
                                0xC0001000, 0xE0000000 + 0x8000, 0xFEC00000, 0xFEE00300, 0xFFFFFFF0,
                                4 * GiB + 0x123456, 37 * GiB + 0x200000 + 5, info.identity_map_end - 1};
    for (uint64_t va : samples) {
        SCOPED_TRACE(::testing::Message() << std::hex << va);
        auto t = test::walk(g.mem, cr3, va);
        ASSERT_TRUE(t.has_value());
        EXPECT_EQ(t->phys, va);
        EXPECT_TRUE(t->userAllLevels);
        EXPECT_TRUE(t->writableAllLevels);
    }
    EXPECT_FALSE(test::walk(g.mem, cr3, info.identity_map_end).has_value());
    // RAM is cached; device ranges (LAPIC, BAR windows) are not.
    EXPECT_EQ(test::walk(g.mem, cr3, 0x100000)->leafEntry & 0x18, 0u);
    EXPECT_EQ(test::walk(g.mem, cr3, 0xFEE00000)->leafEntry & 0x18, 0x18u);
    EXPECT_EQ(test::walk(g.mem, cr3, 0xC0000000)->leafEntry & 0x18, 0x18u);
}

TEST(PayloadBoot, GdtDescriptorsMatchSregs) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(16));
    const unsigned n = CONDUIT_PAYLOAD_MAX_VCPUS;
    auto plan = loadPayload(g.mem, g.layout, config(f), n);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    auto gdtAt = [&](uint16_t sel) { return readGuest<uint64_t>(g.mem, CONDUIT_GDT_ADDR + (sel & ~7)); };
    EXPECT_EQ(gdtAt(0), 0u);
    for (unsigned i = 0; i < n; ++i) {
        const kvm_sregs& sr = plan->vcpus[i].sregs;
        test::expectSameSegment(test::decodeDescriptor(gdtAt(sr.cs.selector), sr.cs.selector), sr.cs, "cs");
        test::expectSameSegment(test::decodeDescriptor(gdtAt(sr.ss.selector), sr.ss.selector), sr.ss, "ss");
        test::expectSameSegment(test::decodeDescriptor(gdtAt(sr.ds.selector), sr.ds.selector), sr.ds, "ds");
        uint16_t trSel = sr.tr.selector;
        auto tr = test::decodeDescriptor(gdtAt(trSel), trSel, gdtAt(trSel + 8));
        test::expectSameSegment(tr, sr.tr, "tr");
        EXPECT_LE(uint64_t(trSel) + 15, sr.gdt.limit);
    }
    // User-mode selectors: 64-bit code and data at DPL3.
    auto ucode = test::decodeDescriptor(gdtAt(CONDUIT_SEL_UCODE), CONDUIT_SEL_UCODE);
    EXPECT_EQ(ucode.dpl, 3);
    EXPECT_EQ(ucode.l, 1);
    EXPECT_EQ(ucode.type & 0x8, 0x8);  // code
    auto udata = test::decodeDescriptor(gdtAt(CONDUIT_SEL_UDATA), CONDUIT_SEL_UDATA);
    EXPECT_EQ(udata.dpl, 3);
    EXPECT_EQ(udata.type & 0xa, 0x2);  // writable data
    EXPECT_EQ(udata.present, 1);
}

// ap_start "sipi": the BSP gets the 64-bit entry state, the APs the reset state (not runnable) and
// an available TSS descriptor for their own LTR; everything else is as with "entry".
TEST(PayloadBoot, ApStartSipiLeavesApsInResetState) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(64));
    PayloadConfig c = config(f, 0x100000, 0x100020);
    c.apStart = PayloadApStart::Sipi;
    const unsigned n = 3;
    auto plan = loadPayload(g.mem, g.layout, c, n);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    ASSERT_EQ(plan->vcpus.size(), n);
    auto gdtAt = [&](uint64_t off) { return readGuest<uint64_t>(g.mem, CONDUIT_GDT_ADDR + off); };
    auto tssType = [&](unsigned i) { return (gdtAt(CONDUIT_SEL_TSS(i)) >> 40) & 0xf; };

    const VcpuBootState& bsp = plan->vcpus[0];
    EXPECT_TRUE(bsp.runnable);
    EXPECT_EQ(bsp.regs.rip, 0x100020u);
    EXPECT_EQ(bsp.regs.rsi, 0u);
    EXPECT_EQ(bsp.sregs.cs.selector, CONDUIT_SEL_KCODE);
    EXPECT_EQ(bsp.sregs.tr.selector, CONDUIT_SEL_TSS(0));
    EXPECT_EQ(tssType(0), 11u);  // busy: the BSP's TR
    for (unsigned i = 1; i < n; ++i) {
        SCOPED_TRACE(i);
        const VcpuBootState& ap = plan->vcpus[i];
        EXPECT_FALSE(ap.runnable);
        EXPECT_EQ(ap.regs.rip, 0xfff0u);
        EXPECT_EQ(ap.sregs.cs.selector, 0xf000u);
        EXPECT_EQ(ap.sregs.cr0 & 1u, 0u);  // real mode
        EXPECT_EQ(ap.sregs.efer, 0u);
        EXPECT_EQ(tssType(i), 9u);  // available: the AP loads it itself
        // The rest of the descriptor still points at TSS(i), and the TSS has its stack.
        auto tr = test::decodeDescriptor(gdtAt(CONDUIT_SEL_TSS(i)), CONDUIT_SEL_TSS(i), gdtAt(CONDUIT_SEL_TSS(i) + 8));
        EXPECT_EQ(tr.base, CONDUIT_TSS_ADDR + CONDUIT_TSS_STRIDE * i);
        EXPECT_EQ(tr.present, 1);
        EXPECT_EQ(readGuest<uint64_t>(g.mem, CONDUIT_TSS_ADDR + CONDUIT_TSS_STRIDE * i + 4),
                  CONDUIT_STACKS_TOP - i * CONDUIT_STACK_SIZE);
    }
    auto info = readGuest<conduit_boot_info>(g.mem, CONDUIT_BOOT_INFO_ADDR);
    EXPECT_EQ(info.vcpu_count, n);
    EXPECT_NE(plan->description.find("INIT/SIPI"), std::string::npos) << plan->description;
}

TEST(PayloadBoot, ApStartEntryIsTheDefaultAndStartsEveryVcpu) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(64));
    PayloadConfig c = config(f);
    EXPECT_EQ(c.apStart, PayloadApStart::Entry);
    auto plan = loadPayload(g.mem, g.layout, c, 2);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    for (unsigned i = 0; i < 2; ++i) {
        EXPECT_TRUE(plan->vcpus[i].runnable) << i;
        EXPECT_EQ((readGuest<uint64_t>(g.mem, CONDUIT_GDT_ADDR + CONDUIT_SEL_TSS(i)) >> 40) & 0xf, 11u) << i;
    }
    EXPECT_EQ(plan->description.find("INIT/SIPI"), std::string::npos) << plan->description;
}

TEST(PayloadBoot, TssHasStackTopAndNoIoBitmap) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(16));
    ASSERT_TRUE(loadPayload(g.mem, g.layout, config(f), 4).ok());
    for (unsigned i = 0; i < 4; ++i) {
        uint64_t tss = CONDUIT_TSS_ADDR + CONDUIT_TSS_STRIDE * i;
        EXPECT_EQ(readGuest<uint64_t>(g.mem, tss + 4), 0x9f000u - i * 0x4000u) << i;  // RSP0
        EXPECT_GT(readGuest<uint16_t>(g.mem, tss + 102), 0x67) << i;                  // IOPB beyond limit
    }
}

TEST(PayloadBoot, RefusesPayloadOverlappingLowTables) {
    Guest g = makeGuest(64 * MiB);
    TempFile f(someCode(16));
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x8000), 1);
    ASSERT_FALSE(plan.ok());
    EXPECT_NE(plan.error().what().find("0x8000"), std::string::npos) << plan.error().what();
}

TEST(PayloadBoot, RefusesPayloadPastRam) {
    Guest g = makeGuest(16 * MiB);
    TempFile f(someCode(4096));
    auto plan = loadPayload(g.mem, g.layout, config(f, 16 * MiB - 2048), 1);
    ASSERT_FALSE(plan.ok());
    EXPECT_NE(plan.error().what().find("RAM"), std::string::npos) << plan.error().what();
    EXPECT_NE(plan.error().what().find(f.path().string()), std::string::npos);
}

TEST(PayloadBoot, RefusesTooManyVcpus) {
    Guest g = makeGuest(16 * MiB);
    TempFile f(someCode(16));
    EXPECT_TRUE(loadPayload(g.mem, g.layout, config(f), CONDUIT_PAYLOAD_MAX_VCPUS).ok());
    auto plan = loadPayload(g.mem, g.layout, config(f), CONDUIT_PAYLOAD_MAX_VCPUS + 1);
    ASSERT_FALSE(plan.ok());
    EXPECT_NE(plan.error().what().find("9 vCPUs"), std::string::npos) << plan.error().what();
}

TEST(PayloadBoot, RefusesEntryOutsideImage) {
    Guest g = makeGuest(16 * MiB);
    TempFile f(someCode(256));
    EXPECT_TRUE(loadPayload(g.mem, g.layout, config(f, 0x100000, 0x1000ff), 1).ok());
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x100000, 0x100100), 1);
    ASSERT_FALSE(plan.ok());
    EXPECT_NE(plan.error().what().find("0x100100"), std::string::npos) << plan.error().what();
    EXPECT_FALSE(loadPayload(g.mem, g.layout, config(f, 0x100000, 0xfffff), 1).ok());
}

TEST(PayloadBoot, RefusesMissingFile) {
    Guest g = makeGuest(16 * MiB);
    PayloadConfig c;
    c.path = "/nonexistent/conduit/payload.bin";
    auto plan = loadPayload(g.mem, g.layout, c, 1);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.error().code(), ENOENT);
    EXPECT_NE(plan.error().what().find("/nonexistent/conduit/payload.bin"), std::string::npos);
}

TEST(PayloadBoot, RealModeEntryState) {
    Guest g = makeGuest(16 * MiB);
    auto code = someCode(1024);
    TempFile f(code);
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x7c00, 0x7c00, PayloadMode::Real16), 2);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    std::vector<uint8_t> back(code.size());
    ASSERT_TRUE(g.mem.read(0x7c00, back).ok());
    EXPECT_EQ(back, code);
    const auto& bsp = plan->vcpus[0];
    EXPECT_TRUE(bsp.runnable);
    EXPECT_EQ(bsp.sregs.cs.base, 0u);
    EXPECT_EQ(bsp.sregs.cs.selector, 0u);
    EXPECT_EQ(bsp.regs.rip, 0x7c00u);
    EXPECT_EQ(bsp.regs.rsp, 0x7c00u);
    EXPECT_EQ(bsp.sregs.cr0, 0x60000010u);
    EXPECT_EQ(bsp.sregs.efer, 0u);
    EXPECT_EQ(bsp.sregs.ds.selector, 0u);
    EXPECT_EQ(bsp.sregs.ss.base, 0u);
    EXPECT_EQ(bsp.sregs.cs.l, 0);
    EXPECT_FALSE(plan->vcpus[1].runnable);
}

TEST(PayloadBoot, RealModeSegmentFromEntry) {
    Guest g = makeGuest(16 * MiB);
    TempFile f(someCode(0x100));
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x9f000, 0x9f0f0, PayloadMode::Real16), 1);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_EQ(plan->vcpus[0].sregs.cs.base, 0x90000u);
    EXPECT_EQ(plan->vcpus[0].sregs.cs.selector, 0x9000u);
    EXPECT_EQ(plan->vcpus[0].regs.rip, 0xf0f0u);
    // CS:IP reaches the entry: base + IP.
    EXPECT_EQ(plan->vcpus[0].sregs.cs.base + plan->vcpus[0].regs.rip, 0x9f0f0u);
}

TEST(PayloadBoot, RealModeRefusesBiosStyleImageOutsideRam) {
    Guest g = makeGuest(16 * MiB);
    TempFile f(someCode(0x10000));
    auto plan = loadPayload(g.mem, g.layout, config(f, 0xffff0000, 0xfffffff0, PayloadMode::Real16), 1);
    ASSERT_FALSE(plan.ok());
    EXPECT_NE(plan.error().what().find("RAM"), std::string::npos) << plan.error().what();
}

TEST(PayloadBoot, RealModeRefusesEntryAbove1MiB) {
    Guest g = makeGuest(16 * MiB);
    TempFile f(someCode(0x100));
    auto plan = loadPayload(g.mem, g.layout, config(f, 0x200000, 0x200000, PayloadMode::Real16), 1);
    ASSERT_FALSE(plan.ok());
}

}  // namespace
}  // namespace conduit::vmm::x86
