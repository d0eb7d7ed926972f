// bench (c): Conduit's resident memory beyond guest RAM, sampled while a guest runs.
//
// Starts `conduit run --config <uart_irq config>` with a pipe on its stdin: the uart_irq payload
// sets up the UART and then waits for serial input. Once its "transmitting" line is out, the VMM is
// in steady state (vCPU thread, serial input thread, devices up); /proc/<pid>/status is sampled a
// few times and the largest RssAnon + RssFile is reported. Guest RAM is memfd-backed, so it is
// RssShmem and not part of the figure. /proc/<pid>/smaps says which mappings the rest comes from.
// Then the bench sends "ping\n" and checks that the guest finishes normally.
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "bench/bench_util.h"

using namespace conduit::bench;

namespace {

std::map<std::string, long> readStatusKb(pid_t pid) {
    std::ifstream f(fmt::format("/proc/{}/status", pid));
    std::map<std::string, long> out;
    std::string line;
    while (std::getline(f, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string key = line.substr(0, colon);
        if (key.rfind("Rss", 0) == 0 || key == "VmRSS" || key == "VmHWM" || key == "Threads") {
            std::istringstream v(line.substr(colon + 1));
            long kb = 0;
            v >> kb;
            out[key] = kb;
        }
    }
    return out;
}

// Per mapping name (file path, [heap], [stack], "[anon]"...): resident anonymous and file kB,
// shmem-like mappings (memfd, /dev/zero shared) left out as guest RAM.
struct Usage {
    long anonKb = 0;
    long fileKb = 0;
    long privateKb = 0;  // Private_Clean + Private_Dirty: pages no other process maps
    int mappings = 0;
};

std::map<std::string, Usage> readSmaps(pid_t pid, long* shmemKb) {
    std::ifstream f(fmt::format("/proc/{}/smaps", pid));
    std::map<std::string, Usage> out;
    std::string line, name;
    long rss = 0, priv = 0;
    bool shmem = false;
    auto flush = [&](long anon) {
        if (shmem) {
            *shmemKb += rss;
            return;
        }
        Usage& u = out[name];
        u.anonKb += anon;
        u.fileKb += rss - anon;
        u.privateKb += priv;
        u.mappings++;
    };
    *shmemKb = 0;
    while (std::getline(f, line)) {
        // Header: "start-end perms offset dev inode   [name]"
        if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < 17 &&
            line.find(':') > 17) {
            std::istringstream h(line);
            std::string range, perms, offset, dev;
            unsigned long inode = 0;
            h >> range >> perms >> offset >> dev >> inode;
            std::string rest;
            std::getline(h, rest);
            rest.erase(0, rest.find_first_not_of(' '));
            name = rest.empty() ? "[anon]" : rest;
            shmem = name.rfind("/memfd:", 0) == 0 || name.rfind("/dev/zero", 0) == 0 ||
                    name.rfind("/SYSV", 0) == 0 || name.rfind("/dev/hugepages", 0) == 0;
            rss = priv = 0;
            continue;
        }
        long kb = 0;
        if (std::sscanf(line.c_str(), "Rss: %ld kB", &kb) == 1) rss = kb;
        if (std::sscanf(line.c_str(), "Private_Clean: %ld kB", &kb) == 1) priv += kb;
        if (std::sscanf(line.c_str(), "Private_Dirty: %ld kB", &kb) == 1) priv += kb;
        if (std::sscanf(line.c_str(), "Anonymous: %ld kB", &kb) == 1) flush(kb);  // Anonymous follows Rss
    }
    return out;
}

std::string shortName(const std::string& n) {
    auto slash = n.rfind('/');
    return slash == std::string::npos || n[0] == '[' ? n : n.substr(slash + 1);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench (c): Conduit RSS beyond guest RAM while a guest runs"};
    std::string conduit, config;
    int samples = 5;
    app.add_option("--conduit", conduit, "conduit binary")->required();
    app.add_option("--config", config, "config booting uart_irq.bin with serial input from stdin")->required();
    app.add_option("--samples", samples, "status samples, 100 ms apart (the largest is reported)");
    CLI11_PARSE(app, argc, argv);

    try {
        Child child({conduit, "run", "--config", config}, true);
        if (!child.waitFor("uart_irq: transmitting", 30'000))
            fail(fmt::format("the guest never reached its waiting state; output so far: {:?}", child.output()));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));

        std::map<std::string, long> best;
        std::map<std::string, Usage> bestMaps;
        long bestShmem = 0;
        for (int i = 0; i < samples; ++i) {
            auto st = readStatusKb(child.pid());
            if (st["RssAnon"] + st["RssFile"] > best["RssAnon"] + best["RssFile"]) {
                best = st;
                bestMaps = readSmaps(child.pid(), &bestShmem);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }

        child.writeStdin("ping\n");
        int status = child.finish();
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                  child.output().find("uart_irq: ok") != std::string::npos;

        long beyond = best["RssAnon"] + best["RssFile"];
        std::printf("(c) conduit RSS beyond guest RAM, uart_irq waiting for serial input (max of %d samples)\n",
                    samples);
        std::printf("    RssAnon %ld KiB + RssFile %ld KiB = %.2f MiB   goal: <= 4 MiB\n", best["RssAnon"],
                    best["RssFile"], double(beyond) / 1024.0);
        std::printf("    (RssShmem %ld KiB = guest RAM touched so far; VmRSS %ld KiB; %ld threads)\n",
                    best["RssShmem"], best["VmRSS"], best["Threads"]);
        // Largest contributors, from smaps.
        std::vector<std::pair<std::string, Usage>> rows(bestMaps.begin(), bestMaps.end());
        std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) {
            return a.second.anonKb + a.second.fileKb > b.second.anonKb + b.second.fileKb;
        });
        std::printf("    largest contributors (smaps; anon / file KiB):\n");
        long shown = 0, total = 0;
        for (auto& [n, u] : rows) total += u.anonKb + u.fileKb;
        for (size_t i = 0; i < rows.size() && i < 10; ++i) {
            auto& [n, u] = rows[i];
            if (u.anonKb + u.fileKb == 0) break;
            shown += u.anonKb + u.fileKb;
            std::printf("      %-34s %6ld / %6ld  (%d mappings)\n", shortName(n).c_str(), u.anonKb, u.fileKb,
                        u.mappings);
        }
        std::printf("      %-34s %6ld KiB\n", "(all other mappings)", total - shown);
        long priv = 0;
        for (auto& [n, u] : rows) priv += u.privateKb;
        std::printf("    of the %.2f MiB, %.2f MiB are private to this process (smaps Private_*); the rest are "
                    "page-cache pages of the binary and shared libraries that other processes map too\n",
                    double(total) / 1024.0, double(priv) / 1024.0);
        if (!ok) {
            std::printf("    note: the guest did not finish normally (%s); output: %s\n", describeStatus(status).c_str(),
                        child.output().c_str());
            return 1;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_rss: %s\n", e.what());
        return 1;
    }
    return 0;
}
