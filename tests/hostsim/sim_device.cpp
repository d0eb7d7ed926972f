// The simulated edu device: config space, the trapped register BAR, memory BARs, interrupts and
// the DMA engine. Register semantics follow QEMU's docs/specs/edu.rst and hw/misc/edu.c.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "base/log.h"
#include "tests/hostsim/sim_host.h"

namespace conduit::hostsim {

namespace {
constexpr uint8_t kMsiCap = 0x40;
constexpr uint8_t kMsixCap = 0x60;
constexpr uint8_t kPmCap = 0xc0;  // optional (SimDeviceConfig::pmCap)
constexpr uint64_t kEduBuf = 0x40000;
constexpr uint64_t kEduBufSize = 4096;

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
}  // namespace

SimDevice::SimDevice(SimHost& host, SimDeviceConfig config, unsigned cdevIndex)
    : host_(host), config_(std::move(config)), cdevIndex_(cdevIndex) {
    for (unsigned i = 0; i < 6; ++i) {
        auto& b = config_.bars[i];
        // Memory BARs, and a Registers BAR that is mmappable, are backed by a memfd.
        const bool backed = b.kind == BarKind::Memory || (b.kind == BarKind::Registers && config_.registerBarMmap);
        if (!backed || !b.size) continue;
        // At least a page: a sub-page BAR's mmap covers its whole page (vfio_pci_core_mmap() allows
        // up to PAGE_ALIGN of the BAR), whose rest is the host's reserved space.
        const uint64_t bytes = (b.size + 4095) & ~uint64_t(4095);
        int fd = ::memfd_create(fmt::format("hostsim-{}-bar{}", config_.bdf, i).c_str(), MFD_CLOEXEC);
        if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) throw std::runtime_error("hostsim: memfd for BAR");
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) throw std::runtime_error("hostsim: mmap BAR memfd");
        barMem_[i] = {fd, static_cast<uint8_t*>(p), bytes};
    }
    if (!config_.extCaps.empty() && !config_.pcieCaps)
        throw std::runtime_error("hostsim: extended capabilities need the PCIe capability (pcieCaps)");
    if (!config_.rom.empty() && (config_.romBarSize < std::max<uint64_t>(2048, config_.rom.size()) ||
                                 (config_.romBarSize & (config_.romBarSize - 1))))
        throw std::runtime_error("hostsim: romBarSize must be a power of two of at least 2 KiB holding the ROM");
    for (auto& irq : irqs_) irq.triggers.clear();
    for (uint32_t i = 0; i < VFIO_PCI_NUM_IRQS; ++i) irqs_[i].triggers.assign(irqCount(i), -1);
    buildConfigSpace();
}

SimDevice::~SimDevice() {
    disableIrqs();
    for (auto& m : barMem_) {
        if (m.ptr) ::munmap(m.ptr, m.size);
        if (m.fd >= 0) ::close(m.fd);
    }
}

void SimDevice::setDriver(const std::string& driver) {
    config_.driver = driver;
    host_.writeSysfs(*this);
}

uint32_t SimDevice::irqCount(uint32_t index) const {
    switch (index) {
        case VFIO_PCI_INTX_IRQ_INDEX: return 1;
        case VFIO_PCI_MSI_IRQ_INDEX: return config_.msiVectors;
        case VFIO_PCI_MSIX_IRQ_INDEX: return config_.msixVectors;
        case VFIO_PCI_ERR_IRQ_INDEX: return 0;  // conventional PCI: vfio_pci_ioctl_get_irq_info() gives 0 unless PCIe
        case VFIO_PCI_REQ_IRQ_INDEX: return 1;
    }
    return 0;
}

