// Logging: one spdlog logger per room ("vmm", "memory", "vfio", "devices"), all to stderr, so the
// guest's serial output on stdout stays clean.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace conduit::log {

// Returns the named logger, creating it on first use with the process-wide level.
spdlog::logger& get(const std::string& room);

// Sets the level of every logger ("trace".."off"); returns false for an unknown name.
bool setLevel(const std::string& level);

}  // namespace conduit::log
