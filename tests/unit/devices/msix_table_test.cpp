// pci::MsixTable alone (devices/pci/msix_table.h), against a recording MsixVectors: the table's
// bytes at every width and offset, entry and function mask transitions, Enable on and off, the
// PBA as the owner's pending vectors, and accesses that are not the table's.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <cstring>
#include <set>
#include <vector>

#include "devices/pci/msix_table.h"

using namespace conduit;
using namespace conduit::devices;
using namespace conduit::devices::pci;

namespace {

// What the table told its owner, in order.
struct Recorder final : MsixVectors {
    struct Change {
        unsigned vector;
        MsiMessage message;
        bool masked;
        bool operator==(const Change&) const = default;
    };
    unsigned enables = 0, disables = 0;
    std::vector<Change> changes;
    std::set<unsigned> pending;
    mutable unsigned pendingAsked = 0;
    bool failEnable = false;

    Result<void> msixEnable() override {
        ++enables;
        if (failEnable) return Error("no vectors", ENOSPC);
        return success();
    }
    void msixDisable() override { ++disables; }
    void msixVectorChanged(unsigned v, const MsiMessage& m, bool masked) override { changes.push_back({v, m, masked}); }
    bool msixPending(unsigned v) const override {
        ++pendingAsked;
        return pending.count(v) > 0;
    }
};

// 80 vectors (two PBA QWORDs, the second half used): table at BAR2 + 0x2000, PBA at BAR4 + 0x800.
constexpr unsigned kTableBar = 2, kPbaBar = 4;
constexpr uint64_t kTable = 0x2000, kPba = 0x800;
constexpr uint16_t kVectors = 80;

MsixLayout layout() {
    return MsixLayout::fromCapability(kVectors - 1, kTable | kTableBar, kPba | kPbaBar);
}

class MsixTableTest : public ::testing::Test {
protected:
    Recorder owner;
    MsixTable table{layout(), owner};

    uint64_t read(unsigned bar, uint64_t off, size_t n) {
        uint64_t v = 0;
        EXPECT_TRUE(table.access(bar, off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n), false))
            << "BAR" << bar << " +" << std::hex << off;
        return v;
    }
    void write(unsigned bar, uint64_t off, uint64_t v, size_t n) {
        EXPECT_TRUE(table.access(bar, off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), n), true))
            << "BAR" << bar << " +" << std::hex << off;
    }
    uint64_t entry(unsigned v, unsigned field, size_t n = 4) { return read(kTableBar, kTable + 16 * v + field, n); }
    void setEntry(unsigned v, unsigned field, uint64_t value, size_t n = 4) { write(kTableBar, kTable + 16 * v + field, value, n); }
    void program(unsigned v, uint64_t address, uint32_t data, bool masked) {
        setEntry(v, PCI_MSIX_ENTRY_LOWER_ADDR, address, 8);
        setEntry(v, PCI_MSIX_ENTRY_DATA, data);
        setEntry(v, PCI_MSIX_ENTRY_VECTOR_CTRL, masked ? 1 : 0);
    }
    void enable(bool functionMask = false) {
        ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE | (functionMask ? PCI_MSIX_FLAGS_MASKALL : 0)).ok());
        owner.changes.clear();
    }
};

}  // namespace

TEST(MsixLayout, FromTheCapabilityRegisters) {
    // Table size is N - 1 in Message Control; the low three bits of Table / PBA are the BIR.
    const auto l = MsixLayout::fromCapability(PCI_MSIX_FLAGS_ENABLE | 0x7ff, 0x10003, 0x12005);
    EXPECT_EQ(l.vectors, 2048);
    EXPECT_EQ(l.tableBar, 3u);
    EXPECT_EQ(l.tableOffset, 0x10000u);
    EXPECT_EQ(l.pbaBar, 5u);
    EXPECT_EQ(l.pbaOffset, 0x12000u);
    EXPECT_EQ(l.tableSize(), 2048u * 16);
    EXPECT_EQ(l.pbaSize(), 256u);
    EXPECT_EQ(layout().pbaSize(), 16u) << "80 vectors: two QWORDs";
    EXPECT_EQ(MsixLayout::fromCapability(0, 0, 0).pbaSize(), 8u) << "one vector: one QWORD";
}

TEST_F(MsixTableTest, ResetStateEveryEntryMaskedAndMsixOff) {
    EXPECT_FALSE(table.enabled());
    EXPECT_FALSE(table.functionMasked());
    for (unsigned v : {0u, 1u, 79u}) {
        EXPECT_EQ(entry(v, PCI_MSIX_ENTRY_LOWER_ADDR, 8), 0u);
        EXPECT_EQ(entry(v, PCI_MSIX_ENTRY_DATA), 0u);
        EXPECT_EQ(entry(v, PCI_MSIX_ENTRY_VECTOR_CTRL), 1u) << "masked at reset";
        EXPECT_TRUE(table.masked(v));
    }
    EXPECT_EQ(read(kPbaBar, kPba, 8), 0u);
    EXPECT_TRUE(owner.changes.empty());
    EXPECT_EQ(owner.enables, 0u);
}