void SimDevice::buildConfigSpace() {
    cfg_.fill(0);
    cfgWritable_.fill(0);
    put16(&cfg_[0x00], config_.vendor);
    put16(&cfg_[0x02], config_.device);
    put16(&cfg_[0x06], 0x0010);  // capability list
    cfg_[0x08] = config_.revision;
    cfg_[0x09] = config_.classCode & 0xff;
    cfg_[0x0a] = (config_.classCode >> 8) & 0xff;
    cfg_[0x0b] = (config_.classCode >> 16) & 0xff;
    put16(&cfg_[0x2c], 0x1af4);
    put16(&cfg_[0x2e], 0x1100);
    cfg_[0x34] = kMsiCap;
    cfg_[0x3d] = 1;  // INTA#
    put16(&cfgWritable_[0x04], 0x0547);  // IO, MEM, MASTER, PARITY, SERR, INTX_DISABLE
    cfgWritable_[0x3c] = 0xff;
    // MSI: 64-bit, per-vector masking, multiple message capable = log2(vectors).
    unsigned mmc = 0;
    while ((1u << mmc) < config_.msiVectors) ++mmc;
    cfg_[kMsiCap] = 0x05;
    cfg_[kMsiCap + 1] = config_.msixVectors ? kMsixCap : 0;
    put16(&cfg_[kMsiCap + 2], static_cast<uint16_t>(0x0180 | (mmc << 1)));
    put16(&cfgWritable_[kMsiCap + 2], 0x0071);  // enable + multiple message enable
    for (unsigned i = 4; i < 0x18; ++i) cfgWritable_[kMsiCap + i] = 0xff;
    if (config_.msixVectors) {
        cfg_[kMsixCap] = 0x11;
        cfg_[kMsixCap + 1] = 0;
        put16(&cfg_[kMsixCap + 2], static_cast<uint16_t>(config_.msixVectors - 1));
        put16(&cfgWritable_[kMsixCap + 2], 0xc000);  // enable, function mask
        put32(&cfg_[kMsixCap + 4], static_cast<uint32_t>(config_.msixTableOffset | config_.msixBar));
        put32(&cfg_[kMsixCap + 8], static_cast<uint32_t>(config_.msixPbaOffset | config_.msixBar));
    }
    if (config_.pcieCaps) {
        uint8_t& tail = config_.msixVectors ? cfg_[kMsixCap + 1] : cfg_[kMsiCap + 1];
        tail = 0xb0;
        cfg_[0xb0] = 0x0d;  // PCI_CAP_ID_SSVID
        cfg_[0xb1] = 0x70;
        put16(&cfg_[0xb4], 0x1af4);
        cfg_[0x70] = 0x10;  // PCI_CAP_ID_EXP, v2 endpoint
        cfg_[0x71] = 0;
        put16(&cfg_[0x72], 0x0002);
        put32(&cfg_[0x74], 0x10000000);         // DEVCAP: FLR
        put16(&cfgWritable_[0x78], 0x7fff);     // DEVCTL (initiate-FLR is not latched)
        put32(&cfg_[0x7c], 0x00000411);         // LNKCAP: 2.5 GT/s, x1, L0s
        put16(&cfgWritable_[0x80], 0x01c3);     // LNKCTL: ASPM, RCB, common clock, retrain...
        put16(&cfg_[0x82], 0x1011);             // LNKSTA: 2.5 GT/s, x1, slot clock
        put32(&cfg_[0x9c], 0x00000002);         // LNKCAP2: 2.5 GT/s supported
    }
    if (config_.pmCap) {
        // First in the list, so no existing capability moves. PMC: version 3, D1/D2 unsupported,
        // no PME. PMCSR: power state (bits 1:0) writable; No_Soft_Reset (bit 3) clear.
        cfg_[kPmCap] = 0x01;  // PCI_CAP_ID_PM
        cfg_[kPmCap + 1] = cfg_[0x34];
        cfg_[0x34] = kPmCap;
        put16(&cfg_[kPmCap + 2], 0x0003);
        cfgWritable_[kPmCap + 4] = 0x03;
    }
    // Extended capabilities from 0x100: header (ID, version, next) then the body, read-only.
    for (size_t i = 0; i < config_.extCaps.size(); ++i) {
        const auto& c = config_.extCaps[i];
        const uint32_t next = i + 1 < config_.extCaps.size() ? config_.extCaps[i + 1].offset : 0;
        if (c.offset < 0x100 || c.offset % 4 || c.offset + 4 + c.body.size() > cfg_.size() || (i == 0 && c.offset != 0x100))
            throw std::runtime_error(fmt::format("hostsim: extended capability {:#x} at {:#x} does not fit", c.id, c.offset));
        put32(&cfg_[c.offset], uint32_t(c.id) | (uint32_t(c.version & 0xf) << 16) | (next << 20));
        std::copy(c.body.begin(), c.body.end(), cfg_.begin() + c.offset + 4);
    }
    // BAR registers: flags in the low bits; the address bits are virtualised (sizing works as on hardware).
    for (unsigned i = 0; i < 6; ++i) {
        auto& b = config_.bars[i];
        if (b.kind == BarKind::None || !b.size) continue;
        uint32_t flags = (b.is64 ? 0x4 : 0) | (b.prefetchable ? 0x8 : 0);
        put32(&cfg_[0x10 + 4 * i], flags);
        if (b.is64 && i < 5) put32(&cfg_[0x14 + 4 * i], 0);
    }
}

