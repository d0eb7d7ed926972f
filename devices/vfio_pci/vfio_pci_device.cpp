#include "devices/vfio_pci/vfio_pci_device.h"

#include <linux/pci_regs.h>
#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/log.h"
#include "memory/address_range.h"

namespace conduit::devices::vfio_pci {

namespace memory = conduit::memory;

namespace {

constexpr uint64_t kPage = 4096;

log::Logger& logger() { return log::get("devices"); }

// Standard capabilities Conduit passes to the guest; everything else is unlinked.
bool keepCapability(uint8_t id) {
    switch (id) {
        case PCI_CAP_ID_PM:
        case PCI_CAP_ID_MSI:
        case PCI_CAP_ID_VNDR:
        case PCI_CAP_ID_EXP:
        case PCI_CAP_ID_MSIX:
            return true;
    }
    return false;
}

// Extended capabilities passed through. SR-IOV, resizable BAR, ATS/PRI/PASID (they need a vIOMMU
// that speaks them), ACS, L1 PM substates and the rest are hidden.
bool keepExtCapability(uint16_t id) {
    switch (id) {
        case PCI_EXT_CAP_ID_ERR:
        case PCI_EXT_CAP_ID_DSN:
        case PCI_EXT_CAP_ID_VNDR:
        case PCI_EXT_CAP_ID_LTR:
            return true;
    }
    return false;
}

uint32_t rd32(const std::vector<uint8_t>& raw, uint32_t off) {
    uint32_t v = 0;
    if (off + 4 <= raw.size()) std::memcpy(&v, &raw[off], 4);
    return v;
}
uint16_t rd16(const std::vector<uint8_t>& raw, uint32_t off) {
    uint16_t v = 0;
    if (off + 2 <= raw.size()) std::memcpy(&v, &raw[off], 2);
    return v;
}

// [a, b) minus each of `holes` (sorted or not), as page-aligned pieces.
std::vector<BarArea> subtract(const BarArea& a, std::vector<BarArea> holes) {
    std::vector<BarArea> out{a};
    for (auto& h : holes) {
        std::vector<BarArea> next;
        for (auto& piece : out) {
            uint64_t pEnd = piece.offset + piece.size, hEnd = h.offset + h.size;
            if (hEnd <= piece.offset || h.offset >= pEnd) {
                next.push_back(piece);
                continue;
            }
            if (h.offset > piece.offset) next.push_back({piece.offset, h.offset - piece.offset});
            if (hEnd < pEnd) next.push_back({hEnd, pEnd - hEnd});
        }
        out = std::move(next);
    }
    return out;
}

// A trapped piece of a BAR on the MMIO or PIO bus.
class BarWindow final : public BusDevice {
public:
    BarWindow(std::weak_ptr<VfioPciDevice> dev, unsigned index, uint64_t base, std::string name)
        : dev_(std::move(dev)), index_(index), base_(base), name_(std::move(name)) {}
    std::string name() const override { return name_; }
    void read(uint64_t offset, std::span<uint8_t> data) override {
        if (auto d = dev_.lock()) d->barAccess(index_, base_ + offset, data, false);
        else std::fill(data.begin(), data.end(), 0xff);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (auto d = dev_.lock())
            d->barAccess(index_, base_ + offset, std::span<uint8_t>(const_cast<uint8_t*>(data.data()), data.size()), true);
    }

private:
    std::weak_ptr<VfioPciDevice> dev_;
    unsigned index_;
    uint64_t base_;
    std::string name_;
};

// The rest of a guest page whose start a sub-page BAR's page memslot covers: claimed on the bus
// so that nothing placed there later is shadowed by the memslot without a word (the bus refuses
// the overlap and names this range). Accesses never arrive (the memslot takes them).
class PageRestWindow final : public BusDevice {
public:
    explicit PageRestWindow(std::string name) : name_(std::move(name)) {}
    std::string name() const override { return name_; }
    void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0xff); }
    void write(uint64_t, std::span<const uint8_t>) override {}

private:
    std::string name_;
};

std::string barName(unsigned index) { return index == pci::kRomBar ? "ROM" : fmt::format("BAR{}", index); }

}  // namespace

const char* irqModeName(IrqMode mode) {
    switch (mode) {
        case IrqMode::None: return "none";
        case IrqMode::Intx: return "intx";
        case IrqMode::Msi: return "msi";
        case IrqMode::Msix: return "msix";
    }
    return "?";
}

VfioPciDevice::VfioPciDevice(std::unique_ptr<vfio::VfioDevice> device, VfioPciPlatform platform, std::string name,
                             uint32_t cfgSize)
    : device_(std::move(device)), platform_(platform), name_(std::move(name)), config_(cfgSize) {}

Result<std::shared_ptr<VfioPciDevice>> VfioPciDevice::create(std::unique_ptr<vfio::VfioDevice> device,
                                                             VfioPciPlatform platform, std::string name) {
    if (!device->isPci()) return Error(fmt::format("{}: {} is not a VFIO PCI device", name, device->name()), EINVAL);
    if (!platform.mmio || !platform.pio || !platform.mapper || !platform.msi)
        return Error(fmt::format("{}: passthrough needs the MMIO and PIO buses, a guest mapper and an MSI router", name), EINVAL);
    auto cfgInfo = TRY_CTX(device->regionInfo(VFIO_PCI_CONFIG_REGION_INDEX), name + ": config region");
    const uint32_t size = cfgInfo.size >= pci::kConfigSizeExpress ? pci::kConfigSizeExpress : pci::kConfigSizeLegacy;
    std::shared_ptr<VfioPciDevice> d(new VfioPciDevice(std::move(device), platform, std::move(name), size));
    TRY(d->init());
    return d;
}

Result<void> VfioPciDevice::init() {
    std::lock_guard lock(mutex_);
    // The kernel enables the device when its fd is opened (vfio_pci_core_enable(): memory and I/O
    // decode on, bus mastering off), and a reset restores that state. Decode and bus mastering go
    // off first, as QEMU's vfio_pci_pre_reset() does: the BARs stay dark until the guest sets
    // COMMAND.MEM or IO (docs/config.md), the device masters nothing until it sets COMMAND.MASTER,
    // and the COMMAND the guest reads is what the device decodes.
    TRY_CTX(quiesce(), name_ + ": turning decode and bus mastering off at start");
    if (platform_.resetOnStart) {
        // A clean device, whatever the previous user left behind. Other functions of this VM that
        // a hot reset reaches have not been driven yet, so they may be reset along.
        auto plan = planReset(vfio::OpenSiblings::ResetToo);
        if (!plan) logger().info("{}: not reset at start: {}", name_, plan.error().describe());
        else TRY_CTX(doReset(*plan), name_ + ": reset at start");
    }
    std::vector<uint8_t> raw(config_.size(), 0);
    TRY_CTX(device_->readConfig(0, raw), name_ + ": reading config space");
    // Header bytes not handled below pass through as read; writes to them reach the device.
    config_.forward(0, config_.size());
    config_.forward(PCI_BASE_ADDRESS_0, 24, false);
    config_.forward(PCI_ROM_ADDRESS, 4, false);
    config_.forward(PCI_CAPABILITY_LIST, 1, false);
    config_.forward(PCI_INTERRUPT_LINE, 2, false);
    // COMMAND: read from and written to the device, and tracked in the shadow for BAR decoding.
    config_.allowWrite(PCI_COMMAND, 2, 0xffff);
    config_.set16(PCI_COMMAND, rd16(raw, PCI_COMMAND));
    TRY(setupBars(raw));
    TRY(setupCapabilities(raw));

    // Interrupt pin/line: pin as the device has it when INTx can be routed, else 0 (no INTx).
    auto intxInfo = device_->irqInfo(VFIO_PCI_INTX_IRQ_INDEX);
    if (!intxInfo) logger().warn("{}: no INTx: {}", name_, intxInfo.error().describe());
    const bool intxPossible = platform_.intx && platform_.intxGsi && intxInfo && intxInfo->count > 0 && raw[PCI_INTERRUPT_PIN];
    intxPin_ = intxPossible ? raw[PCI_INTERRUPT_PIN] : 0;
    logger().debug("{}: INTx: VFIO count {}, flags {:#x}, device pin {}, GSI {}", name_, intxInfo ? intxInfo->count : 0,
                   intxInfo ? intxInfo->flags : 0, raw[PCI_INTERRUPT_PIN], platform_.intxGsi ? int64_t(*platform_.intxGsi) : -1);
    config_.emulate(PCI_INTERRUPT_LINE, 2);
    config_.allowWrite(PCI_INTERRUPT_LINE, 1, 0xff);
    config_.set8(PCI_INTERRUPT_LINE, intxPin_ ? static_cast<uint8_t>(*platform_.intxGsi) : 0xff);
    config_.set8(PCI_INTERRUPT_PIN, intxPin_);
    enableIntx();
    logger().info("{}: {} BARs, config {} bytes, caps [{}], ext caps [{}], irq {}", name_,
                  std::count_if(bars_ ? barState_.begin() : barState_.end(), barState_.end(),
                                [](const BarState& s) { return s.region.size != 0; }),
                  config_.size(), fmt::join(keptCaps_, " "), fmt::join(keptExtCaps_, " "), irqModeName(irqMode()));
    return success();
}

