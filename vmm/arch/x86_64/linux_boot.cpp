// loadLinux: the 64-bit Linux boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot
// Protocol"): the kernel is entered in long mode with paging on, an identity map covering the
// kernel, boot_params and the command line, a GDT with flat __BOOT_CS (0x10) / __BOOT_DS (0x18),
// CS = __BOOT_CS, DS = ES = SS = __BOOT_DS, interrupts off, and %rsi = &boot_params.
//
// Two kernel formats, told apart by their first bytes:
//   bzImage: setup sectors + protected-mode kernel; the 64-bit entry is 0x200 into the latter.
//   ELF vmlinux: PT_LOAD segments at their physical addresses; entry = startup_64's physical address.
#include <elf.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/bzimage.h"
#include "vmm/arch/x86_64/kernel_unpack.h"
#include "vmm/arch/x86_64/cpu_state.h"
#include "vmm/arch/x86_64/e820.h"
#include "vmm/image_file.h"
#include "vmm/arch/x86_64/linux_boot_params.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/linux_layout.h"
#include "vmm/arch/x86_64/acpi.h"
#include "vmm/arch/x86_64/mptable.h"
#include "vmm/arch/x86_64/page_tables.h"

namespace conduit::vmm::x86 {

using linux_boot::BootParams;
using linux_boot::SetupHeader;
using memory::AddressRange;

namespace {

constexpr uint64_t kPage = 4096;
// For an ELF vmlinux we write the setup header ourselves: what a 2.15 bzImage would say.
constexpr uint16_t kSynthProtocol = 0x020f;
constexpr uint32_t kSynthCmdlineSize = 2047;        // COMMAND_LINE_SIZE - 1 on x86
constexpr uint32_t kSynthInitrdAddrMax = 0x7fffffff;  // what x86_64 kernels declare
constexpr uint32_t kSynthKernelAlignment = 0x200000;
// heap_end_ptr: offset from the real-mode code of the end of the setup heap, minus 0x200
// (boot.rst). The 64-bit entry never runs the real-mode setup, so nothing uses it; we give the
// conventional value for a full 64 KiB real-mode segment so CAN_USE_HEAP is not a lie.
constexpr uint16_t kHeapEndPtr = 0xfe00;

struct LoadedKernel {
    std::string format;     // for the description
    uint64_t entry = 0;     // 64-bit entry, physical
    AddressRange extent;    // memory the kernel owns from the start (incl. init_size / bss)
    SetupHeader hdr{};      // to put into boot_params
    size_t hdrBytes = 0;    // how much of hdr came from the image (0x1f1 .. end of its header)
    std::string version;    // kernel version string, if the image has one
};

std::string ramText(const memory::AddressLayout& layout) {
    std::string out;
    for (const AddressRange& r : layout.ramRanges())
        out += (out.empty() ? "" : ", ") + r.toString();
    return out;
}

std::string protocolText(uint16_t v) { return fmt::format("{}.{:02}", v >> 8, v & 0xff); }

bool isElf(std::span<const uint8_t> b) {
    return b.size() >= SELFMAG && std::memcmp(b.data(), ELFMAG, SELFMAG) == 0;
}

Result<LoadedKernel> loadElf(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                             const std::string& file, std::span<const uint8_t> b) {
    if (b.size() < sizeof(Elf64_Ehdr) || b[EI_CLASS] != ELFCLASS64)
        return Error(fmt::format("kernel {} is an ELF file but not ELF64 (class {}); a 64-bit x86 vmlinux is needed",
                                 file, b.size() > EI_CLASS ? b[EI_CLASS] : 0));
    Elf64_Ehdr eh;
    std::memcpy(&eh, b.data(), sizeof(eh));
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
        return Error(fmt::format("kernel {} is ELF64 for machine {} (data {}), not little-endian x86_64 ({})", file,
                                 eh.e_machine, eh.e_ident[EI_DATA], EM_X86_64));
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
        eh.e_phoff + uint64_t(eh.e_phnum) * sizeof(Elf64_Phdr) > b.size())
        return Error(fmt::format("kernel {}: program headers (offset {:#x}, {} x {} bytes) are missing or beyond "
                                 "the file's {} bytes",
                                 file, eh.e_phoff, eh.e_phnum, eh.e_phentsize, b.size()));

