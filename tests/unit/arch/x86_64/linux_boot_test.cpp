#include <gtest/gtest.h>

#include <algorithm>

#include "fake_kernels.h"
#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/arch/x86_64/linux_boot_params.h"
#include "vmm/arch/x86_64/linux_layout.h"
#include "vmm/arch/x86_64/mptable.h"
#include "x86_test_util.h"

namespace conduit::vmm::x86 {
namespace {

using linux_boot::BootParams;
using memory::GiB;
using memory::MiB;
using test::FakeBzImage;
using test::Guest;
using test::makeGuest;
using test::readGuest;
using test::TempFile;

KernelConfig kernelConfig(const TempFile& k, const std::string& cmdline = "console=ttyS0 root=/dev/vda",
                          const TempFile* initrd = nullptr) {
    KernelConfig c;
    c.path = k.path();
    c.cmdline = cmdline;
    if (initrd)
        c.initrd = initrd->path();
    return c;
}

std::string guestString(const memory::GuestMemory& mem, uint64_t gpa, size_t max) {
    std::vector<uint8_t> buf(max);
    EXPECT_TRUE(mem.read(gpa, buf).ok());
    auto nul = std::find(buf.begin(), buf.end(), 0);
    return std::string(buf.begin(), nul);
}

void expectLongModeBsp(const VcpuBootState& s) {
    EXPECT_TRUE(s.runnable);
    EXPECT_EQ(s.regs.rsi, kBootParamsAddr);
    EXPECT_EQ(s.sregs.cs.selector, 0x10);
    EXPECT_EQ(s.sregs.cs.l, 1);
    EXPECT_EQ(s.sregs.ds.selector, 0x18);
    EXPECT_EQ(s.sregs.es.selector, 0x18);
    EXPECT_EQ(s.sregs.ss.selector, 0x18);
    EXPECT_EQ(s.regs.rflags & (1u << 9), 0u);  // interrupts off
    EXPECT_EQ(s.sregs.efer & 0x500, 0x500u);
    EXPECT_EQ(s.sregs.cr0 & 0x80000001u, 0x80000001u);
}

TEST(LinuxBoot, BzImagePlacementAndEntry) {
    Guest g = makeGuest(64 * MiB);
    FakeBzImage fake;
    auto bytes = fake.build();
    TempFile k(bytes, "bzImage");
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k), 2);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    ASSERT_EQ(plan->vcpus.size(), 2u);

    // Protected-mode part at pref_address, entry 0x200 into it.
    std::vector<uint8_t> pm(fake.pmSize);
    ASSERT_TRUE(g.mem.read(0x1000000, pm).ok());
    EXPECT_TRUE(std::equal(pm.begin(), pm.end(), bytes.begin() + fake.pmOffset()));
    EXPECT_EQ(plan->vcpus[0].regs.rip, 0x1000200u);
    expectLongModeBsp(plan->vcpus[0]);
    EXPECT_FALSE(plan->vcpus[1].runnable);
    EXPECT_EQ(plan->vcpus[0].sregs.apic_base, 0xFEE00900u);  // LAPIC enabled, BSP
    EXPECT_EQ(plan->vcpus[1].sregs.apic_base, 0xFEE00800u);  // LAPIC enabled, AP
    EXPECT_NE(plan->description.find("6.1.0-test-amd64"), std::string::npos) << plan->description;
    EXPECT_NE(plan->description.find("2.15"), std::string::npos) << plan->description;
}

TEST(LinuxBoot, RelocatableKernelIsAlignedUp) {
    Guest g = makeGuest(64 * MiB);
    FakeBzImage fake;
    fake.prefAddress = 0x1100000;  // not 2 MiB aligned: the loader must round up
    TempFile k(fake.build());
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_EQ(plan->vcpus[0].regs.rip, 0x1200000u + 0x200);
    auto bp = readGuest<BootParams>(g.mem, kBootParamsAddr);
    EXPECT_EQ(bp.hdr.code32_start, 0x1200000u);
}

