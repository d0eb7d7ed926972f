#include "tests/unit/config/config_dir_fixture.h"
#include "vmm/config.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "vmm/config_positions.h"

namespace conduit::vmm {
namespace {

namespace fs = std::filesystem;

// A scratch directory holding the files configs refer to: p.bin, vmlinuz, initrd.img, sub/.
class ConfigTest : public ConfigDirFixture {};

struct BadCase {
    const char* name;
    const char* text;
    const char* message;
};

const BadCase kBadCases[] = {
    {"syntax", "{\n  \"vcpus\": 1,\n  \"x\" 2\n}",
     "{F}:3:7: syntax error: while parsing object separator - unexpected number literal; expected ':'"},
    {"truncated", "{\"payload\": [1,2",
     "{F}:1:16: syntax error: while parsing array - unexpected end of input; expected ']'"},
    {"empty", "", "{F}:1:1: syntax error: while parsing value - unexpected end of input; expected '[', '{', or a literal"},
    {"invalid literal", "{\n  \"vcpus\": tru\n}", "{F}:2:14: syntax error: while parsing value - invalid literal; last read: '\"vcpus\": tru<U+000A>'"},
    {"comment", "{\"vcpus\": 1 // two\n}", "{F}:1:13: syntax error: while parsing object - invalid literal; last read: '1 /'; expected '}'"},
    {"top level array", "[1]", "{F}:1:1: expected an object at the top level, got array"},
    {"unknown key with suggestion", "{\n  \"vcpu\": 1,\n  \"payload\": {\"path\": \"p.bin\"}\n}",
     "{F}:2:3: /vcpu: unknown key (did you mean \"vcpus\"?)"},
    {"unknown key without suggestion", "{\"payload\": {\"path\": \"p.bin\"}, \"memory\": {\"colour\": 1}}",
     "{F}:1:43: /memory/colour: unknown key (expected one of \"size_mib\", \"hugepages\", \"prefault\")"},
    {"escaped key in pointer", "{\"a/b~\": 1}",
     "{F}:1:2: /a~1b~0: unknown key (expected one of \"vcpus\", \"memory\", \"kernel\", \"payload\", \"serial\", "
     "\"exit_device\", \"devices\", \"vfio_host\", \"on_reboot\", \"viommu\", \"$schema\")"},
    {"size as string", "{\n  \"payload\": {\"path\": \"p.bin\"},\n  \"memory\": {\n    \"size_mib\": \"256\"\n  }\n}",
     "{F}:4:17: /memory/size_mib: expected an integer, got string \"256\""},
    {"unicode-escaped key", "{\"payload\": {\"path\": \"p.bin\"},\n \"vcpu\\u0073\": 0}",
     "{F}:2:16: /vcpus: must be between 1 and 32, got 0"},
    {"zero vcpus", "{\"vcpus\": 0, \"payload\": {\"path\": \"p.bin\"}}", "{F}:1:11: /vcpus: must be between 1 and 32, got 0"},
    {"too many vcpus", "{\"vcpus\": 33}", "{F}:1:11: /vcpus: must be between 1 and 32, got 33"},
    {"fractional vcpus", "{\"vcpus\": 1.5}", "{F}:1:11: /vcpus: expected an integer, got number 1.5"},
    {"negative vcpus", "{\"vcpus\": -1}", "{F}:1:11: /vcpus: must not be negative, got -1"},
    {"vcpus null", "{\"vcpus\": null}", "{F}:1:11: /vcpus: expected an integer, got null"},
    {"tiny memory", "{\"memory\": {\"size_mib\": 1}}",
     "{F}:1:25: /memory/size_mib: must be between 2 and 1048576 (2 MiB to 1 TiB), got 1"},
    {"huge memory", "{\"memory\": {\"size_mib\": 99999999999}}",
     "{F}:1:25: /memory/size_mib: must be between 2 and 1048576 (2 MiB to 1 TiB), got 99999999999"},
    {"memory not an object", "{\"memory\": 256}", "{F}:1:12: /memory: expected an object, got number 256"},
    {"hugepages value", "{\"memory\": {\"hugepages\": \"huge\"}}",
     "{F}:1:26: /memory/hugepages: unknown value \"huge\" (expected one of \"none\", \"transparent\", \"hugetlbfs\")"},
    {"prefault type", "{\"memory\": {\"prefault\": \"yes\"}}",
     "{F}:1:25: /memory/prefault: expected true or false, got string \"yes\""},
    {"neither kernel nor payload", "{\"vcpus\": 2}", "{F}: missing \"kernel\" or \"payload\""},
    {"both kernel and payload", "{\"kernel\": {\"path\": \"vmlinuz\"},\n \"payload\": {\"path\": \"p.bin\"}}",
     "{F}:2:2: /payload: \"kernel\" and \"payload\" are mutually exclusive (give one)"},
    {"kernel file missing", "{\n  \"kernel\": {\n    \"cmdline\": \"quiet\",\n    \"path\": \"bzImage\"\n  }\n}",
     "{F}:4:13: /kernel/path: file not found: {D}/bzImage (No such file or directory)"},
    {"kernel file missing via parent dir", "{\"kernel\": {\"path\": \"sub/../nope/bzImage\"}}",
     "{F}:1:21: /kernel/path: file not found: {D}/nope/bzImage (No such file or directory)"},
    {"kernel path is a directory", "{\"kernel\": {\"path\": \"sub\"}}", "{F}:1:21: /kernel/path: not a regular file: {D}/sub"},
    {"kernel path empty", "{\"kernel\": {\"path\": \"\"}}", "{F}:1:21: /kernel/path: must not be empty"},
    {"kernel without path", "{\"kernel\": {\"cmdline\": \"x\"}}", "{F}:1:12: /kernel: missing \"path\""},
    {"initrd missing", "{\"kernel\": {\"path\": \"vmlinuz\", \"initrd\": \"/nonexistent/initrd\"}}",
     "{F}:1:42: /kernel/initrd: file not found: /nonexistent/initrd (No such file or directory)"},
    {"cmdline type", "{\"kernel\": {\"path\": \"vmlinuz\", \"cmdline\": [\"a\"]}}",
     "{F}:1:43: /kernel/cmdline: expected a string, got array"},
    {"payload unknown key", "{\"payload\": {\"path\": \"p.bin\", \"entry_point\": 5}}",
     "{F}:1:31: /payload/entry_point: unknown key (expected one of \"path\", \"load_address\", \"entry\", \"mode\", \"ap_start\")"},
    {"payload bad hex", "{\"payload\": {\"path\": \"p.bin\", \"load_address\": \"0xZZ\"}}",
     "{F}:1:47: /payload/load_address: expected an integer or a \"0x...\" hex string, got string \"0xZZ\""},
    {"payload decimal string", "{\"payload\": {\"path\": \"p.bin\", \"entry\": \"4096\"}}",
     "{F}:1:40: /payload/entry: expected an integer or a \"0x...\" hex string, got string \"4096\""},
    {"payload huge hex", "{\"payload\": {\"path\": \"p.bin\", \"load_address\": \"0x1000000000000\"}}",
     "{F}:1:47: /payload/load_address: out of range: 0x1000000000000 is beyond the 48-bit guest address space"},
    {"payload hex beyond 64 bits", "{\"payload\": {\"path\": \"p.bin\", \"load_address\": \"0x10000000000000000\"}}",
     "{F}:1:47: /payload/load_address: out of range: 0x10000000000000000"},
    {"payload negative", "{\"payload\": {\"path\": \"p.bin\", \"load_address\": -4096}}",
     "{F}:1:47: /payload/load_address: must not be negative, got -4096"},
    {"payload mode", "{\"payload\": {\"path\": \"p.bin\", \"mode\": \"real32\"}}",
     "{F}:1:39: /payload/mode: unknown value \"real32\" (expected one of \"long64\", \"real16\")"},
    {"serial file without path", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"output\": \"file\"}}",
     "{F}:1:42: /serial: missing \"path\" (required when \"output\" is \"file\")"},
    {"serial path without file", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"path\": \"out.log\"}}",
     "{F}:1:43: /serial/path: only used when \"output\" is \"file\""},
    {"serial dir missing", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"output\": \"file\", \"path\": \"no/out.log\"}}",
     "{F}:1:69: /serial/path: directory not found: {D}/no (No such file or directory)"},
    {"serial path is dir", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"output\": \"file\", \"path\": \"sub\"}}",
     "{F}:1:69: /serial/path: is a directory: {D}/sub"},
    {"serial input", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"input\": \"tty\"}}",
     "{F}:1:52: /serial/input: unknown value \"tty\" (expected one of \"stdin\", \"none\")"},
    {"exit device type", "{\"exit_device\": {\"enabled\": 1}}", "{F}:1:29: /exit_device/enabled: expected true or false, got number 1"},
    {"devices refused", "{\"payload\": {\"path\": \"p.bin\"},\n \"devices\": [\n  {\"type\": \"x\"}\n ]}",
     "{F}:3:12: /devices/0/type: unknown device type \"x\" (expected \"vfio-pci\")"},
    {"device not object", "{\"devices\": [1]}", "{F}:1:14: /devices/0: expected an object, got number 1"},
    {"device without type", "{\"devices\": [{\"bdf\": \"0000:01:00.0\"}]}", "{F}:1:14: /devices/0: missing \"type\""},
    {"devices not array", "{\"devices\": {}}", "{F}:1:13: /devices: expected an array, got object"},
    {"duplicate key", "{\"vcpus\": 1,\n \"vcpus\": 2}", "{F}:2:2: /vcpus: duplicate key"},
    {"negative zero is zero", "{\"vcpus\": -0}", "{F}:1:11: /vcpus: must be between 1 and 32, got 0"},
    {"hugetlbfs in odd MiB", "{\"payload\": {\"path\": \"p.bin\"}, \"memory\": {\"size_mib\": 257, \"hugepages\": \"hugetlbfs\"}}",
     "{F}:1:55: /memory/size_mib: must be a multiple of 2 with \"hugepages\": \"hugetlbfs\" (2 MiB pages), got 257"},
    {"serial output onto the payload", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"output\": \"file\", \"path\": \"p.bin\"}}",
     "{F}:1:69: /serial/path: is the payload ({D}/p.bin): the serial output would overwrite it"},
    {"serial output onto the kernel by another name", "{\"kernel\": {\"path\": \"vmlinuz\"}, \"serial\": {\"output\": \"file\", \"path\": \"sub/../vmlinuz\"}}",
     "{F}:1:70: /serial/path: is the kernel ({D}/vmlinuz): the serial output would overwrite it"},
    {"serial output onto the initrd", "{\"kernel\": {\"path\": \"vmlinuz\", \"initrd\": \"initrd.img\"}, \"serial\": {\"output\": \"file\", \"path\": \"initrd.img\"}}",
     "{F}:1:94: /serial/path: is the initrd ({D}/initrd.img): the serial output would overwrite it"},
    {"serial output onto the config", "{\"payload\": {\"path\": \"p.bin\"}, \"serial\": {\"output\": \"file\", \"path\": \"vm.json\"}}",
     "{F}:1:69: /serial/path: is the config file ({F}): the serial output would overwrite it"},
    {"device missing from the simulated host",
     "{\"payload\": {\"path\": \"p.bin\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:05:00.0\"}],\n"
     " \"vfio_host\": {\"kind\": \"simulated\", \"devices\": [{\"bdf\": \"0000:01:00.0\"}, {\"bdf\": \"0000:02:00.0\"}]}}",
     "{F}:1:73: /devices/0/host: 0000:05:00.0 is not a device of the simulated host (it has 0000:01:00.0, 0000:02:00.0)"},
    {"simulated host without devices",
     "{\"payload\": {\"path\": \"p.bin\"}, \"vfio_host\": {\"kind\": \"simulated\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:05:00.0\"}]}",
     "{F}:1:109: /devices/0/host: 0000:05:00.0 is not a device of the simulated host (it has none: add it to \"vfio_host\".\"devices\")"},
    {"sysfs path that is not a device directory",
     "{\"payload\": {\"path\": \"p.bin\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"/sys/bus/pci/drivers/vfio-pci/0000:01:00.0\"}]}",
     "{F}:1:73: /devices/0/host: \"/sys/bus/pci/drivers/vfio-pci/0000:01:00.0\" is not a PCI device's sysfs directory (expected "
     "/sys/bus/pci/devices/DDDD:BB:DD.F or /sys/devices/pciDDDD:BB/.../DDDD:BB:DD.F)"},
    {"long string truncated", "{\"vcpus\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
     "{F}:1:11: /vcpus: expected an integer, got string \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\""},
};

TEST_F(ConfigTest, BadConfigsGiveExactMessages) {
    for (const auto& c : kBadCases) {
        SCOPED_TRACE(c.name);
        auto r = parseConfig(c.text, file);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().what(), expand(c.message));
        EXPECT_EQ(r.error().describe(), r.error().what());  // no errno suffix doubling the message
    }
}

// Root reads a mode-0 file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH. Capabilities belong to
// a thread (capset(2) changes only the caller's), so the parse runs on a thread that gave them up:
// the test means the same as root as it does for any other user.
TEST_F(ConfigTest, UnreadableFileIsRefused) {
    ::chmod((dir / "vmlinuz").c_str(), 0);
    std::string message;
    std::thread([&] {
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3] = {};
        ASSERT_EQ(::syscall(SYS_capget, &header, caps), 0);
        for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH})
            caps[CAP_TO_INDEX(cap)].effective &= ~CAP_TO_MASK(cap);
        ASSERT_EQ(::syscall(SYS_capset, &header, caps), 0);
        auto r = parseConfig("{\"kernel\": {\"path\": \"vmlinuz\"}}", file);
        message = r.ok() ? "parsed" : r.error().what();
    }).join();
    EXPECT_EQ(message, expand("{F}:1:21: /kernel/path: file not readable: {D}/vmlinuz (Permission denied)"));
}

