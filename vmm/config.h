// The VM configuration: what a JSON config file (docs/config.md, configs/schema.json) becomes
// after validation. Everything here has been checked: paths exist and are readable, numbers are in
// range, exactly one of kernel/payload is set.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace conduit::vmm {

struct MemoryConfig {
    uint64_t sizeBytes = 256ull << 20;                    // JSON: memory.size_mib
    memory::HugePages hugePages = memory::HugePages::None;  // JSON: memory.hugepages "none"|"transparent"|"hugetlbfs"
    bool prefault = false;                                // JSON: memory.prefault
};

// Who decompresses a bzImage's kernel (JSON: kernel.unpack). "guest" is the standard boot
// protocol: the bzImage's own decompressor runs in the guest. "host": Conduit decompresses it and
// enters the kernel proper directly (vmm/x86/kernel_unpack.h says why and what differs).
enum class KernelUnpack { Guest, Host };

struct KernelConfig {  // boot a Linux kernel (bzImage or ELF vmlinux, detected from the file)
    std::filesystem::path path;
    std::string cmdline = "console=ttyS0";
    std::optional<std::filesystem::path> initrd;
    KernelUnpack unpack = KernelUnpack::Guest;  // bzImage only
};

enum class PayloadMode { Long64, Real16 };

struct PayloadConfig {  // boot a flat binary (docs/payloads.md)
    std::filesystem::path path;
    uint64_t loadAddress = 0x100000;
    std::optional<uint64_t> entry;  // default: loadAddress
    PayloadMode mode = PayloadMode::Long64;
};

enum class SerialOutput { Stdout, File, None };
enum class SerialInput { Stdin, None };

struct SerialConfig {
    SerialOutput output = SerialOutput::Stdout;
    std::filesystem::path path;  // when output == File
    SerialInput input = SerialInput::None;
};

struct ExitDeviceConfig {
    bool enabled = true;  // port CONDUIT_EXIT_PORT (vmm/x86/payload_abi.h)
};

// One entry of the "devices" array. Later issues add passthrough devices; for now the loader
// refuses every entry with the supported types named.
struct DeviceConfig {
    std::string type;
};

struct VmConfig {
    std::filesystem::path sourceFile;  // the JSON file this came from, for messages
    unsigned vcpus = 1;
    MemoryConfig memory;
    std::optional<KernelConfig> kernel;
    std::optional<PayloadConfig> payload;
    SerialConfig serial;
    ExitDeviceConfig exitDevice;
    std::vector<DeviceConfig> devices;
};

constexpr unsigned kMaxVcpus = 32;

// A command-line override, applied to the JSON document before validation so it gets the same
// checks as the file; errors caused by it name the flag instead of a file position.
struct ConfigOverride {
    std::string flag;     // "--vcpus", for messages
    std::string pointer;  // JSON pointer of the value to set, "/memory/size_mib"
    std::string value;    // the flag's argument; paths should already be absolute (they came from the cwd)
    // true: the flag takes a number, and a decimal integer argument becomes a JSON number (anything
    // else stays a string and is refused by the type check with the flag named).
    bool integer = false;
    // JSON pointers removed before the value is set ("--kernel" removes "/payload").
    std::vector<std::string> removes;
};

// Reads, parses and validates a config file. Errors read "FILE:LINE:COL: /json/path: message".
Result<VmConfig> loadConfig(const std::filesystem::path& file);
Result<VmConfig> loadConfig(const std::filesystem::path& file, const std::vector<ConfigOverride>& overrides);
// Same, from text already in memory (`file` is used for messages and to resolve relative paths).
Result<VmConfig> parseConfig(const std::string& text, const std::filesystem::path& file);
Result<VmConfig> parseConfig(const std::string& text, const std::filesystem::path& file,
                             const std::vector<ConfigOverride>& overrides);

// One line for humans: "2 vCPUs, 512 MiB RAM, payload /abs/hello.bin (long64 at 0x100000), ...".
std::string describeConfig(const VmConfig& config);

}  // namespace conduit::vmm