uint16_t SimDevice::command() const {
    uint16_t v;
    std::memcpy(&v, &cfg_[0x04], 2);
    return v;
}

unsigned SimDevice::powerState() const { return config_.pmCap ? cfg_[kPmCap + 4] & 0x3 : 0; }

void SimDevice::setD0() {
    if (config_.pmCap) cfg_[kPmCap + 4] &= ~0x3;
}

uint32_t SimDevice::cfgRead(uint64_t offset, unsigned size) {
    uint32_t v = 0;
    if (offset + size > configSize()) return ~0u;
    std::memcpy(&v, &cfg_[offset], size);
    return v;
}

void SimDevice::cfgWrite(uint64_t offset, uint32_t value, unsigned size) {
    if (offset + size > configSize()) return;
    for (unsigned i = 0; i < size; ++i) {
        uint64_t at = offset + i;
        uint8_t byte = (value >> (8 * i)) & 0xff;
        if (at >= 0x10 && at < 0x28) {
            // BAR register byte: merge, then keep only the address bits the BAR's size allows.
            unsigned reg = static_cast<unsigned>((at - 0x10) / 4);
            uint32_t cur;
            std::memcpy(&cur, &cfg_[0x10 + 4 * reg], 4);
            unsigned shift = 8 * ((at - 0x10) % 4);
            cur = (cur & ~(0xffu << shift)) | (uint32_t(byte) << shift);
            uint32_t mask = 0, flags = 0;
            auto& b = config_.bars[reg];
            if (b.kind != BarKind::None && b.size) {
                mask = static_cast<uint32_t>(~(b.size - 1)) & ~0xfu;
                flags = (b.is64 ? 0x4 : 0) | (b.prefetchable ? 0x8 : 0);
            } else if (reg > 0 && config_.bars[reg - 1].is64 && config_.bars[reg - 1].size) {
                mask = static_cast<uint32_t>(~(config_.bars[reg - 1].size - 1) >> 32);
            }
            put32(&cfg_[0x10 + 4 * reg], (cur & mask) | flags);
            continue;
        }
        cfg_[at] = (cfg_[at] & ~cfgWritable_[at]) | (byte & cfgWritable_[at]);
    }
}

void SimDevice::signal(int fd) {
    if (fd < 0) return;
    uint64_t one = 1;
    if (::write(fd, &one, sizeof one) == sizeof one) ++delivered_;
}

void SimDevice::deliver(uint32_t index, uint32_t vector) {
    if (activeIndex_ != index) return;
    auto& irq = irqs_[index];
    if (vector >= irq.triggers.size()) return;
    // The message is a DMA write to the doorbell: an SMMU may translate it (and lose it).
    if ((index == VFIO_PCI_MSI_IRQ_INDEX || index == VFIO_PCI_MSIX_IRQ_INDEX) && !host_.msiWriteReaches(*this)) return;
    signal(irq.triggers[vector]);
}

void SimDevice::intxAssert() {
    intx_.level = true;
    if (activeIndex_ != VFIO_PCI_INTX_IRQ_INDEX || (command() & 0x0400)) return;
    if (!intx_.masked && !intx_.triggers.empty() && intx_.triggers[0] >= 0) {
        // AUTOMASKED: the kernel masks the line when it signals (vfio_intx_handler()).
        intx_.masked = true;
        signal(intx_.triggers[0]);
    }
}

void SimDevice::intxUnmask() {
    intx_.masked = false;
    // Still asserted: fires again at once, as the real line would (vfio_pci_intx_unmask_handler()).
    if (intx_.level) intxAssert();
}

void SimDevice::raise(uint32_t bits) {
    irqStatus_ |= bits;
    // edu_raise_irq(): MSI when enabled, else INTx. The sim adds MSI-X (vector 0).
    if (activeIndex_ == VFIO_PCI_MSIX_IRQ_INDEX || activeIndex_ == VFIO_PCI_MSI_IRQ_INDEX)
        deliver(activeIndex_, 0);
    else
        intxAssert();
}

void SimDevice::disableIrqs() {
    for (auto& irq : irqs_) {
        for (auto& fd : irq.triggers)
            if (fd >= 0) ::close(std::exchange(fd, -1));
        if (irq.unmaskFd >= 0) ::close(std::exchange(irq.unmaskFd, -1));
        irq.masked = false;
    }
    activeIndex_ = VFIO_PCI_NUM_IRQS;
    allocated_.clear();
}

