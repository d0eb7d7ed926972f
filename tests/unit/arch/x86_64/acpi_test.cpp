// The ACPI tables: AML encodings checked against the bytes the spec gives (golden), the table
// graph and checksums walked as a guest's ACPICA would, and every table disassembled by Debian's
// iasl (acpica-tools), an independent parser, whose output must name what Conduit put in.
#include "vmm/arch/x86_64/acpi.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

#include "devices/acpi_pm.h"
#include "vmm/arch/x86_64/aml.h"
#include "x86_test_util.h"

namespace conduit::vmm::x86 {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
T le(const Bytes& b, size_t at) {
    T v{};
    std::memcpy(&v, b.data() + at, sizeof(T));
    return v;
}

uint8_t sum(const Bytes& b, size_t n) { return std::accumulate(b.begin(), b.begin() + n, uint8_t{0}); }

TEST(Aml, EncodingsMatchTheSpec) {
    EXPECT_EQ(aml::eisaId("PNP0A08"), (Bytes{0x0c, 0x41, 0xd0, 0x0a, 0x08}));  // EisaId("PNP0A08") = 0x080AD041
    EXPECT_EQ(aml::eisaId("PNP0501"), (Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01}));
    EXPECT_EQ(aml::integer(0), Bytes{0x00});
    EXPECT_EQ(aml::integer(1), Bytes{0x01});
    EXPECT_EQ(aml::integer(0x2a), (Bytes{0x0a, 0x2a}));
    EXPECT_EQ(aml::integer(0x1234), (Bytes{0x0b, 0x34, 0x12}));
    EXPECT_EQ(aml::integer(0x1ffff), (Bytes{0x0c, 0xff, 0xff, 0x01, 0x00}));
    EXPECT_EQ(aml::integer(0x100000000ull), (Bytes{0x0e, 0, 0, 0, 0, 1, 0, 0, 0}));
    EXPECT_EQ(aml::string("ab"), (Bytes{0x0d, 'a', 'b', 0}));
    EXPECT_EQ(aml::name("_UID", aml::integer(1)), (Bytes{0x08, '_', 'U', 'I', 'D', 0x01}));
    // Name(_S5_, Package(){5, 0}): PackageOp, PkgLength 5 (itself + count + two ByteConsts... ), count.
    EXPECT_EQ(aml::package({aml::integer(5), aml::integer(0)}), (Bytes{0x12, 0x05, 0x02, 0x0a, 0x05, 0x00}));
    EXPECT_EQ(aml::device("COM1", {}), (Bytes{0x5b, 0x82, 0x05, 'C', 'O', 'M', '1'}));
    EXPECT_EQ(aml::scope("\\_SB_", {}), (Bytes{0x10, 0x06, 0x5c, '_', 'S', 'B', '_'}));
    // ResourceTemplate(){ IO(Decode16, 0x3f8, 0x3f8, 1, 8) IRQNoFlags(){4} }
    EXPECT_EQ(aml::resourceTemplate({aml::io(0x3f8, 8), aml::irqNoFlags(1u << 4)}),
              (Bytes{0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00}));
}

TEST(Aml, PkgLengthTakesMoreBytesPastEachLimit) {
    // A buffer body of n bytes: BufferSize (WordConst, 3 bytes) + n. One PkgLength byte holds up to
    // 63, two up to 4095, three up to 2^20 - 1; the length counts its own bytes.
    for (size_t n : {50u, 60u, 61u, 4000u, 4092u, 4093u, 70000u}) {
        Bytes body(n, 0xaa);
        Bytes enc = aml::buffer(body);
        const size_t inner = aml::integer(n).size() + n;
        ASSERT_EQ(enc[0], 0x11);
        const unsigned follow = enc[1] >> 6;
        size_t len = follow == 0 ? (enc[1] & 0x3f) : (enc[1] & 0x0f);
        for (unsigned i = 0; i < follow; ++i) len |= size_t(enc[2 + i]) << (4 + 8 * i);
        EXPECT_EQ(len, inner + 1 + follow) << n;
        EXPECT_EQ(enc.size(), 1 + len) << n;
        EXPECT_EQ(follow, inner + 1 < 64 ? 0u : inner + 2 < 4096 ? 1u : 2u) << n;
    }
}

