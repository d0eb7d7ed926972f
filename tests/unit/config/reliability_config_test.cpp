// Bad configs (docs/reliability.md, "bad configs"): the classes tests/unit/config/config_test.cpp
// does not already pin down (device entries, the simulated host, the config file itself, hostile
// texts), each with its exact message. Every message must be one line: the CLI prints it as
// "conduit: error: <message>".
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "tests/unit/config/config_dir_fixture.h"
#include "vmm/config.h"

namespace conduit::vmm {
namespace {

namespace fs = std::filesystem;

class ReliabilityConfig : public ConfigDirFixture {};

struct BadCase {
    const char* name;
    std::string text;
    const char* message;
};

#define P "{\"payload\": {\"path\": \"p.bin\"}, "
const BadCase kBadDevices[] = {
    {"device host not a PCI address", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"01:00\"}]}", "{F}:1:73: /devices/0/host: \"01:00\" is neither a PCI address (\"0000:01:00.0\"), a sysfs device path nor /dev/vfio/devices/vfioN"},
    {"device host with a newline", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\\nx\"}]}", "{F}:1:73: /devices/0/host: \"0000:01:00.0\\nx\" is neither a PCI address (\"0000:01:00.0\"), a sysfs device path nor /dev/vfio/devices/vfioN"},
    {"device sysfs path escaping", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"/sys/bus/pci/devices/../0000:01:00.0\"}]}", "{F}:1:73: /devices/0/host: \"/sys/bus/pci/devices/../0000:01:00.0\" is not a PCI device's sysfs directory (expected /sys/bus/pci/devices/DDDD:BB:DD.F or /sys/devices/pciDDDD:BB/.../DDDD:BB:DD.F)"},
    {"device host missing", P "\"devices\": [{\"type\": \"vfio-pci\"}]}", "{F}:1:44: /devices/0: missing \"host\""},
    {"device host not a string", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": 1}]}", "{F}:1:73: /devices/0/host: expected a string, got number 1"},
    {"device backend unknown", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"backend\": \"vfio\"}]}", "{F}:1:100: /devices/0/backend: unknown value \"vfio\" (expected one of \"auto\", \"type1\", \"iommufd\")"},
    {"cdev with type1", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"/dev/vfio/devices/vfio0\", \"backend\": \"type1\"}]}", "{F}:1:111: /devices/0/backend: a /dev/vfio/devices/vfioN cdev needs the iommufd backend (give a BDF for type1)"},
    {"slot zero", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"slot\": 0}]}", "{F}:1:97: /devices/0/slot: must be between 1 and 31, got 0"},
    {"slot 32", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"slot\": 32}]}", "{F}:1:97: /devices/0/slot: must be between 1 and 31, got 32"},
    {"slot twice", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"slot\": 3}, {\"type\": \"vfio-pci\", \"host\": \"0000:02:00.0\", \"slot\": 3}]}", "{F}:1:154: /devices/1/slot: slot 3 is already used by /devices/0"},
    {"device assigned twice", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\"}, {\"type\": \"vfio-pci\", \"host\": \"/sys/bus/pci/devices/0000:01:00.0\"}]}", "{F}:1:119: /devices/1/host: device \"/sys/bus/pci/devices/0000:01:00.0\" is assigned twice"},
    {"device unknown key", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"bdf\": \"0000:01:00.0\"}]}", "{F}:1:89: /devices/0/bdf: unknown key (expected one of \"type\", \"host\", \"backend\", \"slot\", \"p2p\", \"viommu\")"},
    {"p2p not a boolean", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"p2p\": \"no\"}]}", "{F}:1:96: /devices/0/p2p: expected true or false, got string \"no\""},
    {"viommu without type", P "\"viommu\": {}}", "{F}:1:42: /viommu: missing \"type\" (\"smmuv3\")"},
    {"viommu type unknown", P "\"viommu\": {\"type\": \"virtio\"}}", "{F}:1:51: /viommu/type: unknown value \"virtio\" (expected one of \"smmuv3\")"},
    {"viommu unknown key", P "\"viommu\": {\"type\": \"smmuv3\", \"stage\": 1}}", "{F}:1:61: /viommu/stage: unknown key (expected one of \"type\")"},
    {"device viommu without a viommu", P "\"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"viommu\": true}]}", "{F}:1:99: /devices/0/viommu: there is no virtual IOMMU to put the device behind: add a top-level \"viommu\": {\"type\": \"smmuv3\"}"},
    {"device viommu not a boolean", P "\"viommu\": {\"type\": \"smmuv3\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"viommu\": 1}]}", "{F}:1:129: /devices/0/viommu: expected true or false, got number 1"},
    {"type1 behind the viommu", P "\"viommu\": {\"type\": \"smmuv3\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"backend\": \"type1\"}]}", "{F}:1:130: /devices/0/backend: a device behind the virtual IOMMU needs the iommufd backend (its nesting objects have no type1 form); use \"iommufd\" or \"auto\", or set \"viommu\": false"},
    {"viommu with no device behind it", P "\"viommu\": {\"type\": \"smmuv3\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:01:00.0\", \"viommu\": false}]}", "{F}:1:42: /viommu: no vfio-pci device is behind the virtual IOMMU (every one says \"viommu\": false, or there is none)"},
    {"vfio_host without kind", P "\"vfio_host\": {}}", "{F}:1:45: /vfio_host: missing \"kind\" (\"real\" or \"simulated\")"},
    {"vfio_host kind unknown", P "\"vfio_host\": {\"kind\": \"fake\"}}", "{F}:1:54: /vfio_host/kind: unknown value \"fake\" (expected one of \"real\", \"simulated\")"},
    {"simulated-only key on a real host", P "\"vfio_host\": {\"kind\": \"real\", \"devices\": []}}", "{F}:1:62: /vfio_host/devices: only used with \"kind\": \"simulated\""},
    {"simulated device twice", P "\"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{\"bdf\": \"01:00.0\"}, {\"bdf\": \"0000:01:00.0\"}]}}", "{F}:1:107: /vfio_host/devices/1/bdf: \"0000:01:00.0\" is simulated twice"},
    {"simulated device without bdf", P "\"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{}]}}", "{F}:1:79: /vfio_host/devices/0: missing \"bdf\""},
    {"simulated device bad bdf", P "\"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{\"bdf\": \"0000:01:20.0\"}]}}", "{F}:1:87: /vfio_host/devices/0/bdf: \"0000:01:20.0\" is not a PCI address like \"0000:01:00.0\""},
    {"simulated msi vectors", P "\"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{\"bdf\": \"0000:01:00.0\", \"msi_vectors\": 3}]}}", "{F}:1:118: /vfio_host/devices/0/msi_vectors: must be a power of two, got 3"},
    {"simulated bar size", P "\"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{\"bdf\": \"0000:01:00.0\", \"memory_bar_size\": \"0x3000\"}]}}", "{F}:1:122: /vfio_host/devices/0/memory_bar_size: must be a power of two between 16 KiB and 1 GiB, got 0x3000"},
    {"simulated model", P "\"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{\"bdf\": \"0000:01:00.0\", \"model\": \"nvme\"}]}}", "{F}:1:112: /vfio_host/devices/0/model: unknown value \"nvme\" (expected one of \"edu\")"},
};
const BadCase kHostileTexts[] = {
    {"invalid UTF-8", std::string("{\"vcpus\": \"\xff\"}"), "{F}:1:12: syntax error: while parsing value - invalid string: ill-formed UTF-8 byte; last read: '\"\xFF'"},
    {"NUL byte", std::string("{\"vcpus\": 1,\0 \"x\": 2}", 20), "{F}:1:13: syntax error: while parsing object key - unexpected end of input; expected string literal"},
    {"integer beyond 64 bits", "{\"vcpus\": 123456789012345678901234567890}", "{F}:1:11: /vcpus: out of range: 1.2345678901234568e+29"},
    // The UTF-8 byte order mark is skipped: the column counts from the character after it.
    {"byte order mark then garbage", "\xef\xbb\xbf{\"vcpus\": }", "{F}:1:11: syntax error: while parsing value - unexpected '}'; expected '[', '{', or a literal"},
};
#undef P

void expectOneLine(const std::string& message) {
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST_F(ReliabilityConfig, BadDeviceEntriesGiveExactMessages) {
    for (const auto& c : kBadDevices) {
        SCOPED_TRACE(c.name);
        auto r = parseConfig(c.text, file);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().what(), expand(c.message));
        expectOneLine(r.error().describe());
    }
}

TEST_F(ReliabilityConfig, HostileTextsGiveExactOneLineMessages) {
    for (const auto& c : kHostileTexts) {
        SCOPED_TRACE(c.name);
        auto r = parseConfig(c.text, file);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().what(), expand(c.message));
        expectOneLine(r.error().describe());
    }
}

// F1 (docs/reliability.md, found by review of fuzz_config's slow inputs): PositionScanner recursed
// once per nesting level and copied the growing JSON pointer at each, so 20,000 nested arrays took
// 0.9 GB and 6 s and 100,000 overflowed the stack (SIGSEGV). The loader now refuses nesting beyond
// 32 levels before any parser sees the text, at the position of the first bracket too deep.
TEST_F(ReliabilityConfig, DeeplyNestedInputIsRefusedWithoutCrashing) {
    struct Case {
        const char* open;  // one nesting level
        char close;
        unsigned column;   // of the 33rd level: the document's '{' is level 1, "vcpus" opens at column 11
    };
    for (const Case& c : {Case{"[", ']', 11 + 31}, Case{"{\"a\":", '}', 11 + 31 * 5}}) {
        SCOPED_TRACE(c.open);
        for (size_t depth : {size_t{32}, size_t{100000}}) {
            std::string text = "{\"vcpus\": ";
            for (size_t i = 0; i < depth; ++i) text += c.open;
            text.append(depth, c.close);
            text += "}";
            auto r = parseConfig(text, file);
            ASSERT_FALSE(r.ok());
            EXPECT_EQ(r.error().what(), fmt::format("{}:1:{}: nested deeper than 32 levels", file.string(), c.column));
            expectOneLine(r.error().describe());
        }
    }
    // 32 levels exactly is not refused for its depth: the error is about the value.
    std::string text = "{\"vcpus\": ";
    for (int i = 0; i < 31; ++i) text += "[";
    text.append(31, ']');
    text += "}";
    auto r = parseConfig(text, file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), file.string() + ":1:11: /vcpus: expected an integer, got array");
    // Brackets inside strings do not count.
    auto s = parseConfig("{\"payload\": {\"path\": \"" + std::string(100, '[') + "\\\"\"}}", file);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().what().find("nested deeper"), std::string::npos) << s.error().what();
}