uint64_t SimDevice::romImageSize() const {
    // pci_get_rom_size(): walk the images (55 AA header, "PCIR" data structure with the image
    // length in 512-byte units and the last-image bit), never past the ROM BAR.
    const auto& rom = config_.rom;
    auto rd16 = [&](uint64_t at) { return at + 2 <= rom.size() ? uint16_t(rom[at] | rom[at + 1] << 8) : uint16_t(0xffff); };
    auto rd8 = [&](uint64_t at) { return at < rom.size() ? rom[at] : uint8_t(0xff); };
    uint64_t image = 0;
    for (;;) {
        if (rd16(image) != 0xaa55) break;
        const uint64_t pds = image + rd16(image + 24);
        if (rd16(pds) != 0x4350 || rd16(pds + 2) != 0x5249) break;  // "PCIR"
        const bool last = rd8(pds + 21) & 0x80;
        const unsigned length = rd16(pds + 16);
        image += uint64_t(length) * 512;
        if (image >= config_.romBarSize || last || !length) break;
        if (rd16(image) != 0xaa55) break;
    }
    return std::min(image, config_.romBarSize);
}

void SimDevice::enable() {
    // vfio_pci_core_enable() at the first open: pci_clear_master(), pci_enable_device() (decode on
    // for the kinds of BAR the device has; every simulated BAR is a memory BAR), INTx-disable
    // cleared for a PCI 2.3 device, pci_try_reset_function() when the device has a reset method,
    // then pci_save_state(): the state vfio_pci_core_disable() restores at the last close.
    setD0();  // vfio_pci_core_enable(): vfio_pci_set_power_state(vdev, PCI_D0)
    uint16_t cmd = static_cast<uint16_t>(command() & ~(0x0004 | 0x0400));
    for (auto& b : config_.bars)
        if (b.kind != BarKind::None && b.size) cmd |= 0x0002;
    put16(&cfg_[0x04], cmd);
    if (config_.resetSupported) resetRestoringConfig();
    savedAtOpen_ = cfg_;
    needsReset_ = false;
}

void SimDevice::disable() {
    // vfio_pci_core_disable() at the last close: bus mastering and interrupts off, COMMAND set to
    // INTx-disable alone, a function reset when the device has one (__pci_reset_function_locked(),
    // which saves nothing itself), the state saved at open restored, pci_disable_device() (bus
    // mastering off; decode stays as restored). Without a reset the device still needs one, which
    // the bus reset at close may give it (SimHost::Impl::tryBusResetAfterClose()).
    disableIrqs();
    setD0();  // vfio_pci_core_disable(): vfio_pci_set_power_state(vdev, PCI_D0)
    put16(&cfg_[0x04], 0x0400);
    if (config_.resetSupported) resetState();
    cfg_ = savedAtOpen_;
    put16(&cfg_[0x04], static_cast<uint16_t>(command() & ~0x0004));
    needsReset_ = !config_.resetSupported;
}

void SimDevice::resetRestoringConfig() {
    // Every reset the kernel offers a user (pci_try_reset_function() for VFIO_DEVICE_RESET,
    // pci_reset_bus() for a hot reset) saves the config state before and restores it after
    // (pci_dev_save_and_disable() / pci_dev_restore()): COMMAND, BARs and MSI state read as before,
    // only the device's own registers are back at their reset values.
    // The function is put in D0 first (vfio_pci_set_power_state(vdev, PCI_D0) in
    // vfio_pci_ioctl_reset() and vfio_pci_dev_set_hot_reset()), so the state saved is a D0 one.
    setD0();
    const auto saved = cfg_;
    resetState();
    cfg_ = saved;
}

void SimDevice::resetState() {
    // The function's own reset: config space at its defaults (COMMAND 0, BAR address bits 0,
    // MSI/MSI-X off) and registers at their reset values. The kernel restores a saved config state
    // right after every reset it does (see resetRestoringConfig() and disable()).
    buildConfigSpace();
    liveness_ = fact_ = status_ = irqStatus_ = 0;
    dmaSrc_ = dmaDst_ = dmaCount_ = dmaCmd_ = 0;
    dmaPasid_ = 0;
    dmaBuf_.fill(0);
    intx_.level = false;
    ++resetCount_;
}

uint64_t SimDevice::regRead(uint64_t offset, unsigned size) {
    if (offset >= kEduBuf && offset + size <= kEduBuf + kEduBufSize) {
        uint64_t v = 0;
        std::memcpy(&v, &dmaBuf_[offset - kEduBuf], size);
        return v;
    }
    // edu_mmio_read(): 4-byte accesses below 0x80, 4 or 8 from 0x80; anything else reads all ones.
    if (offset < 0x80 && size != 4) return ~0ull;
    if (offset >= 0x80 && size != 4 && size != 8) return ~0ull;
    switch (offset) {
        case 0x00: return 0x010000ed;
        case 0x04: return liveness_;
        case 0x08: return fact_;
        case 0x20: return status_;
        case 0x24: return irqStatus_;
        case 0x80: return dmaSrc_;
        case 0x88: return dmaDst_;
        case 0x90: return dmaCount_;
        case 0x98: return dmaCmd_;
        case kRegDmaPasid: return size == 4 ? dmaPasid_ : ~0ull;
    }
    return ~0ull;
}

