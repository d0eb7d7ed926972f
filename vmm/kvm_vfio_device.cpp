#include "vmm/kvm_vfio_device.h"

#include <linux/kvm.h>

#include <fmt/format.h>

#include "vmm/kvm.h"

namespace conduit::vmm {

namespace {
// Older uAPI headers only have the GROUP names; the values are the same.
constexpr uint32_t kVfioFileGroup = 1;  // KVM_DEV_VFIO_FILE == KVM_DEV_VFIO_GROUP
constexpr uint64_t kVfioFileAdd = 1;    // KVM_DEV_VFIO_FILE_ADD == KVM_DEV_VFIO_GROUP_ADD
constexpr uint64_t kVfioFileDel = 2;    // KVM_DEV_VFIO_FILE_DEL == KVM_DEV_VFIO_GROUP_DEL
static_assert(KVM_DEV_VFIO_GROUP == kVfioFileGroup && KVM_DEV_VFIO_GROUP_ADD == kVfioFileAdd &&
              KVM_DEV_VFIO_GROUP_DEL == kVfioFileDel);
}  // namespace

Result<KvmVfioDevice> KvmVfioDevice::create(int vmFd) {
    kvm_create_device dev{};
    dev.type = KVM_DEV_TYPE_VFIO;
    TRY(KVM_IOCTL(vmFd, KVM_CREATE_DEVICE, &dev, "vm", "KVM_DEV_TYPE_VFIO"));
    return KvmVfioDevice(UniqueFd(static_cast<int>(dev.fd)));
}

Result<void> KvmVfioDevice::setAttr(uint64_t attr, int fd, const char* what) {
    int32_t value = fd;
    kvm_device_attr a{};
    a.group = kVfioFileGroup;
    a.attr = attr;
    a.addr = reinterpret_cast<uint64_t>(&value);
    TRY(KVM_IOCTL(fd_.get(), KVM_SET_DEVICE_ATTR, &a, "kvm-vfio device", fmt::format("{} fd {}", what, fd)));
    return success();
}

Result<void> KvmVfioDevice::addGroup(int groupFd) { return setAttr(kVfioFileAdd, groupFd, "KVM_DEV_VFIO_GROUP_ADD"); }
Result<void> KvmVfioDevice::removeGroup(int groupFd) { return setAttr(kVfioFileDel, groupFd, "KVM_DEV_VFIO_GROUP_DEL"); }
Result<void> KvmVfioDevice::addFile(int fd) { return setAttr(kVfioFileAdd, fd, "KVM_DEV_VFIO_FILE_ADD"); }
Result<void> KvmVfioDevice::removeFile(int fd) { return setAttr(kVfioFileDel, fd, "KVM_DEV_VFIO_FILE_DEL"); }

}  // namespace conduit::vmm