struct Tables {
    std::map<std::string, AcpiTable> bySig;
    const Bytes& operator[](const std::string& s) const { return bySig.at(s).bytes; }
};

Tables build(uint64_t ram, unsigned vcpus) {
    auto layout = x86::addressLayout(ram);
    EXPECT_TRUE(layout.ok());
    auto t = buildAcpiTables(*layout, vcpus);
    EXPECT_TRUE(t.ok()) << t.error().describe();
    Tables out;
    for (auto& x : *t) out.bySig[x.signature] = x;
    return out;
}

TEST(Acpi, TheTableGraphIsWhatAGuestWalks) {
    const unsigned vcpus = 3;
    Tables t = build(4 * memory::GiB, vcpus);
    const Bytes& rsdp = t["RSD PTR "];
    EXPECT_EQ(t.bySig.at("RSD PTR ").address, kAcpiTablesAddr);
    EXPECT_EQ(sum(rsdp, 20), 0);
    EXPECT_EQ(sum(rsdp, 36), 0);
    EXPECT_EQ(rsdp[15], 2);
    EXPECT_EQ(le<uint64_t>(rsdp, 24), t.bySig.at("XSDT").address);
    for (auto& [sig, table] : t.bySig) {
        EXPECT_GE(table.address, kAcpiTablesAddr) << sig;
        EXPECT_LE(table.address + table.bytes.size(), kAcpiTablesEnd) << sig;
        if (sig == "RSD PTR " || sig == "FACS") continue;
        EXPECT_EQ(le<uint32_t>(table.bytes, 4), table.bytes.size()) << sig;
        EXPECT_EQ(sum(table.bytes, table.bytes.size()), 0) << sig << " checksum";
        EXPECT_EQ(0, std::memcmp(table.bytes.data(), sig.data(), 4));
    }
    const Bytes& xsdt = t["XSDT"];
    ASSERT_EQ(xsdt.size(), 36u + 3 * 8);
    EXPECT_EQ(le<uint64_t>(xsdt, 36), t.bySig.at("FACP").address);
    EXPECT_EQ(le<uint64_t>(xsdt, 44), t.bySig.at("APIC").address);
    EXPECT_EQ(le<uint64_t>(xsdt, 52), t.bySig.at("MCFG").address);
    const Bytes& fadt = t["FACP"];
    EXPECT_EQ(le<uint64_t>(fadt, 140), t.bySig.at("DSDT").address);
    EXPECT_EQ(le<uint64_t>(fadt, 132), t.bySig.at("FACS").address);
    EXPECT_EQ(t.bySig.at("FACS").address % 64, 0u);
    EXPECT_EQ(le<uint32_t>(fadt, 64), devices::AcpiPm::kBase + devices::AcpiPm::kPm1ControlOffset);
    EXPECT_EQ(fadt[128], devices::AcpiPm::kResetValue);
    // MADT: one enabled local APIC per vCPU with id = index, then the IOAPIC with the next id.
    const Bytes& madt = t["APIC"];
    size_t at = 44;
    std::vector<unsigned> apicIds;
    unsigned ioapics = 0;
    while (at < madt.size()) {
        const uint8_t type = madt[at], len = madt[at + 1];
        ASSERT_GE(len, 2);
        if (type == 0) {
            EXPECT_EQ(le<uint32_t>(madt, at + 4) & 1, 1u);
            apicIds.push_back(madt[at + 3]);
        }
        if (type == 1) {
            ++ioapics;
            EXPECT_EQ(madt[at + 2], vcpus);
            EXPECT_EQ(le<uint32_t>(madt, at + 4), x86::kIoApicBase);
        }
        at += len;
    }
    EXPECT_EQ(at, madt.size());
    EXPECT_EQ(apicIds, (std::vector<unsigned>{0, 1, 2}));
    EXPECT_EQ(ioapics, 1u);
    const Bytes& mcfg = t["MCFG"];
    EXPECT_EQ(le<uint64_t>(mcfg, 44), x86::kEcamBase);
    EXPECT_EQ(mcfg[55], 255);
}

