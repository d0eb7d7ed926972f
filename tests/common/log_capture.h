// Captures what the "devices" logger (the device models') says while alive, for tests that check a
// log line.
#pragma once

#include <deque>
#include <mutex>
#include <string>

#include "base/log.h"

namespace conduit::test {

class LogCapture {
public:
    LogCapture()
        : id_(log::addListener("devices", [this](const log::Line& l) {
              std::lock_guard lock(mutex_);
              lines_.push_back("[" + l.room + "] " + l.text + "\n");
              if (lines_.size() > 256) lines_.pop_front();
          })) {}
    ~LogCapture() { log::removeListener(id_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    // Every line so far (the newest 256).
    std::string all() const {
        std::lock_guard lock(mutex_);
        std::string out;
        for (auto& l : lines_) out += l;
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::deque<std::string> lines_;
    int id_;
};

}  // namespace conduit::test
