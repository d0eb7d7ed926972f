// Small helpers shared by the bench programs (bench/README.md): a child process with piped
// stdin/stdout, a monotonic clock, medians, CPU pinning. Benchmarks are not tests: they print
// figures and ratios, they never decide pass/fail by an absolute threshold.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

extern char** environ;

namespace conduit::bench {

inline int64_t nowNs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

template <class T>
T median(std::vector<T> v) {
    if (v.empty()) return T{};
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error(what); }

inline std::string errnoText(int e) { return fmt::format("{} (errno {})", std::strerror(e), e); }

// Pins the calling thread (and threads it creates later) to one CPU. Returns false if the CPU
// does not exist or is not allowed.
inline bool pinToCpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;
}

// A child process started with posix_spawn. stdout is a pipe read by the parent; stdin is either
// /dev/null or a pipe the parent writes; stderr goes to /dev/null (the VMM's logs are not part of
// what is measured, and must not block on a full pipe).
class Child {
public:
    Child(const std::vector<std::string>& argv, bool pipeStdin) {
        int out[2], in[2] = {-1, -1};
        if (pipe2(out, O_CLOEXEC) != 0) fail("pipe2: " + errnoText(errno));
        if (pipeStdin && pipe2(in, O_CLOEXEC) != 0) fail("pipe2: " + errnoText(errno));
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        if (pipeStdin)
            posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        else
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        startNs_ = nowNs();
        int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        close(out[1]);
        if (pipeStdin) close(in[0]);
        if (rc != 0) {
            close(out[0]);
            if (pipeStdin) close(in[1]);
            fail(fmt::format("posix_spawn {}: {}", argv[0], errnoText(rc)));
        }
        outFd_ = out[0];
        inFd_ = in[1];
    }
    ~Child() {
        if (pid_ > 0 && !reaped_) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (outFd_ >= 0) close(outFd_);
        if (inFd_ >= 0) close(inFd_);
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    int64_t startNs() const { return startNs_; }
    const std::string& output() const { return output_; }

    // Reads stdout until `needle` has appeared or `timeoutMs` passed (false) or EOF (false).
    bool waitFor(const std::string& needle, int timeoutMs) {
        int64_t deadline = nowNs() + int64_t(timeoutMs) * 1'000'000;
        while (output_.find(needle) == std::string::npos) {
            int64_t left = (deadline - nowNs()) / 1'000'000;
            if (left <= 0 || !readSome(int(left))) return false;
        }
        return true;
    }
    void writeStdin(const std::string& s) {
        if (inFd_ < 0) fail("child has no stdin pipe");
        if (write(inFd_, s.data(), s.size()) != ssize_t(s.size())) fail("write to child stdin: " + errnoText(errno));
    }
    // Reads stdout to EOF, then reaps the child. Returns the wait status; *endNs = when waitpid
    // returned.
    int finish(int64_t* endNs = nullptr) {
        while (readSome(-1)) {
        }
        int status = 0;
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        if (endNs) *endNs = nowNs();
        reaped_ = true;
        return status;
    }

private:
    bool readSome(int timeoutMs) {
        pollfd p{outFd_, POLLIN, 0};
        int r = poll(&p, 1, timeoutMs);
        if (r <= 0) return false;
        char buf[4096];
        ssize_t n = read(outFd_, buf, sizeof buf);
        if (n <= 0) return false;
        output_.append(buf, size_t(n));
        return true;
    }

    pid_t pid_ = -1;
    int outFd_ = -1;
    int inFd_ = -1;
    bool reaped_ = false;
    int64_t startNs_ = 0;
    std::string output_;
};

inline std::string describeStatus(int status) {
    if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
    return fmt::format("wait status {:#x}", status);
}

}  // namespace conduit::bench
