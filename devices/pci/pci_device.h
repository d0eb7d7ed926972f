// What the PCI root needs from a function on its bus, and the BAR bookkeeping every function with
// BARs shares (PciBars): BAR registers with sizing, enable/disable on COMMAND, and activate /
// deactivate callbacks when the guest enables, disables or moves a BAR (kvmtool's model, which
// makes relocation one deactivate + one activate).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "base/result.h"
#include "devices/pci/config_space.h"

namespace conduit::devices::pci {

class PciDevice {
public:
    virtual ~PciDevice() = default;
    virtual std::string name() const = 0;
    // Config space size (256 conventional, 4096 PCIe); accesses beyond it read all-ones.
    virtual uint32_t configSize() const = 0;
    // `offset` + data.size() (1, 2 or 4, naturally aligned) lies inside configSize(). Called from
    // vCPU threads concurrently: the device serialises itself.
    virtual void configRead(uint32_t offset, std::span<uint8_t> data) = 0;
    virtual void configWrite(uint32_t offset, std::span<const uint8_t> data) = 0;
    // The root put the function at bus:devfn (before the guest can reach it): its requester id,
    // which its MSIs carry as their device id (devices/msi_message.h).
    virtual void placed(uint8_t bus, uint8_t devfn) {
        (void)bus;
        (void)devfn;
    }
};

enum class BarType { None, Io, Mem32, Mem64 };

struct BarInfo {
    BarType type = BarType::None;
    uint64_t size = 0;  // power of two; 0 = no BAR
    bool prefetchable = false;
    bool present() const { return type != BarType::None && size != 0; }
    bool isMemory() const { return type == BarType::Mem32 || type == BarType::Mem64; }
};

constexpr unsigned kRomBar = 6;  // index used for the expansion ROM in PciBars
const char* barTypeName(BarType t);

// The BAR registers (0x10-0x27) and the ROM BAR (0x30) of a type-0 header inside a ConfigSpace.
class PciBars {
public:
    using Callback = std::function<Result<void>(unsigned index, uint64_t address)>;

    // Installs the masks: BAR registers emulated, address bits writable down to the size (so a
    // write of all-ones reads back the size mask), type bits read-only; an absent BAR reads 0.
    // The upper half of a 64-bit BAR is the next index and has type None here.
    PciBars(ConfigSpace& config, std::array<BarInfo, 6> bars, uint64_t romSize);

    const BarInfo& info(unsigned index) const { return bars_[index]; }
    uint64_t romSize() const { return romSize_; }
    // The address programmed in the registers (whether or not decoding is on).
    uint64_t programmed(unsigned index) const;
    // Where the BAR is decoded now (enabled, and programmed to a usable address), if it is.
    std::optional<uint64_t> active(unsigned index) const { return active_[index]; }
    // Firmware's role: writes an address into the registers (no callback until update()).
    void program(unsigned index, uint64_t address);

    // Recomputes which BARs are decoded where and calls deactivate(old) / activate(new) for each
    // change, in index order (all deactivations first, so a swap of two BARs never overlaps).
    // A failing callback is logged and leaves that BAR inactive. Call after every config write.
    void update(const Callback& activate, const Callback& deactivate);
    // Deactivates everything (teardown, reset).
    void deactivateAll(const Callback& deactivate);

    // Why `programmed` is not usable as an address ("" when it is): zero, sizing pattern,
    // beyond 32 bits for a 32-bit BAR.
    std::string unusableReason(unsigned index) const;

private:
    std::optional<uint64_t> wanted(unsigned index) const;

    ConfigSpace& config_;
    std::array<BarInfo, 6> bars_;
    uint64_t romSize_;
    std::array<std::optional<uint64_t>, 7> active_{};
};

}  // namespace conduit::devices::pci
