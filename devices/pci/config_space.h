// A PCI function's configuration space as the guest sees it: a shadow copy plus, per byte, which
// bits are emulated (served from the shadow), which of those the guest may change (write mask),
// and whether a guest write to the byte is forwarded to the real device. The passthrough device
// fills the masks from the device's own header and capability chains (QEMU's emulated_config_bits
// / wmask idea); a fully emulated device (the host bridge) marks everything emulated.
//
// Little-endian throughout, as PCI is. Not thread-safe: the owning device serialises access.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace conduit::devices::pci {

constexpr uint32_t kConfigSizeLegacy = 256;
constexpr uint32_t kConfigSizeExpress = 4096;

class ConfigSpace {
public:
    explicit ConfigSpace(uint32_t size = kConfigSizeLegacy)
        : shadow_(size, 0), emulated_(size, 0), writable_(size, 0), forward_(size, 0) {}

    uint32_t size() const { return static_cast<uint32_t>(shadow_.size()); }

    // ---- the shadow (no masks applied: for the device model itself) ----
    uint8_t get8(uint32_t off) const { return shadow_[off]; }
    uint16_t get16(uint32_t off) const { return static_cast<uint16_t>(getN(off, 2)); }
    uint32_t get32(uint32_t off) const { return static_cast<uint32_t>(getN(off, 4)); }
    void set8(uint32_t off, uint8_t v) { shadow_[off] = v; }
    void set16(uint32_t off, uint16_t v) { setN(off, v, 2); }
    void set32(uint32_t off, uint32_t v) { setN(off, v, 4); }

    // ---- masks (bits given as a little-endian value over `len` bytes) ----
    // Bits served from the shadow instead of the device.
    void emulate(uint32_t off, uint32_t len, uint32_t bits = 0xffffffff) { orMask(emulated_, off, len, bits); }
    // Emulated bits the guest may change.
    void allowWrite(uint32_t off, uint32_t len, uint32_t bits = 0xffffffff) { orMask(writable_, off, len, bits); }
    void clearWrite(uint32_t off, uint32_t len) { std::memset(&writable_[off], 0, len); }
    // Bytes whose guest writes go to the device (default: none).
    void forward(uint32_t off, uint32_t len, bool on = true) { std::memset(&forward_[off], on ? 1 : 0, len); }
    void emulateAll() { std::fill(emulated_.begin(), emulated_.end(), 0xff); }

    uint8_t emulatedBits(uint32_t off) const { return emulated_[off]; }
    uint8_t writableBits(uint32_t off) const { return writable_[off]; }
    bool forwarded(uint32_t off) const { return forward_[off] != 0; }
    // True when every bit of [off, off + len) comes from the shadow (no device read needed).
    bool fullyEmulated(uint32_t off, uint32_t len) const {
        for (uint32_t i = 0; i < len; ++i)
            if (emulated_[off + i] != 0xff) return false;
        return true;
    }
    bool anyForwarded(uint32_t off, uint32_t len) const {
        for (uint32_t i = 0; i < len; ++i)
            if (forward_[off + i]) return true;
        return false;
    }

    // ---- the guest's view ----
    // `data` holds the device's bytes for [off, off + size) on entry (anything when fully
    // emulated) and the guest's view on return.
    void mergeRead(uint32_t off, std::span<uint8_t> data) const {
        for (uint32_t i = 0; i < data.size(); ++i)
            data[i] = static_cast<uint8_t>((data[i] & ~emulated_[off + i]) | (shadow_[off + i] & emulated_[off + i]));
    }
    // Applies a guest write to the shadow through the write mask.
    void applyWrite(uint32_t off, std::span<const uint8_t> data) {
        for (uint32_t i = 0; i < data.size(); ++i)
            shadow_[off + i] = static_cast<uint8_t>((shadow_[off + i] & ~writable_[off + i]) | (data[i] & writable_[off + i]));
    }

private:
    // PCI config space is little-endian, and so are the hosts Conduit builds for (x86_64, aarch64):
    // the n low bytes of a value are its first n bytes in memory.
    static_assert(std::endian::native == std::endian::little, "getN/setN copy host integers as PCI's little-endian");
    uint64_t getN(uint32_t off, unsigned n) const {
        uint64_t v = 0;
        std::memcpy(&v, &shadow_[off], n);
        return v;
    }
    void setN(uint32_t off, uint64_t v, unsigned n) { std::memcpy(&shadow_[off], &v, n); }
    static void orMask(std::vector<uint8_t>& m, uint32_t off, uint32_t len, uint32_t bits) {
        for (uint32_t i = 0; i < len; ++i) m[off + i] |= static_cast<uint8_t>(len <= 4 ? (bits >> (8 * i)) : 0xff);
    }

    std::vector<uint8_t> shadow_, emulated_, writable_, forward_;
};

// A config access must be 1, 2 or 4 bytes, naturally aligned, inside the space.
inline bool validConfigAccess(uint32_t off, size_t size, uint32_t space) {
    return (size == 1 || size == 2 || size == 4) && off % size == 0 && off + size <= space;
}

}  // namespace conduit::devices::pci