TEST_F(ConfigTest, OnRebootIsExitUnlessSaid) {
    auto r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r.value().onReboot, RebootAction::Exit);
    r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"on_reboot\": \"error\"}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r.value().onReboot, RebootAction::Error);
    r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"on_reboot\": \"restart\"}", file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), expand("{F}:1:45: /on_reboot: unknown value \"restart\" (expected one of \"exit\", \"error\")"));
}

TEST_F(ConfigTest, MinimalPayloadGetsDefaults) {
    auto r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    const VmConfig& c = r.value();
    EXPECT_EQ(c.sourceFile, file);
    EXPECT_EQ(c.vcpus, 1u);
    EXPECT_EQ(c.memory.sizeBytes, 256ull << 20);
    EXPECT_EQ(c.memory.hugePages, memory::HugePages::None);
    EXPECT_FALSE(c.memory.prefault);
    EXPECT_FALSE(c.kernel.has_value());
    ASSERT_TRUE(c.payload.has_value());
    EXPECT_EQ(c.payload->path, dir / "p.bin");
    EXPECT_EQ(c.payload->loadAddress, 0x100000u);
    EXPECT_FALSE(c.payload->entry.has_value());
    EXPECT_EQ(c.payload->mode, PayloadMode::Long64);
    EXPECT_EQ(c.serial.output, SerialOutput::Stdout);
    EXPECT_EQ(c.serial.input, SerialInput::None);
    EXPECT_TRUE(c.exitDevice.enabled);
    EXPECT_TRUE(c.devices.empty());
}