TEST_F(MsixTableTest, EntryFieldsAtEveryWidth) {
    // QWORD address, DWORD data and control.
    program(5, 0x1'fee0'1000, 0x4041, false);
    EXPECT_EQ(entry(5, PCI_MSIX_ENTRY_LOWER_ADDR), 0xfee01000u);
    EXPECT_EQ(entry(5, PCI_MSIX_ENTRY_UPPER_ADDR), 0x1u);
    EXPECT_EQ(entry(5, PCI_MSIX_ENTRY_DATA, 8), 0x4041u) << "data and control (0) as one QWORD";
    EXPECT_EQ(table.message(5), (MsiMessage{0x1'fee0'1000, 0x4041}));
    EXPECT_FALSE(table.entryMasked(5));
    // DWORD halves of the address.
    setEntry(5, PCI_MSIX_ENTRY_UPPER_ADDR, 0);
    setEntry(5, PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee02000);
    EXPECT_EQ(table.message(5).address, 0xfee02000u);
    // Bytes and words act on exactly the bytes they cover (the spec leaves them undefined).
    setEntry(5, PCI_MSIX_ENTRY_DATA + 1, 0x77, 1);
    EXPECT_EQ(table.message(5).data, 0x7741u);
    setEntry(5, PCI_MSIX_ENTRY_DATA + 2, 0xbeef, 2);
    EXPECT_EQ(table.message(5).data, 0xbeef7741u);
    EXPECT_EQ(read(kTableBar, kTable + 16 * 5 + PCI_MSIX_ENTRY_DATA + 1, 2), 0xef77u) << "a misaligned word read";
    setEntry(5, PCI_MSIX_ENTRY_VECTOR_CTRL, 1, 1);
    EXPECT_TRUE(table.entryMasked(5));
    // Neighbours untouched.
    EXPECT_EQ(entry(4, PCI_MSIX_ENTRY_DATA), 0u);
    EXPECT_EQ(entry(6, PCI_MSIX_ENTRY_LOWER_ADDR), 0u);
    EXPECT_TRUE(table.entryMasked(4));
    EXPECT_TRUE(table.entryMasked(6));
    EXPECT_TRUE(owner.changes.empty()) << "MSI-X is off: nothing for the owner";
    EXPECT_EQ(table.stats().tableWrites, 8u);
}

TEST_F(MsixTableTest, EnableBringsVectorsUpAndClearingEnableTakesThemDown) {
    program(0, 0xfee00000, 0x41, false);
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE).ok());
    EXPECT_TRUE(table.enabled());
    EXPECT_EQ(owner.enables, 1u);
    EXPECT_TRUE(owner.changes.empty()) << "the owner reads message() / masked() when it enables";
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE).ok());
    EXPECT_EQ(owner.enables, 1u) << "already on";
    EXPECT_EQ(owner.changes.size(), size_t(kVectors)) << "a control write while on re-evaluates every vector";
    ASSERT_TRUE(table.writeControl(0).ok());
    EXPECT_FALSE(table.enabled());
    EXPECT_EQ(owner.disables, 1u);
    ASSERT_TRUE(table.writeControl(0).ok());
    EXPECT_EQ(owner.disables, 1u) << "already off";
}

TEST_F(MsixTableTest, FailedEnableLeavesMsixOffAndTheNextWriteRetries) {
    owner.failEnable = true;
    auto r = table.writeControl(PCI_MSIX_FLAGS_ENABLE);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENOSPC);
    EXPECT_FALSE(table.enabled());
    setEntry(0, PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
    EXPECT_TRUE(owner.changes.empty()) << "off: entry writes reach nobody";
    owner.failEnable = false;
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE).ok());
    EXPECT_TRUE(table.enabled());
    EXPECT_EQ(owner.enables, 2u);
    EXPECT_EQ(owner.disables, 0u) << "never on before: nothing to take down";
}

