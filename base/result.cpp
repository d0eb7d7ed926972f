#include "base/result.h"

#include <cstring>

namespace conduit {

std::string errnoName(int e) {
    // strerrorname_np is glibc >= 2.32; Debian bookworm has 2.36.
    if (const char* name = strerrorname_np(e)) return name;
    return "errno " + std::to_string(e);
}

std::string Error::describe() const {
    if (errno_ == 0) return what_;
    return what_ + ": " + std::strerror(errno_) + " (" + errnoName(errno_) + ")";
}

}  // namespace conduit
