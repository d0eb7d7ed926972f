// The `conduit` command line (docs/config.md describes the config file and these commands):
//
//   conduit run --config FILE [--vcpus N] [--memory-mib N] [--kernel PATH] [--cmdline STR]
//               [--initrd PATH | --no-initrd] [--payload PATH] [--serial-output stdout|none|file:PATH]
//               [--stats FILE]
//   conduit validate FILE
//   conduit devices [--json] [--sysfs-root DIR] [--dev-root DIR]
//   global (before or after the command): --log-level trace|debug|info|warn|error|off; --version
//
// Exit status of `run`: the guest's exit-device value & 0xff, 0 when the guest shuts down, and 125
// on any error of Conduit's own (bad usage, bad config, KVM failure, signal), after one line
// "conduit: error: <reason>" on stderr. `validate` and `devices` exit 0 or 1 (125 on bad usage).
// Usage errors are one line too, naming the flag or the command.
// Exceptions stop here: CLI11 throws its parse errors, everything else returns Result.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "base/fd_limit.h"
#include "base/log.h"
#include "base/printable.h"
#include "base/result.h"
#include "vmm/config.h"
#include "vfio/inventory.h"
#include "vmm/kvm.h"
#include "vmm/machine.h"
#include "vmm/vfio_host.h"

#ifndef CONDUIT_VERSION
#define CONDUIT_VERSION "0.1.0"  // keep in step with project(VERSION) in CMakeLists.txt
#endif

namespace fs = std::filesystem;
using namespace conduit;

