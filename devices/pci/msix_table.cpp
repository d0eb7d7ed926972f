#include "devices/pci/msix_table.h"

#include <linux/pci_regs.h>

#include <algorithm>
#include <cstring>

namespace conduit::devices::pci {

namespace {
constexpr unsigned kEntry = 16;
constexpr unsigned kAddressLo = 0, kAddressHi = 4, kData = 8, kControl = 12;

// [offset, offset + size) inside [start, start + length), without overflow.
bool within(uint64_t offset, uint64_t size, uint64_t start, uint64_t length) {
    return size > 0 && offset >= start && size <= length && offset - start <= length - size;
}
}  // namespace

MsixLayout MsixLayout::fromCapability(uint16_t control, uint32_t table, uint32_t pba) {
    MsixLayout l;
    l.vectors = static_cast<uint16_t>((control & PCI_MSIX_FLAGS_QSIZE) + 1);
    l.tableBar = table & PCI_MSIX_TABLE_BIR;
    l.tableOffset = table & PCI_MSIX_TABLE_OFFSET;
    l.pbaBar = pba & PCI_MSIX_PBA_BIR;
    l.pbaOffset = pba & PCI_MSIX_PBA_OFFSET;
    return l;
}

bool MsixLayout::inTable(unsigned bar, uint64_t offset, uint64_t size) const {
    return bar == tableBar && within(offset, size, tableOffset, tableSize());
}

bool MsixLayout::inPba(unsigned bar, uint64_t offset, uint64_t size) const {
    return bar == pbaBar && within(offset, size, pbaOffset, pbaSize());
}

MsixTable::MsixTable(MsixLayout layout, MsixVectors& vectors)
    : layout_(layout), vectors_(&vectors), table_(layout.tableSize(), 0) {
    for (unsigned v = 0; v < layout_.vectors; ++v) table_[kEntry * v + kControl] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
}

uint32_t MsixTable::word(unsigned v, unsigned field) const {
    uint32_t w;
    std::memcpy(&w, &table_[kEntry * v + field], 4);
    return w;
}

bool MsixTable::entryMasked(unsigned v) const { return word(v, kControl) & PCI_MSIX_ENTRY_CTRL_MASKBIT; }

MsiMessage MsixTable::message(unsigned v) const {
    return {(uint64_t(word(v, kAddressHi)) << 32) | word(v, kAddressLo), word(v, kData), deviceId_};
}

bool MsixTable::access(unsigned bar, uint64_t offset, std::span<uint8_t> data, bool write) {
    if (layout_.inTable(bar, offset, data.size())) {
        const uint64_t at = offset - layout_.tableOffset;
        if (!write) {
            ++stats_.tableReads;
            std::memcpy(data.data(), &table_[at], data.size());
            return true;
        }
        ++stats_.tableWrites;
        std::memcpy(&table_[at], data.data(), data.size());
        if (enabled_) {
            const unsigned first = static_cast<unsigned>(at / kEntry);
            const unsigned last = static_cast<unsigned>((at + data.size() - 1) / kEntry);
            for (unsigned v = first; v <= last; ++v) vectors_->msixVectorChanged(v, message(v), masked(v));
        }
        return true;
    }
    if (layout_.inPba(bar, offset, data.size())) {
        if (!write) readPba(offset - layout_.pbaOffset, data);
        return true;
    }
    return false;
}

void MsixTable::readPba(uint64_t at, std::span<uint8_t> data) {
    ++stats_.pbaReads;
    // Only the vectors whose bits the access covers are asked (a 2,048-entry table has 32 QWORDs).
    for (size_t i = 0; i < data.size(); ++i) {
        uint8_t byte = 0;
        for (unsigned bit = 0; bit < 8; ++bit) {
            const uint64_t v = (at + i) * 8 + bit;
            if (v < layout_.vectors && vectors_->msixPending(static_cast<unsigned>(v))) byte |= uint8_t(1u << bit);
        }
        data[i] = byte;
    }
}

Result<void> MsixTable::writeControl(uint16_t control) {
    const bool enable = control & PCI_MSIX_FLAGS_ENABLE;
    // The function mask first: vectors brought up now start masked under it.
    functionMask_ = control & PCI_MSIX_FLAGS_MASKALL;
    if (enable && !enabled_) {
        TRY(vectors_->msixEnable());
        enabled_ = true;
    } else if (!enable && enabled_) {
        disable();
    } else if (enabled_) {
        for (unsigned v = 0; v < layout_.vectors; ++v) vectors_->msixVectorChanged(v, message(v), masked(v));
    }
    return success();
}

void MsixTable::disable() {
    if (!enabled_) return;
    enabled_ = false;
    vectors_->msixDisable();
}

void MsixTable::reset() {
    disable();
    functionMask_ = false;
    std::fill(table_.begin(), table_.end(), 0);
    for (unsigned v = 0; v < layout_.vectors; ++v) table_[kEntry * v + kControl] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
}

}  // namespace conduit::devices::pci
