// PCI passthrough end to end (issue 4, docs/passthrough.md): build/conduit boots the pt_edu payload
// on the real /dev/kvm with two edu devices of the simulated host passed through, once per VFIO
// backend. The payload enumerates, sizes and programs BARs, uses the trapped and the mmapped BAR,
// runs DMA both ways, takes MSI-X and MSI interrupts, relocates a BAR, does P2P DMA and provokes an
// IOMMU fault; this test checks its serial report and, through --stats, that the VMM saw exactly
// the accesses that must exit and none of those that must not (mmapped BAR, interrupt delivery).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/test_env.h"

namespace conduit::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// pt_edu steps, in the order it prints "pt: <step> ok".
const std::vector<std::string> kSteps = {"enumerate", "find",     "size",     "program",   "ident",
                                         "mmap",      "dma",      "msix",     "msix-mask", "fact-irq",
                                         "dma-irq",   "msi",      "relocate", "p2p",       "iommu-fault"};

fs::path configPath(const std::string& name) {
    return fs::path(CONDUIT_SOURCE_DIR) / "tests/integration/configs" / name;
}

std::string readFile(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// The number after "<prefix>" on the serial line that starts with it, or nullopt.
std::optional<uint64_t> serialNumber(const std::string& out, const std::string& prefix) {
    std::smatch m;
    std::regex re("(^|\n)" + prefix + "([0-9]+)\n");
    if (!std::regex_search(out, m, re)) return std::nullopt;
    return std::stoull(m[2].str());
}

struct PtRun {
    ProcessResult proc;
    nlohmann::json stats;
};

// `conduit run` of `config` with the payload `payload` and --stats into a temporary file.
PtRun runPassthrough(const fs::path& config, const std::string& payload) {
    TempDir dir;
    const std::string statsFile = (dir.path() / "stats.json").string();
    PtRun r;
    r.proc = runConduit(config.string(), 180s, {"--payload", payloadPath(payload), "--stats", statsFile});
    std::string text = readFile(statsFile);
    if (!text.empty()) r.stats = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    return r;
}

std::string diagnose(const ProcessResult& p) {
    return "exit " + std::to_string(p.exitStatus) + (p.timedOut ? " (timed out)" : "") + "\n--- serial ---\n" +
           p.out + "\n--- stderr (tail) ---\n" + (p.err.size() > 4000 ? p.err.substr(p.err.size() - 4000) : p.err);
}

uint64_t jsonCount(const nlohmann::json& j, const std::vector<std::string>& path) {
    const nlohmann::json* at = &j;
    for (auto& k : path) {
        if (!at->is_object() || !at->contains(k)) return 0;
        at = &(*at)[k];
    }
    return at->is_number_unsigned() || at->is_number_integer() ? at->get<uint64_t>() : 0;
}

class PassthroughTest : public ::testing::TestWithParam<const char*> {
protected:
    void SetUp() override { REQUIRE_KVM(); }
};

// The whole payload, per backend. Each EXPECT names what it proves.
TEST_P(PassthroughTest, EduPayloadPassesEveryStepWithTheExpectedExits) {
    const std::string backend = GetParam();
    PtRun r = runPassthrough(configPath("passthrough_" + backend + ".json"), "pt_edu");
    const std::string& out = r.proc.out;
    ASSERT_FALSE(r.proc.timedOut) << diagnose(r.proc);

    // Serial: every step reported ok, in order, and no failure line.
    size_t at = 0;
    for (const auto& step : kSteps) {
        size_t found = out.find("pt: " + step + " ok", at);
        EXPECT_NE(found, std::string::npos) << "step '" << step << "' did not pass\n" << diagnose(r.proc);
        if (found != std::string::npos) at = found;
    }
    EXPECT_EQ(out.find("pt: FAIL"), std::string::npos) << diagnose(r.proc);
    EXPECT_NE(out.find("pt: all steps passed\n"), std::string::npos) << diagnose(r.proc);
    ASSERT_EQ(r.proc.exitStatus, 0) << diagnose(r.proc);

    // The payload's own account of its accesses.
    auto trapped = serialNumber(out, "pt: trapped mmio accesses ");
    auto mmapped = serialNumber(out, "pt: mmapped accesses ");
    auto irqs = serialNumber(out, "pt: interrupts ");
    ASSERT_TRUE(trapped && mmapped && irqs) << diagnose(r.proc);
    // 64 KiB written and read through two BARs, re-read after relocation, P2P checks: if mmapped
    // accesses exited, the MMIO exit count below would be far off.
    EXPECT_GE(*mmapped, 100000u);
    // 8 MSI-X vectors + the pending one + factorial + DMA irq + MSI vectors + raise + 8 after relocation.
    EXPECT_GE(*irqs, 21u);

    ASSERT_TRUE(r.stats.is_object()) << "no --stats JSON\n" << diagnose(r.proc);
    SCOPED_TRACE("stats: exits " + r.stats["exits"].dump() + ", passthrough " + r.stats["passthrough"].dump());
    const uint64_t mmioExits = jsonCount(r.stats, {"exits", "MMIO"});
    // Trapped accesses (ECAM, BAR0 registers, the MSI-X table, the stale BAR address) exit, one
    // exit each; mmapped BAR accesses and interrupt delivery add none.
    EXPECT_EQ(mmioExits, *trapped) << "MMIO exits vs. the payload's trapped accesses (mmapped: " << *mmapped << ")";

    // The VMM's own account of the devices ("passthrough" in --stats, vmm/passthrough.cpp).
    const auto& pt = r.stats["passthrough"];
    EXPECT_EQ(pt.value("host", ""), "simulated");
    ASSERT_TRUE(pt.contains("devices") && pt["devices"].is_array() && pt["devices"].size() == 2) << pt.dump(2);
    const nlohmann::json* devA = nullptr;
    const nlohmann::json* devB = nullptr;
    for (const auto& d : pt["devices"]) {
        EXPECT_EQ(d.value("backend", ""), backend) << d.dump();
        if (d.value("host", "") == "0000:01:00.0") devA = &d;
        if (d.value("host", "") == "0000:02:00.0") devB = &d;
    }
    ASSERT_TRUE(devA && devB) << pt.dump(2);
    // A ran MSI-X with all 8 vectors, B MSI with the 4 its config offers.
    EXPECT_EQ(devA->value("irq_mode", ""), "msix");
    EXPECT_EQ(devA->value("vectors", 0u), 8u);
    EXPECT_EQ(devB->value("irq_mode", ""), "msi");
    EXPECT_EQ(devB->value("vectors", 0u), 4u);
    // The payload leaves its interrupts on, so the peak is the state at exit.
    EXPECT_EQ(devA->value("peak_irq_mode", ""), "msix");
    EXPECT_EQ(devA->value("peak_vectors", 0u), 8u);
    EXPECT_EQ(devB->value("peak_irq_mode", ""), "msi");
    EXPECT_EQ(devB->value("peak_vectors", 0u), 4u);
    // Masking went through the routes, not through VFIO_DEVICE_SET_IRQS: A masked and unmasked
    // (the function mask at enable, vector 1 in msix-mask) and issued no more SET_IRQS than B,
    // which never masked anything, beyond one per MSI-X vector it put in use after vector 0 (the
    // simulated host has dynamic MSI-X: a host vector as the guest first unmasks an entry).
    EXPECT_GE(jsonCount(*devA, {"route_mask_changes"}), 2u);
    EXPECT_EQ(jsonCount(*devB, {"route_mask_changes"}), 0u);
    EXPECT_EQ(jsonCount(*devA, {"set_irqs_calls"}), jsonCount(*devB, {"set_irqs_calls"}) + 8u - 1u);
    // The MSI-X table is trapped and emulated: 4 dword writes per vector, plus mask and unmask.
    EXPECT_EQ(jsonCount(*devA, {"msix_table_writes"}), 4u * 8u + 2u);
    // The device signalled every interrupt the guest counted (the guest saw no extra ones).
    EXPECT_EQ(jsonCount(*devA, {"sim_interrupts_delivered"}) + jsonCount(*devB, {"sim_interrupts_delivered"}), *irqs);
    // A's two BARs were moved by the guest; B's were not moved after their first placement.
    EXPECT_GE(jsonCount(*devA, {"relocations"}), 2u);
    EXPECT_LT(jsonCount(*devB, {"relocations"}), jsonCount(*devA, {"relocations"}));
    // BARs where the guest left them: A's BAR0 at the address the payload reported for it.
    std::smatch m;
    ASSERT_TRUE(std::regex_search(out, m, std::regex("BAR0 0x[0-9a-f]+ -> 0x([0-9a-f]+), BAR2 0x[0-9a-f]+ -> 0x([0-9a-f]+)")))
        << diagnose(r.proc);
    const uint64_t bar0 = std::stoull(m[1].str(), nullptr, 16), bar2 = std::stoull(m[2].str(), nullptr, 16);
    for (const auto& b : (*devA)["bars"]) {
        if (b["index"] == 0) {
            EXPECT_EQ(b["address"], bar0);
            EXPECT_TRUE(b["mmapped"].empty()) << "edu's register BAR is not mmappable: " << b.dump();
            EXPECT_GE(jsonCount(b, {"trapped_reads"}), 1024u) << "dma step: A's buffer read back through BAR0 (1024 dwords)";
        }
        if (b["index"] == 2) {
            EXPECT_EQ(b["address"], bar2);
            EXPECT_FALSE(b["mmapped"].empty()) << b.dump();
        }
    }
    // Every MMIO exit is accounted for on the VMM side: trapped BAR accesses of the two devices
    // (forwarded with pread/pwrite, or the emulated MSI-X table), ECAM, and the two reads of
    // stale BAR addresses after relocation (unclaimed).
    uint64_t barTrapped = 0;
    for (const auto& d : pt["devices"])
        for (const auto& b : d["bars"]) barTrapped += jsonCount(b, {"trapped_reads"}) + jsonCount(b, {"trapped_writes"});
    const uint64_t ecam = jsonCount(r.stats, {"mmio", "devices", "pci-ecam", "reads"}) +
                          jsonCount(r.stats, {"mmio", "devices", "pci-ecam", "writes"});
    const uint64_t unclaimed = jsonCount(r.stats, {"mmio", "unclaimed", "reads"}) +
                               jsonCount(r.stats, {"mmio", "unclaimed", "writes"});
    EXPECT_GT(ecam, 0u);
    EXPECT_EQ(unclaimed, 2u);
    EXPECT_EQ(barTrapped + ecam + unclaimed, mmioExits);

    for (const auto& b : (*devB)["bars"]) {
        if (b["index"] == 0) {
            EXPECT_GE(jsonCount(b, {"trapped_reads"}), 1024u) << "p2p step: B's buffer read back through BAR0";
        }
    }
    // Both devices' memory BARs are in the IOMMU for P2P.
    EXPECT_GE(jsonCount(*devA, {"p2p_mappings"}), 1u);
    EXPECT_GE(jsonCount(*devB, {"p2p_mappings"}), 1u);

    // The DMAs to unmapped IOVAs were recorded as IOMMU faults of device A, at the IOVAs the
    // payload used: the first unmapped byte past RAM (end of RAM = 256 MiB here; the guest saw
    // exactly the RAM half of that DMA land, page by page as on real VT-d, so the fault covers
    // only the rest) and the hole.
    ASSERT_TRUE(std::regex_search(out, m, std::regex("DMA to iova 0x([0-9a-f]+) \\(\\+0x([0-9a-f]+), straddling the end of RAM\\) wrote exactly its RAM half; 0x([0-9a-f]+) ")))
        << diagnose(r.proc);
    const uint64_t straddle = std::stoull(m[1].str(), nullptr, 16), hole = std::stoull(m[3].str(), nullptr, 16);
    EXPECT_EQ(straddle + std::stoull(m[2].str(), nullptr, 16) / 2, 256ull << 20);
    bool sawStraddle = false, sawHole = false;
    ASSERT_TRUE(pt.contains("dma_faults")) << pt.dump(2);
    for (const auto& f : pt["dma_faults"]) {
        EXPECT_EQ(f.value("device", ""), "0000:01:00.0") << f.dump();
        EXPECT_TRUE(f.value("write", false)) << f.dump();
        if (f["iova"] == (256ull << 20)) {
            sawStraddle = true;
            EXPECT_EQ(f.value("size", 0ull), std::stoull(m[2].str(), nullptr, 16) / 2) << f.dump();
        }
        if (f["iova"] == hole) {
            sawHole = true;
            EXPECT_EQ(f.value("size", 0ull), 256u) << f.dump();
        }
    }
    EXPECT_TRUE(sawStraddle) << pt["dma_faults"].dump();
    EXPECT_TRUE(sawHole) << pt["dma_faults"].dump();
    EXPECT_EQ(pt["dma_faults"].size(), 2u) << pt["dma_faults"].dump();

    // No exit reasons other than port I/O (serial, 0xCF8, exit device) and MMIO (trapped accesses):
    // interrupts are injected by KVM from the device's eventfd without involving a vCPU exit.
    for (auto it = r.stats["exits"].begin(); it != r.stats["exits"].end(); ++it)
        EXPECT_TRUE(it.key() == "IO" || it.key() == "MMIO") << "unexpected exit reason " << it.key() << ": " << it.value();
}

INSTANTIATE_TEST_SUITE_P(Backends, PassthroughTest, ::testing::Values("type1", "iommufd"),
                         [](const auto& info) { return std::string(info.param); });

// configs/demo.json (the README's run command) is the passthrough demo: its own config, run with
// the payload of this build.
TEST(PassthroughDemo, DemoConfigShowsDeviceDmaAndInterrupts) {
    REQUIRE_KVM();
    PtRun r = runPassthrough(fs::path(CONDUIT_SOURCE_DIR) / "configs/demo.json", "pt_edu");
    ASSERT_EQ(r.proc.exitStatus, 0) << diagnose(r.proc);
    for (const char* line : {"pt: find ok: edu A 00:", "pt: dma ok: 4096 bytes", "pt: msix ok: 8 vectors fired",
                             "pt: msi ok: 4 of 4 vectors", "pt: p2p ok", "pt: interrupts 24\n", "pt: all steps passed\n"})
        EXPECT_NE(r.proc.out.find(line), std::string::npos) << line << "\n" << diagnose(r.proc);
    EXPECT_EQ(r.stats["passthrough"].value("host", ""), "simulated");
}

// Without P2P mappings for B ("p2p": false) A's DMA into B's BAR is an IOMMU fault: the payload
// stops at the p2p step (0x16) and the fault is recorded at B's BAR address.
TEST(PassthroughPayload, P2pFailsWhenTheTargetBarIsNotDmaMapped) {
    REQUIRE_KVM();
    PtRun r = runPassthrough(configPath("passthrough_no_p2p.json"), "pt_edu");
    EXPECT_EQ(r.proc.exitStatus, 0x16) << diagnose(r.proc);
    EXPECT_NE(r.proc.out.find("pt: relocate ok"), std::string::npos) << diagnose(r.proc);
    EXPECT_NE(r.proc.out.find("pt: FAIL p2p: A -> B's BAR bytes differ"), std::string::npos) << diagnose(r.proc);
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.proc.out, m, std::regex("B's BAR word 0 at 0x([0-9a-f]+):"))) << diagnose(r.proc);
    const uint64_t at = std::stoull(m[1].str(), nullptr, 16);
    bool seen = false;
    for (const auto& f : r.stats["passthrough"]["dma_faults"]) seen = seen || (f["device"] == "0000:01:00.0" && f["iova"] == at);
    EXPECT_TRUE(seen) << r.stats["passthrough"].dump();
}

// The payload can fail: without passed-through devices it stops at "find" with its status 3.
TEST(PassthroughPayload, FailsAtFindWithoutEduDevices) {
    REQUIRE_KVM();
    PtRun r = runPassthrough(configPath("passthrough_none.json"), "pt_edu");
    EXPECT_EQ(r.proc.exitStatus, 3) << diagnose(r.proc);
    EXPECT_NE(r.proc.out.find("pt: enumerate ok"), std::string::npos) << diagnose(r.proc);
    EXPECT_NE(r.proc.out.find("pt: FAIL find: fewer than two edu devices"), std::string::npos) << diagnose(r.proc);
}

}  // namespace
}  // namespace conduit::test
