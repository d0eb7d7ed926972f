// Logging: one logger per room ("vmm", "memory", "vfio", "devices"), all to stderr, so the
// guest's serial output on stdout stays clean.
//
// A thin facade: callers format with fmt (checked at compile time) and hand the line to one
// non-template function; spdlog, which writes it, is compiled into base/log.cpp alone. So no
// other translation unit compiles spdlog's templates and the binary needs no spdlog library at
// run time (docs/architecture.md: the resident size of the VMM).
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace conduit::log {

enum class Level { Trace, Debug, Info, Warn, Error, Critical, Off };

class Logger {
public:
    explicit Logger(std::string room) : room_(std::move(room)) {}
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;

    template <typename... Args>
    void trace(fmt::format_string<Args...> f, Args&&... args) { write(Level::Trace, f, std::forward<Args>(args)...); }
    template <typename... Args>
    void debug(fmt::format_string<Args...> f, Args&&... args) { write(Level::Debug, f, std::forward<Args>(args)...); }
    template <typename... Args>
    void info(fmt::format_string<Args...> f, Args&&... args) { write(Level::Info, f, std::forward<Args>(args)...); }
    template <typename... Args>
    void warn(fmt::format_string<Args...> f, Args&&... args) { write(Level::Warn, f, std::forward<Args>(args)...); }
    template <typename... Args>
    void error(fmt::format_string<Args...> f, Args&&... args) { write(Level::Error, f, std::forward<Args>(args)...); }
    template <typename... Args>
    void critical(fmt::format_string<Args...> f, Args&&... args) { write(Level::Critical, f, std::forward<Args>(args)...); }

    bool enabled(Level level) const { return level >= level_.load(std::memory_order_relaxed) && level != Level::Off; }
    const std::string& room() const { return room_; }
    // Writes one formatted line at `level` (to stderr and to any listener), whatever the level.
    void emit(Level level, std::string_view text);

private:
    friend bool setLevel(const std::string& level);
    friend Logger& get(const std::string& room);

    template <typename... Args>
    void write(Level level, fmt::format_string<Args...> f, Args&&... args) {
        if (enabled(level)) emit(level, fmt::vformat(f, fmt::make_format_args(args...)));
    }

    std::string room_;
    std::atomic<Level> level_{Level::Info};
};

// Returns the named logger, creating it on first use with the process-wide level.
Logger& get(const std::string& room);

// Sets the level of every logger ("trace".."off"); returns false for an unknown name.
bool setLevel(const std::string& level);

// What tests capture: every line a room logs from now on, with its level, while registered.
// `toStderr` false keeps the room's lines off stderr meanwhile (a fault sweep's thousands of runs).
struct Line {
    Level level;
    std::string room;
    std::string text;
};
using Listener = std::function<void(const Line&)>;
int addListener(const std::string& room, Listener listener, bool toStderr = true);
void removeListener(int id);

}  // namespace conduit::log