TEST_F(ConfigTest, FullKernelConfig) {
    const std::string text = R"({
  "$schema": "../configs/schema.json",
  "vcpus": 4,
  "memory": {"size_mib": 1024, "hugepages": "transparent", "prefault": true},
  "kernel": {"path": "sub/../vmlinuz", "cmdline": "console=ttyS0 quiet", "initrd": ")" +
                             (dir / "initrd.img").string() + R"("},
  "serial": {"output": "file", "path": "sub/serial.log", "input": "stdin"},
  "exit_device": {"enabled": false},
  "devices": []
})";
    auto r = parseConfig(text, file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    const VmConfig& c = r.value();
    EXPECT_EQ(c.vcpus, 4u);
    EXPECT_EQ(c.memory.sizeBytes, 1024ull << 20);
    EXPECT_EQ(c.memory.hugePages, memory::HugePages::Transparent);
    EXPECT_TRUE(c.memory.prefault);
    ASSERT_TRUE(c.kernel.has_value());
    EXPECT_EQ(c.kernel->path, dir / "vmlinuz");
    EXPECT_EQ(c.kernel->cmdline, "console=ttyS0 quiet");
    ASSERT_TRUE(c.kernel->initrd.has_value());
    EXPECT_EQ(*c.kernel->initrd, dir / "initrd.img");
    EXPECT_FALSE(c.payload.has_value());
    EXPECT_EQ(c.serial.output, SerialOutput::File);
    EXPECT_EQ(c.serial.path, dir / "sub/serial.log");
    EXPECT_EQ(c.serial.input, SerialInput::Stdin);
    EXPECT_FALSE(c.exitDevice.enabled);
}

