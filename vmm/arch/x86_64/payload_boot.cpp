// loadPayload: flat binaries entered in 64-bit long mode (the contract of payload_abi.h) or in
// 16-bit real mode.
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/cpu_state.h"
#include "vmm/image_file.h"
#include "vmm/arch/x86_64/page_tables.h"
#include "vmm/arch/x86_64/payload_abi.h"

namespace conduit::vmm::x86 {

using memory::GiB;

namespace {

// 64-bit TSS (Intel SDM vol. 3, 8.7): 104 bytes, packed.
struct __attribute__((packed)) Tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomapBase;
};
static_assert(sizeof(Tss64) == 104);
static_assert(sizeof(Tss64) <= CONDUIT_TSS_STRIDE);

constexpr uint32_t kTssLimit = sizeof(Tss64) - 1;
constexpr uint64_t kLowTablesEnd = 0x100000;  // nothing of a 64-bit payload may sit below this
constexpr uint64_t kGdtFixedBytes = 0x28;     // null, kcode, kdata, udata, ucode

std::string describeRange(uint64_t base, uint64_t size) {
    return memory::AddressRange{base, size}.toString();
}

std::string describeRam(const memory::AddressLayout& layout) {
    std::string out;
    for (const memory::AddressRange& r : layout.ramRanges())
        out += (out.empty() ? "" : ", ") + r.toString();
    return out;
}

// Checks shared by both modes: the image lies entirely in RAM and the entry point inside it.
Result<void> checkImagePlacement(const memory::AddressLayout& layout, const PayloadConfig& payload,
                                 uint64_t size, uint64_t entry) {
    const std::string file = payload.path.string();
    if (size == 0)
        return Error(fmt::format("payload {} is empty", file));
    if (payload.loadAddress + size < payload.loadAddress || !layout.isRam(payload.loadAddress, size))
        return Error(fmt::format("payload {} ({} bytes) at {} does not lie entirely in guest RAM (RAM: {})", file,
                                 size, describeRange(payload.loadAddress, size), describeRam(layout)));
    if (entry < payload.loadAddress || entry - payload.loadAddress >= size)
        return Error(fmt::format("payload {}: entry point {:#x} is outside the image {}", file, entry,
                                 describeRange(payload.loadAddress, size)));
    return success();
}

Result<BootPlan> loadLong64(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                            const PayloadConfig& payload, unsigned vcpus, const std::vector<uint8_t>& image,
                            uint64_t entry) {
    const std::string file = payload.path.string();
    if (payload.loadAddress < kLowTablesEnd)
        return Error(fmt::format("payload {} loads at {:#x}, inside the low tables of the 64-bit entry "
                                 "[0, {:#x}); load it at {:#x} or above",
                                 file, payload.loadAddress, kLowTablesEnd, kLowTablesEnd));
    TRY(checkImagePlacement(layout, payload, image.size(), entry));

    // Identity map: 4 GiB at least, and everything the layout places (RAM, ECAM, BAR windows).
    const uint64_t mapEnd = memory::alignUp(std::max<uint64_t>(4 * GiB, layout.end()), GiB);
    const uint64_t lowestStack = CONDUIT_STACKS_TOP - uint64_t(vcpus) * CONDUIT_STACK_SIZE;
    const uint64_t tablesSize = identityPageTablesSize(mapEnd);
    if (CONDUIT_PML4_ADDR + tablesSize > lowestStack)
        return Error(fmt::format("payload {}: identity page tables for [0, {:#x}) need {} KiB at {:#x}, more than "
                                 "fits below the vCPU stacks at {:#x}; use less memory",
                                 file, mapEnd, tablesSize / 1024, CONDUIT_PML4_ADDR, lowestStack));

    TRY_CTX(mem.write(payload.loadAddress, image), fmt::format("loading payload {}", file));
    TRY(writeIdentityPageTables(mem, layout, CONDUIT_PML4_ADDR, mapEnd));

    // Boot info.
    conduit_boot_info info{};
    info.magic = CONDUIT_BOOT_INFO_MAGIC;
    info.version = CONDUIT_BOOT_INFO_VERSION;
    info.vcpu_count = vcpus;
    const auto& ram = layout.ramRanges();
    info.ram_low_size = ram.empty() ? 0 : ram[0].size;
    info.ram_high_size = ram.size() > 1 ? ram[1].size : 0;
    info.ecam_base = layout.pciEcam().base;
    info.ecam_size = layout.pciEcam().size;
    info.mmio32_base = layout.mmio32Window().base;
    info.mmio32_size = layout.mmio32Window().size;
    info.mmio64_base = layout.mmio64Window().base;
    info.mmio64_size = layout.mmio64Window().size;
    info.identity_map_end = mapEnd;
    info.payload_base = payload.loadAddress;
    info.payload_size = image.size();
    TRY_CTX(mem.writeObj(CONDUIT_BOOT_INFO_ADDR, info), "writing conduit_boot_info");

    // GDT: the fixed descriptors, then one 16-byte TSS descriptor per vCPU. Built from the same
    // kvm_segment values the sregs get, so the guest's first iretq reloads exactly what it runs with.
    const kvm_segment kcode = flatCode64(CONDUIT_SEL_KCODE, 0);
    const kvm_segment kdata = flatData(CONDUIT_SEL_KDATA, 0);
    const kvm_segment udata = flatData(CONDUIT_SEL_UDATA, 3);
    const kvm_segment ucode = flatCode64(CONDUIT_SEL_UCODE, 3);
    std::vector<uint64_t> gdt(kGdtFixedBytes / 8 + 2 * vcpus, 0);
    gdt[CONDUIT_SEL_KCODE / 8] = encodeDescriptor(kcode);
    gdt[CONDUIT_SEL_KDATA / 8] = encodeDescriptor(kdata);
    gdt[(CONDUIT_SEL_UDATA & ~7) / 8] = encodeDescriptor(udata);
    gdt[(CONDUIT_SEL_UCODE & ~7) / 8] = encodeDescriptor(ucode);
    // ap_start "sipi": only the BSP starts here; the APs wait in the reset state for the guest's
    // INIT/SIPI (the Machine leaves a non-runnable AP alone).
    const bool apsBySipi = payload.apStart == PayloadApStart::Sipi;
    std::vector<kvm_segment> trs;
    for (unsigned i = 0; i < vcpus; ++i) {
        const uint64_t tssAddr = CONDUIT_TSS_ADDR + CONDUIT_TSS_STRIDE * i;
        // Marked busy in the GDT as well, as LTR would have left it; a payload that reloads TR
        // must clear the busy bit first (as Linux does). An AP left for INIT/SIPI has loaded no TR,
        // so its descriptor stays available (type 9) for the guest's own LTR.
        trs.push_back(tss64(static_cast<uint16_t>(CONDUIT_SEL_TSS(i)), tssAddr, kTssLimit));
        kvm_segment inGdt = trs.back();
        if (apsBySipi && i > 0) inGdt.type = 9;  // 64-bit TSS, available
        auto desc = encodeSystemDescriptor(inGdt);
        gdt[CONDUIT_SEL_TSS(i) / 8] = desc[0];
        gdt[CONDUIT_SEL_TSS(i) / 8 + 1] = desc[1];

        Tss64 tss{};
        tss.rsp[0] = CONDUIT_STACKS_TOP - uint64_t(i) * CONDUIT_STACK_SIZE;
        tss.iomapBase = sizeof(Tss64);  // beyond the limit: no I/O permission bitmap
        TRY_CTX(mem.writeObj(tssAddr, tss), fmt::format("writing the TSS of vCPU {} at {:#x}", i, tssAddr));
    }
    const uint64_t gdtBytes = gdt.size() * 8;
    TRY_CTX(mem.write(CONDUIT_GDT_ADDR, std::span(reinterpret_cast<const uint8_t*>(gdt.data()), gdtBytes)),
            fmt::format("writing the GDT at {:#x}", CONDUIT_GDT_ADDR));

    BootPlan plan;
    for (unsigned i = 0; i < vcpus; ++i) {
        VcpuBootState s;
        if (apsBySipi && i > 0) {
            // Architectural reset state (what KVM already holds); the guest's SIPI sets CS:IP.
            s.sregs = resetSregs(i);
            s.regs = resetRegs();
            s.runnable = false;
            plan.vcpus.push_back(s);
            continue;
        }
        s.regs.rip = entry;
        s.regs.rdi = CONDUIT_BOOT_INFO_ADDR;
        s.regs.rsi = i;
        s.regs.rsp = CONDUIT_STACKS_TOP - uint64_t(i) * CONDUIT_STACK_SIZE;
        s.regs.rflags = kRflagsReserved;  // IF=0: no IDT yet
        s.sregs = longModeSregs(kcode, kdata, trs[i], CONDUIT_GDT_ADDR, static_cast<uint16_t>(gdtBytes - 1),
                                CONDUIT_PML4_ADDR, i);
        s.runnable = true;
        plan.vcpus.push_back(s);
    }
    plan.description = fmt::format("64-bit payload {} ({} bytes) at {:#x}, entry {:#x}, {} vCPU(s), identity map "
                                   "[0, {:#x})",
                                   file, image.size(), payload.loadAddress, entry, vcpus, mapEnd);
    if (apsBySipi && vcpus > 1) plan.description += ", APs wait for INIT/SIPI";
    return plan;
}

Result<BootPlan> loadReal16(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                            const PayloadConfig& payload, unsigned vcpus, const std::vector<uint8_t>& image,
                            uint64_t entry) {
    const std::string file = payload.path.string();
    // A "-bios"-style image (last byte at 4 GiB - 1, entry 0xfffffff0) would need memory at the top
    // of the 32-bit space; the layout keeps that range for platform devices and has no RAM there,
    // so it ends up here with a message naming the RAM that does exist.
    TRY(checkImagePlacement(layout, payload, image.size(), entry));
    // Real mode addresses CS:IP with CS = base >> 4: the code segment base must fit a selector.
    const uint64_t csBase = entry & ~0xffffull;
    if (csBase > 0xf0000)
        return Error(fmt::format("payload {}: real-mode entry {:#x} is above 1 MiB and cannot be reached as CS:IP",
                                 file, entry));
    TRY_CTX(mem.write(payload.loadAddress, image), fmt::format("loading payload {}", file));

    BootPlan plan;
    for (unsigned i = 0; i < vcpus; ++i) {
        VcpuBootState s;
        s.sregs = resetSregs(i);
        s.regs = resetRegs();
        if (i == 0) {
            s.sregs.cs.selector = static_cast<uint16_t>(csBase >> 4);
            s.sregs.cs.base = csBase;
            s.regs.rip = entry & 0xffff;
            // DS = ES = SS = 0 (from resetSregs) and SP = 0x7c00: the stack a PC BIOS leaves a boot
            // sector, growing down below the conventional 0x7c00 load address.
            s.regs.rsp = 0x7c00;
            s.runnable = true;
        } else {
            // APs stay in the reset state waiting for INIT/SIPI from the BSP.
            s.runnable = false;
        }
        plan.vcpus.push_back(s);
    }
    plan.description = fmt::format("16-bit payload {} ({} bytes) at {:#x}, entry {:04x}:{:04x}, {} vCPU(s)", file,
                                   image.size(), payload.loadAddress, csBase >> 4, entry & 0xffff, vcpus);
    return plan;
}

}  // namespace

Result<BootPlan> loadPayload(const memory::GuestMemory& mem, const memory::AddressLayout& layout,
                             const PayloadConfig& payload, unsigned vcpus) {
    const std::string file = payload.path.string();
    if (vcpus == 0)
        return Error(fmt::format("payload {}: at least one vCPU is needed", file));
    if (payload.mode == PayloadMode::Long64 && vcpus > CONDUIT_PAYLOAD_MAX_VCPUS)
        return Error(fmt::format("payload {}: {} vCPUs requested, 64-bit payloads support at most {} "
                                 "(CONDUIT_PAYLOAD_MAX_VCPUS)",
                                 file, vcpus, CONDUIT_PAYLOAD_MAX_VCPUS));
    std::vector<uint8_t> image = TRY(readImageFile(payload.path, "payload"));
    const uint64_t entry = payload.entry.value_or(payload.loadAddress);
    if (payload.mode == PayloadMode::Long64)
        return loadLong64(mem, layout, payload, vcpus, image, entry);
    return loadReal16(mem, layout, payload, vcpus, image, entry);
}

}  // namespace conduit::vmm::x86
