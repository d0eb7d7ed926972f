// The guest-physical address map of an arm64 machine, as data: every range named, so RAM
// placement, BAR allocation, the device tree and the GIC set-up all read the same numbers.
//
//   0x0700_0000  GICv3 distributor (64 KiB)
//   0x0710_0000  GICv3 redistributors, 128 KiB per vCPU (RD + SGI frames), up to 0x07F0_0000
//   0x07FF_0000  GICv3 ITS (128 KiB: control frame, then GITS_TRANSLATER's frame at 0x0800_0000)
//   0x0800_0000  .. 0x0810_0000: the MSI window. Why here: the host kernel reserves IOVA
//                0x0800_0000-0x080F_FFFF for its own MSI doorbell (arm-smmu-v3's software MSI
//                region), and Linux in a guest with a stage-1 SMMU maps its doorbell at IOVA
//                0x0800_0000 too. With the ITS translater frame exactly there the guest's stage-1
//                MSI mapping lines up with the host's (issue 13). So nothing but the ITS frame sits
//                in this window, and RAM never does (a device DMA there would hit the doorbell).
//   0x0900_0000  16550 UART (4 KiB MMIO, one SPI)
//   0x0901_0000  exit device (4 KiB MMIO, for test payloads)
//   0x0905_0000  the virtual SMMUv3 (128 KiB: register pages 0 and 1), when the VM has one
//                (issue 13); reserved either way so the map does not depend on the config
//   0x1000_0000  32-bit PCI MMIO window (512 MiB)
//   0x3000_0000  PCI ECAM (256 MiB: 256 buses)
//   0x4000_0000  RAM
//   align_up(max(end of RAM, 4 GiB), 1 GiB)  64-bit PCI MMIO window (64 GiB)
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.h"
#include "memory/address_layout.h"
#include "memory/address_range.h"

namespace conduit::vmm::arm64 {

using memory::GiB;
using memory::KiB;
using memory::MiB;

class Layout {
public:
    static constexpr uint64_t kGicDistBase = 0x0700'0000;
    static constexpr uint64_t kGicDistSize = 64 * KiB;
    static constexpr uint64_t kGicRedistBase = 0x0710'0000;
    static constexpr uint64_t kGicRedistStride = 128 * KiB;  // GICv3: RD_base + SGI_base frames
    static constexpr uint64_t kGicRedistLimit = 0x07F0'0000;
    static constexpr uint64_t kGicItsBase = 0x07FF'0000;
    static constexpr uint64_t kGicItsSize = 128 * KiB;
    static constexpr uint64_t kItsTranslaterFrame = kGicItsBase + 64 * KiB;  // GITS_TRANSLATER's 64K frame
    static constexpr uint64_t kMsiWindowBase = 0x0800'0000;  // the host's MSI doorbell IOVA range
    static constexpr uint64_t kMsiWindowSize = 1 * MiB;
    static constexpr uint64_t kUartBase = 0x0900'0000;
    static constexpr uint64_t kUartSize = 4 * KiB;
    static constexpr uint64_t kExitDeviceBase = 0x0901'0000;
    static constexpr uint64_t kExitDeviceSize = 4 * KiB;
    static constexpr uint64_t kVsmmuBase = 0x0905'0000;
    static constexpr uint64_t kVsmmuSize = 128 * KiB;
    static constexpr uint64_t kMmio32Base = 0x1000'0000;
    static constexpr uint64_t kMmio32Size = 512 * MiB;
    static constexpr uint64_t kEcamBase = 0x3000'0000;
    static constexpr uint64_t kEcamSize = 256 * MiB;
    static constexpr uint64_t kRamBase = 0x4000'0000;
    static constexpr uint64_t kMmio64Size = 64 * GiB;
    static constexpr uint64_t kMinRam = 2 * MiB;
    static constexpr uint64_t kMaxRam = 1024 * GiB;
    // As many redistributor frames as fit below kGicRedistLimit.
    static constexpr unsigned kMaxVcpus = static_cast<unsigned>((kGicRedistLimit - kGicRedistBase) / kGicRedistStride);

    // SPIs (GIC INTID = 32 + SPI). MSIs go through the ITS as LPIs and use no SPI.
    static constexpr uint32_t kUartSpi = 1;
    static constexpr uint32_t kPciIntxSpiBase = 16;  // INTx of PCI slots: 16 SPIs from here, one per slot (mod 16)
    static constexpr uint32_t kPciIntxSpiCount = 16;
    static constexpr uint32_t kSpiCount = 64;        // SPIs the vGIC is created with (a multiple of 32)
    // The virtual SMMUv3's wired interrupts (edge-triggered): eventq, gerror, cmdq-sync.
    static constexpr uint32_t kVsmmuEventqSpi = 40;
    static constexpr uint32_t kVsmmuGerrorSpi = 41;
    static constexpr uint32_t kVsmmuCmdqSyncSpi = 42;

    // Lays out `ramBytes` of RAM (a multiple of 64 KiB, so any guest page size maps it) for
    // `vcpus` vCPUs (1..kMaxVcpus).
    static Result<Layout> create(uint64_t ramBytes, unsigned vcpus);

    uint64_t ramBytes() const { return ram_.size; }
    unsigned vcpus() const { return vcpus_; }
    std::vector<memory::AddressRange> ramRanges() const { return {ram_}; }
    memory::AddressRange mmio32Window() const { return {kMmio32Base, kMmio32Size}; }
    memory::AddressRange mmio64Window() const { return mmio64_; }
    memory::AddressRange pciEcam() const { return {kEcamBase, kEcamSize}; }
    memory::AddressRange gicDist() const { return {kGicDistBase, kGicDistSize}; }
    // The redistributors in use: one 128 KiB frame pair per vCPU, contiguous.
    memory::AddressRange gicRedist() const { return {kGicRedistBase, vcpus_ * kGicRedistStride}; }
    memory::AddressRange gicIts() const { return {kGicItsBase, kGicItsSize}; }
    memory::AddressRange msiWindow() const { return {kMsiWindowBase, kMsiWindowSize}; }
    memory::AddressRange uart() const { return {kUartBase, kUartSize}; }
    memory::AddressRange exitDevice() const { return {kExitDeviceBase, kExitDeviceSize}; }
    memory::AddressRange vsmmu() const { return {kVsmmuBase, kVsmmuSize}; }
    // Ranges that are neither RAM nor available to BARs, named, without overlaps.
    std::vector<memory::NamedRange> platformRanges() const;
    // Every range of the map, named, sorted by base.
    std::vector<memory::NamedRange> describe() const;
    uint64_t end() const { return mmio64_.end(); }
    bool isRam(uint64_t gpa, uint64_t len) const { return ram_.contains(gpa, len); }

    // The SPI (and GSI: the vGIC's default routes map GSI n to SPI n) a device in `slot` of bus 0
    // raises INTx on, whichever pin it uses: one level-triggered line per slot, as on x86. The
    // device tree's interrupt-map says the same to the guest.
    static uint32_t intxSpi(unsigned slot) { return kPciIntxSpiBase + slot % kPciIntxSpiCount; }

private:
    unsigned vcpus_ = 0;
    memory::AddressRange ram_;
    memory::AddressRange mmio64_;
};

}  // namespace conduit::vmm::arm64