TEST_F(ConfigTest, PayloadAddressesAcceptIntegersAndHexStrings) {
    auto r = parseConfig(R"({"vcpus": 2.0, "memory": {"hugepages": "hugetlbfs", "size_mib": 2},
        "payload": {"path": "p.bin", "load_address": "0x200000", "entry": 2101248, "mode": "real16"},
        "serial": {"output": "none"}})",
                         file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->vcpus, 2u);
    EXPECT_EQ(r->memory.sizeBytes, 2ull << 20);
    EXPECT_EQ(r->memory.hugePages, memory::HugePages::Hugetlbfs);
    EXPECT_EQ(r->payload->loadAddress, 0x200000u);
    EXPECT_EQ(r->payload->entry, std::optional<uint64_t>(0x201000));
    EXPECT_EQ(r->payload->mode, PayloadMode::Real16);
    EXPECT_EQ(r->serial.output, SerialOutput::None);
}

TEST_F(ConfigTest, LoadConfigReadsTheFile) {
    std::ofstream(file) << "{\n  \"payload\": {\"path\": \"p.bin\"},\n  \"vcpus\": \"two\"\n}\n";
    auto r = loadConfig(file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), expand("{F}:3:12: /vcpus: expected an integer, got string \"two\""));

    std::ofstream(file) << "{\"payload\": {\"path\": \"p.bin\"}, \"vcpus\": 3}";
    auto ok = loadConfig(file);
    ASSERT_TRUE(ok.ok()) << ok.error().what();
    EXPECT_EQ(ok->vcpus, 3u);

    auto missing = loadConfig(dir / "absent.json");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code(), ENOENT);
    EXPECT_EQ(missing.error().what(), (dir / "absent.json").string() + ": cannot open config file");
}