    LoadedKernel k;
    uint64_t lo = UINT64_MAX, hi = 0;
    bool entryFound = false;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph;
        std::memcpy(&ph, b.data() + eh.e_phoff + i * sizeof(Elf64_Phdr), sizeof(ph));
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if (ph.p_filesz > ph.p_memsz || ph.p_offset + ph.p_filesz > b.size() || ph.p_offset + ph.p_filesz < ph.p_offset)
            return Error(fmt::format("kernel {}: segment {} (offset {:#x}, filesz {:#x}, memsz {:#x}) is inconsistent "
                                     "with the file's {} bytes",
                                     file, i, ph.p_offset, ph.p_filesz, ph.p_memsz, b.size()));
        AddressRange seg{ph.p_paddr, ph.p_memsz};
        if (seg.base < kLinuxKernelMin || seg.end() < seg.base || !layout.isRam(seg.base, seg.size))
            return Error(fmt::format("kernel {} does not fit: segment {} at physical {} ({} bytes) is not in guest "
                                     "RAM above {:#x} (RAM: {})",
                                     file, i, seg.toString(), seg.size, kLinuxKernelMin, ramText(layout)));
        TRY_CTX(mem.write(ph.p_paddr, b.subspan(ph.p_offset, ph.p_filesz)),
                fmt::format("loading kernel {} segment {}", file, i));
        if (ph.p_memsz > ph.p_filesz) {  // .bss: guest RAM starts zeroed, but the memory may be reused
            uint8_t* p = TRY(mem.hostPointer(ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz));
            std::memset(p, 0, ph.p_memsz - ph.p_filesz);
        }
        lo = std::min(lo, seg.base);
        hi = std::max(hi, seg.end());
        // vmlinux.lds says ENTRY(phys_startup_64), so e_entry is normally physical already; older
        // or hand-made images give the virtual address of startup_64: translate it through the
        // segment that holds it.
        if (!entryFound && seg.contains(eh.e_entry)) {
            k.entry = eh.e_entry;
            entryFound = true;
        } else if (!entryFound && eh.e_entry >= ph.p_vaddr && eh.e_entry - ph.p_vaddr < ph.p_memsz) {
            k.entry = eh.e_entry - ph.p_vaddr + ph.p_paddr;
            entryFound = true;
        }
    }
    if (hi == 0)
        return Error(fmt::format("kernel {}: the ELF file has no loadable segment", file));
    if (!entryFound)
        return Error(fmt::format("kernel {}: entry point {:#x} lies in no loadable segment", file, eh.e_entry));
    k.extent = {lo, hi - lo};
    k.format = "ELF vmlinux";

    SetupHeader& h = k.hdr;
    h.boot_flag = linux_boot::kBootFlag;
    h.header = linux_boot::kHeaderMagic;
    h.version = kSynthProtocol;
    h.loadflags = linux_boot::kLoadedHigh;
    h.code32_start = static_cast<uint32_t>(lo);
    h.initrd_addr_max = kSynthInitrdAddrMax;
    h.kernel_alignment = kSynthKernelAlignment;
    h.xloadflags = linux_boot::kXlfKernel64;
    h.cmdline_size = kSynthCmdlineSize;
    h.pref_address = lo;
    h.init_size = static_cast<uint32_t>(std::min<uint64_t>(hi - lo, UINT32_MAX));
    k.hdrBytes = 0;
    return k;
}

// boot_params get the bzImage's setup header: it runs from 0x1f1 to 0x202 + the byte at 0x201 (the
// jump's displacement); copy exactly that much of it, as boot.rst asks, and leave the rest zero.
void takeImageHeader(LoadedKernel& k, const SetupHeader& hdr, std::span<const uint8_t> b, uint64_t load) {
    k.hdr = hdr;
    k.hdrBytes = std::min<size_t>(0x202 + b[0x201] - linux_boot::kSetupHeaderOffset, sizeof(SetupHeader));
    std::memset(reinterpret_cast<uint8_t*>(&k.hdr) + k.hdrBytes, 0, sizeof(SetupHeader) - k.hdrBytes);
    k.hdr.code32_start = static_cast<uint32_t>(load);
}

