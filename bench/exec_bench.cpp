// bench (a): exec-to-exit wall time of a hello payload with 1 GiB of guest RAM, Conduit against
// QEMU (-accel kvm -M microvm) measured in the same run. Each measurement is posix_spawn() ->
// waitpid() of the whole VMM process: start-up, VM creation, the guest printing its hello line,
// the exit device, teardown. Runs are interleaved (A B C A B C ...) so that slow phases of this
// shared 2-CPU host hit every case alike; medians are reported with the range.
//
// Cases:
//   conduit hello   : tests/guest hello.bin (64-bit runtime, logic at CPL3), conduit's own payload
//   conduit hello16 : bench/hello16.S as a real16 payload: the same instructions QEMU runs
//   qemu    hello16 : bench/hello16.S as a 64 KiB -bios image, isa-debug-exit at 0xf4
// The hello16 pair is the fair comparison (same guest code, same ring-0 emulation cost on this
// host); the hello line is checked in every run's output and the exit status too.
#include <cstdio>
#include <map>
#include <optional>

#include <CLI/CLI.hpp>

#include "bench/bench_util.h"

using namespace conduit::bench;

namespace {

struct Case {
    std::string name;
    std::string what;
    std::vector<std::string> argv;
    int expectedStatus;
    std::vector<double> ms;
    std::optional<std::string> error;
};

constexpr const char* kHelloLine = "Hello from a Conduit guest";

double runOnce(Case& c) {
    Child child(c.argv, false);
    int64_t end = 0;
    int status = child.finish(&end);
    double ms = double(end - child.startNs()) / 1e6;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != c.expectedStatus)
        fail(fmt::format("{}: {} (expected exit status {}); output: {:?}", c.name, describeStatus(status),
                         c.expectedStatus, child.output()));
    if (child.output().find(kHelloLine) == std::string::npos)
        fail(fmt::format("{}: the line {:?} is missing from the output {:?}", c.name, kHelloLine, child.output()));
    return ms;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench (a): exec-to-exit wall time, Conduit vs QEMU microvm"};
    std::string conduit, helloConfig, real16Config, qemu, qemuBios;
    int runs = 20;
    unsigned memMib = 1024;
    app.add_option("--conduit", conduit, "conduit binary")->required();
    app.add_option("--hello-config", helloConfig, "config booting hello.bin")->required();
    app.add_option("--real16-config", real16Config, "config booting the hello16 real16 payload")->required();
    app.add_option("--qemu", qemu, "qemu-system-x86_64 (empty: skip QEMU)");
    app.add_option("--qemu-bios", qemuBios, "hello16 as a QEMU -bios image");
    app.add_option("--memory-mib", memMib, "guest RAM of the QEMU VM (match the configs)");
    app.add_option("--runs", runs, "measured runs per case")->check(CLI::Range(1, 1000));
    CLI11_PARSE(app, argc, argv);

    std::vector<Case> cases;
    cases.push_back({"conduit hello", "hello.bin, long64, runtime at CPL3",
                     {conduit, "run", "--config", helloConfig}, 0, {}, {}});
    cases.push_back({"conduit hello16", "bench hello16, real16",
                     {conduit, "run", "--config", real16Config}, 0, {}, {}});
    bool haveQemu = !qemu.empty();
    if (haveQemu)
        cases.push_back({"qemu hello16", "microvm, bench hello16 as -bios",
                         {qemu, "-accel", "kvm", "-M", "microvm", "-m", fmt::format("{}M", memMib), "-smp", "1",
                          "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-bios", qemuBios,
                          "-device", "isa-debug-exit,iobase=0xf4,iosize=1"},
                         1, {}, {}});  // isa-debug-exit: status = (0 << 1) | 1

    // One unmeasured run each: page cache, dynamic loader caches.
    for (auto& c : cases) {
        try {
            runOnce(c);
        } catch (const std::exception& e) {
            c.error = e.what();
        }
    }
    for (int r = 0; r < runs; ++r)
        for (auto& c : cases) {
            if (c.error) continue;
            try {
                c.ms.push_back(runOnce(c));
            } catch (const std::exception& e) {
                c.error = e.what();
            }
        }

    std::printf("(a) exec-to-exit wall time, %u MiB guest RAM, median of %d interleaved runs [min .. max]\n", memMib,
                runs);
    std::map<std::string, double> med;
    for (auto& c : cases) {
        if (c.error) {
            std::printf("    %-16s FAILED: %s\n", c.name.c_str(), c.error->c_str());
            continue;
        }
        med[c.name] = median(c.ms);
        std::printf("    %-16s %8.2f ms  [%.2f .. %.2f]  (%s)\n", c.name.c_str(), med[c.name],
                    *std::min_element(c.ms.begin(), c.ms.end()), *std::max_element(c.ms.begin(), c.ms.end()),
                    c.what.c_str());
    }
    if (!haveQemu) {
        std::printf("    qemu             skipped: qemu-system-x86_64 not found "
                    "(`apt-get install qemu-system-x86` enables it)\n");
    } else if (med.count("qemu hello16")) {
        double q = med["qemu hello16"];
        for (const char* n : {"conduit hello16", "conduit hello"})
            if (med.count(n))
                std::printf("    ratio %-16s / qemu hello16 = %.3fx   goal: well under 1x (well under QEMU)\n", n,
                            med[n] / q);
    }
    bool anyError = false;
    for (auto& c : cases) anyError |= c.error.has_value();
    return anyError ? 1 : 0;
}
