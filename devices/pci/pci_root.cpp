#include "devices/pci/pci_root.h"

#include <linux/pci_regs.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include <fmt/format.h>

namespace conduit::devices::pci {

std::string formatDevfn(uint8_t bus, uint8_t devfn) {
    return fmt::format("{:02x}:{:02x}.{}", bus, devfn >> 3, devfn & 7);
}

// 00:00.0: a host bridge with nothing to configure (every register read-only).
class PciRoot::HostBridge final : public PciDevice {
public:
    HostBridge() {
        config_.set16(PCI_VENDOR_ID, kHostBridgeVendor);
        config_.set16(PCI_DEVICE_ID, kHostBridgeDevice);
        config_.set8(PCI_CLASS_DEVICE + 1, 0x06);  // bridge
        config_.set8(PCI_CLASS_DEVICE, 0x00);      // host bridge
        config_.set8(PCI_HEADER_TYPE, PCI_HEADER_TYPE_NORMAL);
        config_.emulateAll();
    }
    std::string name() const override { return "00:00.0 host bridge"; }
    uint32_t configSize() const override { return kConfigSizeLegacy; }
    void configRead(uint32_t offset, std::span<uint8_t> data) override { config_.mergeRead(offset, data); }
    void configWrite(uint32_t, std::span<const uint8_t>) override {}

private:
    ConfigSpace config_;
};

// Mechanism #1: a 32-bit CONFIG_ADDRESS at 0xCF8 (bit 31 enable, bus 23:16, devfn 15:8,
// register 7:2) and the data window 0xCFC-0xCFF, accessed as bytes, words or a dword.
class PciRoot::ConfigPorts final : public BusDevice {
public:
    explicit ConfigPorts(PciRoot& root) : root_(root) {}
    std::string name() const override { return "pci-config@0xcf8"; }
    void read(uint64_t offset, std::span<uint8_t> data) override {
        if (offset < 4) {
            if (offset == 0 && data.size() == 4) {
                uint32_t v = address_.load();
                std::memcpy(data.data(), &v, 4);
            } else {
                std::fill(data.begin(), data.end(), 0xff);
            }
            return;
        }
        std::fill(data.begin(), data.end(), 0xff);
        uint32_t a = address_.load();
        uint32_t off = (a & 0xfc) + static_cast<uint32_t>(offset - 4);
        if (!(a & 0x80000000u) || !validConfigAccess(off, data.size(), 256)) return;
        root_.configRead(static_cast<uint8_t>(a >> 16), static_cast<uint8_t>(a >> 8), off, data);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (offset < 4) {
            // Only a dword write to 0xCF8 latches the address (byte writes to 0xCF9 are the
            // reset-control register on a PC; not emulated).
            if (offset == 0 && data.size() == 4) {
                uint32_t v;
                std::memcpy(&v, data.data(), 4);
                address_.store(v & 0x80fffffcu);
            }
            return;
        }
        uint32_t a = address_.load();
        uint32_t off = (a & 0xfc) + static_cast<uint32_t>(offset - 4);
        if (!(a & 0x80000000u) || !validConfigAccess(off, data.size(), 256)) return;
        root_.configWrite(static_cast<uint8_t>(a >> 16), static_cast<uint8_t>(a >> 8), off, data);
    }

private:
    PciRoot& root_;
    // One latch for the VM (as on hardware); guests serialise the address/data pair themselves.
    std::atomic<uint32_t> address_{0};
};

class PciRoot::Ecam final : public BusDevice {
public:
    explicit Ecam(PciRoot& root) : root_(root) {}
    std::string name() const override { return "pci-ecam"; }
    void read(uint64_t offset, std::span<uint8_t> data) override {
        std::fill(data.begin(), data.end(), 0xff);
        uint32_t reg = offset & 0xfff;
        if (!validConfigAccess(reg, data.size(), 4096)) return;
        root_.configRead(static_cast<uint8_t>(offset >> 20), static_cast<uint8_t>(offset >> 12), reg, data);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        uint32_t reg = offset & 0xfff;
        if (!validConfigAccess(reg, data.size(), 4096)) return;
        root_.configWrite(static_cast<uint8_t>(offset >> 20), static_cast<uint8_t>(offset >> 12), reg, data);
    }

private:
    PciRoot& root_;
};

PciRoot::PciRoot() : ports_(std::make_shared<ConfigPorts>(*this)), ecam_(std::make_shared<Ecam>(*this)) {
    devices_[0] = std::make_shared<HostBridge>();
}

PciRoot::~PciRoot() = default;

Result<uint8_t> PciRoot::nextFreeSlot() const {
    std::lock_guard lock(mutex_);
    for (uint8_t slot = 1; slot < 32; ++slot)
        if (!devices_[slot << 3]) return slot;
    return Error("PCI bus 0 is full (31 device slots in use)", ENOSPC);
}

Result<uint8_t> PciRoot::addDevice(std::shared_ptr<PciDevice> device, std::optional<uint8_t> slot) {
    if (!slot) slot = TRY(nextFreeSlot());
    if (*slot == 0 || *slot >= 32) return Error(fmt::format("PCI slot {} for {}: slots are 1..31", *slot, device->name()), EINVAL);
    std::lock_guard lock(mutex_);
    uint8_t devfn = static_cast<uint8_t>(*slot << 3);
    if (devices_[devfn])
        return Error(fmt::format("PCI slot 00:{:02x}.0 for {} is taken by {}", *slot, device->name(), devices_[devfn]->name()), EBUSY);
    device->placed(0, devfn);
    devices_[devfn] = std::move(device);
    return devfn;
}

void PciRoot::removeDevice(uint8_t devfn) {
    std::lock_guard lock(mutex_);
    if (devfn != 0) devices_[devfn].reset();
}

std::shared_ptr<PciDevice> PciRoot::device(uint8_t devfn) const {
    std::lock_guard lock(mutex_);
    return devices_[devfn];
}

std::vector<std::pair<uint8_t, std::shared_ptr<PciDevice>>> PciRoot::devices() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<uint8_t, std::shared_ptr<PciDevice>>> out;
    for (unsigned i = 0; i < 256; ++i)
        if (devices_[i]) out.emplace_back(static_cast<uint8_t>(i), devices_[i]);
    return out;
}

void PciRoot::configRead(uint8_t bus, uint8_t devfn, uint32_t offset, std::span<uint8_t> data) const {
    std::fill(data.begin(), data.end(), 0xff);
    if (bus != 0) return;
    auto dev = device(devfn);
    if (!dev || !validConfigAccess(offset, data.size(), dev->configSize())) return;
    dev->configRead(offset, data);
}

void PciRoot::configWrite(uint8_t bus, uint8_t devfn, uint32_t offset, std::span<const uint8_t> data) const {
    if (bus != 0) return;
    auto dev = device(devfn);
    if (!dev || !validConfigAccess(offset, data.size(), dev->configSize())) return;
    dev->configWrite(offset, data);
}

}  // namespace conduit::devices::pci
