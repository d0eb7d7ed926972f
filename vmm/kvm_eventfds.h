// eventfds bound into KVM, as move-only registrations that unbind themselves:
//   IrqFd      KVM_IRQFD: a write to the eventfd raises a GSI (optionally with a resamplefd that
//              KVM signals when a level-triggered interrupt is acknowledged).
//   IoEventFd  KVM_IOEVENTFD: a guest write to a PIO/MMIO address signals the eventfd inside the
//              kernel, with no exit to userspace.
// Each keeps a dup of the eventfd(s), so the caller's EventFd may go away first; the Vm must
// outlive the registration.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace conduit::vmm {

class IrqFd {
public:
    IrqFd() = default;
    IrqFd(IrqFd&&) noexcept = default;
    IrqFd& operator=(IrqFd&& o) noexcept {
        if (this != &o) {
            reset();
            vmFd_ = o.vmFd_;
            gsi_ = o.gsi_;
            fd_ = std::move(o.fd_);
        }
        return *this;
    }
    ~IrqFd() { reset(); }

    // `resampleFd` < 0: plain irqfd; otherwise KVM_IRQFD_FLAG_RESAMPLE.
    static Result<IrqFd> assign(int vmFd, int eventFd, uint32_t gsi, int resampleFd = -1);

    bool valid() const { return fd_.valid(); }
    uint32_t gsi() const { return gsi_; }
    // Unbinds now (KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN); failures are logged.
    void reset();

private:
    int vmFd_ = -1;
    uint32_t gsi_ = 0;
    UniqueFd fd_;
};

enum class IoSpace { Pio, Mmio };

class IoEventFd {
public:
    IoEventFd() = default;
    IoEventFd(IoEventFd&&) noexcept = default;
    IoEventFd& operator=(IoEventFd&& o) noexcept {
        if (this != &o) {
            reset();
            vmFd_ = o.vmFd_;
            space_ = o.space_;
            addr_ = o.addr_;
            len_ = o.len_;
            datamatch_ = o.datamatch_;
            fd_ = std::move(o.fd_);
        }
        return *this;
    }
    ~IoEventFd() { reset(); }

    // `len` 0 (any width, MMIO only; needs KVM_CAP_IOEVENTFD_ANY_LENGTH), 1, 2, 4 or 8.
    // With `datamatch`, only writes of exactly that value signal.
    static Result<IoEventFd> assign(int vmFd, int eventFd, IoSpace space, uint64_t addr, uint32_t len,
                                    std::optional<uint64_t> datamatch = std::nullopt);

    bool valid() const { return fd_.valid(); }
    uint64_t address() const { return addr_; }
    void reset();

private:
    static Result<void> ioctl(int vmFd, int fd, IoSpace space, uint64_t addr, uint32_t len,
                              std::optional<uint64_t> datamatch, bool deassign);
    std::string describe() const;

    int vmFd_ = -1;
    IoSpace space_ = IoSpace::Pio;
    uint64_t addr_ = 0;
    uint32_t len_ = 0;
    std::optional<uint64_t> datamatch_;
    UniqueFd fd_;
};

}  // namespace conduit::vmm