Result<void> VfioPciDevice::setupBars(const std::vector<uint8_t>& raw) {
    std::array<pci::BarInfo, 6> infos{};
    for (unsigned i = 0; i < 6; ++i) {
        auto region = TRY_CTX(device_->regionInfo(VFIO_PCI_BAR0_REGION_INDEX + i), fmt::format("{}: BAR{}", name_, i));
        barState_[i].region = region;
        if (!region.size) continue;
        if (region.size & (region.size - 1))
            return Error(fmt::format("{}: BAR{} size {:#x} is not a power of two", name_, i, region.size), EINVAL);
        const uint32_t reg = rd32(raw, PCI_BASE_ADDRESS_0 + 4 * i);
        pci::BarInfo& b = infos[i];
        b.size = region.size;
        if (reg & PCI_BASE_ADDRESS_SPACE_IO) {
            b.type = pci::BarType::Io;
        } else {
            b.type = (reg & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64 ? pci::BarType::Mem64 : pci::BarType::Mem32;
            b.prefetchable = reg & PCI_BASE_ADDRESS_MEM_PREFETCH;
        }
        if (b.type == pci::BarType::Mem64) ++i;  // the upper half has no region of its own
    }
    auto rom = device_->regionInfo(VFIO_PCI_ROM_REGION_INDEX);
    if (!rom) logger().warn("{}: no expansion ROM: {}", name_, rom.error().describe());
    uint64_t romSize = 0;
    if (rom && rom->size && !(rom->size & (rom->size - 1))) {
        romSize = rom->size;
        barState_[pci::kRomBar].region = *rom;
    }
    bars_ = std::make_unique<pci::PciBars>(config_, infos, romSize);
    return success();
}

Result<void> VfioPciDevice::setupCapabilities(const std::vector<uint8_t>& raw) {
    // Standard chain: walk it (with a bound against loops), keep what Conduit supports and relink.
    std::vector<uint8_t> caps;
    if (rd16(raw, PCI_STATUS) & PCI_STATUS_CAP_LIST) {
        uint8_t at = raw[PCI_CAPABILITY_LIST] & ~3u;
        for (int guard = 0; at >= 0x40 && guard < 48; ++guard) {
            const uint8_t id = raw[at];
            if (keepCapability(id)) caps.push_back(at);
            else logger().info("{}: hiding capability {:#04x} at {:#x}", name_, id, at);
            at = raw[at + 1] & ~3u;
        }
    }
    keptCaps_ = caps;
    config_.emulate(PCI_CAPABILITY_LIST, 1);
    config_.set8(PCI_CAPABILITY_LIST, caps.empty() ? 0 : caps.front());
    config_.emulate(PCI_STATUS, 1, PCI_STATUS_CAP_LIST);
    config_.set8(PCI_STATUS, caps.empty() ? 0 : PCI_STATUS_CAP_LIST);
    for (size_t i = 0; i < caps.size(); ++i) {
        const uint8_t at = caps[i];
        config_.emulate(at, 2);
        config_.forward(at, 2, false);
        config_.set8(at, raw[at]);
        config_.set8(at + 1, i + 1 < caps.size() ? caps[i + 1] : 0);
        switch (raw[at]) {
            case PCI_CAP_ID_MSI: {
                Msi m;
                m.cap = at;
                const uint16_t flags = rd16(raw, at + PCI_MSI_FLAGS);
                m.is64 = flags & PCI_MSI_FLAGS_64BIT;
                m.perVectorMask = flags & PCI_MSI_FLAGS_MASKBIT;
                m.maxVectors = 1u << ((flags & PCI_MSI_FLAGS_QMASK) >> 1);
                auto irq = device_->irqInfo(VFIO_PCI_MSI_IRQ_INDEX);
                if (!irq) logger().warn("{}: MSI vectors as the capability says ({}): {}", name_, m.maxVectors, irq.error().describe());
                if (irq && irq->count) m.maxVectors = std::min<unsigned>(m.maxVectors, irq->count);
                // Fully emulated: the kernel programs the real MSI capability when we SET_IRQS.
                config_.emulate(at, m.size());
                config_.forward(at, m.size(), false);
                for (uint32_t o = 2; o < m.size(); ++o) config_.set8(at + o, 0);
                config_.set16(at + PCI_MSI_FLAGS, flags & ~(PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE));
                config_.allowWrite(at + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE);
                config_.allowWrite(at + PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
                if (m.is64) config_.allowWrite(at + PCI_MSI_ADDRESS_HI, 4);
                config_.allowWrite(m.dataOff(), 2, 0xffff);
                if (m.perVectorMask) config_.allowWrite(m.maskOff(), 4, m.maxVectors >= 32 ? 0xffffffffu : (1u << m.maxVectors) - 1);
                msi_ = std::move(m);
                break;
            }
            case PCI_CAP_ID_MSIX: {
                Msix x;
                x.cap = at;
                const uint16_t flags = rd16(raw, at + PCI_MSIX_FLAGS);
                const auto l = pci::MsixLayout::fromCapability(flags, rd32(raw, at + PCI_MSIX_TABLE), rd32(raw, at + PCI_MSIX_PBA));
                if (l.tableBar > 5 || l.pbaBar > 5 || !bars_->info(l.tableBar).isMemory() || !bars_->info(l.pbaBar).isMemory() ||
                    l.tableOffset + l.tableSize() > bars_->info(l.tableBar).size ||
                    l.pbaOffset + l.pbaSize() > bars_->info(l.pbaBar).size)
                    return Error(fmt::format("{}: MSI-X table (BAR{} +{:#x}) or PBA (BAR{} +{:#x}) for {} vectors lies outside its BAR",
                                             name_, l.tableBar, l.tableOffset, l.pbaBar, l.pbaOffset, l.vectors),
                                 EINVAL);
                // NORESIZE clear: the host can add MSI-X vectors while MSI-X is on (Linux 6.5+
                // with an MSI domain that supports it, vfio_pci_ioctl_get_irq_info()).
                auto irq = device_->irqInfo(VFIO_PCI_MSIX_IRQ_INDEX);
                if (!irq)
                    logger().warn("{}: MSI-X: {}; every vector will be allocated when the guest enables MSI-X", name_,
                                  irq.error().describe());
                x.dynamic = irq && !(irq->flags & VFIO_IRQ_INFO_NORESIZE);
                x.table = std::make_unique<pci::MsixTable>(l, static_cast<pci::MsixVectors&>(*this));
                config_.emulate(at, 12);
                config_.forward(at, 12, false);
                for (uint32_t o = 2; o < 12; ++o) config_.set8(at + o, raw[at + o]);
                config_.set16(at + PCI_MSIX_FLAGS, flags & PCI_MSIX_FLAGS_QSIZE);
                config_.allowWrite(at + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
                msix_ = std::move(x);
                break;
            }
            case PCI_CAP_ID_PM:
                pmCap_ = at;  // passed through as it is; see powerStateWritten()
                break;
            case PCI_CAP_ID_EXP: {
                pcieCap_ = at;
                // "Initiate FLR" reads 0 and is acted on here (VFIO_DEVICE_RESET), not forwarded.
                config_.emulate(at + PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR);
                // Every device sits on the guest's root bus, where PCIe has no link: an endpoint
                // there is a root-complex integrated endpoint (as QEMU presents it). Its type says
                // so and the link registers (which a host RCiEP may still fill in, as QEMU's own
                // emulated devices do) (capabilities, control, status, and their version-2
                // forms) read 0 and ignore writes, so the guest neither trains nor tunes a link
                // it does not have (ASPM, retrain, bandwidth notification).
                const uint16_t flags = rd16(raw, at + PCI_EXP_FLAGS);
                const unsigned type = (flags & PCI_EXP_FLAGS_TYPE) >> 4;
                if (type == PCI_EXP_TYPE_ENDPOINT || type == PCI_EXP_TYPE_LEG_END || type == PCI_EXP_TYPE_RC_END) {
                    config_.emulate(at + PCI_EXP_FLAGS, 2);
                    config_.set16(at + PCI_EXP_FLAGS,
                                  static_cast<uint16_t>((flags & ~PCI_EXP_FLAGS_TYPE) | (PCI_EXP_TYPE_RC_END << 4)));
                    config_.emulate(at + PCI_EXP_LNKCAP, 8);
                    config_.forward(at + PCI_EXP_LNKCAP, 8, false);
                    for (uint32_t o = PCI_EXP_LNKCAP; o < PCI_EXP_LNKCAP + 8; ++o) config_.set8(at + o, 0);
                    if ((flags & PCI_EXP_FLAGS_VERS) >= 2) {
                        config_.emulate(at + PCI_EXP_LNKCAP2, 8);
                        config_.forward(at + PCI_EXP_LNKCAP2, 8, false);
                        for (uint32_t o = PCI_EXP_LNKCAP2; o < PCI_EXP_LNKCAP2 + 8; ++o) config_.set8(at + o, 0);
                    }
                    logger().info("{}: PCIe {} presented as a root-complex integrated endpoint without link registers",
                                  name_, type == PCI_EXP_TYPE_ENDPOINT  ? "endpoint"
                                          : type == PCI_EXP_TYPE_LEG_END ? "legacy endpoint"
                                                                         : "root-complex integrated endpoint");
                }
                break;
            }
        }
    }

    // Extended chain (PCIe config space only).
    keptExtCaps_.clear();
    if (config_.size() > pci::kConfigSizeLegacy && rd32(raw, 0x100) != 0 && rd32(raw, 0x100) != 0xffffffff) {
        std::vector<uint16_t> kept;
        uint16_t at = 0x100;
        for (int guard = 0; at >= 0x100 && guard < 960; ++guard) {
            const uint32_t h = rd32(raw, at);
            if (!h) break;
            const uint16_t id = PCI_EXT_CAP_ID(h);
            if (id == PCI_EXT_CAP_ID_PASID) devicePasidAt_ = at;
            if (keepExtCapability(id)) kept.push_back(at);
            else logger().info("{}: hiding extended capability {:#06x} at {:#x}", name_, id, at);
            at = static_cast<uint16_t>(PCI_EXT_CAP_NEXT(h));
        }
        keptExtCaps_ = kept;
        for (size_t i = 0; i < kept.size(); ++i) {
            const uint32_t h = rd32(raw, kept[i]);
            const uint32_t next = i + 1 < kept.size() ? kept[i + 1] : 0;
            config_.emulate(kept[i], 4, 0xfff00000u);
            config_.set32(kept[i], (h & 0x000fffffu) | (next << 20));
        }
        if (kept.empty() || kept.front() != 0x100) {
            // The chain must start at 0x100: a null capability there that points at the first kept one.
            config_.emulate(0x100, 4);
            config_.forward(0x100, 4, false);
            config_.set32(0x100, kept.empty() ? 0 : (uint32_t(kept.front()) << 20));
        }
    }
    return success();
}

// ---------------------------------------------------------------- config access

void VfioPciDevice::configRead(uint32_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    ++stats_.configReads;
    std::fill(data.begin(), data.end(), 0);
    if (!config_.fullyEmulated(offset, static_cast<uint32_t>(data.size()))) {
        if (auto r = device_->readConfig(offset, data); !r) {
            logger().warn("{}: config read {:#x}+{}: {}", name_, offset, data.size(), r.error().describe());
            std::fill(data.begin(), data.end(), 0xff);
            return;
        }
    }
    if (msi_ && msi_->perVectorMask) refreshMsiPending();
    config_.mergeRead(offset, data);
}

void VfioPciDevice::configWrite(uint32_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    ++stats_.configWrites;
    const uint32_t n = static_cast<uint32_t>(data.size());
    auto touches = [&](uint32_t off, uint32_t len) { return offset < off + len && off < offset + n; };

    bool flr = false;
    std::vector<uint8_t> out(data.begin(), data.end());
    if (pcieCap_ && touches(*pcieCap_ + PCI_EXP_DEVCTL + 1, 1)) {
        uint32_t i = *pcieCap_ + PCI_EXP_DEVCTL + 1 - offset;
        flr = out[i] & (PCI_EXP_DEVCTL_BCR_FLR >> 8);
        out[i] &= ~(PCI_EXP_DEVCTL_BCR_FLR >> 8);
    }
    config_.applyWrite(offset, data);
    // Forward the runs of bytes that belong to the device.
    for (uint32_t i = 0; i < n;) {
        if (!config_.forwarded(offset + i)) {
            ++i;
            continue;
        }
        uint32_t j = i;
        while (j < n && config_.forwarded(offset + j)) ++j;
        if (auto r = device_->writeConfig(offset + i, std::span<const uint8_t>(out.data() + i, j - i)); !r)
            logger().warn("{}: config write {:#x}+{}: {}", name_, offset + i, j - i, r.error().describe());
        i = j;
    }

    if (msi_ && touches(msi_->cap, msi_->size())) msiChanged();
    if (msix_ && touches(msix_->cap + PCI_MSIX_FLAGS, 2)) msixControlChanged();
    if (touches(PCI_COMMAND, 2) || touches(PCI_BASE_ADDRESS_0, 24) || touches(PCI_ROM_ADDRESS, 4)) updateBars();
    // vfio-pci acts on a write that starts at PMCSR (vfio_pm_config_write(): offset == PCI_PM_CTRL).
    if (pmCap_ && offset == uint32_t{*pmCap_} + PCI_PM_CTRL && config_.forwarded(offset))
        powerStateWritten(out[0] & PCI_PM_CTRL_STATE_MASK);
    if (flr) {
        logger().info("{}: guest initiated a function level reset", name_);
        if (auto r = resetLocked(); !r) logger().error("{}: guest FLR: {}", name_, r.error().describe());
    }
}

void VfioPciDevice::placed(uint8_t bus, uint8_t devfn) {
    std::lock_guard lock(mutex_);
    requesterId_ = devices::pciRequesterId(bus, devfn);
    if (msix_) msix_->table->setDeviceId(*requesterId_);
}

// ---------------------------------------------------------------- BARs

void VfioPciDevice::programBar(unsigned index, uint64_t address) {
    std::lock_guard lock(mutex_);
    bars_->program(index, address);
    updateBars();
}

std::optional<uint64_t> VfioPciDevice::activeBar(unsigned index) const {
    std::lock_guard lock(mutex_);
    return bars_->active(index);
}

uint64_t VfioPciDevice::programmedBar(unsigned index) const {
    std::lock_guard lock(mutex_);
    return bars_->programmed(index);
}

std::vector<BarArea> VfioPciDevice::mmapAreas(unsigned index) const {
    std::lock_guard lock(mutex_);
    std::vector<BarArea> out;
    for (auto& a : barState_[index].areas) out.push_back(a.range);
    return out;
}

std::vector<BarArea> VfioPciDevice::trappedAreas(unsigned index) const {
    std::lock_guard lock(mutex_);
    std::vector<BarArea> out;
    for (auto& t : barState_[index].traps) out.push_back(t.range);
    return out;
}

void VfioPciDevice::updateBars() {
    // Areas and traps are laid out on first use (weak_from_this() needs the shared_ptr to exist).
    for (unsigned i = 0; i < 7; ++i) {
        auto& st = barState_[i];
        const uint64_t size = i == pci::kRomBar ? bars_->romSize() : bars_->info(i).size;
        if (!size || !st.areas.empty() || !st.traps.empty()) continue;
        std::vector<BarArea> mapped;
        const pci::MsixLayout* msix = msix_ ? &msix_->table->layout() : nullptr;
        const bool msixHere = msix && (msix->tableBar == i || msix->pbaBar == i);
        if (i < 6 && bars_->info(i).isMemory() && st.region.mmappable() && size < kPage && !msixHere) {
            // vfio-pci offers a sub-page BAR's mmap only when the host BAR starts a page whose rest
            // it reserved (vfio_pci_probe_mmaps()), and the mmap is that whole page. (With the
            // MSI-X table or PBA in it, the page is a hole below and the BAR is trapped whole.)
            auto m = device_->mapRegion(VFIO_PCI_BAR0_REGION_INDEX + i, 0, kPage, PROT_READ | PROT_WRITE);
            if (!m) {
                logger().warn("{}: BAR{} ({:#x} bytes) mmap of its page: {}; the BAR is trapped", name_, i, size,
                              m.error().describe());
            } else {
                Area a;
                a.range = {0, size};
                a.span = kPage;
                a.map = std::move(m).value();
                st.areas.push_back(std::move(a));
                st.subPage = true;
                st.pageRest.window = std::make_shared<PageRestWindow>(
                    fmt::format("{} BAR{} rest of its page (mapped with the BAR)", name_, i));
            }
        } else if (i < 6 && bars_->info(i).isMemory() && st.region.mmappable()) {
            auto areas = device_->mmapAreas(VFIO_PCI_BAR0_REGION_INDEX + i);
            if (!areas) {
                logger().warn("{}: BAR{} mmap areas: {}; the BAR is trapped", name_, i, areas.error().describe());
            } else {
                std::vector<BarArea> holes;
                if (msix && msix->tableBar == i) {
                    uint64_t b = memory::alignDown(msix->tableOffset, kPage);
                    holes.push_back({b, memory::alignUp(msix->tableOffset + msix->tableSize(), kPage) - b});
                }
                if (msix && msix->pbaBar == i) {
                    uint64_t b = memory::alignDown(msix->pbaOffset, kPage);
                    holes.push_back({b, memory::alignUp(msix->pbaOffset + msix->pbaSize(), kPage) - b});
                }
                for (auto& a : *areas)
                    for (auto& piece : subtract({a.offset, a.size}, holes)) mapped.push_back(piece);
            }
        }
        for (auto& piece : mapped) {
            auto m = device_->mapRegion(VFIO_PCI_BAR0_REGION_INDEX + i, piece.offset, piece.size, PROT_READ | PROT_WRITE);
            if (!m) {
                logger().warn("{}: BAR{} mmap [{:#x}, +{:#x}): {}; trapped instead", name_, i, piece.offset, piece.size,
                              m.error().describe());
                continue;
            }
            Area a;
            a.range = piece;
            a.span = piece.size;
            a.map = std::move(m).value();
            st.areas.push_back(std::move(a));
        }
        std::vector<BarArea> mappedNow;
        // A sub-page BAR is trapped whole wherever its page cannot be a memslot.
        if (!st.subPage)
            for (auto& a : st.areas) mappedNow.push_back(a.range);
        std::sort(mappedNow.begin(), mappedNow.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
        for (auto& t : subtract({0, size}, mappedNow)) {
            Trap trap;
            trap.range = t;
            trap.window = std::make_shared<BarWindow>(weak_from_this(), i, t.offset,
                                                      fmt::format("{} {} +{:#x}", name_, barName(i), t.offset));
            st.traps.push_back(std::move(trap));
        }
    }
    bars_->update([this](unsigned i, uint64_t gpa) { return activateBar(i, gpa); },
                  [this](unsigned i, uint64_t gpa) { return deactivateBar(i, gpa); });
}

Result<void> VfioPciDevice::activateBar(unsigned index, uint64_t gpa) {
    auto& st = barState_[index];
    const bool io = index < 6 && bars_->info(index).type == pci::BarType::Io;
    Bus& bus = io ? *platform_.pio : *platform_.mmio;
    if (st.lastAddress && *st.lastAddress != gpa) ++stats_.relocations;
    st.lastAddress = gpa;
    if (st.subPage && mapSubPageBar(index, gpa)) return success();
    for (auto& t : st.traps) {
        if (auto r = bus.insert(t.window, gpa + t.range.offset, t.range.size); !r) {
            (void)deactivateBar(index, gpa);
            return std::move(r).error().withContext(fmt::format("{}: {} at {:#x}", name_, barName(index), gpa));
        }
        t.at = gpa + t.range.offset;
    }
    for (auto& a : st.areas) {
        if (st.subPage) break;  // trapped here: mapSubPageBar() said no
        auto slot = platform_.mapper->map(gpa + a.range.offset, a.span, a.map.data(),
                                          fmt::format("{} {} +{:#x}", name_, barName(index), a.range.offset));
        if (!slot) {
            (void)deactivateBar(index, gpa);
            return std::move(slot).error();
        }
        a.slot = std::move(slot).value();
        p2pMap(index, a, gpa + a.range.offset);
    }
    logger().debug("{}: {} active at {:#x}", name_, barName(index), gpa);
    return success();
}

bool VfioPciDevice::mapSubPageBar(unsigned index, uint64_t gpa) {
    auto& st = barState_[index];
    auto& a = st.areas.front();
    const uint64_t size = a.range.size;
    if (gpa % kPage) {
        logger().info("{}: {} ({:#x} bytes) at {:#x} is not page-aligned: trapped", name_, barName(index), size, gpa);
        return false;
    }
    // The guest page's rest must be free: the memslot would shadow anything decoded there.
    if (auto r = platform_.mmio->insert(st.pageRest.window, gpa + size, kPage - size); !r) {
        logger().info("{}: {} ({:#x} bytes) at {:#x}: the rest of its page is taken, so the BAR is trapped: {}", name_,
                      barName(index), size, gpa, r.error().describe());
        return false;
    }
    auto slot = platform_.mapper->map(gpa, kPage, a.map.data(), fmt::format("{} {} page", name_, barName(index)));
    if (!slot) {
        (void)platform_.mmio->remove(gpa + size);
        logger().warn("{}: {} ({:#x} bytes) at {:#x}: mapping its page: {}; trapped instead", name_, barName(index), size,
                      gpa, slot.error().describe());
        return false;
    }
    st.pageRest.at = gpa + size;
    a.slot = std::move(slot).value();
    p2pMap(index, a, gpa);
    logger().debug("{}: {} ({:#x} bytes) active at {:#x} as its host page", name_, barName(index), size, gpa);
    return true;
}

Result<void> VfioPciDevice::deactivateBar(unsigned index, uint64_t) {
    auto& st = barState_[index];
    const bool io = index < 6 && bars_->info(index).type == pci::BarType::Io;
    Bus& bus = io ? *platform_.pio : *platform_.mmio;
    for (auto& t : st.traps) {
        if (t.at) {
            if (auto r = bus.remove(*t.at); !r) logger().warn("{}: {}", name_, r.error().describe());
            t.at.reset();
        }
    }
    if (st.pageRest.at) {
        if (auto r = bus.remove(*st.pageRest.at); !r) logger().warn("{}: {}", name_, r.error().describe());
        st.pageRest.at.reset();
    }
    for (auto& a : st.areas) {
        p2pUnmap(a);
        a.slot.reset();
    }
    return success();
}

void VfioPciDevice::p2pMap(unsigned index, Area& a, uint64_t gpa) {
    if (!platform_.dma) return;
    if (pmD3hot_) {
        // In D3hot vfio-pci exports the dma-buf revoked (MAP_FILE: ENODEV): powerStateWritten()
        // maps the area when the guest brings the device back to D0.
        logger().debug("{}: BAR{} [{:#x}, +{:#x}) at {:#x}: the device is in D3hot, DMA-mapped at D0", name_, index,
                       a.range.offset, a.span, gpa);
        return;
    }
    // iommufd: a dma-buf of exactly this mmapped area, mapped with IOAS_MAP_FILE (the kernel
    // exports it only while the device decodes memory, which the guest's COMMAND write, forwarded
    // before the BARs are updated, has switched on). It is made afresh at every activation: a
    // reset or decode-off revokes it, and iommufd then unmaps the range for good.
    // type1, and iommufd on kernels without VFIO dma-buf: the mmap's address, which type1 resolves
    // through the VMA's PFNMAP pages (faulting them in itself) and iommufd before 6.19 refuses.
    std::string why;
    if (platform_.dma->mapsFiles()) {
        auto buf = device_->exportDmaBuf(VFIO_PCI_BAR0_REGION_INDEX + index, a.range.offset, a.span);
        auto r = buf ? platform_.dma->mapFile(gpa, a.span, buf->get(), 0, true) : Result<void>(buf.error());
        if (r) {
            a.dmaBuf = std::move(buf).value();
            a.dmaMapped = true;
            a.dmaIova = gpa;
            logger().info("{}: BAR{} [{:#x}, +{:#x}) DMA-mapped at {:#x} through a dma-buf of the area", name_, index,
                          a.range.offset, a.span, gpa);
            return;
        }
        why = "; dma-buf path: " + r.error().describe();
    }
    auto r = platform_.dma->mapDma(gpa, a.span, a.map.data(), true);
    if (r) {
        a.dmaMapped = true;
        a.dmaIova = gpa;
        logger().info("{}: BAR{} [{:#x}, +{:#x}) DMA-mapped at {:#x} through its mmap's address{}", name_, index,
                      a.range.offset, a.span, gpa, why);
        return;
    }
    logger().warn("{}: BAR{} [{:#x}, +{:#x}) at {:#x} is not DMA-mapped, so peer-to-peer DMA to it will fault{}; "
                  "vaddr path: {}",
                  name_, index, a.range.offset, a.span, gpa, why, r.error().describe());
}

void VfioPciDevice::p2pUnmap(Area& a) {
    if (!a.dmaMapped) return;
    if (auto r = platform_.dma->unmapDma(a.dmaIova, a.span); !r)
        logger().warn("{}: P2P unmap: {}", name_, r.error().describe());
    a.dmaMapped = false;
    a.dmaBuf.reset();
}

// A guest write of PMCSR's power state, forwarded. vfio-pci sets that state
// (vfio_lock_and_set_power_state()): for D3hot it first revokes every dma-buf of the device
// (vfio_pci_dma_buf_move(vdev, true)), and iommufd unmaps a revoked buf's IOAS area from the IOMMU
// for good (iopt_revoke_notify()): going back to D0 un-revokes the buf but not the area, which
// stays in the IOAS (a map over it is EEXIST) until unmapped. So the P2P mappings of the active
// BARs are unmapped at D3hot and made afresh at D0, at the BARs' current guest addresses. (Type1's
// mappings of the mmap, which D3hot leaves in the IOMMU, go the same way: a BAR in D3hot answers no
// DMA anyway.)
void VfioPciDevice::powerStateWritten(unsigned state) {
    const bool d3hot = state == 3;  // PCI_D3hot; D1/D2 keep memory decode
    if (d3hot == pmD3hot_) return;
    pmD3hot_ = d3hot;
    for (unsigned i = 0; i < 6; ++i) {
        const auto gpa = bars_->active(i);
        if (!gpa) continue;
        for (auto& a : barState_[i].areas) {
            if (!a.slot) continue;  // not mapped (a trapped sub-page BAR): no P2P mapping either
            if (d3hot && a.dmaMapped) {
                logger().debug("{}: BAR{} [{:#x}, +{:#x}) P2P-unmapped at D3hot: vfio-pci revoked its dma-buf, so "
                               "its IOMMU mapping is gone for good",
                               name_, i, a.range.offset, a.span);
                p2pUnmap(a);
            } else if (!d3hot && !a.dmaMapped) {
                p2pMap(i, a, *gpa + a.range.offset);
            }
        }
    }
}

void VfioPciDevice::barAccess(unsigned index, uint64_t offset, std::span<uint8_t> data, bool write) {
    std::lock_guard lock(mutex_);
    (write ? stats_.trappedWrites : stats_.trappedReads)[index]++;
    // The MSI-X table and PBA (its callbacks come back to msixVectorChanged() / msixPending()).
    if (msix_ && msix_->table->access(index, offset, data, write)) return;
    const uint32_t region = index == pci::kRomBar ? uint32_t(VFIO_PCI_ROM_REGION_INDEX) : uint32_t(VFIO_PCI_BAR0_REGION_INDEX) + index;
    if (write) {
        if (index == pci::kRomBar) return;
        if (auto r = device_->writeRegion(region, offset, data); !r)
            logger().warn("{}: {} write +{:#x} size {}: {}", name_, barName(index), offset, data.size(), r.error().describe());
    } else if (auto r = device_->readRegion(region, offset, data); !r) {
        logger().warn("{}: {} read +{:#x} size {}: {}", name_, barName(index), offset, data.size(), r.error().describe());
        std::fill(data.begin(), data.end(), 0xff);
    }
}

// ---------------------------------------------------------------- interrupts

void VfioPciDevice::enableIntx() {
    if (!intxPin_ || intxOn_) return;
    auto route = platform_.intx->createRoute(*platform_.intxGsi, name_ + " INTx");
    if (!route) {
        logger().error("{}: INTx route: {}", name_, route.error().describe());
        return;
    }
    int32_t fd = (*route)->triggerFd();
    ++stats_.setIrqsCalls;
    if (auto r = device_->setIrqEventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, std::span<const int32_t>(&fd, 1)); !r) {
        logger().error("{}: enabling INTx: {}", name_, r.error().describe());
        return;
    }
    ++stats_.setIrqsCalls;
    if (auto r = device_->setUnmaskEventfd(VFIO_PCI_INTX_IRQ_INDEX, 0, (*route)->resampleFd()); !r) {
        logger().error("{}: INTx resample: {}", name_, r.error().describe());
        ++stats_.setIrqsCalls;
        (void)device_->disableIrq(VFIO_PCI_INTX_IRQ_INDEX);
        return;
    }
    intx_ = std::move(route).value();
    intxOn_ = true;
    notePeakIrq();
}

void VfioPciDevice::disableIntx() {
    if (!intxOn_) return;
    ++stats_.setIrqsCalls;
    if (auto r = device_->disableIrq(VFIO_PCI_INTX_IRQ_INDEX); !r) logger().warn("{}: disabling INTx: {}", name_, r.error().describe());
    intx_.reset();
    intxOn_ = false;
}

void VfioPciDevice::msixControlChanged() {
    auto batch = platform_.msi->batch();  // one routing-table push for every vector touched here
    const bool wasOn = msix_->table->enabled();
    if (auto r = msix_->table->writeControl(config_.get16(msix_->cap + PCI_MSIX_FLAGS)); !r)
        logger().error("{}: enabling MSI-X: {}", name_, r.error().describe());
    else if (!wasOn && msix_->table->enabled())
        logger().debug("{}: MSI-X on, {} of {} vectors in use", name_, msixVectorsInUse(), msix_->vectors());
    if (wasOn && !msix_->table->enabled()) enableIntx();  // the guest turned MSI-X off
    notePeakIrq();
    if (auto r = batch->finish(); !r) logger().error("{}: MSI-X routes: {}", name_, r.error().describe());
}

Result<void> VfioPciDevice::msixEnable() {
    // The kernel refuses a second index while one is active: everything else off first.
    disableIntx();
    if (msi_ && msi_->enabled) disableMsi();
    if (auto r = msix_->dynamic ? enableMsixInUse() : enableMsixAll(); !r) {
        msix_->routes.clear();
        enableIntx();
        return r;
    }
    return success();
}

Result<void> VfioPciDevice::enableMsixAll() {
    // A host without dynamic MSI-X (NORESIZE) cannot add vectors once MSI-X is on: every entry
    // gets its host vector and route now.
    for (unsigned v = 0; v < msix_->vectors(); ++v)
        msix_->routes.push_back(TRY_CTX(createMsixRoute(v), fmt::format("MSI-X vector {}", v)));
    return enableVectors(VFIO_PCI_MSIX_IRQ_INDEX, msix_->routes);
}

Result<void> VfioPciDevice::enableMsixInUse() {
    // Dynamic MSI-X (NORESIZE clear, vfio_msi_alloc_irq()): a host vector and a KVM route only for
    // the entries the guest uses, i.e. has unmasked, now or later (msixVectorChanged()). A driver
    // enables MSI-X with every entry masked and unmasks the vectors it requests, so a 2,048-entry
    // table costs what its vectors in use cost. The kernel needs one vector to switch MSI-X on:
    // vector 0, without an eventfd unless the guest uses it already. (An entry never unmasked has
    // no route, so its pending bit is not shown: the device's message for it has nowhere to go.)
    msix_->routes.resize(msix_->vectors());
    int32_t fd0 = -1;
    if (msixEntryInUse(0)) {
        msix_->routes[0] = TRY_CTX(createMsixRoute(0), "MSI-X vector 0");
        fd0 = msix_->routes[0]->eventFd();
    }
    ++stats_.setIrqsCalls;
    TRY(device_->setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, std::span<const int32_t>(&fd0, 1)));
    for (unsigned v = 1; v < msix_->vectors(); ++v)
        if (msixEntryInUse(v)) useMsixVector(v);
    return success();
}

Result<std::unique_ptr<pci::MsiRoute>> VfioPciDevice::createMsixRoute(unsigned v) {
    return platform_.msi->createRoute(msix_->table->message(v), msix_->table->masked(v), fmt::format("{} MSI-X {}", name_, v));
}

void VfioPciDevice::useMsixVector(unsigned v) {
    auto route = createMsixRoute(v);
    if (!route) {
        logger().error("{}: MSI-X vector {}: {}; it will not fire", name_, v, route.error().describe());
        return;
    }
    const int32_t fd = (*route)->eventFd();
    ++stats_.setIrqsCalls;
    if (auto r = device_->setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, v, std::span<const int32_t>(&fd, 1)); !r) {
        logger().error("{}: MSI-X vector {}: the host gave it no interrupt: {}; it will not fire", name_, v,
                       r.error().describe());
        return;
    }
    msix_->routes[v] = std::move(route).value();
    notePeakIrq();
}

bool VfioPciDevice::msixEntryInUse(unsigned v) const { return !msix_->table->entryMasked(v); }

unsigned VfioPciDevice::msixVectorsInUse() const {
    return static_cast<unsigned>(std::count_if(msix_->routes.begin(), msix_->routes.end(), [](auto& r) { return r != nullptr; }));
}

void VfioPciDevice::msixVectorChanged(unsigned v, const pci::MsiMessage& msg, bool masked) {
    if (v >= msix_->routes.size()) return;  // beyond what the host gave (enableVectors())
    if (!msix_->routes[v]) {
        if (msixEntryInUse(v)) useMsixVector(v);  // dynamic MSI-X: first unmask (message as it is now)
        return;
    }
    auto& route = *msix_->routes[v];
    // Linux rewrites an entry only while it is masked; follow the message whenever it changes.
    if (auto r = route.setMessage(msg); !r) logger().error("{}: MSI-X {}: {}", name_, v, r.error().describe());
    else ++stats_.routeMessageUpdates;
    if (route.masked() != masked) {
        ++stats_.routeMaskChanges;
        if (auto r = route.setMasked(masked); !r) logger().error("{}: MSI-X {} mask: {}", name_, v, r.error().describe());
    }
}

void VfioPciDevice::msixDisable() {
    ++stats_.setIrqsCalls;
    if (auto r = device_->disableIrq(VFIO_PCI_MSIX_IRQ_INDEX); !r) logger().warn("{}: disabling MSI-X: {}", name_, r.error().describe());
    msix_->routes.clear();
}

bool VfioPciDevice::msixPending(unsigned v) const {
    return v < msix_->routes.size() && msix_->routes[v] && msix_->routes[v]->pending();
}

pci::MsiMessage VfioPciDevice::msiMessage(unsigned v) const {
    uint64_t addr = config_.get32(msi_->cap + PCI_MSI_ADDRESS_LO);
    if (msi_->is64) addr |= uint64_t(config_.get32(msi_->cap + PCI_MSI_ADDRESS_HI)) << 32;
    // Multiple message: the low bits carry the vector (as many as the enabled count needs; the
    // kernel may give a count that is not a power of two, and programs the next one up).
    const unsigned n = std::bit_ceil(static_cast<unsigned>(msi_->routes.size()));
    uint32_t data = config_.get16(msi_->dataOff());
    if (n > 1) data = (data & ~(n - 1)) | v;
    return {addr, data, requesterId_};
}

void VfioPciDevice::msiChanged() {
    auto batch = platform_.msi->batch();  // one routing-table push for every vector touched here
    msiApply();
    if (auto r = batch->finish(); !r) logger().error("{}: MSI routes: {}", name_, r.error().describe());
}

void VfioPciDevice::msiApply() {
    const uint16_t ctl = config_.get16(msi_->cap + PCI_MSI_FLAGS);
    const bool enable = ctl & PCI_MSI_FLAGS_ENABLE;
    const uint32_t maskBits = msi_->perVectorMask ? config_.get32(msi_->maskOff()) : 0;
    if (enable && !msi_->enabled) {
        disableIntx();
        if (msix_) msix_->table->disable();
        const unsigned n = std::min(1u << ((ctl & PCI_MSI_FLAGS_QSIZE) >> 4), msi_->maxVectors);
        msi_->routes.resize(n);  // sized first: msiMessage() derives the vector bits from it
        for (unsigned v = 0; v < n; ++v) {
            auto route = platform_.msi->createRoute(msiMessage(v), maskBits & (1u << v), fmt::format("{} MSI {}", name_, v));
            if (!route) {
                logger().error("{}: MSI vector {}: {}", name_, v, route.error().describe());
                msi_->routes.clear();
                enableIntx();
                return;
            }
            msi_->routes[v] = std::move(route).value();
        }
        if (auto r = enableVectors(VFIO_PCI_MSI_IRQ_INDEX, msi_->routes); !r) {
            logger().error("{}: enabling MSI ({} vectors): {}", name_, n, r.error().describe());
            msi_->routes.clear();
            enableIntx();
            return;
        }
        // Fewer vectors than the guest enabled: the kernel programmed the device's multiple
        // message enable for that many, so the vector bits of the data follow the smaller count.
        if (msi_->routes.size() < n)
            for (unsigned v = 0; v < msi_->routes.size(); ++v)
                if (auto r = msi_->routes[v]->setMessage(msiMessage(v)); !r)
                    logger().error("{}: MSI {}: {}", name_, v, r.error().describe());
        msi_->enabled = true;
        notePeakIrq();
    } else if (!enable && msi_->enabled) {
        disableMsi();
        enableIntx();
    } else if (msi_->enabled) {
        for (unsigned v = 0; v < msi_->routes.size(); ++v) {
            auto& route = *msi_->routes[v];
            if (auto r = route.setMessage(msiMessage(v)); !r) logger().error("{}: MSI {}: {}", name_, v, r.error().describe());
            else ++stats_.routeMessageUpdates;
            const bool masked = maskBits & (1u << v);
            if (route.masked() != masked) {
                ++stats_.routeMaskChanges;
                if (auto r = route.setMasked(masked); !r) logger().error("{}: MSI {} mask: {}", name_, v, r.error().describe());
            }
        }
    }
}

Result<void> VfioPciDevice::enableVectors(uint32_t index, std::vector<std::unique_ptr<pci::MsiRoute>>& routes) {
    auto fdsOf = [&](size_t n) {
        std::vector<int32_t> fds;
        for (size_t v = 0; v < n; ++v) fds.push_back(routes[v]->eventFd());
        return fds;
    };
    const char* what = vfio::irqIndexName(index);
    const auto asked = static_cast<uint32_t>(routes.size());
    ++stats_.setIrqsCalls;
    const uint32_t offered = TRY(device_->enableVectors(index, fdsOf(asked)));
    if (offered == asked) return success();
    // The host is short of interrupt vectors (vfio_msi_enable() returned pci_alloc_irq_vectors()'s
    // count): nothing is on. Fewer vectors beat none (INTx is already off and the guest listens on
    // MSI/MSI-X now), so retry with what is offered, as QEMU does for MSI.
    logger().warn("{}: {}: VFIO_DEVICE_SET_IRQS: the host has {} of the {} vectors the guest enabled; running with {} "
                  "(vectors {} to {} will not fire)",
                  name_, what, offered, asked, offered, offered, asked - 1);
    ++stats_.setIrqsCalls;
    const uint32_t again = TRY_CTX(device_->enableVectors(index, fdsOf(offered)),
                                   fmt::format("retry with the {} of {} vectors the host offered", offered, asked));
    if (again != offered)
        return Error(fmt::format("VFIO_DEVICE_SET_IRQS {} {}: the host offered {} of {} vectors, then {} of those {} on "
                                 "the retry",
                                 device_->name(), what, offered, asked, again, offered),
                     ENOSPC);
    routes.resize(offered);
    return success();
}

void VfioPciDevice::disableMsi() {
    ++stats_.setIrqsCalls;
    if (auto r = device_->disableIrq(VFIO_PCI_MSI_IRQ_INDEX); !r) logger().warn("{}: disabling MSI: {}", name_, r.error().describe());
    msi_->routes.clear();
    msi_->enabled = false;
}

void VfioPciDevice::refreshMsiPending() {
    uint32_t pending = 0;
    for (unsigned v = 0; v < msi_->routes.size(); ++v)
        if (msi_->routes[v]->pending()) pending |= 1u << v;
    config_.emulate(msi_->maskOff() + 4, 4);
    config_.set32(msi_->maskOff() + 4, pending);
}

void VfioPciDevice::irqsOff() {
    if (msix_) msix_->table->disable();
    if (msi_ && msi_->enabled) disableMsi();
    disableIntx();
}

unsigned VfioPciDevice::vectorsInUse() const {
    switch (irqMode()) {
        case IrqMode::Msix: return msixVectorsInUse();
        case IrqMode::Msi: return static_cast<unsigned>(msi_->routes.size());
        case IrqMode::Intx:  // one line, no message vectors
        case IrqMode::None: return 0;
    }
    return 0;
}

void VfioPciDevice::notePeakIrq() {
    stats_.peakIrqMode = std::max(stats_.peakIrqMode, irqMode());
    stats_.peakVectors = std::max(stats_.peakVectors, vectorsInUse());
}

IrqMode VfioPciDevice::irqMode() const {
    if (msix_ && msix_->table->enabled()) return IrqMode::Msix;
    if (msi_ && msi_->enabled) return IrqMode::Msi;
    if (intxOn_) return IrqMode::Intx;
    return IrqMode::None;
}

// ---------------------------------------------------------------- reset, stats, teardown

Result<void> VfioPciDevice::functionLevelReset() {
    std::lock_guard lock(mutex_);
    return resetLocked();
}

Result<uint16_t> VfioPciDevice::quiesce() {
    // INTx-disable goes to a known state (clear) too; VFIO virtualises it and routes INTx itself.
    const uint16_t cmd = TRY(device_->readConfigObj<uint16_t>(PCI_COMMAND));
    const uint16_t off = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;
    if (cmd & off) TRY(device_->writeConfigObj<uint16_t>(PCI_COMMAND, cmd & ~off));
    return cmd;
}

Result<VfioPciDevice::ResetPlan> VfioPciDevice::planReset(vfio::OpenSiblings siblings) {
    if (device_->canReset()) return ResetPlan{};
    // No function reset: a hot reset (secondary bus or slot), if this VM owns everything it reaches.
    auto hot = device_->planHotReset(siblings);
    if (!hot) return std::move(hot).error().withContext("no function reset (VFIO_DEVICE_FLAGS_RESET clear), and no hot reset");
    return ResetPlan{std::move(hot).value()};
}

Result<void> VfioPciDevice::doReset(const ResetPlan& plan) {
    if (plan.hot) {
        TRY(device_->hotReset(*plan.hot));
        logger().info("{}: hot reset (it reset {})", name_, fmt::join(plan.hot->affected, ", "));
    } else {
        TRY(device_->reset());
    }
    ++stats_.resets;
    return success();
}

Result<void> VfioPciDevice::resetLocked() {
    // Check first: when no reset can be done, the guest's view and the device stay as they are.
    auto plan = TRY_CTX(planReset(vfio::OpenSiblings::Refuse), "refused, nothing was changed");
    const uint16_t cmd = TRY_CTX(quiesce(), "refused, nothing was changed");
    // What a function sees after FLR: interrupts off, BARs unprogrammed, decoding and bus mastering off.
    irqsOff();
    bars_->deactivateAll([this](unsigned i, uint64_t gpa) { return deactivateBar(i, gpa); });
    // vfio-pci puts the function in D0 before any reset (vfio_pci_ioctl_reset(),
    // vfio_pci_dev_set_hot_reset()), failed or not.
    pmD3hot_ = false;
    if (auto r = doReset(plan); !r) {
        restoreAfterFailedReset(cmd);
        return std::move(r).error().withContext("failed, the device and what the guest sees are as before");
    }
    // The kernel restored the config state it saved before the reset, which quiesce() left without
    // decode and bus mastering; the emulated registers go to their reset values here.
    config_.set16(PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE));
    for (unsigned i = 0; i < 6; ++i) bars_->program(i, 0);
    config_.set32(PCI_ROM_ADDRESS, 0);
    if (msi_) {
        config_.set16(msi_->cap + PCI_MSI_FLAGS, config_.get16(msi_->cap + PCI_MSI_FLAGS) & ~(PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE));
        for (uint32_t o = PCI_MSI_ADDRESS_LO; o < msi_->size(); ++o) config_.set8(msi_->cap + o, 0);
    }
    if (msix_) {
        config_.set16(msix_->cap + PCI_MSIX_FLAGS, msix_->vectors() - 1);
        msix_->table->reset();
    }
    if (pasidCap_) config_.set16(*pasidCap_ + PCI_PASID_CTRL, 0);  // FLR clears PASID Enable
    enableIntx();
    return success();
}

