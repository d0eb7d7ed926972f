// An owned eventfd: the currency of interrupts (irqfd, resamplefd, VFIO triggers) and ioeventfds.
#pragma once

#include <sys/eventfd.h>

#include <cstdint>

#include "base/result.h"
#include "base/unique_fd.h"

namespace conduit {

class EventFd {
public:
    static Result<EventFd> create(int flags = EFD_CLOEXEC | EFD_NONBLOCK) {
        int fd = ::eventfd(0, flags);
        if (fd < 0) return Error::fromErrno("eventfd");
        return EventFd(UniqueFd(fd));
    }
    explicit EventFd(UniqueFd fd) : fd_(std::move(fd)) {}

    int fd() const { return fd_.get(); }

    Result<void> signal(uint64_t n = 1) const {
        if (::write(fd_.get(), &n, sizeof n) != sizeof n) return Error::fromErrno("eventfd write");
        return success();
    }
    // Reads and clears the counter; returns 0 when nothing was pending (non-blocking fd).
    uint64_t consume() const {
        uint64_t n = 0;
        if (::read(fd_.get(), &n, sizeof n) != sizeof n) return 0;
        return n;
    }

private:
    UniqueFd fd_;
};

}  // namespace conduit
