#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

namespace conduit::log {

namespace {
std::mutex g_mutex;
spdlog::level::level_enum g_level = spdlog::level::info;
}  // namespace

spdlog::logger& get(const std::string& room) {
    std::lock_guard lock(g_mutex);
    auto logger = spdlog::get(room);
    if (!logger) {
        logger = spdlog::stderr_color_mt(room);
        logger->set_pattern("[%H:%M:%S.%e] [%n] [%^%l%$] %v");
        logger->set_level(g_level);
    }
    return *logger;
}

bool setLevel(const std::string& level) {
    auto parsed = spdlog::level::from_str(level);
    // from_str maps unknown names to "off"; only accept "off" when asked for it.
    if (parsed == spdlog::level::off && level != "off") return false;
    std::lock_guard lock(g_mutex);
    g_level = parsed;
    spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(parsed); });
    return true;
}

}  // namespace conduit::log