void VfioPciDevice::restoreAfterFailedReset(uint16_t cmd) {
    // The kernel leaves a device whose reset failed in the state it saved before trying, so what
    // quiesce(), irqsOff() and the BAR deactivation undid is put back as the shadow still says:
    // COMMAND, the BARs it decodes, the interrupts the guest enabled. Whatever cannot be put back
    // reads as off afterwards, so the guest never sees "enabled" where nothing is.
    if (auto r = device_->writeConfigObj<uint16_t>(PCI_COMMAND, cmd); !r) {
        logger().error("{}: restoring COMMAND {:#06x} after the failed reset: {}", name_, cmd, r.error().describe());
        auto read = device_->readConfigObj<uint16_t>(PCI_COMMAND);
        const uint16_t now = read ? *read : 0;
        config_.set16(PCI_COMMAND, (config_.get16(PCI_COMMAND) & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) |
                                       (now & (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)));
    }
    updateBars();
    if (msix_) msixControlChanged();
    if (msi_) msiChanged();
    if (irqMode() == IrqMode::None) enableIntx();
    if (msix_ && !msix_->table->enabled())
        config_.set16(msix_->cap + PCI_MSIX_FLAGS, config_.get16(msix_->cap + PCI_MSIX_FLAGS) & ~PCI_MSIX_FLAGS_ENABLE);
    if (msi_ && !msi_->enabled)
        config_.set16(msi_->cap + PCI_MSI_FLAGS, config_.get16(msi_->cap + PCI_MSI_FLAGS) & ~PCI_MSI_FLAGS_ENABLE);
}