namespace {

constexpr int kExitVmmError = 125;  // distinct from the small values payloads usually exit with
constexpr int kExitFailure = 1;

int fail(const std::string& reason, int status = kExitVmmError) {
    std::fprintf(stderr, "conduit: error: %s\n", reason.c_str());
    return status;
}

// Paths given on the command line are relative to the working directory, not to the config file.
std::string absoluteFromCwd(const std::string& p) {
    if (p.empty()) return p;  // let the config checks say "must not be empty"
    std::error_code ec;
    fs::path abs = fs::absolute(p, ec);
    return ec ? p : abs.lexically_normal().string();
}

struct RunOptions {
    std::string config;
    std::string vcpus, memoryMib, kernel, cmdline, initrd, payload, serialOutput, stats;
    bool noInitrd = false;
    CLI::Option *vcpusOpt = nullptr, *memoryOpt = nullptr, *kernelOpt = nullptr, *cmdlineOpt = nullptr,
                *initrdOpt = nullptr, *noInitrdOpt = nullptr, *payloadOpt = nullptr, *serialOpt = nullptr,
                *statsOpt = nullptr;
};

// The flags become edits of the JSON document, so they go through the same validation as the
// file and their errors name the flag. Order matters: --kernel/--payload drop the other boot
// section before --cmdline/--initrd add to "kernel".
std::vector<vmm::ConfigOverride> overridesFrom(const RunOptions& o) {
    std::vector<vmm::ConfigOverride> out;
    if (o.vcpusOpt->count()) out.push_back({"--vcpus", "/vcpus", o.vcpus, true, {}});
    if (o.memoryOpt->count()) out.push_back({"--memory-mib", "/memory/size_mib", o.memoryMib, true, {}});
    if (o.kernelOpt->count()) out.push_back({"--kernel", "/kernel/path", absoluteFromCwd(o.kernel), false, {"/payload"}});
    if (o.payloadOpt->count())
        out.push_back({"--payload", "/payload/path", absoluteFromCwd(o.payload), false, {"/kernel"}});
    // --cmdline and --initrd add to a kernel boot; on a payload config they would make a second
    // boot section, so they say so instead of the config check's "mutually exclusive".
    const std::string kernelOnly = "only for a kernel boot, and the config boots \"payload\" (--kernel PATH boots a kernel instead)";
    if (o.cmdlineOpt->count()) out.push_back({"--cmdline", "/kernel/cmdline", o.cmdline, false, {}, "/kernel", kernelOnly});
    if (o.initrdOpt->count())
        out.push_back({"--initrd", "/kernel/initrd", absoluteFromCwd(o.initrd), false, {}, "/kernel", kernelOnly});
    if (o.noInitrdOpt->count()) out.push_back({"--no-initrd", "", "", false, {"/kernel/initrd"}, "/kernel", kernelOnly});
    if (o.serialOpt->count()) {
        const std::string prefix = "file:";
        if (o.serialOutput.rfind(prefix, 0) == 0) {
            out.push_back({"--serial-output", "/serial/output", "file", false, {}});
            out.push_back({"--serial-output", "/serial/path", absoluteFromCwd(o.serialOutput.substr(prefix.size())), false, {}});
        } else {
            // "stdout", "none", or anything else for the config check to refuse by name.
            out.push_back({"--serial-output", "/serial/output", o.serialOutput, false, {"/serial/path"}});
        }
    }
    return out;
}

Result<void> writeStats(const std::string& path, const nlohmann::json& stats) {
    std::ofstream out(path, std::ios::trunc);
    if (!out) return Error::fromErrno("--stats: cannot open " + path);
    out << stats.dump(2) << "\n";
    out.flush();
    if (!out) return Error::fromErrno("--stats: writing " + path);
    return success();
}

// What to do about a /dev/kvm that cannot be used, after the error itself.
std::string kvmHint(int err) {
    if (err == EACCES || err == EPERM) return "this user may not open it: add it to the kvm group, or run as root";
    if (err == ENOENT || err == ENXIO || err == ENODEV)
        return "no KVM on this machine: load kvm_intel or kvm_amd (virtualisation on in the firmware); where there is none, "
               "tests/bed/bed.sh run -- conduit run ... runs Conduit in a nested-KVM bed (docs/testing.md)";
    return "see docs/host-setup.md";
}

int runCommand(const RunOptions& o) {
    auto config = vmm::loadConfig(o.config, overridesFrom(o));
    if (!config.ok()) return fail(config.error().describe());
    std::string statsPath;
    if (o.statsOpt->count()) {
        auto checked = vmm::checkOutputFile(config.value(), o.stats, "--stats");
        if (!checked.ok()) return fail(checked.error().describe());
        statsPath = checked.value().string();
    }
    // KVM before anything is allocated or logged: without it nothing else matters.
    if (auto kvm = vmm::Kvm::open(); !kvm.ok()) return fail(kvm.error().describe() + "; " + kvmHint(kvm.error().code()));
    log::get("vmm").info("{}: {}", o.config, vmm::describeConfig(config.value()));

    auto machine = vmm::Machine::create(config.value(), vmm::binaryVfioHosts());
    if (!machine.ok()) return fail(machine.error().describe());

    Result<int> result = machine.value()->run();

    // Stats are written whatever the outcome: a failed run is when they help most.
    if (o.statsOpt->count()) {
        auto written = writeStats(statsPath, machine.value()->stats());
        if (!written.ok()) {
            if (!result.ok()) fail(result.error().describe());
            return fail(written.error().describe());
        }
    }
    if (!result.ok()) return fail(result.error().describe());
    return result.value() & 0xff;
}

int validateCommand(const std::string& file) {
    auto config = vmm::loadConfig(file);
    if (!config.ok()) {
        // Bare "FILE:LINE:COL: message", the format editors and CI annotate.
        std::fprintf(stderr, "%s\n", config.error().describe().c_str());
        return kExitFailure;
    }
    std::printf("%s: ok\n%s\n", file.c_str(), vmm::describeConfig(config.value()).c_str());
    return 0;
}

bool hasCapIpcLock() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    return (data[CAP_IPC_LOCK / 32].effective >> (CAP_IPC_LOCK % 32)) & 1;
}