TEST_F(MsixTableTest, EntryMaskTransitionsReachTheOwner) {
    program(3, 0xfee00000, 0x43, true);
    enable();
    setEntry(3, PCI_MSIX_ENTRY_VECTOR_CTRL, 0);  // unmask
    ASSERT_EQ(owner.changes.size(), 1u);
    EXPECT_EQ(owner.changes.back(), (Recorder::Change{3, {0xfee00000, 0x43}, false}));
    setEntry(3, PCI_MSIX_ENTRY_VECTOR_CTRL, 1);  // mask
    ASSERT_EQ(owner.changes.size(), 2u);
    EXPECT_EQ(owner.changes.back(), (Recorder::Change{3, {0xfee00000, 0x43}, true}));
    // Re-targeted while masked (what Linux does): the new message, still masked.
    setEntry(3, PCI_MSIX_ENTRY_DATA, 0x53);
    ASSERT_EQ(owner.changes.size(), 3u);
    EXPECT_EQ(owner.changes.back(), (Recorder::Change{3, {0xfee00000, 0x53}, true}));
    // Only bit 0 of Vector Control masks; the reserved bits neither mask nor unmask.
    setEntry(3, PCI_MSIX_ENTRY_VECTOR_CTRL, 0xfffffffe);
    EXPECT_FALSE(owner.changes.back().masked);
    setEntry(3, PCI_MSIX_ENTRY_VECTOR_CTRL, 0xffffffff);
    EXPECT_TRUE(owner.changes.back().masked);
}

TEST_F(MsixTableTest, AWriteAcrossTwoEntriesReachesBoth) {
    enable();
    // A misaligned DWORD over entry 1's control (its last two bytes) and entry 2's address.
    write(kTableBar, kTable + 16 * 1 + 14, 0x1234'0000, 4);
    ASSERT_EQ(owner.changes.size(), 2u);
    EXPECT_EQ(owner.changes[0].vector, 1u);
    EXPECT_TRUE(owner.changes[0].masked) << "bit 0 of entry 1's control is in the bytes not written";
    EXPECT_EQ(owner.changes[1].vector, 2u);
    EXPECT_EQ(owner.changes[1].message.address, 0x1234u);
}

TEST_F(MsixTableTest, FunctionMaskMasksEveryVectorAndLiftingItRestoresEntryMasks) {
    program(0, 0xfee00000, 0x40, false);
    program(1, 0xfee00000, 0x41, true);
    enable();
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL).ok());
    EXPECT_TRUE(table.functionMasked());
    ASSERT_EQ(owner.changes.size(), size_t(kVectors));
    for (auto& c : owner.changes) EXPECT_TRUE(c.masked) << "vector " << c.vector;
    EXPECT_EQ(owner.changes[0].message, (MsiMessage{0xfee00000, 0x40}));
    // An entry unmasked under the function mask stays masked in effect.
    owner.changes.clear();
    setEntry(2, PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
    ASSERT_EQ(owner.changes.size(), 1u);
    EXPECT_TRUE(owner.changes[0].masked);
    EXPECT_FALSE(table.entryMasked(2));
    owner.changes.clear();
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE).ok());
    EXPECT_FALSE(table.functionMasked());
    ASSERT_EQ(owner.changes.size(), size_t(kVectors));
    EXPECT_FALSE(owner.changes[0].masked);
    EXPECT_TRUE(owner.changes[1].masked) << "its own mask bit is set";
    EXPECT_FALSE(owner.changes[2].masked);
    EXPECT_TRUE(owner.changes[3].masked);
}

TEST_F(MsixTableTest, FunctionMaskSetBeforeEnableAppliesToTheVectorsBroughtUp) {
    program(0, 0xfee00000, 0x40, false);
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL).ok());
    EXPECT_TRUE(table.masked(0)) << "what msixEnable() reads for vector 0";
    EXPECT_FALSE(table.entryMasked(0));
}

