// Move-only owner of an mmap()ed range; munmaps it exactly once.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/result.h"

namespace conduit {

class Mapping {
public:
    Mapping() = default;
    Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
    Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    Mapping& operator=(Mapping&& o) noexcept {
        if (this != &o) {
            reset();
            addr_ = std::exchange(o.addr_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() { reset(); }

    // mmap() wrapper: `what` names the mapping for the error message.
    static Result<Mapping> map(size_t size, int prot, int flags, int fd, off_t offset, const std::string& what,
                               void* hint = nullptr) {
        void* p = ::mmap(hint, size, prot, flags, fd, offset);
        if (p == MAP_FAILED) return Error::fromErrno("mmap " + what);
        return Mapping(p, size);
    }

    uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
    size_t size() const { return size_; }
    bool valid() const { return addr_ != nullptr; }

    // Gives up ownership (something else now owns the range, or parts of it): returns the address.
    void* release() {
        size_ = 0;
        return std::exchange(addr_, nullptr);
    }

    void reset() {
        if (addr_) ::munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }

private:
    void* addr_ = nullptr;
    size_t size_ = 0;
};

}  // namespace conduit
