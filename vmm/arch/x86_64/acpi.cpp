#include "vmm/arch/x86_64/acpi.h"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

#include "devices/acpi_pm.h"
#include "devices/pci/pci_root.h"
#include "vmm/arch/x86_64/aml.h"
#include "vmm/arch/x86_64/payload_abi.h"
#include "vmm/arch/x86_64/pci_irq.h"

namespace conduit::vmm::x86 {

namespace {

using Bytes = std::vector<uint8_t>;

constexpr char kOemId[7] = "CNDUIT";
constexpr char kOemTableId[9] = "CONDUIT ";
constexpr uint32_t kSciIrq = 9;  // where PC chipsets wire the SCI; never raised (no fixed events)

template <typename T>
void putLe(Bytes& b, size_t at, T value) {
    for (size_t i = 0; i < sizeof(T); ++i) b.at(at + i) = static_cast<uint8_t>(uint64_t(value) >> (8 * i));
}
template <typename T>
void appendLe(Bytes& b, T value) {
    b.resize(b.size() + sizeof(T));
    putLe<T>(b, b.size() - sizeof(T), value);
}

uint8_t checksumFor(const Bytes& b, size_t begin, size_t end) {
    uint8_t sum = std::accumulate(b.begin() + begin, b.begin() + end, uint8_t{0});
    return static_cast<uint8_t>(-sum);
}

// The 36-byte System Description Table header (5.2.6); length and checksum are set by finish().
Bytes header(const char (&signature)[5], uint8_t revision) {
    Bytes b(36, 0);
    std::memcpy(b.data(), signature, 4);
    b[8] = revision;
    std::memcpy(b.data() + 10, kOemId, 6);
    std::memcpy(b.data() + 16, kOemTableId, 8);
    putLe<uint32_t>(b, 24, 1);                         // OEM revision
    std::memcpy(b.data() + 28, "CNDT", 4);             // creator id
    putLe<uint32_t>(b, 32, 1);                         // creator revision
    return b;
}

Bytes finish(Bytes b) {
    putLe<uint32_t>(b, 4, static_cast<uint32_t>(b.size()));
    b[9] = 0;
    b[9] = checksumFor(b, 0, b.size());
    return b;
}

// A Generic Address Structure (5.2.3.2) for a system-I/O register.
void appendIoGas(Bytes& b, uint16_t port, uint8_t bytes) {
    b.push_back(port ? 1 : 0);            // address space: system I/O (all zero when absent)
    b.push_back(port ? bytes * 8 : 0);    // register bit width
    b.push_back(0);                       // bit offset
    b.push_back(port && bytes == 1 ? 1 : 0);  // access size: byte for the reset register, else legacy
    appendLe<uint64_t>(b, port);
}

Bytes fadt(uint64_t facs, uint64_t dsdt) {
    using devices::AcpiPm;
    const uint16_t evt = AcpiPm::kBase + AcpiPm::kPm1EventOffset;
    const uint16_t cnt = AcpiPm::kBase + AcpiPm::kPm1ControlOffset;
    const uint16_t tmr = AcpiPm::kBase + AcpiPm::kTimerOffset;
    const uint16_t reset = AcpiPm::kBase + AcpiPm::kResetOffset;
    Bytes b = header("FACP", 6);
    b.resize(276, 0);
    putLe<uint32_t>(b, 36, static_cast<uint32_t>(facs));
    putLe<uint32_t>(b, 40, static_cast<uint32_t>(dsdt));
    putLe<uint16_t>(b, 46, kSciIrq);
    // SMI_CMD (48) = 0: the hardware is always in ACPI mode; nothing to enable.
    putLe<uint32_t>(b, 56, evt);
    putLe<uint32_t>(b, 64, cnt);
    putLe<uint32_t>(b, 76, tmr);
    b[88] = AcpiPm::kPm1EventLength;
    b[89] = AcpiPm::kPm1ControlLength;
    b[91] = AcpiPm::kTimerLength;
    putLe<uint16_t>(b, 96, 101);   // P_LVL2_LAT > 100: C2 not supported
    putLe<uint16_t>(b, 98, 1001);  // P_LVL3_LAT > 1000: C3 not supported
    // IAPC_BOOT_ARCH: legacy (ISA) devices present, no VGA, no CMOS RTC; no 8042 (the reset port
    // at 0x64 is not a keyboard controller a driver could use).
    putLe<uint16_t>(b, 109, (1u << 0) | (1u << 2) | (1u << 5));
    // Flags: WBINVD, C1 on all CPUs, power and sleep buttons absent from fixed hardware, no RTC
    // wake, reset register supported.
    putLe<uint32_t>(b, 112, (1u << 0) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 10));
    Bytes gas;
    appendIoGas(gas, reset, 1);
    std::copy(gas.begin(), gas.end(), b.begin() + 116);
    b[128] = AcpiPm::kResetValue;
    b[131] = 5;  // FADT minor version: ACPI 6.5
    putLe<uint64_t>(b, 132, facs);
    putLe<uint64_t>(b, 140, dsdt);
    const struct { size_t at; uint16_t port; uint8_t len; } x[] = {
        {148, evt, AcpiPm::kPm1EventLength}, {172, cnt, AcpiPm::kPm1ControlLength}, {208, tmr, AcpiPm::kTimerLength}};
    for (const auto& r : x) {
        gas.clear();
        appendIoGas(gas, r.port, r.len);
        std::copy(gas.begin(), gas.end(), b.begin() + r.at);
    }
    return finish(std::move(b));
}

// The Firmware ACPI Control Structure (5.2.10): no header checksum, 64 bytes, 64-byte aligned.
Bytes facsTable() {
    Bytes b(64, 0);
    std::memcpy(b.data(), "FACS", 4);
    putLe<uint32_t>(b, 4, 64);
    b[32] = 2;  // version
    return b;
}

Bytes dsdt(const memory::AddressLayout& layout) {
    namespace a = aml;
    const memory::AddressRange m32 = layout.mmio32Window(), m64 = layout.mmio64Window(), ecam = layout.pciEcam();
    const uint16_t lastBus = static_cast<uint16_t>(ecam.size / memory::MiB - 1);
    std::vector<Bytes> prt;
    for (unsigned slot = 0; slot < 32; ++slot)
        for (unsigned pin = 0; pin < 4; ++pin)  // INTA..INTD; Source 0: the last element is a GSI
            prt.push_back(a::package({a::integer((uint64_t(slot) << 16) | 0xffff), a::integer(pin), a::integer(0),
                                      a::integer(pciIntxGsi(slot))}));
    Bytes pci0 = a::device(
        "PCI0", a::join({
                    a::name("_HID", a::eisaId("PNP0A08")),  // PCI Express root bridge
                    a::name("_CID", a::eisaId("PNP0A03")),  // compatible with PCI
                    a::name("_ADR", a::integer(0)),
                    a::name("_SEG", a::integer(0)),
                    a::name("_UID", a::integer(0)),
                    a::name("_BBN", a::integer(0)),
                    a::name("_CRS", a::resourceTemplate({
                                        a::wordBusNumber(0, lastBus),
                                        a::io(devices::pci::PciRoot::kConfigAddressPort, 8),
                                        a::wordIo(kPciIoWindowBase, kPciIoWindowBase + kPciIoWindowSize - 1),
                                        a::dwordMemory(static_cast<uint32_t>(m32.base), static_cast<uint32_t>(m32.end() - 1)),
                                        a::qwordMemory(m64.base, m64.end() - 1),
                                    })),
                    a::name("_PRT", a::package(prt)),
                    // _OSC: the OS may control every PCIe feature it asks for (hot-plug, AER, PME,
                    // LTR, the PCIe capability): the buffer comes back as given, the requested
                    // controls granted and no error bit set. There is no firmware to share them with.
                    a::method("_OSC", 4, a::returnValue(a::arg(3))),
                }));
    Bytes com1 = a::device("COM1", a::join({
                                       a::name("_HID", a::eisaId("PNP0501")),  // 16550A-compatible
                                       a::name("_UID", a::integer(1)),
                                       a::name("_CRS", a::resourceTemplate({a::io(CONDUIT_UART_PORT, 8),
                                                                            a::irqNoFlags(1u << CONDUIT_UART_IRQ)})),
                                   }));
    const uint8_t s5 = devices::AcpiPm::kSleepTypeS5;
    Bytes body = a::join({
        a::scope("\\_SB_", a::join({pci0, com1})),
        a::name("_S5_", a::package({a::integer(s5), a::integer(s5), a::integer(0), a::integer(0)})),
    });
    Bytes b = header("DSDT", 2);
    b.insert(b.end(), body.begin(), body.end());
    return finish(std::move(b));
}

Bytes madt(unsigned vcpus) {
    Bytes b = header("APIC", 5);
    appendLe<uint32_t>(b, static_cast<uint32_t>(x86::kLapicBase));
    appendLe<uint32_t>(b, 1);  // PCAT_COMPAT: there are 8259 PICs (KVM's in-kernel irqchip has them)
    for (unsigned i = 0; i < vcpus; ++i) {  // Processor Local APIC
        b.insert(b.end(), {0, 8, static_cast<uint8_t>(i), static_cast<uint8_t>(i)});
        appendLe<uint32_t>(b, 1);  // enabled
    }
    b.insert(b.end(), {1, 12, static_cast<uint8_t>(vcpus), 0});  // I/O APIC
    appendLe<uint32_t>(b, static_cast<uint32_t>(x86::kIoApicBase));
    appendLe<uint32_t>(b, 0);  // GSI base
    // ISA IRQs are identity-mapped to IOAPIC pins (vmm/irq_routing.cpp routes GSI n to pin n, the
    // PIT's IRQ 0 included), so the only override says the SCI is level-triggered, active high
    // (MPS INTI flags: polarity 01, trigger 11).
    const struct { uint8_t irq; uint32_t gsi; uint16_t flags; } overrides[] = {{kSciIrq, kSciIrq, 0x000d}};
    for (const auto& o : overrides) {
        b.insert(b.end(), {2, 10, 0, o.irq});
        appendLe<uint32_t>(b, o.gsi);
        appendLe<uint16_t>(b, o.flags);
    }
    b.insert(b.end(), {4, 6, 0xff, 0, 0, 1});  // Local APIC NMI: all processors, LINT1
    return finish(std::move(b));
}

Bytes mcfg(const memory::AddressLayout& layout) {
    const memory::AddressRange ecam = layout.pciEcam();
    Bytes b = header("MCFG", 1);
    b.resize(b.size() + 8, 0);
    appendLe<uint64_t>(b, ecam.base);
    appendLe<uint16_t>(b, 0);  // segment
    b.push_back(0);            // start bus
    b.push_back(static_cast<uint8_t>(ecam.size / memory::MiB - 1));
    appendLe<uint32_t>(b, 0);
    return finish(std::move(b));
}

Bytes xsdt(const std::vector<uint64_t>& tables) {
    Bytes b = header("XSDT", 1);
    for (uint64_t t : tables) appendLe<uint64_t>(b, t);
    return finish(std::move(b));
}

Bytes rsdp(uint64_t xsdtAddr) {
    Bytes b(36, 0);
    std::memcpy(b.data(), "RSD PTR ", 8);
    std::memcpy(b.data() + 9, kOemId, 6);
    b[15] = 2;                   // ACPI 2.0+: the XSDT is used (no RSDT)
    putLe<uint32_t>(b, 20, 36);  // length
    putLe<uint64_t>(b, 24, xsdtAddr);
    b[8] = checksumFor(b, 0, 20);
    b[32] = checksumFor(b, 0, 36);
    return b;
}

}  // namespace

