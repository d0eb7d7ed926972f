// Synthetic kernels for the Linux boot tests: a minimal bzImage (setup header, protocol and flags
// chosen by the test, a small protected-mode part carrying a "compressed" payload) and a minimal
// ELF64 vmlinux.
#pragma once

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace conduit::vmm::x86::test {

struct FakeBzImage {
    uint8_t setupSects = 2;
    uint16_t version = 0x020f;
    uint16_t xloadflags = 0x3;  // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    uint8_t loadflags = 0x1;    // LOADED_HIGH
    uint64_t prefAddress = 0x1000000;
    uint32_t kernelAlignment = 0x200000;
    uint8_t relocatable = 1;
    uint32_t initSize = 0x400000;
    uint32_t cmdlineSize = 2047;
    uint32_t initrdAddrMax = 0x7fffffff;
    size_t pmSize = 0x1000;
    std::vector<uint8_t> payload = {0x1f, 0x8b, 0x08, 0x00, 'g', 'z', 'i', 'p', 'p', 'e', 'd'};
    uint32_t payloadOffset = 0x300;  // inside the protected-mode part
    std::string versionString = "6.1.0-test-amd64 (builder@conduit) #1 SMP";

    template <class T>
    static void put(std::vector<uint8_t>& b, size_t off, T v) {
        std::memcpy(b.data() + off, &v, sizeof(T));
    }

    size_t pmOffset() const { return (size_t(setupSects) + 1) * 512; }

    std::vector<uint8_t> build() const {
        std::vector<uint8_t> b(pmOffset() + pmSize, 0);
        b[0x1f1] = setupSects;
        put<uint16_t>(b, 0x1fe, 0xaa55);
        b[0x200] = 0xeb;
        b[0x201] = 0x26c - 0x202;  // header runs to the end of kernel_info_offset
        put<uint32_t>(b, 0x202, 0x53726448);
        put<uint16_t>(b, 0x206, version);
        put<uint16_t>(b, 0x20e, 0x100);  // kernel_version string at 0x200 + 0x100
        std::memcpy(b.data() + 0x300, versionString.c_str(), versionString.size() + 1);
        b[0x211] = loadflags;
        put<uint32_t>(b, 0x214, 0x100000);  // code32_start
        put<uint32_t>(b, 0x22c, initrdAddrMax);
        put<uint32_t>(b, 0x230, kernelAlignment);
        b[0x234] = relocatable;
        put<uint16_t>(b, 0x236, xloadflags);
        put<uint32_t>(b, 0x238, cmdlineSize);
        put<uint32_t>(b, 0x248, payloadOffset);
        put<uint32_t>(b, 0x24c, static_cast<uint32_t>(payload.size()));
        put<uint64_t>(b, 0x258, prefAddress);
        put<uint32_t>(b, 0x260, initSize);
        // Protected-mode part: recognisable bytes, the payload at payloadOffset.
        for (size_t i = 0; i < pmSize; ++i) b[pmOffset() + i] = static_cast<uint8_t>(0xa0 + i % 31);
        std::memcpy(b.data() + pmOffset() + payloadOffset, payload.data(), payload.size());
        return b;
    }
};

struct FakeSegment {
    uint64_t paddr;
    uint64_t vaddr;
    std::vector<uint8_t> bytes;
    uint64_t memsz;
};

inline std::vector<uint8_t> buildElf(uint64_t entry, const std::vector<FakeSegment>& segs,
                                     unsigned char cls = ELFCLASS64, uint16_t machine = EM_X86_64) {
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = cls;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = machine;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = static_cast<uint16_t>(segs.size() + 1);  // + a PT_NOTE that must be skipped
    std::vector<uint8_t> out(sizeof(eh) + eh.e_phnum * sizeof(Elf64_Phdr));
    std::memcpy(out.data(), &eh, sizeof(eh));
    uint64_t dataOff = out.size();
    std::vector<Elf64_Phdr> phs;
    for (const FakeSegment& s : segs) {
        Elf64_Phdr ph{};
        ph.p_type = PT_LOAD;
        ph.p_flags = PF_R | PF_X;
        ph.p_offset = dataOff;
        ph.p_vaddr = s.vaddr;
        ph.p_paddr = s.paddr;
        ph.p_filesz = s.bytes.size();
        ph.p_memsz = s.memsz;
        ph.p_align = 0x200000;
        dataOff += s.bytes.size();
        phs.push_back(ph);
    }
    Elf64_Phdr note{};
    note.p_type = PT_NOTE;
    note.p_paddr = 0x10;  // nonsense address: loading it would fail
    note.p_memsz = 0x10;
    phs.push_back(note);
    std::memcpy(out.data() + sizeof(eh), phs.data(), phs.size() * sizeof(Elf64_Phdr));
    for (const FakeSegment& s : segs) out.insert(out.end(), s.bytes.begin(), s.bytes.end());
    return out;
}

}  // namespace conduit::vmm::x86::test
