// MsixTable: the guest's view of a function's MSI-X (PCI Local Bus 3.0 §6.8.2): the vector table,
// the Pending Bit Array, and the Enable and Function Mask bits of Message Control. Any PCI function
// that presents MSI-X uses it (the VFIO passthrough device now, a virtio transport next), as
// cloud-hypervisor's MsixConfig serves both of its.
//
// It keeps the table's bytes and works out what a guest access means: which vectors a table write
// touched, whether MSI-X went on or off, what each live vector's message and effective mask
// (entry mask or function mask) are now. What a vector is for the hypervisor (a route, an irqfd, a
// host vector) belongs to the owner, told through MsixVectors. The PBA reads what the owner says is
// pending.
//
// Accesses: anything wholly inside the table or the PBA is the table's. The spec asks for aligned
// DWORD or QWORD accesses and leaves others undefined; here any size or alignment acts on exactly
// the bytes it covers (a write touching two entries re-evaluates both), as the VFIO device did
// before this was split out. An access that runs past either end is not the table's (the owner
// decides: VFIO forwards it, and the kernel drops what falls on the real table). PBA writes are
// ignored (read-only).
//
// Not thread-safe, and callbacks run inside the calls that cause them: the owner serialises
// (VfioPciDevice calls it under its own lock).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "devices/msi_message.h"

namespace conduit::devices::pci {

// Where the table and PBA are, as the capability's Table and PBA registers say.
struct MsixLayout {
    uint16_t vectors = 0;  // 1..2048
    unsigned tableBar = 0, pbaBar = 0;
    uint64_t tableOffset = 0, pbaOffset = 0;

    // From the capability: Message Control (table size) and the Table / PBA offset-BIR registers.
    static MsixLayout fromCapability(uint16_t control, uint32_t table, uint32_t pba);
    uint64_t tableSize() const { return 16ull * vectors; }
    uint64_t pbaSize() const { return (vectors + 63ull) / 64 * 8; }  // whole QWORDs
    bool inTable(unsigned bar, uint64_t offset, uint64_t size) const;
    bool inPba(unsigned bar, uint64_t offset, uint64_t size) const;
};

// The owner of the vectors. Calls come only from MsixTable's writeControl(), access(), disable()
// and reset().
class MsixVectors {
public:
    virtual ~MsixVectors() = default;
    // The guest set MSI-X Enable: bring the vectors up as MsixTable::message() / masked() say.
    // An error leaves MSI-X off (writeControl() returns it; the next write setting Enable retries).
    virtual Result<void> msixEnable() = 0;
    // MSI-X went off (the guest cleared Enable, or the owner called disable() / reset()).
    virtual void msixDisable() = 0;
    // While on: vector `vector`'s entry was written or the function mask changed. `masked` is the
    // effective mask (entry or function). The state may be unchanged (a rewrite of the same bytes).
    virtual void msixVectorChanged(unsigned vector, const MsiMessage& message, bool masked) = 0;
    // For the PBA: the vector was signalled while masked and not delivered yet.
    virtual bool msixPending(unsigned vector) const = 0;
};

class MsixTable {
public:
    struct Stats {
        uint64_t tableReads = 0, tableWrites = 0, pbaReads = 0;
    };

    // At reset: every entry zero with its mask bit set, function mask clear, MSI-X off.
    // `vectors` must outlive the table.
    MsixTable(MsixLayout layout, MsixVectors& vectors);

    const MsixLayout& layout() const { return layout_; }
    // The owner's copy of the messages carry this device id from now on (a PCI function: its
    // requester id once the root placed it).
    void setDeviceId(uint32_t id) { deviceId_ = id; }

    // A guest access to BAR `bar` at `offset`. True when it was the table's or the PBA's (reads
    // filled in), false when not (untouched: the owner handles it).
    bool access(unsigned bar, uint64_t offset, std::span<uint8_t> data, bool write);

    // Message Control as the guest wrote it (only Enable and Function Mask matter). Enable going
    // on calls msixEnable() (and returns its error); off, msixDisable(); while on, a write calls
    // msixVectorChanged() for every vector (the function mask applies to them all).
    Result<void> writeControl(uint16_t control);
    // MSI-X off without the guest asking (the owner moved to MSI, or is tearing down): calls
    // msixDisable() if on. The table and the guest's Message Control stay as they are.
    void disable();
    // Function reset: disable(), then the reset state (every entry masked, function mask clear).
    void reset();

    bool enabled() const { return enabled_; }
    bool functionMasked() const { return functionMask_; }
    bool entryMasked(unsigned vector) const;
    // Entry mask or function mask.
    bool masked(unsigned vector) const { return functionMask_ || entryMasked(vector); }
    MsiMessage message(unsigned vector) const;
    Stats stats() const { return stats_; }

private:
    uint32_t word(unsigned vector, unsigned field) const;
    void readPba(uint64_t at, std::span<uint8_t> data);

    MsixLayout layout_;
    MsixVectors* vectors_;
    std::vector<uint8_t> table_;  // 16 bytes per entry: address lo, address hi, data, vector control
    bool enabled_ = false, functionMask_ = false;
    std::optional<uint32_t> deviceId_;
    Stats stats_;
};

}  // namespace conduit::devices::pci
