// libFuzzer target: the JSON config loader (vmm::parseConfig) on arbitrary text.
// Invariants beyond "no crash, no sanitizer report": an error is one non-empty line that starts with
// the config file's name (the CLI prints it as "conduit: error: <message>"); an accepted config
// satisfies what vmm/config.h promises (exactly one of kernel/payload, vcpus and memory in range)
// and describeConfig() works on it.
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "base/log.h"
#include "tests/fuzz/fuzz_input.h"
#include "vmm/config.h"

namespace fs = std::filesystem;
using namespace conduit;

namespace {
fs::path gFile;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    log::setLevel("off");
    // The files a config may name (relative paths resolve against the config's directory).
    char tmpl[] = "/tmp/conduit-fuzz-config-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    fs::path dir = tmpl;
    for (const char* f : {"p.bin", "vmlinuz", "initrd.img", "bzImage"}) std::ofstream(dir / f) << "x";
    fs::create_directory(dir / "sub");
    gFile = dir / "vm.json";
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    // F2 (docs/reliability.md) is fixed: a number beyond double range is an error value now, so any
    // exception escaping parseConfig is a finding again.
    std::optional<Result<vmm::VmConfig>> parsed(vmm::parseConfig(text, gFile));
    auto& r = *parsed;
    if (!r.ok()) {
        const std::string msg = r.error().what();
        FUZZ_CHECK(!msg.empty());
        // F3 is fixed: a message is one printable line whatever the keys, values or nesting
        // (control characters are shown escaped; F1's deep nesting is refused with a position).
        for (unsigned char ch : msg) FUZZ_CHECK(ch >= 0x20 && ch != 0x7f);
        FUZZ_CHECK(msg.rfind(gFile.string(), 0) == 0);
        (void)r.error().describe();
        return 0;
    }
    const vmm::VmConfig& c = r.value();
    FUZZ_CHECK(c.kernel.has_value() != c.payload.has_value());
    FUZZ_CHECK(c.vcpus >= 1 && c.vcpus <= vmm::kMaxVcpus);
    FUZZ_CHECK(c.memory.sizeBytes >= (2ull << 20) && c.memory.sizeBytes <= (1ull << 40));
    for (const auto& d : c.devices) FUZZ_CHECK(d.type != "vfio-pci" || d.vfioPci.has_value());
    FUZZ_CHECK(!vmm::describeConfig(c).empty());
    return 0;
}
