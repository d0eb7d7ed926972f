// Helpers for the x86 boot tests: guest memory from a layout, temporary image files, and
// independent decoders (page walk, GDT descriptors) so the tests check what the guest CPU would see
// rather than re-using the code under test.
#pragma once

#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "memory/address_layout.h"
#include "vmm/arch/x86_64/layout.h"
#include "memory/guest_memory.h"

namespace conduit::vmm::x86::test {

struct Guest {
    memory::AddressLayout layout;
    memory::GuestMemory mem;
};

inline Guest makeGuest(uint64_t ramBytes) {
    auto layout = x86::addressLayout(ramBytes);
    EXPECT_TRUE(layout.ok());
    auto mem = memory::GuestMemory::create(layout->ramRanges(), {});
    EXPECT_TRUE(mem.ok()) << (mem.ok() ? "" : mem.error().describe());
    return Guest{std::move(layout.value()), std::move(mem.value())};
}

// A file in a fresh temporary directory, removed with the object.
class TempFile {
public:
    explicit TempFile(const std::vector<uint8_t>& bytes, const std::string& name = "image") {
        char tmpl[] = "/tmp/conduit-x86-test-XXXXXX";
        dir_ = mkdtemp(tmpl);
        path_ = dir_ / name;
        std::ofstream out(path_, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    ~TempFile() { std::filesystem::remove_all(dir_); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path dir_;
    std::filesystem::path path_;
};

template <class T>
T readGuest(const memory::GuestMemory& mem, uint64_t gpa) {
    auto v = mem.readObj<T>(gpa);
    EXPECT_TRUE(v.ok()) << "read at " << std::hex << gpa;
    return v.ok() ? v.value() : T{};
}

struct Translation {
    uint64_t phys;
    uint64_t leafEntry;  // the PDE (2 MiB) or PTE that mapped it
    bool userAllLevels;
    bool writableAllLevels;
};

// Walks 4-level long-mode page tables like the CPU does; nullopt for a not-present entry.
inline std::optional<Translation> walk(const memory::GuestMemory& mem, uint64_t cr3, uint64_t va) {
    constexpr uint64_t kAddr = 0x000ffffffffff000ull;
    uint64_t table = cr3 & kAddr;
    bool user = true, writable = true;
    for (int level = 4; level >= 1; --level) {
        unsigned shift = 12 + 9 * (level - 1);
        uint64_t entry = readGuest<uint64_t>(mem, table + ((va >> shift) & 511) * 8);
        if (!(entry & 1))
            return std::nullopt;
        user = user && (entry & 4);
        writable = writable && (entry & 2);
        bool large = (level == 2 || level == 3) && (entry & 0x80);
        if (large || level == 1) {
            uint64_t pageMask = (1ull << shift) - 1;
            return Translation{(entry & kAddr & ~pageMask) | (va & pageMask), entry, user, writable};
        }
        table = entry & kAddr;
    }
    return std::nullopt;
}

// Decodes an 8-byte code/data descriptor (or the first half of a system descriptor plus `high`)
// into the kvm_segment form (limit in bytes).
inline kvm_segment decodeDescriptor(uint64_t d, uint16_t selector, uint64_t high = 0) {
    kvm_segment s{};
    s.selector = selector;
    uint32_t limit = static_cast<uint32_t>((d & 0xffff) | ((d >> 32) & 0xf0000));
    s.g = (d >> 55) & 1;
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
    s.type = (d >> 40) & 0xf;
    s.s = (d >> 44) & 1;
    s.dpl = (d >> 45) & 3;
    s.present = (d >> 47) & 1;
    s.avl = (d >> 52) & 1;
    s.l = (d >> 53) & 1;
    s.db = (d >> 54) & 1;
    if (!s.s)
        s.base |= (high & 0xffffffff) << 32;
    return s;
}

inline void expectSameSegment(const kvm_segment& a, const kvm_segment& b, const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(a.base, b.base);
    EXPECT_EQ(a.limit, b.limit);
    EXPECT_EQ(a.selector & ~3, b.selector & ~3);
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.present, b.present);
    EXPECT_EQ(a.dpl, b.dpl);
    EXPECT_EQ(a.db, b.db);
    EXPECT_EQ(a.s, b.s);
    EXPECT_EQ(a.l, b.l);
    EXPECT_EQ(a.g, b.g);
}

inline uint8_t byteSum(const memory::GuestMemory& mem, uint64_t gpa, size_t len) {
    std::vector<uint8_t> buf(len);
    EXPECT_TRUE(mem.read(gpa, buf).ok());
    uint8_t sum = 0;
    for (uint8_t b : buf) sum = static_cast<uint8_t>(sum + b);
    return sum;
}

}  // namespace conduit::vmm::x86::test
