// The /dev/kvm system handle: API version check, capability queries and the size of each vCPU's
// kvm_run mapping (architecture-specific queries, e.g. x86's supported CPUID, are the platform's). Everything else (VMs, vCPUs) is created from it.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace conduit::vmm {

// ioctl() that turns a failure into an Error naming the ioctl, the object it was issued on and
// (optionally) the arguments: "KVM_CREATE_VCPU on vm (id 3): Invalid argument (EINVAL)".
// Returns the non-negative ioctl result.
Result<int> kvmIoctl(int fd, unsigned long request, unsigned long arg, std::string_view requestName,
                     std::string_view object, std::string_view detail = {});
template <class T>
Result<int> kvmIoctl(int fd, unsigned long request, T* arg, std::string_view requestName, std::string_view object,
                     std::string_view detail = {}) {
    return kvmIoctl(fd, request, reinterpret_cast<unsigned long>(arg), requestName, object, detail);
}
// Spells the request name once: KVM_IOCTL(fd, KVM_RUN, 0, "vcpu0").
#define KVM_IOCTL(fd, request, arg, ...) ::conduit::vmm::kvmIoctl((fd), (request), (arg), #request, __VA_ARGS__)

// "KVM_CAP_IRQFD" for a capability number, "KVM_CAP_<n>" when unknown.
std::string capabilityName(unsigned cap);

class Kvm {
public:
    static constexpr int kApiVersion = 12;

    // Opens the device, checks KVM_GET_API_VERSION == 12 and every capability Conduit needs on any
    // architecture (requiredCapabilities()), reads KVM_GET_VCPU_MMAP_SIZE.
    static Result<Kvm> open(const std::string& path = "/dev/kvm");

    Kvm(Kvm&&) = default;
    Kvm& operator=(Kvm&&) = default;

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }

    // KVM_CHECK_EXTENSION on /dev/kvm: 0 = absent, otherwise capability-specific (often 1).
    Result<int> checkExtension(unsigned cap) const;
    // Error "KVM capability KVM_CAP_X (n) is not supported by <path>" when absent.
    Result<void> requireExtension(unsigned cap) const;
    // The capabilities generic code relies on, in the order they are checked (the platform checks
    // its own in arch::Platform::vmType()).
    static const std::vector<unsigned>& requiredCapabilities();

    size_t vcpuMmapSize() const { return vcpuMmapSize_; }
    // KVM_CAP_NR_MEMSLOTS (falls back to 32 when the kernel answers 0).
    unsigned maxMemslots() const { return maxMemslots_; }

private:
    Kvm(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

    UniqueFd fd_;
    std::string path_;
    size_t vcpuMmapSize_ = 0;
    unsigned maxMemslots_ = 32;
};

}  // namespace conduit::vmm