Result<std::vector<AcpiTable>> buildAcpiTables(const memory::AddressLayout& layout, unsigned vcpus) {
    if (vcpus == 0 || vcpus > 254)
        return Error(fmt::format("acpi: {} vCPUs (the MADT's 8-bit APIC ids allow 1..254)", vcpus));
    // Fixed order and alignment: RSDP, FACS (64-byte aligned), DSDT, FADT, MADT, MCFG, XSDT.
    std::vector<AcpiTable> out;
    uint64_t next = kAcpiTablesAddr;
    auto place = [&](std::string sig, Bytes bytes, uint64_t align) -> uint64_t {
        next = (next + align - 1) & ~(align - 1);
        out.push_back({std::move(sig), next, std::move(bytes)});
        next += out.back().bytes.size();
        return out.back().address;
    };
    place("RSD PTR ", Bytes(36, 0), 16);  // filled in last, once the XSDT's address is known
    const uint64_t facs = place("FACS", facsTable(), 64);
    const uint64_t dsdtAddr = place("DSDT", dsdt(layout), 16);
    const uint64_t fadtAddr = place("FACP", fadt(facs, dsdtAddr), 16);
    const uint64_t madtAddr = place("APIC", madt(vcpus), 16);
    const uint64_t mcfgAddr = place("MCFG", mcfg(layout), 16);
    const uint64_t xsdtAddr = place("XSDT", xsdt({fadtAddr, madtAddr, mcfgAddr}), 16);
    out.front().bytes = rsdp(xsdtAddr);
    if (next > kAcpiTablesEnd)
        return Error(fmt::format("acpi: the tables for {} vCPUs take {:#x}..{:#x}, past {:#x}", vcpus,
                                 kAcpiTablesAddr, next, kAcpiTablesEnd));
    return out;
}

Result<uint64_t> writeAcpiTables(const memory::GuestMemory& mem, const memory::AddressLayout& layout, unsigned vcpus) {
    auto tables = TRY(buildAcpiTables(layout, vcpus));
    for (const AcpiTable& t : tables)
        TRY_CTX(mem.write(t.address, t.bytes), fmt::format("acpi: writing {} at {:#x}", t.signature, t.address));
    return tables.front().address;
}

}  // namespace conduit::vmm::x86