Result<LoadedKernel> loadBzImage(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                                 const std::string& file, std::span<const uint8_t> b) {
    SetupHeader hdr = TRY_CTX(readSetupHeader(b), fmt::format("kernel {}", file));
    if (hdr.version < linux_boot::kMinProtocol)
        return Error(fmt::format("kernel {}: boot protocol {} is too old; the 64-bit entry needs {} or later", file,
                                 protocolText(hdr.version), protocolText(linux_boot::kMinProtocol)));
    if (!(hdr.xloadflags & linux_boot::kXlfKernel64))
        return Error(fmt::format("kernel {}: not 64-bit capable (xloadflags {:#x} lacks XLF_KERNEL_64)", file,
                                 uint32_t{hdr.xloadflags}));
    const uint64_t pmOffset = protectedModeOffset(hdr);
    if (pmOffset + linux_boot::kEntry64Offset >= b.size())
        return Error(fmt::format("kernel {}: {} setup sectors leave no protected-mode kernel in {} bytes", file,
                                 uint32_t{hdr.setup_sects}, b.size()));
    std::span<const uint8_t> pm = b.subspan(pmOffset);

    // Load address: pref_address (2.10+), at least 1 MiB; a relocatable kernel may be moved up to
    // its kernel_alignment, a non-relocatable one must sit exactly there.
    uint64_t load = std::max<uint64_t>(hdr.pref_address, kLinuxKernelMin);
    if (hdr.relocatable_kernel) {
        uint64_t align = hdr.kernel_alignment;
        if (align != 0 && (align & (align - 1)) == 0)
            load = memory::alignUp(load, align);
    } else if (hdr.pref_address < kLinuxKernelMin) {
        return Error(fmt::format("kernel {}: not relocatable and its pref_address {:#x} is below {:#x}", file,
                                 uint64_t{hdr.pref_address}, kLinuxKernelMin));
    }
    // The decompressor works in place within init_size bytes from the load address.
    const uint64_t need = std::max<uint64_t>(hdr.init_size, pm.size());
    if (!layout.isRam(load, need))
        return Error(fmt::format("kernel {} does not fit: needs {} ({} bytes: init_size {:#x}, protected-mode part "
                                 "{:#x}) at load address {:#x}, guest RAM is {}",
                                 file, AddressRange{load, need}.toString(), need, uint32_t{hdr.init_size}, pm.size(), load,
                                 ramText(layout)));
    TRY_CTX(mem.write(load, pm), fmt::format("loading kernel {} at {:#x}", file, load));

    LoadedKernel k;
    k.format = "bzImage";
    k.entry = load + linux_boot::kEntry64Offset;
    k.extent = {load, need};
    takeImageHeader(k, hdr, b, load);
    // kernel_version: offset of a NUL-terminated string from the start of the setup (+0x200).
    if (hdr.kernel_version != 0) {
        uint64_t at = uint64_t(hdr.kernel_version) + 0x200;
        if (at < pmOffset) {
            auto end = std::find(b.begin() + static_cast<ptrdiff_t>(at), b.begin() + static_cast<ptrdiff_t>(pmOffset),
                                 uint8_t{0});
            k.version.assign(b.begin() + static_cast<ptrdiff_t>(at), end);
            if (auto sp = k.version.find(' '); sp != std::string::npos)
                k.version.resize(sp);
        }
    }
    return k;
}

// A bzImage whose kernel Conduit decompresses itself (kernel.unpack = host): the ELF inside is
// loaded like a vmlinux, but boot_params carry the bzImage's own setup header, as when its
// decompressor hands over to startup_64.
Result<LoadedKernel> loadBzImageUnpacked(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                                         const std::string& file, std::span<const uint8_t> b) {
    SetupHeader hdr = TRY_CTX(readSetupHeader(b), fmt::format("kernel {}", file));
    if (hdr.version < linux_boot::kMinProtocol)
        return Error(fmt::format("kernel {}: boot protocol {} is too old; the 64-bit entry needs {} or later", file,
                                 protocolText(hdr.version), protocolText(linux_boot::kMinProtocol)));
    BzImagePayload payload = TRY_CTX(extractBzImagePayloadWithFormat(b), fmt::format("kernel {}", file));
    std::vector<uint8_t> elf = TRY_CTX(unpackKernel(payload.data, payload.compression),
                                       fmt::format("kernel {}: unpacking on the host", file));
    if (!isElf(elf))
        return Error(fmt::format("kernel {}: the unpacked {} payload ({} bytes) is not an ELF vmlinux", file,
                                 compressionName(payload.compression), elf.size()));
    LoadedKernel k = TRY_CTX(loadElf(mem, layout, file, elf), "the kernel unpacked from it");
    k.format = fmt::format("bzImage (kernel unpacked on the host from {} {} bytes to {})",
                           compressionName(payload.compression), payload.data.size(), elf.size());
    takeImageHeader(k, hdr, b, k.extent.base);
    return k;
}

}  // namespace