int devicesCommand(bool json, const std::string& sysfsRoot, const std::string& devRoot) {
    auto devices = vfio::scanPciDevices(sysfsRoot);
    if (!devices.ok()) return fail(devices.error().describe(), kExitFailure);
    std::optional<uint64_t> memlock;
    if (rlimit lim{}; ::getrlimit(RLIMIT_MEMLOCK, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) memlock = lim.rlim_cur;
    // CAP_IPC_LOCK exempts from the limit (VFIO checks capable(CAP_IPC_LOCK) before charging it).
    const auto host = vfio::summarizeHost(vfio::realHost(), {sysfsRoot, devRoot}, memlock, hasCapIpcLock());
    std::string text = vfio::renderInventory(host, devices.value(), json);
    std::fputs(text.c_str(), stdout);
    if (!text.empty() && text.back() != '\n') std::fputc('\n', stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Conduit: a KVM virtual machine monitor for PCI device assignment", "conduit"};
    app.set_version_flag("--version", std::string("conduit ") + CONDUIT_VERSION);
    app.require_subcommand(1);

    std::string logLevel = "info";
    app.add_option("--log-level", logLevel, "Log verbosity (logs go to stderr)")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
        ->capture_default_str();

    RunOptions run;
    CLI::App* runCmd = app.add_subcommand("run", "Boot a VM from a JSON config");
    runCmd->add_option("--config", run.config, "VM config file (docs/config.md)")->required()->type_name("FILE");
    run.vcpusOpt = runCmd->add_option("--vcpus", run.vcpus, "Override vcpus (1..32)")->type_name("N");
    run.memoryOpt = runCmd->add_option("--memory-mib", run.memoryMib, "Override memory.size_mib")->type_name("N");
    run.kernelOpt = runCmd->add_option("--kernel", run.kernel, "Boot this Linux kernel (replaces kernel/payload)")->type_name("PATH");
    run.cmdlineOpt = runCmd->add_option("--cmdline", run.cmdline, "Override kernel.cmdline")->type_name("STR");
    run.initrdOpt = runCmd->add_option("--initrd", run.initrd, "Override kernel.initrd")->type_name("PATH");
    run.noInitrdOpt = runCmd->add_flag("--no-initrd", run.noInitrd, "Boot the config's kernel without its initrd");
    run.payloadOpt = runCmd->add_option("--payload", run.payload, "Boot this flat payload (replaces kernel/payload)")->type_name("PATH");
    run.serialOpt = runCmd->add_option("--serial-output", run.serialOutput, "stdout, none or file:PATH")->type_name("WHERE");
    run.statsOpt = runCmd->add_option("--stats", run.stats, "Write run statistics as JSON to this file")->type_name("FILE");
    run.kernelOpt->excludes(run.payloadOpt);
    run.initrdOpt->excludes(run.noInitrdOpt);

    std::string validateFile;
    CLI::App* validateCmd = app.add_subcommand("validate", "Check a VM config file and summarize it");
    validateCmd->add_option("FILE", validateFile, "VM config file")->required();

    bool devicesJson = false;
    std::string sysfsRoot = "/sys";
    CLI::App* devicesCmd = app.add_subcommand("devices", "List host PCI devices and their VFIO readiness");
    devicesCmd->add_flag("--json", devicesJson, "Print JSON instead of a table");
    devicesCmd->add_option("--sysfs-root", sysfsRoot, "Where sysfs is mounted (for tests)")->capture_default_str();
    std::string devRoot = "/dev";
    devicesCmd->add_option("--dev-root", devRoot, "Where /dev is (for tests)")->capture_default_str();

    // --log-level may come after the command too.
    for (CLI::App* sub : {runCmd, validateCmd, devicesCmd}) sub->fallthrough();

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        // One line. Without a known command, CLI11 can only say "A subcommand is required": name
        // the word it did not know instead.
        const CLI::App* sub = nullptr;
        for (const CLI::App* c : {runCmd, validateCmd, devicesCmd})
            if (c->parsed()) sub = c;
        if (!sub) {
            for (int i = 1; i < argc; ++i) {
                const std::string a = argv[i];
                if (a == "--log-level") { ++i; continue; }
                if (a.empty() || a[0] == '-') continue;
                return fail(fmt::format("unknown command \"{}\" (expected run, validate or devices; conduit --help)",
                                        printable(a)));
            }
            return fail(fmt::format("{} (conduit --help)", e.what()));
        }
        return fail(fmt::format("{}: {} (conduit {} --help)", sub->get_name(), e.what(), sub->get_name()));
    }

    if (!log::setLevel(logLevel)) return fail("--log-level: unknown level " + logLevel);
    if (auto l = raiseFdLimit(); !l) log::get("vmm").warn("open-file limit: {}", l.error().describe());
    else if (l->now != l->before) log::get("vmm").debug("open-file limit raised from {} to {}", l->before, l->now);

    try {
        if (*runCmd) return runCommand(run);
        if (*validateCmd) return validateCommand(validateFile);
        if (*devicesCmd) return devicesCommand(devicesJson, sysfsRoot, devRoot);
    } catch (const std::exception& e) {
        return fail(std::string("unexpected exception: ") + e.what());
    }
    return fail("no command given");
}