TEST(LinuxBoot, BootParamsFields) {
    Guest g = makeGuest(64 * MiB);
    FakeBzImage fake;
    TempFile k(fake.build());
    std::vector<uint8_t> initrdBytes(3 * 4096 + 123, 0x5a);
    TempFile initrd(initrdBytes, "initrd.img");
    const std::string cmdline = "console=ttyS0 earlyprintk=serial panic=-1";
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k, cmdline, &initrd), 1);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();

    auto bp = readGuest<BootParams>(g.mem, kBootParamsAddr);
    EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
    EXPECT_EQ(bp.hdr.header, 0x53726448u);
    EXPECT_EQ(bp.hdr.version, 0x020f);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
    EXPECT_TRUE(bp.hdr.loadflags & linux_boot::kLoadedHigh);
    EXPECT_TRUE(bp.hdr.loadflags & linux_boot::kCanUseHeap);
    EXPECT_NE(bp.hdr.heap_end_ptr, 0);
    EXPECT_EQ(bp.hdr.xloadflags, fake.xloadflags);
    EXPECT_EQ(bp.hdr.init_size, fake.initSize);
    EXPECT_EQ(bp.sentinel, 0);

    // Command line.
    EXPECT_EQ(bp.hdr.cmd_line_ptr, kCmdlineAddr);
    EXPECT_EQ(bp.ext_cmd_line_ptr, 0u);
    EXPECT_EQ(guestString(g.mem, bp.hdr.cmd_line_ptr, 4096), cmdline);

    // initrd: page aligned, at the top of low RAM, above the kernel, contents intact.
    uint64_t rd = bp.hdr.ramdisk_image | (uint64_t(bp.ext_ramdisk_image) << 32);
    EXPECT_EQ(bp.hdr.ramdisk_size, initrdBytes.size());
    EXPECT_EQ(rd % 4096, 0u);
    EXPECT_LE(rd + initrdBytes.size(), 64 * MiB);
    EXPECT_GT(rd + initrdBytes.size(), 64 * MiB - 4096);
    EXPECT_GE(rd, 0x1000000u + fake.initSize);
    std::vector<uint8_t> back(initrdBytes.size());
    ASSERT_TRUE(g.mem.read(rd, back).ok());
    EXPECT_EQ(back, initrdBytes);

    // e820 in the zero page is the layout's map.
    auto expected = buildE820(g.layout);
    ASSERT_EQ(bp.e820_entries, expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(bp.e820_table[i].addr, expected[i].addr);
        EXPECT_EQ(bp.e820_table[i].size, expected[i].size);
        EXPECT_EQ(bp.e820_table[i].type, expected[i].type);
    }
    // And that map covers all RAM as usable except the legacy hole.
    uint64_t usable = 0;
    for (unsigned i = 0; i < bp.e820_entries; ++i)
        if (bp.e820_table[i].type == 1) usable += bp.e820_table[i].size;
    EXPECT_EQ(usable, 64 * MiB - (0x100000 - 0x9fc00));
}

TEST(LinuxBoot, InitrdHonoursInitrdAddrMax) {
    Guest g = makeGuest(256 * MiB);
    FakeBzImage fake;
    fake.initrdAddrMax = 0x07ffffff;              // 128 MiB - 1, below the 256 MiB RAM end
    TempFile k(fake.build());
    std::vector<uint8_t> initrdBytes(10000, 1);
    TempFile initrd(initrdBytes);
    ASSERT_TRUE(loadLinux(g.mem, g.layout, kernelConfig(k, "x", &initrd), 1).ok());
    auto bp = readGuest<BootParams>(g.mem, kBootParamsAddr);
    EXPECT_LE(uint64_t(bp.hdr.ramdisk_image) + bp.hdr.ramdisk_size, 0x08000000u);
    EXPECT_GT(uint64_t(bp.hdr.ramdisk_image) + bp.hdr.ramdisk_size, 0x08000000u - 4096);
}