Result<void> VfioPciDevice::addPasidCapability(uint8_t maxPasidLog2, bool exec, bool priv) {
    std::lock_guard lock(mutex_);
    if (pasidCap_) return Error(fmt::format("{}: already has a PASID capability at {:#x}", name_, *pasidCap_), EEXIST);
    if (config_.size() <= pci::kConfigSizeLegacy)
        return Error(fmt::format("{}: no extended config space (not PCIe): no PASID capability", name_), EOPNOTSUPP);
    if (maxPasidLog2 == 0 || maxPasidLog2 > 20)
        return Error(fmt::format("{}: Max PASID Width {} is outside 1..20", name_, maxPasidLog2), EINVAL);
    uint16_t at = static_cast<uint16_t>(config_.size() - PCI_EXT_CAP_PASID_SIZEOF);
    if (devicePasidAt_) {
        // The function's own capability says what it can do.
        at = *devicePasidAt_;
        auto own = device_->readConfigObj<uint16_t>(at + PCI_PASID_CAP);
        if (!own) return std::move(own).error().withContext(fmt::format("{}: reading its PASID capability", name_));
        maxPasidLog2 = std::min<uint8_t>(maxPasidLog2, static_cast<uint8_t>((*own >> 8) & 0x1f));
        exec = exec && (*own & PCI_PASID_CAP_EXEC);
        priv = priv && (*own & PCI_PASID_CAP_PRIV);
        if (maxPasidLog2 == 0) return Error(fmt::format("{}: its PASID capability has Max PASID Width 0", name_), EOPNOTSUPP);
    } else {
        // The end of the extended space; refused when a capability the guest sees could reach it.
        for (uint16_t k : keptExtCaps_)
            if (k >= 0xf00)
                return Error(fmt::format("{}: extended capability at {:#x} leaves no certain room for PASID", name_, k),
                             EOPNOTSUPP);
    }
    config_.emulate(at, PCI_EXT_CAP_PASID_SIZEOF);
    config_.forward(at, PCI_EXT_CAP_PASID_SIZEOF, false);
    config_.clearWrite(at, PCI_EXT_CAP_PASID_SIZEOF);
    const uint16_t cap = static_cast<uint16_t>((exec ? PCI_PASID_CAP_EXEC : 0) | (priv ? PCI_PASID_CAP_PRIV : 0) |
                                               (uint16_t(maxPasidLog2) << 8));
    const uint16_t ctrlWritable =
        static_cast<uint16_t>(PCI_PASID_CTRL_ENABLE | (exec ? PCI_PASID_CTRL_EXEC : 0) | (priv ? PCI_PASID_CTRL_PRIV : 0));
    config_.set32(at + PCI_PASID_CAP, cap);  // control 0: PASID off until the guest enables it
    config_.allowWrite(at + PCI_PASID_CTRL, 2, ctrlWritable);
    // Into the chain, in offset order; a null capability heads it at 0x100 when nothing else does.
    std::vector<uint16_t> chain = keptExtCaps_;
    chain.insert(std::upper_bound(chain.begin(), chain.end(), at), at);
    for (size_t i = 0; i < chain.size(); ++i) {
        const uint32_t next = i + 1 < chain.size() ? chain[i + 1] : 0;
        const uint32_t h = chain[i] == at ? (PCI_EXT_CAP_ID_PASID | 1u << 16) : config_.get32(chain[i]);
        config_.emulate(chain[i], 4, 0xfff00000u);
        config_.set32(chain[i], (h & 0x000fffffu) | (next << 20));
    }
    if (chain.front() != 0x100) {
        config_.emulate(0x100, 4);
        config_.forward(0x100, 4, false);
        config_.set32(0x100, uint32_t(chain.front()) << 20);
    }
    keptExtCaps_ = chain;
    pasidCap_ = at;
    logger().info("{}: PASID capability at {:#x}: Max PASID Width {}{}{}", name_, at, maxPasidLog2, exec ? ", Exec" : "",
                  priv ? ", Priv" : "");
    return success();
}