TEST_F(ConfigTest, OverridesGetTheSameChecksAndNameTheFlag) {
    const std::string text = "{\"payload\": {\"path\": \"p.bin\"}, \"vcpus\": 2}";
    auto r = parseConfig(text, file, {{"--vcpus", "/vcpus", "0", true, {}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "--vcpus: /vcpus: must be between 1 and 32, got 0");

    r = parseConfig(text, file, {{"--memory-mib", "/memory/size_mib", "lots", true, {}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "--memory-mib: /memory/size_mib: expected an integer, got string \"lots\"");

    r = parseConfig(text, file, {{"--memory-mib", "/memory/size_mib", "-3", true, {}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "--memory-mib: /memory/size_mib: must not be negative, got -3");

    r = parseConfig("{\"vcpus\": 2}", file, {{"--cmdline", "/kernel/cmdline", "quiet", false, {}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "--cmdline: /kernel: missing \"path\"");

    // A --cmdline on a payload config would create "kernel" next to "payload": the flag says what it
    // needs instead of the config check's "mutually exclusive".
    r = parseConfig(text, file, {{"--cmdline", "/kernel/cmdline", "quiet", false, {}, "/kernel", "only for a kernel boot"}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "--cmdline: only for a kernel boot");

    r = parseConfig(text, file, {{"--kernel", "/kernel/path", "/nonexistent/vmlinuz", false, {"/payload"}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(),
              "--kernel: /kernel/path: file not found: /nonexistent/vmlinuz (No such file or directory)");

    r = parseConfig(text, file,
                    {{"--vcpus", "/vcpus", "8", true, {}},
                     {"--memory-mib", "/memory/size_mib", "64", true, {}},
                     {"--kernel", "/kernel/path", (dir / "vmlinuz").string(), false, {"/payload"}},
                     {"--cmdline", "/kernel/cmdline", "quiet", false, {}}});
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->vcpus, 8u);
    EXPECT_EQ(r->memory.sizeBytes, 64ull << 20);
    EXPECT_FALSE(r->payload.has_value());
    ASSERT_TRUE(r->kernel.has_value());
    EXPECT_EQ(r->kernel->path, dir / "vmlinuz");
    EXPECT_EQ(r->kernel->cmdline, "quiet");
}

TEST_F(ConfigTest, OverrideOfAValueInTheFileStillReportsFlag) {
    // The file's value was fine; the flag's is not: the message must blame the flag, not the file.
    auto r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"memory\": {\"size_mib\": 512}}", file,
                         {{"--memory-mib", "/memory/size_mib", "1", true, {}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), "--memory-mib: /memory/size_mib: must be between 2 and 1048576 (2 MiB to 1 TiB), got 1");
    // An override cannot descend into a non-object; the file's value is blamed.
    r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"memory\": 5}", file,
                    {{"--memory-mib", "/memory/size_mib", "64", true, {}}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), expand("{F}:1:42: /memory: expected an object, got number 5"));
}

TEST_F(ConfigTest, NoInitrdDropsTheConfigsInitrd) {
    const std::string text = "{\"kernel\": {\"path\": \"vmlinuz\", \"initrd\": \"initrd.img\"}}";
    auto r = parseConfig(text, file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_TRUE(r->kernel->initrd.has_value());
    r = parseConfig(text, file, {{"--no-initrd", "", "", false, {"/kernel/initrd"}, "/kernel", "only for a kernel boot"}});
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_FALSE(r->kernel->initrd.has_value());
}

// Devices without "slot" get the lowest slot no device names, whatever the order: one named later
// is never taken first (at run time that failed as "slot taken" depending on device order).
TEST_F(ConfigTest, SlotsAreDecidedInTheConfigAndNamedSlotsAreNeverStolen) {
    auto r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"devices\": ["
                         "{\"type\": \"vfio-pci\", \"host\": \"0000:05:00.0\"},"
                         "{\"type\": \"vfio-pci\", \"host\": \"0000:06:00.0\", \"slot\": 1},"
                         "{\"type\": \"vfio-pci\", \"host\": \"0000:07:00.0\"}]}",
                         file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->devices[0].vfioPci->slot, 2);
    EXPECT_EQ(r->devices[1].vfioPci->slot, 1);
    EXPECT_EQ(r->devices[2].vfioPci->slot, 3);
    EXPECT_NE(describeConfig(*r).find("vfio-pci 0000:05:00.0 (auto, slot 2)"), std::string::npos) << describeConfig(*r);

    // 31 slots; the 32nd device has none.
    std::string many = "{\"payload\": {\"path\": \"p.bin\"}, \"devices\": [";
    for (int i = 0; i < 32; ++i) many += fmt::format("{}{{\"type\": \"vfio-pci\", \"host\": \"0000:{:02x}:00.0\"}}", i ? "," : "", i + 1);
    many += "]}";
    r = parseConfig(many, file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), expand("{F}:1:1439: /devices/31: no free slot on PCI bus 0 (slots 1 to 31 are all taken)"));
}

TEST_F(ConfigTest, DevicesAreBehindTheViommuUnlessTheySayNot) {
    auto r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"viommu\": {\"type\": \"smmuv3\"}, \"devices\": ["
                         "{\"type\": \"vfio-pci\", \"host\": \"0000:05:00.0\"},"
                         "{\"type\": \"vfio-pci\", \"host\": \"0000:06:00.0\", \"viommu\": false, \"backend\": \"type1\"},"
                         "{\"type\": \"vfio-pci\", \"host\": \"0000:07:00.0\", \"viommu\": true, \"backend\": \"iommufd\"}]}",
                         file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    ASSERT_TRUE(r->viommu);
    EXPECT_EQ(r->viommu->type, ViommuConfig::Type::SmmuV3);
    EXPECT_TRUE(r->devices[0].vfioPci->viommu);
    EXPECT_EQ(r->devices[0].vfioPci->backend, vfio::BackendKind::Iommufd);  // "auto" decided
    EXPECT_FALSE(r->devices[1].vfioPci->viommu);
    EXPECT_EQ(r->devices[1].vfioPci->backend, vfio::BackendKind::Type1);
    EXPECT_TRUE(r->devices[2].vfioPci->viommu);
    // Without the top-level object nothing is behind one, and "auto" stays.
    r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"devices\": [{\"type\": \"vfio-pci\", \"host\": \"0000:05:00.0\"}]}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_FALSE(r->viommu);
    EXPECT_FALSE(r->devices[0].vfioPci->viommu);
    EXPECT_EQ(r->devices[0].vfioPci->backend, vfio::BackendKind::Auto);
}

TEST_F(ConfigTest, SimulatedHostIommu) {
    auto r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"vfio_host\": {\"kind\": \"simulated\", \"iommu\": \"smmuv3\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->vfioHost.iommu, VfioHostConfig::SimIommu::SmmuV3);
    r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"vfio_host\": {\"kind\": \"simulated\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->vfioHost.iommu, VfioHostConfig::SimIommu::IntelVtd);
    r = parseConfig("{\"payload\": {\"path\": \"p.bin\"}, \"vfio_host\": {\"kind\": \"real\", \"iommu\": \"smmuv3\"}}", file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), expand("{F}:1:62: /vfio_host/iommu: only used with \"kind\": \"simulated\""));
}

// The simulated SMMUv3's substreams and a simulated device's PASID capability (docs/config.md).
TEST_F(ConfigTest, SimulatedHostPasid) {
    auto r = parseConfig(R"({"payload": {"path": "p.bin"}, "vfio_host": {"kind": "simulated", "iommu": "smmuv3",
        "smmu_ssid_bits": 16, "devices": [{"bdf": "0000:00:03.0", "pasid_width": 8, "pasid_exec": true}]}})",
                         file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->vfioHost.smmuSsidBits, 16u);
    EXPECT_EQ(r->vfioHost.devices[0].pasidWidth, 8u);
    EXPECT_TRUE(r->vfioHost.devices[0].pasidExec);
    EXPECT_FALSE(r->vfioHost.devices[0].pasidPriv);
    r = parseConfig(R"({"payload": {"path": "p.bin"}, "vfio_host": {"kind": "simulated", "smmu_ssid_bits": 16}})", file);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(std::string(r.error().what()).find("/vfio_host/smmu_ssid_bits: only used with \"iommu\": \"smmuv3\""),
              std::string::npos)
        << r.error().what();
    r = parseConfig(R"({"payload": {"path": "p.bin"}, "vfio_host": {"kind": "simulated", "iommu": "smmuv3",
        "devices": [{"bdf": "0000:00:03.0", "pasid_width": 21}]}})",
                    file);
    ASSERT_FALSE(r.ok());
}

TEST_F(ConfigTest, SysfsDevicePathsInBothForms) {
    for (const char* host : {"/sys/bus/pci/devices/0000:01:00.0", "/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0"}) {
        auto r = parseConfig(fmt::format("{{\"payload\": {{\"path\": \"p.bin\"}}, \"devices\": [{{\"type\": \"vfio-pci\", \"host\": \"{}\"}}]}}", host), file);
        ASSERT_TRUE(r.ok()) << host << ": " << r.error().what();
        EXPECT_EQ(r->devices[0].vfioPci->bdf, "0000:01:00.0");
    }
    for (const char* host : {"/sys/class/net/eth0/0000:01:00.0", "/sys/bus/pci/devices/0000:00:1c.0/0000:01:00.0",
                             "/sys/devices/pci0000:00/../0000:01:00.0", "/sys/devices/platform/0000:01:00.0"}) {
        auto r = parseConfig(fmt::format("{{\"payload\": {{\"path\": \"p.bin\"}}, \"devices\": [{{\"type\": \"vfio-pci\", \"host\": \"{}\"}}]}}", host), file);
        EXPECT_FALSE(r.ok()) << host;
    }
}

// A byte order mark: UTF-8's is skipped (positions count after it); UTF-16 is refused by name.
TEST_F(ConfigTest, ByteOrderMarksAndUtf16) {
    auto r = parseConfig("\xEF\xBB\xBF{\"vcpus\": \"x\"}", file);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), expand("{F}:1:11: /vcpus: expected an integer, got string \"x\""));
    r = parseConfig("\xEF\xBB\xBF{\"payload\": {\"path\": \"p.bin\"}}", file);
    EXPECT_TRUE(r.ok()) << r.error().what();
    for (std::string text : {std::string("\xFF\xFE{\0}\0", 6), std::string("{\0\"\0", 4), std::string("\0{\0\"", 4)}) {
        r = parseConfig(text, file);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().what(),
                  expand("{F}: the config is UTF-16 or UTF-32 text; JSON configs are UTF-8 (iconv -f UTF-16 -t UTF-8 converts it)"));
    }
}

