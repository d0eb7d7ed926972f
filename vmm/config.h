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

struct KernelConfig {  // boot a Linux kernel (bzImage or ELF vmlinux, detected from the file)
    std::filesystem::path path;
    std::string cmdline = "console=ttyS0";
    std::optional<std::filesystem::path> initrd;
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

// Reads, parses and validates a config file. Errors read "FILE:LINE:COL: /json/path: message".
Result<VmConfig> loadConfig(const std::filesystem::path& file);
// Same, from text already in memory (`file` is used for messages and to resolve relative paths).
Result<VmConfig> parseConfig(const std::string& text, const std::filesystem::path& file);

}  // namespace conduit::vmm