TEST(LinuxBoot, GdtHasBootSelectorsMatchingSregs) {
    Guest g = makeGuest(64 * MiB);
    TempFile k(FakeBzImage{}.build());
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_TRUE(plan.ok());
    const kvm_sregs& sr = plan->vcpus[0].sregs;
    auto at = [&](uint16_t sel) { return readGuest<uint64_t>(g.mem, sr.gdt.base + sel); };
    test::expectSameSegment(test::decodeDescriptor(at(0x10), 0x10), sr.cs, "__BOOT_CS");
    test::expectSameSegment(test::decodeDescriptor(at(0x18), 0x18), sr.ds, "__BOOT_DS");
    test::expectSameSegment(test::decodeDescriptor(at(sr.tr.selector), sr.tr.selector, at(sr.tr.selector + 8)), sr.tr,
                            "tr");
    // Flat 4 GiB, code executable/readable, data writable.
    auto cs = test::decodeDescriptor(at(0x10), 0x10);
    EXPECT_EQ(cs.type & 0xa, 0xa);
    EXPECT_EQ(cs.limit, 0xffffffffu);
    auto ds = test::decodeDescriptor(at(0x18), 0x18);
    EXPECT_EQ(ds.type & 0xa, 0x2);
    EXPECT_EQ(ds.limit, 0xffffffffu);
}

TEST(LinuxBoot, IdentityMapCoversKernelBootParamsAndCmdline) {
    Guest g = makeGuest(64 * MiB);
    TempFile k(FakeBzImage{}.build());
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_TRUE(plan.ok());
    uint64_t cr3 = plan->vcpus[0].sregs.cr3;
    for (uint64_t va : {kBootParamsAddr, kCmdlineAddr, uint64_t(0x1000200), uint64_t(0x13fffff),
                        uint64_t(0xfee00000), uint64_t(4 * GiB - 1)}) {
        auto t = test::walk(g.mem, cr3, va);
        ASSERT_TRUE(t.has_value()) << std::hex << va;
        EXPECT_EQ(t->phys, va);
    }
    // The page tables must not overlap what else lives in low memory.
    EXPECT_GE(cr3, kBootParamsAddr + 4096);
}

TEST(LinuxBoot, MpTableDescribesCpusAndIoApic) {
    Guest g = makeGuest(64 * MiB);
    TempFile k(FakeBzImage{}.build());
    const unsigned n = 4;
    ASSERT_TRUE(loadLinux(g.mem, g.layout, kernelConfig(k), n).ok());

    // Floating pointer: in the last KiB of base memory, 16 bytes summing to 0.
    uint64_t fp = kMpTableAddr;
    EXPECT_GE(fp, 639 * 1024u);
    EXPECT_EQ(guestString(g.mem, fp, 4).substr(0, 4), "_MP_");
    EXPECT_EQ(test::byteSum(g.mem, fp, 16), 0);
    EXPECT_EQ(readGuest<uint8_t>(g.mem, fp + 8), 1);  // length in 16-byte units
    EXPECT_EQ(readGuest<uint8_t>(g.mem, fp + 9), 4);  // spec 1.4
    uint64_t cfg = readGuest<uint32_t>(g.mem, fp + 4);

    // Configuration table.
    std::vector<uint8_t> sig(4);
    ASSERT_TRUE(g.mem.read(cfg, sig).ok());
    EXPECT_EQ(std::string(sig.begin(), sig.end()), "PCMP");
    uint16_t len = readGuest<uint16_t>(g.mem, cfg + 4);
    EXPECT_EQ(test::byteSum(g.mem, cfg, len), 0);
    EXPECT_EQ(readGuest<uint32_t>(g.mem, cfg + 36), 0xfee00000u);
    uint16_t count = readGuest<uint16_t>(g.mem, cfg + 34);
    EXPECT_LE(cfg + len, 0x100000u);

    unsigned cpus = 0, ioapics = 0, ioints = 0, buses = 0;
    std::vector<uint8_t> apicIds;
    uint64_t p = cfg + 44;
    for (unsigned i = 0; i < count; ++i) {
        uint8_t type = readGuest<uint8_t>(g.mem, p);
        if (type == 0) {
            apicIds.push_back(readGuest<uint8_t>(g.mem, p + 1));
            uint8_t flags = readGuest<uint8_t>(g.mem, p + 3);
            EXPECT_TRUE(flags & 1);
            EXPECT_EQ((flags & 2) != 0, cpus == 0) << "only the first processor is the BSP";
            ++cpus;
            p += 20;
        } else {
            if (type == 1) {
                ++buses;
                std::vector<uint8_t> bt(6);
                ASSERT_TRUE(g.mem.read(p + 2, bt).ok());
                EXPECT_EQ(std::string(bt.begin(), bt.begin() + 3), "ISA");
            } else if (type == 2) {
                ++ioapics;
                EXPECT_EQ(readGuest<uint32_t>(g.mem, p + 4), 0xfec00000u);
                EXPECT_GE(readGuest<uint8_t>(g.mem, p + 1), n);  // IOAPIC id differs from every CPU
            } else if (type == 3) {
                EXPECT_EQ(readGuest<uint8_t>(g.mem, p + 5), ioints);  // source IRQ
                EXPECT_EQ(readGuest<uint8_t>(g.mem, p + 7), ioints);  // IOAPIC pin
                ++ioints;
            } else {
                EXPECT_EQ(type, 4);
            }
            p += 8;
        }
    }
    EXPECT_EQ(p, cfg + len);
    EXPECT_EQ(cpus, n);
    EXPECT_EQ(apicIds, (std::vector<uint8_t>{0, 1, 2, 3}));
    EXPECT_EQ(buses, 1u);
    EXPECT_EQ(ioapics, 1u);
    EXPECT_EQ(ioints, 16u);

    // e820 keeps the MP table out of usable RAM.
    bool reserved = false;
    for (const E820Entry& e : buildE820(g.layout))
        if (e.type == 2 && e.addr <= fp && fp + 1024 <= e.addr + e.size) reserved = true;
    EXPECT_TRUE(reserved);
}

