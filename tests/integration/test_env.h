// Shared set-up of the integration tests: where the binary and payloads are, REQUIRE_KVM()
// (tests/common/require_kvm.h), and temporary config files.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/common/require_kvm.h"
#include "tests/integration/run_process.h"

namespace conduit::test {

inline const std::string kConduit = CONDUIT_BINARY;
inline const std::string kGuestDir = CONDUIT_GUEST_DIR;

inline std::string payloadPath(const std::string& name) { return kGuestDir + "/" + name + ".bin"; }

// A scratch directory per test, removed afterwards.
class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/conduit-it-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    const std::filesystem::path& path() const { return path_; }
    // Writes `text` to `name` inside the directory and returns its path.
    std::string write(const std::string& name, const std::string& text) const {
        auto p = path_ / name;
        std::ofstream(p) << text;
        return p.string();
    }

private:
    std::filesystem::path path_;
};

// Runs `conduit run --config FILE` plus extra arguments.
inline ProcessResult runConduit(const std::string& config, std::chrono::milliseconds timeout,
                                std::vector<std::string> extra = {}, const std::string& stdinText = "",
                                bool keepStdinOpen = false) {
    std::vector<std::string> argv = {kConduit, "run", "--config", config};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return runProcess(argv, timeout, stdinText, keepStdinOpen);
}

// Everything a failing assertion should show.
inline std::string describe(const ProcessResult& r) {
    return "exit status " + std::to_string(r.exitStatus) + (r.timedOut ? " (timed out)" : "") + "\n--- stdout\n" +
           r.out + "\n--- stderr\n" + r.err;
}

}  // namespace conduit::test
