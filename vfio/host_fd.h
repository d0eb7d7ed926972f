// RAII owners for what the HostInterface hands out: fds are closed and mappings unmapped through
// the same HostInterface, so the simulated host sees every close and can check for leaks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "vfio/host_interface.h"

namespace conduit::vfio {

class HostFd {
public:
    HostFd() = default;
    HostFd(HostInterface& host, int fd) : host_(&host), fd_(fd) {}
    HostFd(HostFd&& o) noexcept : host_(o.host_), fd_(std::exchange(o.fd_, -1)) {}
    HostFd& operator=(HostFd&& o) noexcept {
        if (this != &o) {
            reset();
            host_ = o.host_;
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    HostFd(const HostFd&) = delete;
    HostFd& operator=(const HostFd&) = delete;
    ~HostFd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    HostInterface* host() const { return host_; }
    int release() { return std::exchange(fd_, -1); }
    void reset() {
        if (fd_ >= 0 && host_) host_->close(fd_);
        fd_ = -1;
    }

private:
    HostInterface* host_ = nullptr;
    int fd_ = -1;
};

class HostMapping {
public:
    HostMapping() = default;
    HostMapping(HostInterface& host, void* addr, size_t size) : host_(&host), addr_(addr), size_(size) {}
    HostMapping(HostMapping&& o) noexcept
        : host_(o.host_), addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    HostMapping& operator=(HostMapping&& o) noexcept {
        if (this != &o) {
            reset();
            host_ = o.host_;
            addr_ = std::exchange(o.addr_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    HostMapping(const HostMapping&) = delete;
    HostMapping& operator=(const HostMapping&) = delete;
    ~HostMapping() { reset(); }

    uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
    size_t size() const { return size_; }
    bool valid() const { return addr_ != nullptr; }
    void reset() {
        if (addr_ && host_) host_->munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }

private:
    HostInterface* host_ = nullptr;
    void* addr_ = nullptr;
    size_t size_ = 0;
};

}  // namespace conduit::vfio