TEST_F(MsixTableTest, PbaReadsTheOwnersPendingVectors) {
    owner.pending = {0, 3, 63, 64, 79};
    EXPECT_EQ(read(kPbaBar, kPba, 8), (1ull << 0) | (1ull << 3) | (1ull << 63));
    EXPECT_EQ(read(kPbaBar, kPba + 8, 8), (1ull << 0) | (1ull << 15)) << "vectors 64 and 79";
    EXPECT_EQ(read(kPbaBar, kPba + 4, 4), 0x8000'0000u) << "DWORD: vectors 32..63";
    EXPECT_EQ(read(kPbaBar, kPba + 9, 1), 0x80u) << "byte: vectors 72..79";
    owner.pendingAsked = 0;
    EXPECT_EQ(read(kPbaBar, kPba + 9, 1), 0x80u);
    EXPECT_EQ(owner.pendingAsked, 8u) << "only the vectors the access covers are asked";
    owner.pending.clear();
    EXPECT_EQ(read(kPbaBar, kPba, 8), 0u);
    EXPECT_EQ(table.stats().pbaReads, 6u);
    // Read-only: a write is the PBA's, changes nothing, and asks nobody.
    owner.pending = {3};
    write(kPbaBar, kPba, ~0ull, 8);
    EXPECT_EQ(read(kPbaBar, kPba, 8), 1ull << 3);
    EXPECT_TRUE(owner.changes.empty());
}

TEST_F(MsixTableTest, PbaBitsBeyondTheLastVectorReadZero) {
    owner.pending = {80, 100, 127};  // no such vectors: never asked, never shown
    EXPECT_EQ(read(kPbaBar, kPba + 8, 8), 0u);
}

TEST_F(MsixTableTest, AccessesThatAreNotTheTablesAreLeftToTheOwner) {
    auto untouched = [&](unsigned bar, uint64_t off, size_t n, bool write) {
        std::vector<uint8_t> buf(n, 0x5a);
        EXPECT_FALSE(table.access(bar, off, buf, write)) << "BAR" << bar << " +" << std::hex << off << " size " << n;
        EXPECT_EQ(buf, std::vector<uint8_t>(n, 0x5a)) << "a read the table did not take fills nothing";
    };
    enable();
    const uint64_t tableEnd = kTable + 16 * kVectors;
    untouched(kTableBar, kTable - 4, 4, false);     // just below
    untouched(kTableBar, kTable - 4, 8, true);      // straddles the start
    untouched(kTableBar, tableEnd - 4, 8, true);    // straddles the end
    untouched(kTableBar, tableEnd, 4, false);       // just above
    untouched(kPbaBar, kTable, 4, true);            // the table's offset in another BAR
    untouched(kTableBar, kPba, 8, false);           // the PBA's offset in the table's BAR
    untouched(kPbaBar, kPba + 16, 4, false);        // past the PBA
    untouched(kPbaBar, kPba + 12, 8, false);        // straddles the PBA's end
    untouched(kTableBar, kTable, 0, false);         // empty
    untouched(kTableBar, ~0ull - 2, 4, false);      // offset + size wraps
    EXPECT_TRUE(owner.changes.empty());
    EXPECT_EQ(table.stats().tableReads + table.stats().tableWrites + table.stats().pbaReads, 0u);
    // The last DWORD of the table and of the PBA are theirs.
    EXPECT_EQ(read(kTableBar, tableEnd - 4, 4), 1u) << "vector 79's control: masked";
    EXPECT_EQ(read(kPbaBar, kPba + 12, 4), 0u);
}

TEST_F(MsixTableTest, TableAndPbaInOneBar) {
    Recorder o;
    MsixTable shared(MsixLayout::fromCapability(3, 0x0000 | 1, 0x800 | 1), o);  // BAR1: table at 0, PBA at 0x800
    o.pending = {2};
    uint64_t v = 0;
    ASSERT_TRUE(shared.access(1, 0x800, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 8), false));
    EXPECT_EQ(v, 1u << 2);
    ASSERT_TRUE(shared.access(1, 16 * 3 + 12, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4), false));
    EXPECT_EQ(v, 1u);
    EXPECT_FALSE(shared.access(1, 16 * 4, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4), false)) << "between them";
}

TEST_F(MsixTableTest, DisableByTheOwnerKeepsTheTable) {
    program(0, 0xfee00000, 0x40, false);
    enable(true);
    table.disable();
    EXPECT_FALSE(table.enabled());
    EXPECT_EQ(owner.disables, 1u);
    table.disable();
    EXPECT_EQ(owner.disables, 1u) << "already off";
    EXPECT_EQ(table.message(0), (MsiMessage{0xfee00000, 0x40}));
    EXPECT_FALSE(table.entryMasked(0));
    EXPECT_TRUE(table.functionMasked()) << "the guest's Message Control is not the owner's to change";
    ASSERT_TRUE(table.writeControl(PCI_MSIX_FLAGS_ENABLE).ok());
    EXPECT_EQ(owner.enables, 2u) << "the guest's next write with Enable brings it back";
}

TEST_F(MsixTableTest, ResetTakesMsixDownAndMasksEveryEntry) {
    program(0, 0xfee00000, 0x40, false);
    program(79, 0xfee00000, 0x4f, false);
    enable(true);
    table.reset();
    EXPECT_EQ(owner.disables, 1u);
    EXPECT_FALSE(table.enabled());
    EXPECT_FALSE(table.functionMasked());
    for (unsigned v : {0u, 79u}) {
        EXPECT_EQ(table.message(v), MsiMessage{});
        EXPECT_EQ(entry(v, PCI_MSIX_ENTRY_VECTOR_CTRL), 1u);
    }
}

TEST_F(MsixTableTest, MessagesCarryTheDeviceIdOnceSet) {
    program(0, 0xfee00000, 0x40, false);
    EXPECT_FALSE(table.message(0).deviceId.has_value());
    table.setDeviceId(pciRequesterId(0, 0x18));
    EXPECT_EQ(table.message(0).deviceId, 0x18u);
    enable();
    setEntry(0, PCI_MSIX_ENTRY_VECTOR_CTRL, 1);
    ASSERT_EQ(owner.changes.size(), 1u);
    EXPECT_EQ(owner.changes[0].message.deviceId, 0x18u);
    EXPECT_EQ(pciRequesterId(2, 0x0a), 0x20au);
}