// FINDING (docs/reliability.md, found by fuzz_config): a number beyond double range makes
// nlohmann::json::parse throw out_of_range (406), which parseConfig (vmm/config_loader.cpp, the
// try around Json::parse) does not catch: the library throws instead of returning an error, and the
// CLI's last-resort handler prints "conduit: error: unexpected exception: [json.exception.
// out_of_range.406] number overflow parsing '1e999'" with no file or position. Disabled until fixed.
TEST_F(ReliabilityConfig, NumberBeyondDoubleRangeIsAnErrorValue) {
    for (const char* text : {"{\"vcpus\": 1e999}", "{\"vcpus\": -1e999}"}) {
        SCOPED_TRACE(text);
        std::optional<Result<VmConfig>> r;
        EXPECT_NO_THROW(r.emplace(parseConfig(text, file)));
        ASSERT_TRUE(r.has_value());
        ASSERT_FALSE(r->ok());
        EXPECT_EQ(r->error().what().rfind(file.string() + ":1:11: ", 0), 0u) << r->error().what();
    }
}

// F3 (docs/reliability.md, found by fuzz_config): a key containing an escaped newline ("vc\\npus")
// was decoded into the JSON pointer as is, so the message spanned two lines. Control characters
// in keys, values and file names are now shown escaped.
TEST_F(ReliabilityConfig, ControlCharactersInKeysKeepMessagesOnOneLine) {
    auto r = parseConfig("{\"vc\\npus\": 1}", file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), file.string() + ":1:2: /vc\\npus: unknown key (did you mean \"vcpus\"?)");
    auto t = parseConfig("{\"vcpus\": 1, \"payload\": {\"path\": \"p.bin\", \"mode\": \"x\\u0001\\t\"}}", file);
    ASSERT_FALSE(t.ok());
    expectOneLine(t.error().describe());
    EXPECT_NE(t.error().what().find("\\u0001\\t"), std::string::npos) << t.error().what();
    // Found by fuzz_config once it checked every byte: nlohmann's "last read" shows DEL raw.
    auto d = parseConfig(std::string("{\"p\x7f\x7f\0", 6), file);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.error().what(), file.string() + ":1:6: syntax error: while parsing object key - invalid string: control "
                                "character U+0000 (NUL) must be escaped to \\u0000; last read: '\"p\\x7f\\x7f<U+0000>'; expected string literal");
    auto u = parseConfig("{\"vcpus\": 0}", dir / "a\nb.json");
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.error().what(), (dir / "a").string() + "\\nb.json:1:11: /vcpus: must be between 1 and 32, got 0");
}

TEST_F(ReliabilityConfig, ConfigFileMissingUnreadableADirectoryOrEmpty) {
    auto d = loadConfig(dir / "sub");
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.error().describe(), expand("{D}/sub: the config is a directory; give a regular file"));
    auto missing = loadConfig(dir / "absent.json");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().describe(), expand("{D}/absent.json: cannot open config file: No such file or directory (ENOENT)"));
    std::ofstream(dir / "plain") << "{}";
    auto notDir = loadConfig(dir / "plain" / "vm.json");  // unreadable path (a file used as a directory)
    ASSERT_FALSE(notDir.ok());
    EXPECT_EQ(notDir.error().describe(), expand("{D}/plain/vm.json: cannot open config file: Not a directory (ENOTDIR)"));
    std::ofstream(file).close();
    auto e = loadConfig(file);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().describe(), expand("{F}:1:1: syntax error: while parsing value - unexpected end of input; expected '[', '{', or a literal"));
}

}  // namespace
}  // namespace conduit::vmm
