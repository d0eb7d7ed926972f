#include "vmm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <memory>

#include <fmt/format.h>

#include "base/log.h"

namespace conduit::vmm {

Result<int> kvmIoctl(int fd, unsigned long request, unsigned long arg, std::string_view requestName,
                     std::string_view object, std::string_view detail) {
    int r = ::ioctl(fd, request, arg);
    if (r < 0) {
        if (detail.empty()) return Error::fromErrno(fmt::format("{} on {}", requestName, object));
        return Error::fromErrno(fmt::format("{} on {} ({})", requestName, object, detail));
    }
    return r;
}

std::string capabilityName(unsigned cap) {
    switch (cap) {
#define CAP(name) \
    case name:    \
        return #name;
        CAP(KVM_CAP_IRQCHIP)
        CAP(KVM_CAP_HLT)
        CAP(KVM_CAP_USER_MEMORY)
        CAP(KVM_CAP_SET_TSS_ADDR)
        CAP(KVM_CAP_EXT_CPUID)
        CAP(KVM_CAP_NR_VCPUS)
        CAP(KVM_CAP_NR_MEMSLOTS)
        CAP(KVM_CAP_PIT)
        CAP(KVM_CAP_MP_STATE)
        CAP(KVM_CAP_IRQ_ROUTING)
        CAP(KVM_CAP_IRQ_INJECT_STATUS)
        CAP(KVM_CAP_SET_IDENTITY_MAP_ADDR)
        CAP(KVM_CAP_IRQFD)
#ifdef KVM_CAP_PIT2  // x86 only (__KVM_HAVE_PIT)
        CAP(KVM_CAP_PIT2)
#endif
        CAP(KVM_CAP_IOEVENTFD)
        CAP(KVM_CAP_SIGNAL_MSI)
        CAP(KVM_CAP_IRQFD_RESAMPLE)
        CAP(KVM_CAP_DEVICE_CTRL)
        CAP(KVM_CAP_IMMEDIATE_EXIT)
        CAP(KVM_CAP_MAX_VCPUS)
        CAP(KVM_CAP_SPLIT_IRQCHIP)
        CAP(KVM_CAP_X2APIC_API)
        CAP(KVM_CAP_MSI_DEVID)
        CAP(KVM_CAP_IOEVENTFD_ANY_LENGTH)
        CAP(KVM_CAP_EXIT_ON_EMULATION_FAILURE)
#undef CAP
        default:
            return fmt::format("KVM_CAP_{}", cap);
    }
}

const std::vector<unsigned>& Kvm::requiredCapabilities() {
    // What Vm/Vcpu/Machine call unconditionally on every architecture. The platform's own
    // (x86: irqchip, PIT2, TSS, identity map, CPUID) are checked by the platform; optional
    // features (split irqchip, x2APIC API) are probed where they are used.
    static const std::vector<unsigned> caps = {
        KVM_CAP_USER_MEMORY, KVM_CAP_MP_STATE,       KVM_CAP_IRQ_ROUTING, KVM_CAP_IRQFD,
        KVM_CAP_IRQFD_RESAMPLE, KVM_CAP_IOEVENTFD,   KVM_CAP_SIGNAL_MSI,  KVM_CAP_IMMEDIATE_EXIT,
        KVM_CAP_DEVICE_CTRL,
    };
    return caps;
}

Result<Kvm> Kvm::open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) return Error::fromErrno("open " + path);
    Kvm kvm(std::move(fd), path);

    int version = TRY(KVM_IOCTL(kvm.fd(), KVM_GET_API_VERSION, 0, path));
    if (version != kApiVersion)
        return Error(fmt::format("{}: KVM API version {} (Conduit needs {})", path, version, kApiVersion));

    for (unsigned cap : requiredCapabilities()) TRY(kvm.requireExtension(cap));

    int mmapSize = TRY(KVM_IOCTL(kvm.fd(), KVM_GET_VCPU_MMAP_SIZE, 0, path));
    if (static_cast<size_t>(mmapSize) < sizeof(kvm_run))
        return Error(fmt::format("{}: KVM_GET_VCPU_MMAP_SIZE {} is smaller than struct kvm_run", path, mmapSize));
    kvm.vcpuMmapSize_ = static_cast<size_t>(mmapSize);

    int slots = TRY(kvm.checkExtension(KVM_CAP_NR_MEMSLOTS));
    if (slots > 0) kvm.maxMemslots_ = static_cast<unsigned>(slots);

    log::get("vmm").debug("{}: API {}, vcpu mmap {} bytes, {} memslots", path, version, kvm.vcpuMmapSize_,
                          kvm.maxMemslots_);
    return kvm;
}

Result<int> Kvm::checkExtension(unsigned cap) const {
    return KVM_IOCTL(fd(), KVM_CHECK_EXTENSION, static_cast<unsigned long>(cap), path_, capabilityName(cap));
}

Result<void> Kvm::requireExtension(unsigned cap) const {
    int v = TRY(checkExtension(cap));
    if (v <= 0)
        return Error(fmt::format("KVM capability {} ({}) is not supported by {}", capabilityName(cap), cap, path_),
                     ENOTSUP);
    return success();
}

}  // namespace conduit::vmm
