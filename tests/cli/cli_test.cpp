// `conduit` as a user types it: every usage error is one line naming the flag or the command, and
// `run` refuses before it touches a file, allocates guest RAM or logs a line.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/integration/run_process.h"

namespace conduit::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string kConduit = CONDUIT_BINARY;

class Cli : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/conduit-cli-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        std::ofstream(dir / "p.bin") << "\xf4";  // hlt
        std::ofstream(dir / "vmlinuz") << "x";
        std::ofstream(dir / "initrd.img") << "x";
        write("payload.json", R"({"payload": {"path": "p.bin"}})");
    }
    void TearDown() override { fs::remove_all(dir); }
    std::string write(const std::string& name, const std::string& text) const {
        std::ofstream(dir / name) << text;
        return (dir / name).string();
    }
    ProcessResult conduit(std::vector<std::string> args) const {
        args.insert(args.begin(), kConduit);
        return runProcess(args, 20s);
    }
    fs::path dir;
};

std::string show(const ProcessResult& r) { return fmt::format("exit {}\nstdout: {}\nstderr: {}", r.exitStatus, r.out, r.err); }

// The error is the only line on stderr, and it is `expected`.
void expectOneLineError(const ProcessResult& r, const std::string& expected) {
    EXPECT_EQ(r.exitStatus, 125) << show(r);
    EXPECT_EQ(r.err, "conduit: error: " + expected + "\n") << show(r);
}

TEST_F(Cli, UnknownCommandIsNamed) {
    expectOneLineError(conduit({"frob"}), "unknown command \"frob\" (expected run, validate or devices; conduit --help)");
    expectOneLineError(conduit({"--log-level", "debug", "frob"}),
                       "unknown command \"frob\" (expected run, validate or devices; conduit --help)");
    expectOneLineError(conduit({}), "A subcommand is required (conduit --help)");
}

TEST_F(Cli, LogLevelBeforeOrAfterTheCommand) {
    auto before = conduit({"--log-level", "error", "validate", (dir / "payload.json").string()});
    EXPECT_EQ(before.exitStatus, 0) << show(before);
    auto after = conduit({"validate", (dir / "payload.json").string(), "--log-level", "error"});
    EXPECT_EQ(after.exitStatus, 0) << show(after);
    expectOneLineError(conduit({"validate", (dir / "payload.json").string(), "--log-level", "loud"}),
                       "validate: --log-level: loud not in {trace,debug,info,warn,error,off} (conduit validate --help)");
}

TEST_F(Cli, ParseErrorsAreOneLineNamingTheFlag) {
    expectOneLineError(conduit({"run", "--config", (dir / "payload.json").string(), "--vcpus"}),
                       "run: --vcpus: 1 required N missing (conduit run --help)");
    expectOneLineError(conduit({"run", "--config", (dir / "payload.json").string(), "--initrd", "x", "--no-initrd"}),
                       "run: --initrd excludes --no-initrd (conduit run --help)");
}

// --cmdline, --initrd and --no-initrd belong to a kernel boot; on a payload config they say so.
TEST_F(Cli, KernelFlagsOnAPayloadConfigSaySo) {
    const std::string why = "only for a kernel boot, and the config boots \"payload\" (--kernel PATH boots a kernel instead)";
    const std::string cfg = (dir / "payload.json").string();
    expectOneLineError(conduit({"run", "--config", cfg, "--cmdline", "quiet"}), "--cmdline: " + why);
    expectOneLineError(conduit({"run", "--config", cfg, "--initrd", (dir / "initrd.img").string()}), "--initrd: " + why);
    expectOneLineError(conduit({"run", "--config", cfg, "--no-initrd"}), "--no-initrd: " + why);
}

