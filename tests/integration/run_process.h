// Runs a child process with optional stdin text, captures stdout/stderr, and kills it at a deadline:
// the integration tests drive build/conduit exactly as a user would.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace conduit::test {

struct ProcessResult {
    int exitStatus = -1;   // exit code, or 128 + signal when killed by a signal
    bool timedOut = false;
    std::string out;       // stdout
    std::string err;       // stderr
    std::chrono::milliseconds elapsed{0};
};

// argv[0] is the program path. stdinText is written and then stdin is closed, unless keepStdinOpen,
// which leaves the pipe open until the child exits (for guests that wait for serial input).
ProcessResult runProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         const std::string& stdinText = "", bool keepStdinOpen = false);

// The last non-empty line of a text, for failure messages ("the kernel reached: ...").
std::string lastLine(const std::string& text);

}  // namespace conduit::test
