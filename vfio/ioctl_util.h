// Helpers for issuing ioctls through the HostInterface with errors that name the call.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"
#include "vfio/host_interface.h"

namespace conduit::vfio {

// ioctl with a struct argument; on failure: "<name> <context>: strerror (ENAME)".
template <class T>
Result<int> ioctlPtr(HostInterface& host, int fd, unsigned long request, T* arg, std::string_view name,
                     std::string_view context = {}) {
    auto r = host.ioctl(fd, request, reinterpret_cast<uintptr_t>(arg));
    if (!r) {
        std::string what(name);
        if (!context.empty()) what += " " + std::string(context);
        return Error(what, r.error().code());
    }
    return r;
}

inline Result<int> ioctlVal(HostInterface& host, int fd, unsigned long request, uintptr_t arg, std::string_view name,
                            std::string_view context = {}) {
    auto r = host.ioctl(fd, request, arg);
    if (!r) {
        std::string what(name);
        if (!context.empty()) what += " " + std::string(context);
        return Error(what, r.error().code());
    }
    return r;
}

}  // namespace conduit::vfio
