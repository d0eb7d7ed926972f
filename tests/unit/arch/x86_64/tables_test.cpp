// e820, CPUID and bzImage payload extraction.
#include <gtest/gtest.h>

#include <algorithm>

#include "fake_kernels.h"
#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/bzimage.h"
#include "vmm/arch/x86_64/e820.h"
#include "x86_test_util.h"

namespace conduit::vmm::x86 {
namespace {

using memory::GiB;
using memory::MiB;

TEST(E820, SmallGuest) {
    auto layout = x86::addressLayout(64 * MiB);
    ASSERT_TRUE(layout.ok());
    auto map = buildE820(*layout);
    struct Want { uint64_t addr, size; uint32_t type; };
    std::vector<Want> want = {
        {0, 0x9fc00, 1},
        {0x9fc00, 0x100000 - 0x9fc00, 2},
        {0x100000, 64 * MiB - 0x100000, 1},
        {0xE0000000, 256 * MiB, 2},
        {0xFEC00000, 4096, 2},
        {0xFEE00000, 1 * MiB, 2},
        {0xFFFF0000, 64 * 1024, 2},
    };
    ASSERT_EQ(map.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        SCOPED_TRACE(i);
        EXPECT_EQ(map[i].addr, want[i].addr);
        EXPECT_EQ(map[i].size, want[i].size);
        EXPECT_EQ(map[i].type, want[i].type);
    }
}

TEST(E820, HighRamSortedAndDisjoint) {
    auto layout = x86::addressLayout(6 * GiB);
    ASSERT_TRUE(layout.ok());
    auto map = buildE820(*layout);
    uint64_t ram = 0;
    for (size_t i = 0; i < map.size(); ++i) {
        if (i > 0) {
            EXPECT_LE(map[i - 1].addr + map[i - 1].size, map[i].addr) << i;
        }
        if (map[i].type == 1) ram += map[i].size;
        // Nothing in the BAR windows.
        EXPECT_FALSE(layout->mmio32Window().overlaps({map[i].addr, map[i].size})) << i;
        EXPECT_FALSE(layout->mmio64Window().overlaps({map[i].addr, map[i].size})) << i;
    }
    EXPECT_EQ(ram, 6 * GiB - (0x100000 - 0x9fc00));
    EXPECT_EQ(map.back().addr, 4 * GiB);
    EXPECT_EQ(map.back().size, 3 * GiB);
    EXPECT_EQ(map.back().type, 1u);
}

kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t idx, uint32_t a, uint32_t b, uint32_t c, uint32_t d, uint32_t flags = 0) {
    kvm_cpuid_entry2 e{};
    e.function = fn;
    e.index = idx;
    e.flags = flags;
    e.eax = a;
    e.ebx = b;
    e.ecx = c;
    e.edx = d;
    return e;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t fn, uint32_t idx = 0) {
    for (const auto& e : v)
        if (e.function == fn && e.index == idx) return &e;
    return nullptr;
}

std::vector<kvm_cpuid_entry2> supported() {
    return {
        leaf(0, 0, 0x1f, 0x68747541, 0x444d4163, 0x69746e65),
        leaf(1, 0, 0x00a00f11, 0x00000800 | 0x12, (1u << 21) | (1u << 24) | (1u << 5) | (1u << 3), 0x178bfbff),
        leaf(4, 0, 0x121, 0x1c0003f, 0x3f, 0),  // L1 data cache
        leaf(4, 3, 0x163, 0x3c0003f, 0x3fff, 0x6),  // L3
        leaf(6, 0, 0x4, 0, 0, 0),
        leaf(0xa, 0, 0x07300403, 0, 0, 0x603),
        leaf(0xb, 0, 1, 1, 0x100, 7, KVM_CPUID_FLAG_SIGNIFCANT_INDEX),
        leaf(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),
        leaf(0x40000001, 0, 0x1007efb, 0, 0, 0),
        leaf(0x80000001, 0, 0, 0, (1u << 2) | 1u, 0),
        leaf(0x80000008, 0, 0x3030, 0, 0x7007, 0),
    };
}

TEST(Cpuid, ApicIdsAndTopology) {
    auto out = buildCpuid(supported(), 3, 5);
    const auto* l1 = find(out, 1);
    ASSERT_NE(l1, nullptr);
    EXPECT_EQ(l1->ebx >> 24, 3u);
    EXPECT_EQ((l1->ebx >> 16) & 0xff, 8u);  // power of two covering 5
    EXPECT_EQ(l1->ebx & 0xffff, 0x0812u);   // CLFLUSH size etc. kept
    EXPECT_TRUE(l1->edx & (1u << 28));
    for (uint32_t fn : {0xbu}) {
        const auto* s0 = find(out, fn, 0);
        const auto* s1 = find(out, fn, 1);
        const auto* s2 = find(out, fn, 2);
        ASSERT_TRUE(s0 && s1 && s2);
        EXPECT_EQ(s0->edx, 3u);
        EXPECT_EQ(s1->edx, 3u);
        EXPECT_EQ(s2->edx, 3u);
        EXPECT_EQ(s0->ebx, 1u);
        EXPECT_EQ((s0->ecx >> 8) & 0xff, 1u);  // SMT
        EXPECT_EQ(s1->ebx, 5u);
        EXPECT_EQ(s1->eax & 0x1f, 3u);         // 3 bits number 5 cores
        EXPECT_EQ((s1->ecx >> 8) & 0xff, 2u);  // Core
        EXPECT_EQ((s2->ecx >> 8) & 0xff, 0u);  // end
        EXPECT_TRUE(s0->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    }
    EXPECT_EQ(std::count_if(out.begin(), out.end(), [](auto& e) { return e.function == 0xb; }), 3);
    EXPECT_EQ(find(out, 0x1f), nullptr);  // not invented when KVM does not list it
    EXPECT_EQ(find(out, 4, 0)->eax >> 26, 4u);
    EXPECT_EQ((find(out, 4, 3)->eax >> 14) & 0xfff, 4u);
    EXPECT_EQ((find(out, 4, 0)->eax >> 14) & 0xfff, 0u);
    EXPECT_EQ(find(out, 0x80000008)->ecx & 0xff, 4u);
}

TEST(Cpuid, FeaturesRemovedAndHypervisorBitSet) {
    auto out = buildCpuid(supported(), 0, 1);
    const auto* l1 = find(out, 1);
    ASSERT_NE(l1, nullptr);
    EXPECT_EQ(l1->ebx >> 24, 0u);
    EXPECT_TRUE(l1->ecx & (1u << 31));   // hypervisor
    EXPECT_TRUE(l1->ecx & (1u << 21));   // x2APIC kept
    EXPECT_FALSE(l1->ecx & (1u << 24));  // TSC deadline removed
    EXPECT_FALSE(l1->ecx & (1u << 5));   // VMX removed
    EXPECT_FALSE(l1->ecx & (1u << 3));   // MONITOR removed
    EXPECT_FALSE(l1->edx & (1u << 28));  // one logical CPU: no HTT
    const auto* l6 = find(out, 6);
    const auto* la = find(out, 0xa);
    ASSERT_TRUE(l6 && la);
    EXPECT_EQ(l6->eax | l6->ebx | l6->ecx | l6->edx, 0u);
    EXPECT_EQ(la->eax | la->ebx | la->ecx | la->edx, 0u);
    const auto* kvm = find(out, 0x40000000);
    ASSERT_NE(kvm, nullptr);
    EXPECT_EQ(kvm->ebx, 0x4b4d564bu);  // "KVMK"
    EXPECT_EQ(find(out, 0x40000001)->eax, 0x1007efbu);
    EXPECT_FALSE(find(out, 0x80000001)->ecx & (1u << 2));  // SVM removed
    EXPECT_TRUE(find(out, 0x80000001)->ecx & 1u);
}

TEST(BzImage, ExtractsPayloadAndIdentifiesFormat) {
    test::FakeBzImage fake;
    auto bytes = fake.build();
    auto p = extractBzImagePayload(bytes);
    ASSERT_TRUE(p.ok()) << p.error().describe();
    EXPECT_EQ(*p, fake.payload);
    auto f = extractBzImagePayloadWithFormat(bytes);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->compression, Compression::Gzip);
    EXPECT_EQ(compressionName(f->compression), "gzip");
}

TEST(BzImage, IdentifiesEachCompression) {
    struct Case { std::vector<uint8_t> magic; Compression want; };
    std::vector<Case> cases = {
        {{0x1f, 0x8b, 0x08}, Compression::Gzip},
        {{0xfd, '7', 'z', 'X', 'Z', 0x00, 0x00}, Compression::Xz},
        {{0x28, 0xb5, 0x2f, 0xfd, 0x00}, Compression::Zstd},
        {{0x5d, 0x00, 0x00, 0x80, 0x00}, Compression::Lzma},
        {{0x02, 0x21, 0x4c, 0x18, 0x00}, Compression::Lz4},
        {{'B', 'Z', 'h', '9'}, Compression::Bzip2},
        {{0x89, 'L', 'Z', 'O', 0x00}, Compression::Lzo},
        {{0x7f, 'E', 'L', 'F'}, Compression::Unknown},
        {{0xfd, '7'}, Compression::Unknown},
    };
    for (const Case& c : cases) {
        test::FakeBzImage fake;
        fake.payload = c.magic;
        EXPECT_EQ(identifyCompression(c.magic), c.want) << compressionName(c.want);
        auto f = extractBzImagePayloadWithFormat(fake.build());
        ASSERT_TRUE(f.ok());
        EXPECT_EQ(f->compression, c.want) << compressionName(c.want);
    }
}

TEST(BzImage, RefusesBadImages) {
    test::FakeBzImage fake;
    auto bytes = fake.build();
    bytes.resize(fake.pmOffset() + fake.payloadOffset + 4);  // payload cut short
    auto r = extractBzImagePayload(bytes);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("payload_length"), std::string::npos) << r.error().what();

    EXPECT_FALSE(extractBzImagePayload(std::vector<uint8_t>(100, 0)).ok());
    auto noMagic = fake.build();
    noMagic[0x202] = 'X';
    auto r2 = extractBzImagePayload(noMagic);
    ASSERT_FALSE(r2.ok());
    EXPECT_NE(r2.error().what().find("HdrS"), std::string::npos) << r2.error().what();
    EXPECT_FALSE(isBzImage(noMagic));
    EXPECT_TRUE(isBzImage(fake.build()));

    fake.version = 0x0207;
    EXPECT_FALSE(extractBzImagePayload(fake.build()).ok());
}

}  // namespace
}  // namespace conduit::vmm::x86