// A FIFO would block the open (and the read) forever; a directory is named as one.
TEST_F(ConfigTest, ConfigThatIsNotARegularFileIsRefusedAtOnce) {
    ASSERT_EQ(::mkfifo((dir / "fifo.json").c_str(), 0600), 0);
    auto r = loadConfig(dir / "fifo.json");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), (dir / "fifo.json").string() + ": the config is a FIFO; give a regular file");
    r = loadConfig(dir / "sub");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().what(), (dir / "sub").string() + ": the config is a directory; give a regular file");
}

// --stats is checked with the config, before anything runs or is written.
TEST_F(ConfigTest, StatsFileIsCheckedAgainstInputsAndSerialOutput) {
    auto r = parseConfig("{\"kernel\": {\"path\": \"vmlinuz\", \"initrd\": \"initrd.img\"}, \"serial\": {\"output\": \"file\", \"path\": \"serial.log\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    auto ok = checkOutputFile(*r, (dir / "stats.json").string(), "--stats");
    ASSERT_TRUE(ok.ok()) << ok.error().what();
    EXPECT_EQ(*ok, dir / "stats.json");
    auto bad = checkOutputFile(*r, (dir / "initrd.img").string(), "--stats");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().what(), expand("--stats: {D}/initrd.img is the initrd ({D}/initrd.img): writing there would overwrite it"));
    bad = checkOutputFile(*r, (dir / "serial.log").string(), "--stats");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().what(), expand("--stats: {D}/serial.log is also the serial output"));
    bad = checkOutputFile(*r, (dir / "no" / "stats.json").string(), "--stats");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().what(), expand("--stats: directory not found: {D}/no (No such file or directory)"));
    bad = checkOutputFile(*r, (dir / "sub").string(), "--stats");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().what(), expand("--stats: is a directory: {D}/sub"));
}

