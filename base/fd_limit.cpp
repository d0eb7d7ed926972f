#include "base/fd_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace conduit {

Result<FdLimit> raiseFdLimit() {
    rlimit l{};
    if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return Error(fmt::format("getrlimit(RLIMIT_NOFILE): {}", std::strerror(errno)), errno);
    FdLimit out{l.rlim_cur, l.rlim_cur};
    if (l.rlim_cur == l.rlim_max) return out;
    l.rlim_cur = l.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &l) != 0)
        return Error(fmt::format("setrlimit(RLIMIT_NOFILE) to {}: {}", l.rlim_max, std::strerror(errno)), errno);
    out.now = l.rlim_max;
    return out;
}

}  // namespace conduit