TEST(LinuxBoot, ElfVmlinuxWithPhysicalEntry) {
    Guest g = makeGuest(64 * MiB);
    // Fill RAM where the .bss goes, to see the loader clear it.
    std::vector<uint8_t> junk(0x1000, 0xee);
    ASSERT_TRUE(g.mem.write(0x1000000 + 0x800, junk).ok());
    std::vector<uint8_t> text(0x800, 0x90), data(0x100, 0x42);
    auto elf = test::buildElf(0x1000000, {{0x1000000, 0xffffffff81000000, text, 0x1000},
                                          {0x1200000, 0xffffffff81200000, data, 0x100}});
    TempFile k(elf, "vmlinux");
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k, "console=ttyS0"), 2);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_EQ(plan->vcpus[0].regs.rip, 0x1000000u);
    expectLongModeBsp(plan->vcpus[0]);
    EXPECT_FALSE(plan->vcpus[1].runnable);
    EXPECT_EQ(readGuest<uint8_t>(g.mem, 0x1000000), 0x90);
    EXPECT_EQ(readGuest<uint8_t>(g.mem, 0x10007ff), 0x90);
    EXPECT_EQ(readGuest<uint8_t>(g.mem, 0x1000800), 0);  // bss cleared
    EXPECT_EQ(readGuest<uint8_t>(g.mem, 0x1000fff), 0);
    EXPECT_EQ(readGuest<uint8_t>(g.mem, 0x1200000), 0x42);

    auto bp = readGuest<BootParams>(g.mem, kBootParamsAddr);
    EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
    EXPECT_EQ(bp.hdr.header, 0x53726448u);
    EXPECT_GE(bp.hdr.version, 0x020c);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
    EXPECT_EQ(guestString(g.mem, bp.hdr.cmd_line_ptr, 64), "console=ttyS0");
    EXPECT_GT(bp.e820_entries, 3);
    EXPECT_NE(plan->description.find("ELF"), std::string::npos);
}

TEST(LinuxBoot, ElfVmlinuxWithVirtualEntry) {
    Guest g = makeGuest(64 * MiB);
    std::vector<uint8_t> text(0x800, 0x90);
    auto elf = test::buildElf(0xffffffff81000040, {{0x1000000, 0xffffffff81000000, text, 0x800}});
    TempFile k(elf);
    auto plan = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_EQ(plan->vcpus[0].regs.rip, 0x1000040u);
}

