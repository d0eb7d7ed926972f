// The only translation unit that includes spdlog: it is used header-only (Debian's
// spdlog::spdlog_header_only target), so its implementation is compiled here once and the
// binary loads no libspdlog.
#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <map>
#include <memory>
#include <mutex>

namespace conduit::log {

namespace {

struct Room {
    std::unique_ptr<Logger> logger;
    std::shared_ptr<spdlog::logger> out;  // stderr
};

struct Registered {
    std::string room;
    Listener listener;
    bool toStderr;
};

std::mutex g_mutex;
Level g_level = Level::Info;
std::map<std::string, Room>& rooms() {
    static std::map<std::string, Room> r;  // loggers live until exit: callers keep references
    return r;
}
std::map<int, Registered> g_listeners;
int g_nextListener = 1;

spdlog::level::level_enum toSpdlog(Level l) {
    switch (l) {
        case Level::Trace: return spdlog::level::trace;
        case Level::Debug: return spdlog::level::debug;
        case Level::Info: return spdlog::level::info;
        case Level::Warn: return spdlog::level::warn;
        case Level::Error: return spdlog::level::err;
        case Level::Critical: return spdlog::level::critical;
        case Level::Off: break;
    }
    return spdlog::level::off;
}

}  // namespace

void Logger::emit(Level level, std::string_view text) {
    std::shared_ptr<spdlog::logger> out;
    bool toStderr = true;
    std::vector<Listener> listeners;
    {
        std::lock_guard lock(g_mutex);
        out = rooms()[room_].out;
        for (auto& [id, r] : g_listeners)
            if (r.room == room_) {
                listeners.push_back(r.listener);
                toStderr = toStderr && r.toStderr;
            }
    }
    if (toStderr && out) out->log(toSpdlog(level), text);
    if (!listeners.empty()) {
        const Line line{level, room_, std::string(text)};
        for (auto& l : listeners) l(line);
    }
}

Logger& get(const std::string& room) {
    std::lock_guard lock(g_mutex);
    auto& r = rooms()[room];
    if (!r.logger) {
        r.logger = std::make_unique<Logger>(room);
        r.logger->level_.store(g_level);
        // Not in spdlog's registry: two rooms never share a name there, and nothing else looks.
        r.out = std::make_shared<spdlog::logger>(room, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
        r.out->set_pattern("[%H:%M:%S.%e] [%n] [%^%l%$] %v");
        r.out->set_level(spdlog::level::trace);  // the facade filters
    }
    return *r.logger;
}

bool setLevel(const std::string& name) {
    static const std::map<std::string, Level> names = {
        {"trace", Level::Trace}, {"debug", Level::Debug}, {"info", Level::Info},         {"warn", Level::Warn},
        {"warning", Level::Warn}, {"error", Level::Error}, {"err", Level::Error},       {"critical", Level::Critical},
        {"off", Level::Off}};
    auto it = names.find(name);
    if (it == names.end()) return false;
    std::lock_guard lock(g_mutex);
    g_level = it->second;
    for (auto& [n, r] : rooms())
        if (r.logger) r.logger->level_.store(g_level);
    return true;
}

int addListener(const std::string& room, Listener listener, bool toStderr) {
    std::lock_guard lock(g_mutex);
    const int id = g_nextListener++;
    g_listeners[id] = {room, std::move(listener), toStderr};
    return id;
}

void removeListener(int id) {
    std::lock_guard lock(g_mutex);
    g_listeners.erase(id);
}

}  // namespace conduit::log
