#include "devices/pci/pci_device.h"

#include <linux/pci_regs.h>

#include <fmt/format.h>

#include "base/log.h"

namespace conduit::devices::pci {

const char* barTypeName(BarType t) {
    switch (t) {
        case BarType::None: return "none";
        case BarType::Io: return "io";
        case BarType::Mem32: return "mem32";
        case BarType::Mem64: return "mem64";
    }
    return "?";
}

namespace {
uint32_t barReg(unsigned index) { return index == kRomBar ? PCI_ROM_ADDRESS : PCI_BASE_ADDRESS_0 + 4 * index; }
uint32_t typeBits(const BarInfo& b) {
    if (b.type == BarType::Io) return PCI_BASE_ADDRESS_SPACE_IO;
    uint32_t v = b.type == BarType::Mem64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0;
    if (b.prefetchable) v |= PCI_BASE_ADDRESS_MEM_PREFETCH;
    return v;
}
}  // namespace

PciBars::PciBars(ConfigSpace& config, std::array<BarInfo, 6> bars, uint64_t romSize)
    : config_(config), bars_(bars), romSize_(romSize) {
    for (unsigned i = 0; i < 6; ++i) {
        const uint32_t reg = barReg(i);
        config_.emulate(reg, 4);
        config_.clearWrite(reg, 4);
        auto& b = bars_[i];
        if (!b.present()) {
            config_.set32(reg, 0);
            continue;
        }
        if (b.type == BarType::Mem64 && i == 5) {  // no room for the upper half: refuse the BAR
            log::get("devices").warn("64-bit BAR5 has no upper register; hidden");
            b = BarInfo{};
            config_.set32(reg, 0);
            continue;
        }
        const uint64_t sizeMask = ~(b.size - 1);
        config_.set32(reg, typeBits(b));
        const uint32_t low = static_cast<uint32_t>(sizeMask) & (b.type == BarType::Io ? ~0x3u : ~0xfu);
        config_.allowWrite(reg, 4, low);
        if (b.type == BarType::Mem64) {
            config_.emulate(reg + 4, 4);
            config_.set32(reg + 4, 0);
            config_.allowWrite(reg + 4, 4, static_cast<uint32_t>(sizeMask >> 32));
            bars_[i + 1] = BarInfo{};  // the upper half
            ++i;
        }
    }
    config_.emulate(PCI_ROM_ADDRESS, 4);
    config_.clearWrite(PCI_ROM_ADDRESS, 4);
    config_.set32(PCI_ROM_ADDRESS, 0);
    if (romSize_) config_.allowWrite(PCI_ROM_ADDRESS, 4, (static_cast<uint32_t>(~(romSize_ - 1)) & PCI_ROM_ADDRESS_MASK) | PCI_ROM_ADDRESS_ENABLE);
}

uint64_t PciBars::programmed(unsigned index) const {
    if (index == kRomBar) return config_.get32(PCI_ROM_ADDRESS) & PCI_ROM_ADDRESS_MASK;
    const auto& b = bars_[index];
    const uint32_t low = config_.get32(barReg(index));
    switch (b.type) {
        case BarType::Io: return low & PCI_BASE_ADDRESS_IO_MASK;
        case BarType::Mem32: return low & PCI_BASE_ADDRESS_MEM_MASK;
        case BarType::Mem64: return (low & PCI_BASE_ADDRESS_MEM_MASK) | (uint64_t(config_.get32(barReg(index) + 4)) << 32);
        case BarType::None: break;
    }
    return 0;
}

void PciBars::program(unsigned index, uint64_t address) {
    if (index == kRomBar) {
        config_.set32(PCI_ROM_ADDRESS, static_cast<uint32_t>(address & PCI_ROM_ADDRESS_MASK) |
                                           (config_.get32(PCI_ROM_ADDRESS) & PCI_ROM_ADDRESS_ENABLE));
        return;
    }
    const auto& b = bars_[index];
    if (!b.present()) return;
    config_.set32(barReg(index), static_cast<uint32_t>(address) | typeBits(b));
    if (b.type == BarType::Mem64) config_.set32(barReg(index) + 4, static_cast<uint32_t>(address >> 32));
}

std::string PciBars::unusableReason(unsigned index) const {
    const uint64_t size = index == kRomBar ? romSize_ : bars_[index].size;
    const BarType type = index == kRomBar ? BarType::Mem32 : bars_[index].type;
    if (!size || type == BarType::None) return "no such BAR";
    const uint64_t addr = programmed(index);
    if (addr == 0) return "address 0";
    const uint64_t limit = type == BarType::Io ? 0x10000 : type == BarType::Mem64 ? 0 : (1ull << 32);
    const uint64_t sizing = type == BarType::Io ? (~(size - 1) & 0xfffffffcull)
                            : type == BarType::Mem64 ? ~(size - 1)
                                                     : (~(size - 1) & 0xfffffff0ull);
    if (index == kRomBar ? addr == (~(romSize_ - 1) & PCI_ROM_ADDRESS_MASK) : addr == sizing) return "sizing pattern";
    if (addr + size < addr) return "wraps around";
    if (limit && addr + size > limit) return "beyond the BAR's address space";
    return "";
}

std::optional<uint64_t> PciBars::wanted(unsigned index) const {
    const uint16_t cmd = config_.get16(PCI_COMMAND);
    if (index == kRomBar) {
        if (!romSize_ || !(cmd & PCI_COMMAND_MEMORY) || !(config_.get32(PCI_ROM_ADDRESS) & PCI_ROM_ADDRESS_ENABLE)) return {};
    } else {
        const auto& b = bars_[index];
        if (!b.present()) return {};
        if (b.type == BarType::Io ? !(cmd & PCI_COMMAND_IO) : !(cmd & PCI_COMMAND_MEMORY)) return {};
    }
    if (!unusableReason(index).empty()) return {};
    return programmed(index);
}

void PciBars::update(const Callback& activate, const Callback& deactivate) {
    std::array<std::optional<uint64_t>, 7> want;
    for (unsigned i = 0; i < 7; ++i) want[i] = wanted(i);
    for (unsigned i = 0; i < 7; ++i) {
        if (active_[i] && active_[i] != want[i]) {
            if (auto r = deactivate(i, *active_[i]); !r) log::get("devices").error("{}", r.error().describe());
            active_[i].reset();
        }
    }
    for (unsigned i = 0; i < 7; ++i) {
        if (want[i] && !active_[i]) {
            if (auto r = activate(i, *want[i]); !r) {
                log::get("devices").error("{}", r.error().describe());
                continue;
            }
            active_[i] = want[i];
        }
    }
}

void PciBars::deactivateAll(const Callback& deactivate) {
    for (unsigned i = 0; i < 7; ++i) {
        if (!active_[i]) continue;
        if (auto r = deactivate(i, *active_[i]); !r) log::get("devices").error("{}", r.error().describe());
        active_[i].reset();
    }
}

}  // namespace conduit::devices::pci
