// The arm64 device tree against a golden source: the blob is decompiled with Debian's dtc and
// compared, text for text, with tests/unit/arch/arm64/golden/virt-2cpu.dts. A change to the tree shows
// as a diff in the failure. To accept an intended change, run the test with
// CONDUIT_UPDATE_GOLDEN=1 and review the golden file's diff.
#include "vmm/arch/arm64/fdt.h"
#include "vmm/arch/arm64/vsmmu_fdt.h"

#include <libfdt.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "vmm/arch/arm64/board.h"

namespace conduit::vmm::arm64 {
namespace {

namespace fs = std::filesystem;
using memory::AddressRange;

const fs::path kGolden = fs::path(CONDUIT_SOURCE_DIR) / "tests/unit/arch/arm64/golden/virt-2cpu.dts";
// The same machine with the virtual SMMUv3 (issue 13): the smmuv3 node and the bridge's iommu-map.
const fs::path kVsmmuGolden = fs::path(CONDUIT_SOURCE_DIR) / "tests/unit/arch/arm64/golden/virt-2cpu-vsmmu.dts";

struct Command {
    int status;
    std::string output;  // stdout and stderr
};

Command run(const std::string& cmd) {
    Command c{-1, {}};
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return c;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) c.output.append(buf, n);
    int st = ::pclose(p);
    c.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return c;
}

class ScratchDir {
public:
    ScratchDir() {
        std::string tmpl = (fs::temp_directory_path() / "conduit-fdt-XXXXXX").string();
        path_ = ::mkdtemp(tmpl.data());
    }
    ~ScratchDir() { fs::remove_all(path_); }
    fs::path operator/(const std::string& name) const { return fs::path(path_) / name; }

private:
    std::string path_;
};

void writeFile(const fs::path& p, std::span<const uint8_t> bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string readFile(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// dtc -I dtb -O dts; also fails the test on any dtc warning (a binding check dtc knows), unless
// the tree is broken on purpose.
std::string decompile(const std::vector<uint8_t>& blob, bool expectNoWarnings = true) {
    ScratchDir dir;
    writeFile(dir / "tree.dtb", blob);
    auto c = run("dtc -q -I dtb -O dts -o " + (dir / "tree.dts").string() + " " + (dir / "tree.dtb").string());
    EXPECT_EQ(c.status, 0) << c.output;
    if (expectNoWarnings) {
        auto warnings = run("dtc -I dtb -O dts -o /dev/null " + (dir / "tree.dtb").string());
        EXPECT_EQ(warnings.output, "") << "dtc warns about the tree";
    }
    return readFile(dir / "tree.dts");
}

// `diff -u golden actual`: empty when they are equal.
std::string diffAgainstGolden(const std::string& actual, const fs::path& golden = kGolden) {
    ScratchDir dir;
    std::ofstream(dir / "actual.dts") << actual;
    auto c = run("diff -u " + golden.string() + " " + (dir / "actual.dts").string());
    return c.status == 0 ? std::string() : c.output;
}

BoardOptions goldenOptions() {
    BoardOptions o;
    o.mpidrs = {0x8000'0000, 0x8000'0001};  // what KVM reports: RES1 bit 31 + Aff0
    o.bootargs = "console=ttyS0 quiet panic=-1";
    o.initrd = AddressRange{0x4f00'0000, 0x12'3400};
    return o;
}

std::vector<uint8_t> goldenBlob() {
    auto layout = Layout::create(256 * MiB, 2);
    EXPECT_TRUE(layout);
    auto blob = buildFdt(describeBoard(*layout, goldenOptions()));
    EXPECT_TRUE(blob) << blob.error().describe();
    return blob ? *blob : std::vector<uint8_t>{};
}

TEST(Arm64Fdt, MatchesTheGoldenSource) {
    std::string dts = decompile(goldenBlob());
    if (std::getenv("CONDUIT_UPDATE_GOLDEN")) {
        std::ofstream(kGolden) << dts;
        GTEST_SKIP() << "golden file rewritten: " << kGolden;
    }
    ASSERT_TRUE(fs::exists(kGolden)) << kGolden;
    std::string diff = diffAgainstGolden(dts);
    EXPECT_TRUE(diff.empty()) << "the device tree differs from " << kGolden << ":\n" << diff;
}

VsmmuFdtParams vsmmuParams(const Layout& l) {
    // Two fronted functions: 00:03.0 and 00:04.1.
    return {l.vsmmu(), Layout::kVsmmuEventqSpi, Layout::kVsmmuGerrorSpi, Layout::kVsmmuCmdqSyncSpi, true, l.msiWindow(),
            {0x18, 0x21}};
}

std::vector<uint8_t> vsmmuBlob(VsmmuFdtParams (*params)(const Layout&) = vsmmuParams) {
    auto layout = Layout::create(256 * MiB, 2);
    EXPECT_TRUE(layout);
    VsmmuFdt ext(params(*layout));
    FdtDescription d = describeBoard(*layout, goldenOptions());
    d.extensions = {&ext};
    auto blob = buildFdt(d);
    EXPECT_TRUE(blob) << blob.error().describe();
    return blob ? *blob : std::vector<uint8_t>{};
}

TEST(Arm64Fdt, WithTheVsmmuMatchesItsGoldenSource) {
    std::string dts = decompile(vsmmuBlob());
    if (std::getenv("CONDUIT_UPDATE_GOLDEN")) {
        std::ofstream(kVsmmuGolden) << dts;
        GTEST_SKIP() << "golden file rewritten: " << kVsmmuGolden;
    }
    ASSERT_TRUE(fs::exists(kVsmmuGolden)) << kVsmmuGolden;
    std::string diff = diffAgainstGolden(dts, kVsmmuGolden);
    EXPECT_TRUE(diff.empty()) << "the device tree differs from " << kVsmmuGolden << ":\n" << diff;
    // Against the plain golden: exactly the vSMMU node and the iommu-map are new.
    std::string plain = diffAgainstGolden(dts);
    EXPECT_NE(plain.find("+\tsmmuv3@9050000 {"), std::string::npos) << plain;
    EXPECT_NE(plain.find("+\t\tiommu-map = <0x00 0x03 0x00 0x10000>;"), std::string::npos) << plain;
}

TEST(Arm64Fdt, TheVsmmuNodeSaysCoherentOnlyWhenTheHostIs) {
    auto dts = decompile(vsmmuBlob([](const Layout& l) {
        auto p = vsmmuParams(l);
        p.dmaCoherent = false;
        return p;
    }));
    std::string diff = diffAgainstGolden(dts, kVsmmuGolden);
    EXPECT_NE(diff.find("-\t\tdma-coherent;"), std::string::npos) << diff;
    // One line removed from the smmuv3 node; the host bridge keeps its own dma-coherent.
    EXPECT_NE(dts.find("pcie@30000000"), std::string::npos);
}

TEST(Arm64Fdt, TheGoldenComparisonFailsWithoutTheItsNode) {
    auto layout = Layout::create(256 * MiB, 2);
    ASSERT_TRUE(layout);
    BoardOptions o = goldenOptions();
    o.its = false;
    auto blob = buildFdt(describeBoard(*layout, o));
    ASSERT_TRUE(blob) << blob.error().describe();
    std::string diff = diffAgainstGolden(decompile(*blob));
    ASSERT_NE(diff, "") << "a tree without the ITS matched the golden source";
    EXPECT_NE(diff.find("-\t\tits@7ff0000 {"), std::string::npos) << diff;
    EXPECT_NE(diff.find("-\t\t\tmsi-controller;"), std::string::npos) << diff;
    EXPECT_NE(diff.find("-\t\tmsi-map = "), std::string::npos) << diff;  // the host bridge lost its MSI route
}

// Every node of the golden tree, deleted in turn from the blob: the comparison must fail and the
// diff must show that node's opening line as removed.
TEST(Arm64Fdt, TheGoldenComparisonFailsWhenAnyNodeIsRemoved) {
    const auto blob = goldenBlob();
    struct Case {
        const char* path;
        const char* line;
    } cases[] = {
        {"/psci", "-\tpsci {"},
        {"/memory@40000000", "-\tmemory@40000000 {"},
        {"/cpus/cpu@1", "-\t\tcpu@1 {"},
        {"/intc@7000000", "-\tintc@7000000 {"},
        {"/intc@7000000/its@7ff0000", "-\t\tits@7ff0000 {"},
        {"/timer", "-\ttimer {"},
        {"/uart@9000000", "-\tuart@9000000 {"},
        {"/pcie@30000000", "-\tpcie@30000000 {"},
        {"/chosen", "-\tchosen {"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.path);
        std::vector<uint8_t> copy = blob;
        void* fdt = copy.data();
        int node = fdt_path_offset(fdt, c.path);
        ASSERT_GE(node, 0) << fdt_strerror(node);
        ASSERT_EQ(fdt_del_node(fdt, node), 0);
        std::string diff = diffAgainstGolden(decompile(copy, false));
        ASSERT_NE(diff, "");
        EXPECT_NE(diff.find(c.line), std::string::npos) << diff;
    }
}

TEST(Arm64Fdt, CarriesTheValuesLinuxReads) {
    auto blob = goldenBlob();
    const void* fdt = blob.data();
    ASSERT_EQ(fdt_check_header(fdt), 0);
    EXPECT_LE(blob.size(), 2u * MiB);
    auto cells = [&](const char* path, const char* prop) {
        int node = fdt_path_offset(fdt, path);
        EXPECT_GE(node, 0) << path;
        int len = 0;
        auto* p = static_cast<const fdt32_t*>(fdt_getprop(fdt, node, prop, &len));
        std::vector<uint32_t> v;
        for (int i = 0; p && i < len / 4; ++i) v.push_back(fdt32_to_cpu(p[i]));
        return v;
    };
    uint32_t gic = cells("/intc@7000000", "phandle").at(0);
    uint32_t its = cells("/intc@7000000/its@7ff0000", "phandle").at(0);
    EXPECT_NE(gic, its);
    EXPECT_EQ(cells("/", "interrupt-parent"), std::vector<uint32_t>{gic});
    EXPECT_EQ(cells("/pcie@30000000", "msi-map"), (std::vector<uint32_t>{0, its, 0, 0x10000}));
    EXPECT_EQ(cells("/cpus/cpu@0", "reg"), std::vector<uint32_t>{0});
    EXPECT_EQ(cells("/cpus/cpu@1", "reg"), std::vector<uint32_t>{1});
    // GICD, then one redistributor region of 2 x 128 KiB.
    EXPECT_EQ(cells("/intc@7000000", "reg"),
              (std::vector<uint32_t>{0, 0x0700'0000, 0, 0x1'0000, 0, 0x0710'0000, 0, 0x4'0000}));
    EXPECT_EQ(cells("/chosen", "linux,initrd-start"), (std::vector<uint32_t>{0, 0x4f00'0000}));
    EXPECT_EQ(cells("/chosen", "linux,initrd-end"), (std::vector<uint32_t>{0, 0x4f12'3400}));
    // interrupt-map: 32 slots x 4 pins, 10 cells each; every pin of slot 1 is on SPI 17.
    auto map = cells("/pcie@30000000", "interrupt-map");
    ASSERT_EQ(map.size(), 32u * 4 * 10);
    EXPECT_EQ(std::vector<uint32_t>(map.begin() + 40, map.begin() + 50),
              (std::vector<uint32_t>{1 << 11, 0, 0, 1, gic, 0, 0, kFdtIrqSpi, 17, kFdtIrqLevelHigh}));
    EXPECT_EQ(std::vector<uint32_t>(map.begin() + 70, map.begin() + 80),
              (std::vector<uint32_t>{1 << 11, 0, 0, 4, gic, 0, 0, kFdtIrqSpi, 17, kFdtIrqLevelHigh}));
}

TEST(Arm64Fdt, CpusWithAff3GetTwoAddressCells) {
    auto layout = Layout::create(256 * MiB, 2);
    ASSERT_TRUE(layout);
    BoardOptions o = goldenOptions();
    o.mpidrs = {0x1'8000'0000, 0x1'8000'0100};  // Aff3 = 1; Aff1 = 1 on the second
    auto blob = buildFdt(describeBoard(*layout, o));
    ASSERT_TRUE(blob) << blob.error().describe();
    std::string dts = decompile(*blob);
    EXPECT_NE(dts.find("cpu@100000100 {"), std::string::npos) << dts;
    EXPECT_NE(dts.find("reg = <0x01 0x100>;"), std::string::npos) << dts;
}

// Extensions add nodes and host-bridge properties with phandles of their own (the vSMMU's way in).
class FakeSmmu : public FdtExtension {
public:
    void reservePhandles(FdtPhandles& p) const override { p.extra["smmu"] = p.allocate(); }
    Result<void> writeRootNodes(FdtWriter& w, const FdtPhandles& p) const override {
        TRY(w.beginNode("smmuv3@9050000"));
        TRY(w.propertyString("compatible", "arm,smmu-v3"));
        TRY(w.propertyCells("reg", {0, 0x0905'0000, 0, 0x2'0000}));
        TRY(w.propertyU32("#iommu-cells", 1));
        TRY(w.propertyU32("phandle", p.extra.at("smmu")));
        return w.endNode();
    }
    Result<void> writePciHostProperties(FdtWriter& w, const FdtPhandles& p) const override {
        return w.propertyCells("iommu-map", {0, p.extra.at("smmu"), 0, 0x10000});
    }
};

TEST(Arm64Fdt, ExtensionsAddNodesAndHostBridgeProperties) {
    auto layout = Layout::create(256 * MiB, 2);
    ASSERT_TRUE(layout);
    FdtDescription d = describeBoard(*layout, goldenOptions());
    FakeSmmu smmu;
    d.extensions.push_back(&smmu);
    auto blob = buildFdt(d);
    ASSERT_TRUE(blob) << blob.error().describe();
    std::string dts = decompile(*blob);
    EXPECT_NE(dts.find("smmuv3@9050000 {"), std::string::npos) << dts;
    EXPECT_NE(dts.find("iommu-map = <0x00 0x03 0x00 0x10000>;"), std::string::npos) << dts;  // gic 1, its 2, smmu 3
}

class FailingExtension : public FdtExtension {
public:
    Result<void> writeRootNodes(FdtWriter& w, const FdtPhandles&) const override {
        TRY(w.beginNode("broken"));
        TRY(w.endNode());
        return w.endNode();  // one end too many: closes the root
    }
};

TEST(Arm64Fdt, LibfdtErrorsNameTheNode) {
    auto w = FdtWriter::create(160);  // header + a few nodes
    ASSERT_TRUE(w) << w.error().describe();
    ASSERT_TRUE(w->beginNode(""));
    Result<void> r = success();
    for (int i = 0; i < 16 && r; ++i) {
        r = w->beginNode("cpus");
        if (r) r = w->propertyString("compatible", "something-long-enough-to-fill-the-buffer");
        if (r) r = w->endNode();
    }
    ASSERT_FALSE(r);
    EXPECT_TRUE(w->outOfSpace());
    EXPECT_NE(r.error().what().find("node /cpus"), std::string::npos) << r.error().what();
    EXPECT_NE(r.error().what().find("FDT_ERR_NOSPACE"), std::string::npos) << r.error().what();
}

TEST(Arm64Fdt, AnUnbalancedExtensionIsAnErrorNotABlob) {
    auto layout = Layout::create(256 * MiB, 2);
    ASSERT_TRUE(layout);
    FdtDescription d = describeBoard(*layout, goldenOptions());
    FailingExtension bad;
    d.extensions.push_back(&bad);
    auto blob = buildFdt(d);
    ASSERT_FALSE(blob);
    EXPECT_NE(blob.error().what().find("device tree"), std::string::npos) << blob.error().what();
}

TEST(Arm64Fdt, RefusesAnIncompleteDescription) {
    FdtDescription d;
    auto r = buildFdt(d);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().what().find("no memory"), std::string::npos);
    auto layout = Layout::create(256 * MiB, 2);
    ASSERT_TRUE(layout);
    d = describeBoard(*layout, goldenOptions());
    d.pci->ecam.size = 128 * MiB;  // does not cover buses 0..255
    r = buildFdt(d);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().what().find("pcie"), std::string::npos) << r.error().what();
}

TEST(Arm64Fdt, GrowsItsBufferForLargeTrees) {
    auto layout = Layout::create(256 * MiB, Layout::kMaxVcpus);
    ASSERT_TRUE(layout);
    BoardOptions o = goldenOptions();
    o.mpidrs.clear();
    for (unsigned i = 0; i < Layout::kMaxVcpus; ++i) o.mpidrs.push_back(0x8000'0000 | ((i / 16) << 8) | (i % 16));
    o.bootargs = std::string(20000, 'x');  // more than the first 16 KiB buffer
    auto blob = buildFdt(describeBoard(*layout, o));
    ASSERT_TRUE(blob) << blob.error().describe();
    EXPECT_GT(blob->size(), 16u * 1024);
    EXPECT_EQ(fdt_check_header(blob->data()), 0);
    EXPECT_GE(fdt_path_offset(blob->data(), "/cpus/cpu@60f"), 0);  // vCPU 111: Aff1 6, Aff0 15
}

}  // namespace
}  // namespace conduit::vmm::arm64