void SimDevice::regWrite(uint64_t offset, uint64_t value, unsigned size) {
    if (offset >= kEduBuf && offset + size <= kEduBuf + kEduBufSize) {
        std::memcpy(&dmaBuf_[offset - kEduBuf], &value, size);
        return;
    }
    if (offset < 0x80 && size != 4) return;
    if (offset >= 0x80 && size != 4 && size != 8) return;
    if (size == 4) value &= 0xffffffffu;
    switch (offset) {
        case 0x04: liveness_ = ~static_cast<uint32_t>(value); break;
        case 0x08: {
            if (status_ & 0x1) break;  // busy: ignored
            uint32_t n = static_cast<uint32_t>(value), f = 1;
            // Computed at once (the sim is synchronous). Modulo 2^32 the product is 0 from 34! on,
            // so stop there: a guest asking for 4294967295! must not stall the vCPU for seconds
            // (found by the guest-isolation test).
            for (uint32_t i = 2; i <= n && f != 0; ++i) f *= i;
            fact_ = f;
            if (status_ & 0x80) raise(0x1);
            break;
        }
        case 0x20: status_ = (status_ & 0x1) | (static_cast<uint32_t>(value) & 0x80); break;
        case 0x60: raise(static_cast<uint32_t>(value)); break;
        case 0x64:
            irqStatus_ &= ~static_cast<uint32_t>(value);
            if (!irqStatus_) intx_.level = false;  // edu_lower_irq()
            break;
        case 0x70: {  // sim extension: fire MSI/MSI-X vector N without touching the status register
            uint32_t v = static_cast<uint32_t>(value);
            if (activeIndex_ == VFIO_PCI_MSIX_IRQ_INDEX || activeIndex_ == VFIO_PCI_MSI_IRQ_INDEX) deliver(activeIndex_, v);
            break;
        }
        case 0x80: dmaSrc_ = size == 4 ? (dmaSrc_ & ~0xffffffffull) | value : value; break;
        case 0x88: dmaDst_ = size == 4 ? (dmaDst_ & ~0xffffffffull) | value : value; break;
        case 0x90: dmaCount_ = size == 4 ? (dmaCount_ & ~0xffffffffull) | value : value; break;
        case kRegDmaPasid:
            if (size == 4) dmaPasid_ = static_cast<uint32_t>(value) & (kDmaPasidEnable | 0xfffff);
            break;
        case 0x98:
            if (dmaCmd_ & 0x1) break;
            dmaCmd_ = value;
            if (dmaCmd_ & 0x1) runDma();
            break;
    }
}

void SimDevice::runDma() {
    const bool toRam = dmaCmd_ & 0x2;
    uint64_t devAddr = toRam ? dmaSrc_ : dmaDst_;
    uint64_t iova = (toRam ? dmaDst_ : dmaSrc_) & config_.dmaMask;  // edu_clamp_addr()
    const uint64_t count = dmaCount_;
    std::optional<uint32_t> pasid;
    if (dmaPasid_ & kDmaPasidEnable) pasid = dmaPasid_ & 0xfffff;
    auto& log = log::get("hostsim");
    if (devAddr < kEduBuf || count > kEduBufSize || devAddr - kEduBuf > kEduBufSize - count) {
        log.warn("edu {}: DMA device range [{:#x}, +{:#x}) is outside the 4 KiB buffer; ignored", bdf(), devAddr,
                 count);
    } else if (!(command() & 0x4)) {
        host_.dmaFaults_.push_back({bdf(), iova, count, toRam, "bus mastering disabled (PCI_COMMAND_MASTER clear)",
                                    DmaFaultKind::BusMasterDisabled, 0});
    } else if (toRam) {
        host_.dmaWrite(*this, iova, &dmaBuf_[devAddr - kEduBuf], count, pasid);
    } else {
        host_.dmaRead(*this, iova, &dmaBuf_[devAddr - kEduBuf], count, pasid);
    }
    dmaCmd_ &= ~0x1ull;
    if (dmaCmd_ & 0x4) raise(0x100);
}

}  // namespace conduit::hostsim
