// Captures what the "devices" logger (the device models') says while alive, for tests that check a
// log line.
#pragma once

#include <spdlog/sinks/ringbuffer_sink.h>

#include <algorithm>
#include <memory>
#include <string>

#include "base/log.h"

namespace conduit::test {

class LogCapture {
public:
    LogCapture() { log::get("devices").sinks().push_back(sink_); }
    ~LogCapture() {
        auto& s = log::get("devices").sinks();
        s.erase(std::remove(s.begin(), s.end(), sink_), s.end());
    }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    // Every line so far (the newest 256), formatted.
    std::string all() const {
        std::string out;
        for (auto& l : sink_->last_formatted()) out += l;
        return out;
    }

private:
    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_ = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
};

}  // namespace conduit::test
