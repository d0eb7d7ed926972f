// The arm64 guest's device tree, written with libfdt's sequential-write API from a plain
// description (no KVM, no Machine): memory, cpus, psci, the GICv3 with its ITS as msi-controller,
// the architected timer, the 16550 UART, chosen, and a generic ECAM PCIe host bridge whose MSIs go
// to the ITS with the requester id as device id.
//
// More nodes later (the virtual SMMUv3 node and the host bridge's iommu-map, issue 13) come in
// through FdtExtension, so this file does not grow a case per feature. libfdt's errors come back
// as Errors naming the node (and property) being written.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "memory/address_range.h"

namespace conduit::vmm::arm64 {

// GIC interrupt specifier values (the GICv3 binding's three cells).
inline constexpr uint32_t kFdtIrqSpi = 0;
inline constexpr uint32_t kFdtIrqPpi = 1;
inline constexpr uint32_t kFdtIrqEdgeRising = 1;
inline constexpr uint32_t kFdtIrqLevelHigh = 4;

// One sequential-write device tree. Nodes and properties are appended in order; every call names
// its node in the error it may return. Not copyable (it owns the buffer being written).
class FdtWriter {
public:
    // A blob of at most `capacity` bytes; writing more fails with an error naming the node, and
    // outOfSpace() then says so (buildFdt() retries with a bigger buffer).
    static Result<FdtWriter> create(size_t capacity);

    Result<void> beginNode(std::string_view name);
    Result<void> endNode();
    Result<void> property(std::string_view name, std::span<const uint8_t> bytes);
    Result<void> propertyEmpty(std::string_view name);
    Result<void> propertyU32(std::string_view name, uint32_t value);
    Result<void> propertyU64(std::string_view name, uint64_t value);
    // Big-endian 32-bit cells, as device tree properties are.
    Result<void> propertyCells(std::string_view name, std::span<const uint32_t> cells);
    Result<void> propertyCells(std::string_view name, std::initializer_list<uint32_t> cells) {
        return propertyCells(name, std::span<const uint32_t>(cells.begin(), cells.size()));
    }
    Result<void> propertyString(std::string_view name, std::string_view value);
    // A string list ("a\0b\0"), e.g. a compatible with fallbacks.
    Result<void> propertyStrings(std::string_view name, std::initializer_list<std::string_view> values);
    // Closes the tree (every node must be ended) and returns the blob, trimmed to its size.
    Result<std::vector<uint8_t>> finish();

    // "/", "/intc@7000000/its@7ff0000": the node being written, for messages.
    std::string path() const;
    bool outOfSpace() const { return outOfSpace_; }

private:
    explicit FdtWriter(size_t capacity) : buf_(capacity) {}
    Result<void> check(int err, std::string_view what, std::string_view property = {});

    std::vector<uint8_t> buf_;
    std::vector<std::string> stack_;  // open nodes; the root's name is ""
    bool outOfSpace_ = false;
    bool finished_ = false;
};

// Phandles of the nodes others refer to. 0 = not present.
struct FdtPhandles {
    uint32_t gic = 0;
    uint32_t its = 0;
    std::map<std::string, uint32_t> extra;  // taken by extensions, by a name of their choosing
    uint32_t next = 1;
    uint32_t allocate() { return next++; }
};

// A hook for nodes the base description does not know (the vSMMU in issue 13). buildFdt() may
// call the hooks more than once (it retries with a bigger buffer), so they must only write.
class FdtExtension {
public:
    virtual ~FdtExtension() = default;
    // Takes the phandles this extension's nodes will carry, before anything is written.
    virtual void reservePhandles(FdtPhandles&) const {}
    // Writes extra nodes under the root (after the base nodes, before /chosen).
    virtual Result<void> writeRootNodes(FdtWriter&, const FdtPhandles&) const { return success(); }
    // Writes extra properties of the PCI host bridge node (e.g. iommu-map), and then, if any, child
    // nodes of it (sequential write: subnodes follow every property; it is the node's last step).
    virtual Result<void> writePciHostProperties(FdtWriter&, const FdtPhandles&) const { return success(); }
};

struct FdtGic {
    memory::AddressRange distributor;
    std::vector<memory::AddressRange> redistributorRegions;  // one region of vCPUs x 128 KiB, usually
    std::optional<memory::AddressRange> its;                 // the ITS, written as msi-controller
};

struct FdtUart {
    memory::AddressRange reg;
    uint32_t spi = 0;
    uint32_t clockHz = 1'843'200;  // the 16550's usual crystal: divisor 1 = 115200 baud
};

struct FdtPciIntx {
    unsigned slot;  // device number on bus 0
    unsigned pin;   // 1 = INTA .. 4 = INTD
    uint32_t spi;
};

struct FdtPci {
    memory::AddressRange ecam;  // 1 MiB per bus, covering busFirst..busLast
    uint32_t busFirst = 0;
    uint32_t busLast = 0;
    memory::AddressRange mmio32;
    memory::AddressRange mmio64;  // empty: none
    std::vector<FdtPciIntx> intx;  // interrupt-map, matched on (slot, pin)
};

struct FdtChosen {
    std::string bootargs;
    std::optional<memory::AddressRange> initrd;
};

struct FdtDescription {
    std::vector<memory::AddressRange> memory;
    std::vector<uint64_t> cpuMpidrs;  // MPIDR_EL1 of each vCPU, as KVM reports it; index = vCPU
    FdtGic gic;
    // The timer's PPIs: secure physical, non-secure physical, virtual, hypervisor.
    std::vector<uint32_t> timerPpis{13, 14, 11, 10};
    std::optional<FdtUart> uart;  // also /chosen's stdout-path and serial0
    std::optional<FdtPci> pci;
    FdtChosen chosen;
    std::vector<const FdtExtension*> extensions;
};

// The device tree for `desc`, at most 2 MiB (the arm64 boot protocol's limit).
Result<std::vector<uint8_t>> buildFdt(const FdtDescription& desc);

}  // namespace conduit::vmm::arm64