Result<BootPlan> loadLinux(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                           const KernelConfig& kernel, unsigned vcpus) {
    const std::string file = kernel.path.string();
    if (vcpus == 0)
        return Error(fmt::format("kernel {}: at least one vCPU is needed", file));
    if (mpTableSize(vcpus) > kMpTableMaxBytes)
        return Error(fmt::format("kernel {}: the MP table for {} vCPUs needs {} bytes, more than the {} reserved at "
                                 "{:#x}",
                                 file, vcpus, mpTableSize(vcpus), kMpTableMaxBytes, kMpTableAddr));
    if (layout.ramRanges().empty() || layout.ramRanges()[0].end() < kLegacyHoleEnd + kPage)
        return Error(fmt::format("kernel {}: guest RAM ({}) leaves nothing above 1 MiB", file, ramText(layout)));

    std::vector<uint8_t> image = TRY(readImageFile(kernel.path, "kernel"));
    LoadedKernel k;
    if (isElf(image))
        k = TRY(loadElf(mem, layout, file, image));
    else if (isBzImage(image) && kernel.unpack == KernelUnpack::Host)
        k = TRY(loadBzImageUnpacked(mem, layout, file, image));
    else if (isBzImage(image))
        k = TRY(loadBzImage(mem, layout, file, image));
    else
        return Error(fmt::format("kernel {} ({} bytes) is neither an ELF vmlinux nor a bzImage (no ELF magic, no "
                                 "\"HdrS\" setup header at 0x202)",
                                 file, image.size()));

    BootParams bp{};
    std::memcpy(&bp.hdr, &k.hdr, sizeof(SetupHeader));
    SetupHeader& h = bp.hdr;
    h.type_of_loader = linux_boot::kLoaderUndefined;
    h.loadflags |= linux_boot::kCanUseHeap;
    h.loadflags &= static_cast<uint8_t>(~linux_boot::kQuietFlag);
    h.heap_end_ptr = kHeapEndPtr;

    // Command line: cmdline_size counts the bytes without the terminating NUL.
    const uint64_t cmdlineLimit = std::min<uint64_t>(h.cmdline_size, kLinuxCmdlineMaxBytes - 1);
    if (kernel.cmdline.size() > cmdlineLimit)
        return Error(fmt::format("kernel {}: command line is {} bytes, the kernel accepts at most {} (cmdline_size "
                                 "{}, room at {:#x}: {})",
                                 file, kernel.cmdline.size(), cmdlineLimit, uint32_t{h.cmdline_size}, kCmdlineAddr,
                                 kLinuxCmdlineMaxBytes - 1));
    std::vector<uint8_t> cmdline(kernel.cmdline.begin(), kernel.cmdline.end());
    cmdline.push_back(0);
    TRY_CTX(mem.write(kCmdlineAddr, cmdline), "writing the kernel command line");
    h.cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddr);
    bp.ext_cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddr >> 32);

    // initrd: as high in low RAM as initrd_addr_max allows, page-aligned, above the kernel.
    std::string initrdText;
    if (kernel.initrd) {
        const std::string ifile = kernel.initrd->string();
        std::vector<uint8_t> initrd = TRY(readImageFile(*kernel.initrd, "initrd"));
        const AddressRange low = layout.ramRanges()[0];
        const uint64_t ceiling = std::min<uint64_t>(low.end(), uint64_t(h.initrd_addr_max) + 1);
        const uint64_t floor = memory::alignUp(k.extent.end(), kPage);
        const uint64_t size = initrd.size();
        if (size > ceiling || memory::alignDown(ceiling - size, kPage) < floor)
            return Error(fmt::format("initrd {} ({} bytes) does not fit between the end of kernel {} at {:#x} and "
                                     "{:#x} (the lower of low RAM end {:#x} and initrd_addr_max + 1 {:#x})",
                                     ifile, size, file, floor, ceiling, low.end(), uint64_t(h.initrd_addr_max) + 1));
        const uint64_t addr = memory::alignDown(ceiling - size, kPage);
        TRY_CTX(mem.write(addr, initrd), fmt::format("loading initrd {} at {:#x}", ifile, addr));
        h.ramdisk_image = static_cast<uint32_t>(addr);
        h.ramdisk_size = static_cast<uint32_t>(size);
        bp.ext_ramdisk_image = static_cast<uint32_t>(addr >> 32);
        bp.ext_ramdisk_size = static_cast<uint32_t>(size >> 32);
        initrdText = fmt::format(", initrd {} ({} bytes) at {:#x}", ifile, size, addr);
    }

    // ACPI (how the kernel finds the CPUs, the IOAPIC, ECAM, INTx routing and power-off); the
    // kernel also scans the BIOS area for the RSDP, protocol 2.14+ is told its address.
    bp.acpi_rsdp_addr = TRY_CTX(writeAcpiTables(mem, layout, vcpus), fmt::format("kernel {}", file));

    // e820.
    std::vector<E820Entry> e820 = buildE820(layout);
    if (e820.size() > linux_boot::kE820Max)
        return Error(fmt::format("kernel {}: {} e820 entries, boot_params holds {}", file, e820.size(),
                                 linux_boot::kE820Max));
    std::copy(e820.begin(), e820.end(), bp.e820_table);
    bp.e820_entries = static_cast<uint8_t>(e820.size());
    TRY_CTX(mem.writeObj(kBootParamsAddr, bp), fmt::format("writing boot_params at {:#x}", kBootParamsAddr));

    // GDT, TSS, page tables, MP table.
    const kvm_segment code = flatCode64(kLinuxBootCs, 0);
    const kvm_segment data = flatData(kLinuxBootDs, 0);
    const kvm_segment tr = tss64(kLinuxBootTss, kLinuxTssAddr, 0x67);
    uint64_t gdt[6] = {};
    gdt[kLinuxBootCs / 8] = encodeDescriptor(code);
    gdt[kLinuxBootDs / 8] = encodeDescriptor(data);
    auto trDesc = encodeSystemDescriptor(tr);
    gdt[kLinuxBootTss / 8] = trDesc[0];
    gdt[kLinuxBootTss / 8 + 1] = trDesc[1];
    TRY_CTX(mem.writeObj(kLinuxGdtAddr, gdt), "writing the boot GDT");
    uint8_t tss[0x68] = {};
    tss[0x66] = 0x68;  // I/O map base beyond the limit: no bitmap
    TRY_CTX(mem.writeObj(kLinuxTssAddr, tss), "writing the boot TSS");
    TRY(writeIdentityPageTables(mem, layout, kLinuxPml4Addr, kLinuxIdentityMapEnd));
    TRY(writeMpTable(mem, kMpTableAddr, vcpus, x86::kIoApicBase,
                     x86::kLapicBase));

    BootPlan plan;
    for (unsigned i = 0; i < vcpus; ++i) {
        VcpuBootState s;
        if (i == 0) {
            s.regs.rip = k.entry;
            s.regs.rsi = kBootParamsAddr;
            s.regs.rsp = kLinuxStackTop;
            s.regs.rflags = kRflagsReserved;
            s.sregs = longModeSregs(code, data, tr, kLinuxGdtAddr, sizeof(gdt) - 1, kLinuxPml4Addr, i);
            s.runnable = true;
        } else {
            // The kernel starts its APs with INIT/SIPI; until then they sit in the reset state.
            s.regs = resetRegs();
            s.sregs = resetSregs(i);
            s.runnable = false;
        }
        plan.vcpus.push_back(s);
    }
    plan.description = fmt::format("Linux {}{} {}, protocol {}, kernel at {}, entry {:#x}, {} vCPU(s), cmdline "
                                   "\"{}\"{}",
                                   k.version.empty() ? "" : k.version + " ", k.format, file,
                                   protocolText(h.version), k.extent.toString(), k.entry, vcpus, kernel.cmdline,
                                   initrdText);
    log::get("vmm").debug("x86 boot: {}", plan.description);
    return plan;
}

}  // namespace conduit::vmm::x86