// Text from the config is escaped in the summary `validate` prints: no terminal control codes.
TEST_F(ConfigTest, DescribeConfigEscapesControlCharacters) {
    std::ofstream(dir / "p\x1b[31m.bin") << "x";
    auto r = parseConfig("{\"payload\": {\"path\": \"p\\u001b[31m.bin\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    const std::string d = describeConfig(*r);
    EXPECT_EQ(d.find('\x1b'), std::string::npos) << d;
    EXPECT_NE(d.find("p\\x1b[31m.bin"), std::string::npos) << d;
}

TEST_F(ConfigTest, DescribeConfig) {
    auto r = parseConfig("{\"vcpus\": 2, \"memory\": {\"size_mib\": 512}, \"payload\": {\"path\": \"p.bin\"}}", file);
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(describeConfig(r.value()), "2 vCPUs, 512 MiB RAM, payload " + (dir / "p.bin").string() +
                                             " (long64 at 0x100000, entry 0x100000), serial to stdout, exit device");
}

TEST(JsonPositionIndex, RecordsValuesAndKeys) {
    auto idx = JsonPositionIndex::build("{\n \"a\": [10, {\"b\": true}],\n \"c\\/d\": null\n}");
    ASSERT_TRUE(idx.has_value());
    EXPECT_EQ(idx->value("")->line, 1u);
    EXPECT_EQ(idx->key("/a")->column, 2u);
    EXPECT_EQ(idx->value("/a")->column, 7u);
    EXPECT_EQ(idx->value("/a/0")->column, 8u);
    EXPECT_EQ(idx->value("/a/1/b")->column, 18u);
    EXPECT_EQ(idx->value("/c~1d")->line, 3u);
    EXPECT_EQ(idx->value("/c~1d")->column, 10u);
    EXPECT_FALSE(idx->value("/zzz").has_value());
    EXPECT_FALSE(idx->firstDuplicate().has_value());
    EXPECT_FALSE(JsonPositionIndex::build("{\"a\": ").has_value());
}

}  // namespace
}  // namespace conduit::vmm

namespace conduit::vmm {
namespace {

// The shipped examples must only fail on the files they point at (built or placeholder paths),
// never on syntax, keys or values.
TEST(ExampleConfigs, OnlyTheirFilesMayBeMissing) {
    const std::filesystem::path configs = std::filesystem::path(CONDUIT_SOURCE_DIR) / "configs";
    for (const auto& [name, pointer] : {std::pair<const char*, const char*>{"demo.json", "/payload/path"},
                                        {"linux.json", "/kernel/path"}}) {
        SCOPED_TRACE(name);
        auto r = loadConfig(configs / name);
        if (!r.ok()) {
            EXPECT_NE(r.error().what().find(std::string(": ") + pointer + ": file not found: "), std::string::npos)
                << r.error().what();
        }
    }
}

}  // namespace
}  // namespace conduit::vmm
