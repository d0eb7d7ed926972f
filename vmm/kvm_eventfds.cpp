#include "vmm/kvm_eventfds.h"

#include <fcntl.h>
#include <linux/kvm.h>

#include <fmt/format.h>

#include "base/log.h"
#include "vmm/kvm.h"

namespace conduit::vmm {

namespace {

Result<UniqueFd> dupFd(int fd, const std::string& what) {
    int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) return Error::fromErrno(fmt::format("dup of {} fd {}", what, fd));
    return UniqueFd(d);
}

}  // namespace

Result<IrqFd> IrqFd::assign(int vmFd, int eventFd, uint32_t gsi, int resampleFd) {
    kvm_irqfd req{};
    req.fd = static_cast<uint32_t>(eventFd);
    req.gsi = gsi;
    if (resampleFd >= 0) {
        req.flags = KVM_IRQFD_FLAG_RESAMPLE;
        req.resamplefd = static_cast<uint32_t>(resampleFd);
    }
    TRY(KVM_IOCTL(vmFd, KVM_IRQFD, &req, "vm",
                  fmt::format("eventfd {} -> GSI {}{}", eventFd, gsi,
                              resampleFd >= 0 ? fmt::format(", resamplefd {}", resampleFd) : "")));
    IrqFd out;
    out.vmFd_ = vmFd;
    out.gsi_ = gsi;
    auto d = dupFd(eventFd, "irqfd");
    if (!d) {
        req.flags = KVM_IRQFD_FLAG_DEASSIGN;
        (void)KVM_IOCTL(vmFd, KVM_IRQFD, &req, "vm", "rollback");
        return std::move(d).error();
    }
    out.fd_ = std::move(d).value();
    return out;
}

void IrqFd::reset() {
    if (!fd_) return;
    kvm_irqfd req{};
    req.fd = static_cast<uint32_t>(fd_.get());
    req.gsi = gsi_;
    req.flags = KVM_IRQFD_FLAG_DEASSIGN;
    auto r = KVM_IOCTL(vmFd_, KVM_IRQFD, &req, "vm", fmt::format("deassign GSI {}", gsi_));
    if (!r) log::get("vmm").warn("{}", r.error().describe());
    fd_.reset();
}

Result<void> IoEventFd::ioctl(int vmFd, int fd, IoSpace space, uint64_t addr, uint32_t len,
                              std::optional<uint64_t> datamatch, bool deassign) {
    kvm_ioeventfd req{};
    req.addr = addr;
    req.len = len;
    req.fd = fd;
    if (space == IoSpace::Pio) req.flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (datamatch) {
        req.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
        req.datamatch = *datamatch;
    }
    if (deassign) req.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    std::string detail = fmt::format("{}{} {:#x} len {}{}", deassign ? "deassign " : "", space == IoSpace::Pio ? "PIO" : "MMIO",
                                     addr, len, datamatch ? fmt::format(" datamatch {:#x}", *datamatch) : "");
    TRY(KVM_IOCTL(vmFd, KVM_IOEVENTFD, &req, "vm", detail));
    return success();
}

Result<IoEventFd> IoEventFd::assign(int vmFd, int eventFd, IoSpace space, uint64_t addr, uint32_t len,
                                    std::optional<uint64_t> datamatch) {
    auto d = TRY(dupFd(eventFd, "ioeventfd"));
    TRY(ioctl(vmFd, d.get(), space, addr, len, datamatch, false));
    IoEventFd out;
    out.vmFd_ = vmFd;
    out.space_ = space;
    out.addr_ = addr;
    out.len_ = len;
    out.datamatch_ = datamatch;
    out.fd_ = std::move(d);
    return out;
}

void IoEventFd::reset() {
    if (!fd_) return;
    auto r = ioctl(vmFd_, fd_.get(), space_, addr_, len_, datamatch_, true);
    if (!r) log::get("vmm").warn("{}", r.error().describe());
    fd_.reset();
}

}  // namespace conduit::vmm