TEST(LinuxBoot, ElfRefusals) {
    Guest g = makeGuest(64 * MiB);
    std::vector<uint8_t> text(0x100, 0x90);
    {
        TempFile k(test::buildElf(0x1000000, {{0x1000000, 0x1000000, text, 0x100}}, ELFCLASS32));
        auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().what().find("ELF64"), std::string::npos) << r.error().what();
    }
    {
        TempFile k(test::buildElf(0x1000000, {{0x1000000, 0x1000000, text, 0x100}}, ELFCLASS64, EM_AARCH64));
        auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().what().find("x86_64"), std::string::npos) << r.error().what();
    }
    {  // segment beyond RAM
        TempFile k(test::buildElf(0x8000000, {{0x8000000, 0x8000000, text, 0x100}}));
        auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().what().find("does not fit"), std::string::npos) << r.error().what();
        EXPECT_NE(r.error().what().find("0x8000000"), std::string::npos) << r.error().what();
    }
    {  // entry in no segment
        TempFile k(test::buildElf(0x3000000, {{0x1000000, 0xffffffff81000000, text, 0x100}}));
        auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().what().find("0x3000000"), std::string::npos) << r.error().what();
    }
}

TEST(LinuxBoot, RefusesOldProtocol) {
    Guest g = makeGuest(64 * MiB);
    FakeBzImage fake;
    fake.version = 0x020b;
    TempFile k(fake.build());
    auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("2.11"), std::string::npos) << r.error().what();
    EXPECT_NE(r.error().what().find(k.path().string()), std::string::npos);
}

TEST(LinuxBoot, RefusesKernelWithout64BitEntry) {
    Guest g = makeGuest(64 * MiB);
    FakeBzImage fake;
    fake.xloadflags = 0;
    TempFile k(fake.build());
    auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("XLF_KERNEL_64"), std::string::npos) << r.error().what();
}

TEST(LinuxBoot, RefusesNeitherElfNorBzImage) {
    Guest g = makeGuest(64 * MiB);
    TempFile k(std::vector<uint8_t>(4096, 0x33));
    auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("neither"), std::string::npos) << r.error().what();
    EXPECT_NE(r.error().what().find(k.path().string()), std::string::npos);
}

TEST(LinuxBoot, RefusesUnreadableFile) {
    Guest g = makeGuest(64 * MiB);
    KernelConfig c;
    c.path = "/nonexistent/vmlinuz";
    auto r = loadLinux(g.mem, g.layout, c, 1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOENT);
    EXPECT_NE(r.error().what().find("/nonexistent/vmlinuz"), std::string::npos);
}

TEST(LinuxBoot, RefusesKernelThatDoesNotFit) {
    Guest g = makeGuest(16 * MiB);  // pref_address is 16 MiB: nothing left above it
    TempFile k(FakeBzImage{}.build());
    auto r = loadLinux(g.mem, g.layout, kernelConfig(k), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("does not fit"), std::string::npos) << r.error().what();
    EXPECT_NE(r.error().what().find("init_size 0x400000"), std::string::npos) << r.error().what();
}

TEST(LinuxBoot, RefusesInitrdThatDoesNotFit) {
    Guest g = makeGuest(32 * MiB);
    TempFile k(FakeBzImage{}.build());  // kernel occupies [16 MiB, 20 MiB)
    TempFile initrd(std::vector<uint8_t>(13 * MiB, 1), "big.img");
    auto r = loadLinux(g.mem, g.layout, kernelConfig(k, "x", &initrd), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("big.img"), std::string::npos) << r.error().what();
    EXPECT_NE(r.error().what().find(std::to_string(13 * MiB)), std::string::npos) << r.error().what();
    TempFile fits(std::vector<uint8_t>(11 * MiB, 1), "ok.img");
    EXPECT_TRUE(loadLinux(g.mem, g.layout, kernelConfig(k, "x", &fits), 1).ok());
}

TEST(LinuxBoot, RefusesTooLongCmdline) {
    Guest g = makeGuest(64 * MiB);
    FakeBzImage fake;
    fake.cmdlineSize = 255;
    TempFile k(fake.build());
    EXPECT_TRUE(loadLinux(g.mem, g.layout, kernelConfig(k, std::string(255, 'a')), 1).ok());
    auto r = loadLinux(g.mem, g.layout, kernelConfig(k, std::string(256, 'a')), 1);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("256 bytes"), std::string::npos) << r.error().what();
    EXPECT_NE(r.error().what().find("255"), std::string::npos) << r.error().what();
}

}  // namespace
}  // namespace conduit::vmm::x86
