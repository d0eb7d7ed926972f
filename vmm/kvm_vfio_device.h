// The KVM VFIO pseudo-device (KVM_CREATE_DEVICE, KVM_DEV_TYPE_VFIO). KVM must be told about every
// VFIO group (legacy type1) or device cdev fd (iommufd) the VM uses, so it can handle coherency
// (no-snoop/wbinvd) and arch-specific hooks. One per VM; created lazily by passthrough.
#pragma once

#include "base/result.h"
#include "base/unique_fd.h"

namespace conduit::vmm {

class KvmVfioDevice {
public:
    static Result<KvmVfioDevice> create(int vmFd);

    // KVM_DEV_VFIO_GROUP_ADD / _DEL with a /dev/vfio/N fd.
    Result<void> addGroup(int groupFd);
    Result<void> removeGroup(int groupFd);
    // KVM_DEV_VFIO_FILE_ADD / _DEL with a /dev/vfio/devices/vfioN cdev fd (iommufd path). Same
    // attribute numbers as the group ones (the kernel renamed them when cdevs arrived).
    Result<void> addFile(int fd);
    Result<void> removeFile(int fd);

    int fd() const { return fd_.get(); }

private:
    explicit KvmVfioDevice(UniqueFd fd) : fd_(std::move(fd)) {}
    Result<void> setAttr(uint64_t attr, int fd, const char* what);

    UniqueFd fd_;
};

}  // namespace conduit::vmm
