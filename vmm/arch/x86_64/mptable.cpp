#include "vmm/arch/x86_64/mptable.h"

#include <cstring>
#include <numeric>
#include <vector>

#include <fmt/format.h>

namespace conduit::vmm::x86 {

namespace {

// MP spec 1.4, chapter 4.
struct __attribute__((packed)) MpFloatingPointer {
    char signature[4];         // "_MP_"
    uint32_t configTable;      // physical address of the configuration table
    uint8_t length;            // in 16-byte units: 1
    uint8_t specRev;           // 4 = version 1.4
    uint8_t checksum;          // all 16 bytes sum to 0
    uint8_t features[5];       // feature1 = 0: a configuration table is present
};
static_assert(sizeof(MpFloatingPointer) == 16);

struct __attribute__((packed)) MpConfigHeader {
    char signature[4];         // "PCMP"
    uint16_t baseTableLength;  // header + base entries
    uint8_t specRev;
    uint8_t checksum;          // header + base entries sum to 0
    char oemId[8];
    char productId[12];
    uint32_t oemTablePointer;
    uint16_t oemTableSize;
    uint16_t entryCount;
    uint32_t lapicAddress;
    uint16_t extendedTableLength;
    uint8_t extendedTableChecksum;
    uint8_t reserved;
};
static_assert(sizeof(MpConfigHeader) == 44);

struct __attribute__((packed)) MpProcessor {
    uint8_t type;  // 0
    uint8_t lapicId;
    uint8_t lapicVersion;
    uint8_t cpuFlags;  // bit 0 enabled, bit 1 bootstrap processor
    uint32_t signature;
    uint32_t featureFlags;
    uint8_t reserved[8];
};
static_assert(sizeof(MpProcessor) == 20);

struct __attribute__((packed)) MpBus {
    uint8_t type;  // 1
    uint8_t busId;
    char busType[6];
};
struct __attribute__((packed)) MpIoApic {
    uint8_t type;  // 2
    uint8_t id;
    uint8_t version;
    uint8_t flags;  // bit 0 enabled
    uint32_t address;
};
struct __attribute__((packed)) MpInterrupt {
    uint8_t type;  // 3 = I/O interrupt, 4 = local interrupt
    uint8_t interruptType;  // 0 INT, 1 NMI, 2 SMI, 3 ExtINT
    uint16_t flags;         // polarity/trigger; 0 = conforms to the bus (ISA: edge, active high)
    uint8_t sourceBus;
    uint8_t sourceIrq;
    uint8_t destId;         // IOAPIC id, or 0xff = every local APIC
    uint8_t destPin;
};
static_assert(sizeof(MpBus) == 8 && sizeof(MpIoApic) == 8 && sizeof(MpInterrupt) == 8);

constexpr uint8_t kIsaBus = 0;
constexpr unsigned kIsaIrqs = 16;
constexpr unsigned kLocalInterrupts = 2;
// Family 6 in the processor signature, FPU (bit 0) and APIC (bit 9) in the feature flags: what a
// processor entry of any x86_64 CPU reports; Linux only prints these.
constexpr uint32_t kCpuSignature = 0x600;
constexpr uint32_t kCpuFeatures = (1u << 0) | (1u << 9);

uint8_t checksum(const uint8_t* p, size_t n) {
    uint8_t sum = std::accumulate(p, p + n, uint8_t{0}, [](uint8_t a, uint8_t b) { return uint8_t(a + b); });
    return static_cast<uint8_t>(-sum);
}

template <class T>
void append(std::vector<uint8_t>& out, const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
}

}  // namespace

uint64_t mpTableSize(unsigned vcpus) {
    return sizeof(MpFloatingPointer) + sizeof(MpConfigHeader) + vcpus * sizeof(MpProcessor) + sizeof(MpBus) +
           sizeof(MpIoApic) + (kIsaIrqs + kLocalInterrupts) * sizeof(MpInterrupt);
}

Result<uint64_t> writeMpTable(const memory::GuestMemory& mem, uint64_t addr, unsigned vcpus, uint64_t ioapicBase,
                              uint64_t lapicBase) {
    if (vcpus == 0 || vcpus > 254)
        return Error(fmt::format("MP table: {} processors is outside 1..254 (8-bit APIC ids, one for the IOAPIC)",
                                 vcpus));
    if (addr % 16 != 0)
        return Error(fmt::format("MP table address {:#x} is not 16-byte aligned", addr));
    const uint8_t ioapicId = static_cast<uint8_t>(vcpus);

    std::vector<uint8_t> body;  // the entries after the configuration header
    uint16_t entries = 0;
    for (unsigned i = 0; i < vcpus; ++i, ++entries) {
        MpProcessor p{};
        p.type = 0;
        p.lapicId = static_cast<uint8_t>(i);
        p.lapicVersion = kMpLapicVersion;
        p.cpuFlags = 1 | (i == 0 ? 2 : 0);
        p.signature = kCpuSignature;
        p.featureFlags = kCpuFeatures;
        append(body, p);
    }
    MpBus bus{1, kIsaBus, {'I', 'S', 'A', ' ', ' ', ' '}};
    append(body, bus);
    ++entries;
    MpIoApic ioapic{2, ioapicId, kMpIoApicVersion, 1, static_cast<uint32_t>(ioapicBase)};
    append(body, ioapic);
    ++entries;
    for (unsigned irq = 0; irq < kIsaIrqs; ++irq, ++entries) {
        MpInterrupt intr{3, 0, 0, kIsaBus, static_cast<uint8_t>(irq), ioapicId, static_cast<uint8_t>(irq)};
        append(body, intr);
    }
    append(body, MpInterrupt{4, 3, 0, kIsaBus, 0, 0xff, 0});  // LINT0: ExtINT (the PIC)
    append(body, MpInterrupt{4, 1, 0, kIsaBus, 0, 0xff, 1});  // LINT1: NMI
    entries += kLocalInterrupts;

    MpConfigHeader hdr{};
    std::memcpy(hdr.signature, "PCMP", 4);
    hdr.baseTableLength = static_cast<uint16_t>(sizeof(hdr) + body.size());
    hdr.specRev = 4;
    std::memcpy(hdr.oemId, "CONDUIT ", 8);
    std::memcpy(hdr.productId, "VMM         ", 12);
    hdr.entryCount = entries;
    hdr.lapicAddress = static_cast<uint32_t>(lapicBase);
    std::vector<uint8_t> config;
    append(config, hdr);
    config.insert(config.end(), body.begin(), body.end());
    config[offsetof(MpConfigHeader, checksum)] = checksum(config.data(), config.size());

    MpFloatingPointer fp{};
    std::memcpy(fp.signature, "_MP_", 4);
    fp.configTable = static_cast<uint32_t>(addr + sizeof(fp));
    fp.length = 1;
    fp.specRev = 4;
    fp.checksum = checksum(reinterpret_cast<const uint8_t*>(&fp), sizeof(fp));

    std::vector<uint8_t> all;
    append(all, fp);
    all.insert(all.end(), config.begin(), config.end());
    TRY_CTX(mem.write(addr, all), fmt::format("writing the MP table ({} bytes) at {:#x}", all.size(), addr));
    return static_cast<uint64_t>(all.size());
}

}  // namespace conduit::vmm::x86