// The serial output file is opened with O_TRUNC: pointed at an input it would destroy it, so
// `validate` refuses it and `run` leaves the file as it was.
TEST_F(Cli, SerialOutputOntoAnInputIsRefusedAndTheFileKept) {
    const std::string cfg = write("k.json", R"({"kernel": {"path": "vmlinuz", "initrd": "initrd.img"},
 "serial": {"output": "file", "path": "vmlinuz"}})");
    auto v = conduit({"validate", cfg});
    EXPECT_EQ(v.exitStatus, 1) << show(v);
    EXPECT_EQ(v.err, cfg + ":2:39: /serial/path: is the kernel (" + (dir / "vmlinuz").string() +
                         "): the serial output would overwrite it\n") << show(v);
    auto r = conduit({"run", "--config", cfg});
    EXPECT_EQ(r.exitStatus, 125) << show(r);
    EXPECT_EQ(fs::file_size(dir / "vmlinuz"), 1u);
    expectOneLineError(conduit({"run", "--config", (dir / "payload.json").string(), "--serial-output", "file:" + (dir / "payload.json").string()}),
                       "--serial-output: /serial/path: is the config file (" + (dir / "payload.json").string() +
                           "): the serial output would overwrite it");
    // Refused before the file is touched: k.json is still whole.
    expectOneLineError(conduit({"run", "--config", cfg, "--stats", cfg}),
                       fmt::format("{}:2:39: /serial/path: is the kernel ({}): the serial output would overwrite it", cfg,
                                   (dir / "vmlinuz").string()));
}

TEST_F(Cli, StatsPathIsCheckedBeforeTheRun) {
    const std::string cfg = (dir / "payload.json").string();
    expectOneLineError(conduit({"run", "--config", cfg, "--stats", (dir / "p.bin").string()}),
                       fmt::format("--stats: {} is the payload ({}): writing there would overwrite it", (dir / "p.bin").string(),
                                   (dir / "p.bin").string()));
    expectOneLineError(conduit({"run", "--config", cfg, "--stats", (dir / "none" / "s.json").string()}),
                       fmt::format("--stats: directory not found: {} (No such file or directory)", (dir / "none").string()));
    EXPECT_EQ(fs::file_size(dir / "p.bin"), 1u);
}

TEST_F(Cli, ConfigThatIsAFifoIsRefusedAtOnce) {
    ASSERT_EQ(::mkfifo((dir / "fifo.json").c_str(), 0600), 0);
    auto r = conduit({"validate", (dir / "fifo.json").string()});
    EXPECT_FALSE(r.timedOut) << show(r);
    EXPECT_EQ(r.exitStatus, 1) << show(r);
    EXPECT_EQ(r.err, (dir / "fifo.json").string() + ": the config is a FIFO; give a regular file\n") << show(r);
}

TEST_F(Cli, ValidateEscapesControlCharactersInItsSummary) {
    std::ofstream(dir / "p\x1b[31m.bin") << "x";
    auto r = conduit({"validate", write("cc.json", R"({"payload": {"path": "p\u001b[31m.bin"}})")});
    EXPECT_EQ(r.exitStatus, 0) << show(r);
    EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << show(r);
    EXPECT_NE(r.out.find("p\\x1b[31m.bin"), std::string::npos) << show(r);
}

// Without KVM, `run` says so first, with what to do, before allocating guest RAM or logging the
// layout. /dev is hidden by an empty tmpfs in a mount namespace of the test's own (root, or an
// unprivileged user namespace mapped to root).
TEST_F(Cli, RunWithoutKvmSaysSoFirst) {
    const std::string script = fmt::format("mount -t tmpfs none /dev && exec '{}' run --config '{}'", kConduit,
                                           (dir / "payload.json").string());
    std::vector<std::string> argv = {"/usr/bin/unshare", "--mount", "--propagation", "private", "sh", "-c", script};
    if (::geteuid() != 0) argv.insert(argv.begin() + 1, {"--user", "--map-root-user"});
    auto r = runProcess(argv, 20s);
    ASSERT_NE(r.err.find("conduit"), std::string::npos) << "could not hide /dev/kvm: " << show(r);
    expectOneLineError(r, "open /dev/kvm: No such file or directory (ENOENT); no KVM on this machine: load kvm_intel or "
                          "kvm_amd (virtualisation on in the firmware); where there is none, tests/bed/bed.sh run -- "
                          "conduit run ... runs Conduit in a nested-KVM bed (docs/testing.md)");
}

}  // namespace
}  // namespace conduit::test
