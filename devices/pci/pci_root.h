// The PCI root complex of the VM: bus 0 with the host bridge at 00:00.0, reached by the guest
// through configuration mechanism #1 (ports 0xCF8/0xCFC) and through ECAM (MMCONFIG) at
// layout.pciEcam(). Devices are placed at device numbers 1..31, function 0.
//
// Config accesses to absent functions, other buses or beyond a function's config size read
// all-ones and drop writes, as a PC does.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/bus_device.h"
#include "devices/pci/config_space.h"
#include "devices/pci/pci_device.h"

namespace conduit::devices::pci {

// "00:03.0"
std::string formatDevfn(uint8_t bus, uint8_t devfn);

class PciRoot {
public:
    static constexpr uint64_t kConfigAddressPort = 0xcf8;
    static constexpr uint64_t kConfigPortCount = 8;  // 0xCF8-0xCFF
    static constexpr uint16_t kHostBridgeVendor = 0x1b36;  // Red Hat / QEMU: the "gpex" host bridge id
    static constexpr uint16_t kHostBridgeDevice = 0x0008;

    PciRoot();
    ~PciRoot();

    // Places a device at `slot` (1..31) or the lowest free slot; returns its devfn.
    Result<uint8_t> addDevice(std::shared_ptr<PciDevice> device, std::optional<uint8_t> slot = std::nullopt);
    // The lowest free slot (without taking it), or an error when the bus is full.
    Result<uint8_t> nextFreeSlot() const;
    void removeDevice(uint8_t devfn);
    std::shared_ptr<PciDevice> device(uint8_t devfn) const;
    std::vector<std::pair<uint8_t, std::shared_ptr<PciDevice>>> devices() const;

    // A config access by bus/devfn/offset; what both access mechanisms end in.
    void configRead(uint8_t bus, uint8_t devfn, uint32_t offset, std::span<uint8_t> data) const;
    void configWrite(uint8_t bus, uint8_t devfn, uint32_t offset, std::span<const uint8_t> data) const;

    // BusDevices to register: the 0xCF8-0xCFF port range, and the ECAM window (any size up to
    // 256 MiB: offset = bus << 20 | devfn << 12 | register).
    std::shared_ptr<BusDevice> configPorts() { return ports_; }
    std::shared_ptr<BusDevice> ecam() { return ecam_; }

private:
    class HostBridge;
    class ConfigPorts;
    class Ecam;

    mutable std::mutex mutex_;  // the device table (config accesses copy the pointer out)
    std::array<std::shared_ptr<PciDevice>, 256> devices_{};
    std::shared_ptr<BusDevice> ports_;
    std::shared_ptr<BusDevice> ecam_;
};

}  // namespace conduit::devices::pci