TEST(Acpi, RefusesVcpuCountsTheMadtCannotHold) {
    auto layout = x86::addressLayout(512 * memory::MiB);
    ASSERT_TRUE(layout.ok());
    EXPECT_FALSE(buildAcpiTables(*layout, 0).ok());
    auto r = buildAcpiTables(*layout, 255);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().what().find("255 vCPUs"), std::string::npos) << r.error().what();
}

std::string runCapture(const std::string& cmd, int* status) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return "popen failed";
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    *status = ::pclose(p);
    return out;
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// iasl -d: ACPICA's own disassembler reads each table (with the DSDT as an external reference
// for nothing; it stands alone) and must find no error; its text must show what we meant.
TEST(Acpi, IaslDisassemblesEveryTableAndSeesWhatWasMeant) {
    Tables t = build(6 * memory::GiB, 2);
    char tmpl[] = "/tmp/conduit-acpi-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    const std::filesystem::path dir(tmpl);
    std::map<std::string, std::string> dsl;
    for (const char* sig : {"FACP", "APIC", "MCFG", "DSDT", "XSDT", "FACS"}) {
        const std::string base = std::string(sig) == "FACP" ? "facp" : std::string(sig);
        const auto file = dir / (base + ".dat");
        std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(t[sig].data()), t[sig].size());
        int status = 0;
        std::string out = runCapture("cd " + dir.string() + " && iasl -d " + file.filename().string(), &status);
        ASSERT_EQ(status, 0) << "iasl -d " << sig << " (install acpica-tools: scripts/install-deps.sh):\n" << out;
        EXPECT_EQ(out.find("Error"), std::string::npos) << sig << ":\n" << out;
        dsl[sig] = slurp(dir / (base + ".dsl"));
        ASSERT_FALSE(dsl[sig].empty()) << sig << ":\n" << out;
    }
    const std::string& d = dsl["DSDT"];
    for (const char* want : {"Device (PCI0)", "EisaId (\"PNP0A08\")", "EisaId (\"PNP0A03\")", "Name (_PRT, Package",
                             "WordBusNumber", "0x00FF,             // Range Maximum", "0xC000,             // Range Minimum",
                             "0xFFFF,             // Range Maximum", "0xC0000000,         // Range Minimum",
                             "0xDFFFFFFF,         // Range Maximum", "Device (COM1)", "EisaId (\"PNP0501\")",
                             "IRQNoFlags ()", "{4}", "Name (_S5, Package (0x04)",
                             "Method (_OSC, 4, NotSerialized)", "Return (Arg3)"})
        EXPECT_NE(d.find(want), std::string::npos) << "DSDT lacks \"" << want << "\":\n" << d;
    // The _PRT: slot 3's INTB goes to the GSI pci_irq.h gives slot 3.
    EXPECT_NE(d.find("0x0003FFFF,"), std::string::npos) << d;
    const std::string& m = dsl["APIC"];
    EXPECT_NE(m.find("Local Apic Address : FEE00000"), std::string::npos) << m;
    EXPECT_NE(m.find("Address : FEC00000"), std::string::npos) << m;
    size_t lapics = 0;
    for (size_t p = 0; (p = m.find("Processor Local APIC", p)) != std::string::npos; ++p) ++lapics;
    EXPECT_EQ(lapics, 2u) << m;
    const std::string& f = dsl["FACP"];
    EXPECT_NE(f.find("PM1A Control Block Address : 00000604"), std::string::npos) << f;
    EXPECT_NE(f.find("Reset Register Supported (V2) : 1"), std::string::npos) << f;
    EXPECT_NE(dsl["MCFG"].find("Base Address : 00000000E0000000"), std::string::npos) << dsl["MCFG"];
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace conduit::vmm::x86