std::optional<uint16_t> VfioPciDevice::pasidCapability() const {
    std::lock_guard lock(mutex_);
    return pasidCap_;
}

uint16_t VfioPciDevice::pasidControl() const {
    std::lock_guard lock(mutex_);
    return pasidCap_ ? config_.get16(*pasidCap_ + PCI_PASID_CTRL) : 0;
}

VfioPciStats VfioPciDevice::stats() const {
    std::lock_guard lock(mutex_);
    VfioPciStats s = stats_;
    s.irqMode = irqMode();
    if (msix_) {
        const auto t = msix_->table->stats();
        s.msixTableReads = t.tableReads;
        s.msixTableWrites = t.tableWrites;
        s.pbaReads = t.pbaReads;
    }
    s.vectors = vectorsInUse();
    for (auto& st : barState_) {
        for (auto& a : st.areas) {
            s.memslots += a.slot ? 1 : 0;
            s.p2pMappings += a.dmaMapped ? 1 : 0;
        }
        for (auto& t : st.traps) s.trappedRanges += t.at ? 1 : 0;
    }
    return s;
}

VfioPciDevice::~VfioPciDevice() {
    std::lock_guard lock(mutex_);
    // 1. Decode and bus mastering off: the device stops its DMA before the mappings go.
    if (auto r = quiesce(); !r) logger().warn("{}: at teardown: {}", name_, r.error().describe());
    // 2. Interrupts off at the device, then the routes (irqfds, GSIs) go.
    irqsOff();
    // 3. BARs: bus ranges, memslots and P2P DMA mappings.
    if (bars_) bars_->deactivateAll([this](unsigned i, uint64_t gpa) { return deactivateBar(i, gpa); });
    // 4. A function without a function reset is hot reset when nothing else this VM drives shares
    // its bus: the kernel's own reset at close (vfio_pci_dev_set_try_reset()) waits until every
    // function of the bus is closed, and a function reset the kernel does at close anyway.
    if (bars_ && !device_->canReset()) {
        if (auto plan = planReset(vfio::OpenSiblings::Refuse); !plan)
            logger().debug("{}: not reset at teardown: {}", name_, plan.error().describe());
        else if (auto r = doReset(*plan); !r)
            logger().warn("{}: reset at teardown: {}", name_, r.error().describe());
    }
    // 5. BAR mmaps, 6. the device fd (the backend detaches it in the close hook).
    for (auto& st : barState_) {
        st.traps.clear();
        st.areas.clear();
    }
    device_.reset();
}

}  // namespace conduit::devices::vfio_pci
