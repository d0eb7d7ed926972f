// A VFIO backend owns one IOMMU address space for the VM (type1: the container; iommufd: an IOAS)
// and opens devices into it. Devices must be closed before their backend is destroyed.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "base/result.h"
#include "vfio/device.h"
#include "vfio/host_interface.h"
#include "vfio/hot_reset.h"
#include "vfio/vfio_ops.h"

namespace conduit::vfio {

enum class BackendKind { Auto, Type1, Iommufd };

const char* backendKindName(BackendKind kind);

// KVM's VFIO pseudo-device must know the file a device is opened through before the device is
// opened: vfio_device_open() hands drivers that need KVM at open time device->kvm, which the
// kernel takes from the group (type1) or from the cdev file (BIND_IOMMUFD) that KVM_DEV_VFIO_FILE_ADD
// was given. The backend calls add() at that point: type1 with the group fd once the group has
// joined the container, before VFIO_GROUP_GET_DEVICE_FD (once per group); iommufd with the cdev fd
// right after open, before VFIO_DEVICE_BIND_IOMMUFD. When the open fails after add(), it calls
// remove() before that fd is closed. vfio/ knows nothing of KVM: the VMM implements this.
class KvmFileRegistrar {
public:
    virtual ~KvmFileRegistrar() = default;
    virtual Result<void> add(int fd, bool isGroup, const std::string& what) = 0;
    virtual void remove(int fd, bool isGroup) = 0;
};

// An add() undone by remove() unless released (the open succeeded).
class KvmFileRegistration {
public:
    KvmFileRegistration() = default;
    static Result<KvmFileRegistration> add(KvmFileRegistrar* kvm, int fd, bool isGroup, const std::string& what) {
        KvmFileRegistration r;
        if (!kvm) return r;
        TRY(kvm->add(fd, isGroup, what));
        r.kvm_ = kvm;
        r.fd_ = fd;
        r.isGroup_ = isGroup;
        return r;
    }
    KvmFileRegistration(KvmFileRegistration&& o) noexcept
        : kvm_(std::exchange(o.kvm_, nullptr)), fd_(o.fd_), isGroup_(o.isGroup_) {}
    KvmFileRegistration& operator=(KvmFileRegistration&& o) noexcept {
        if (this != &o) {
            reset();
            kvm_ = std::exchange(o.kvm_, nullptr);
            fd_ = o.fd_;
            isGroup_ = o.isGroup_;
        }
        return *this;
    }
    ~KvmFileRegistration() { reset(); }
    void release() { kvm_ = nullptr; }
    void reset() {
        if (kvm_) std::exchange(kvm_, nullptr)->remove(fd_, isGroup_);
    }

private:
    KvmFileRegistrar* kvm_ = nullptr;
    int fd_ = -1;
    bool isGroup_ = false;
};

class VfioBackend : public VfioOps, public HotResetOwner {
public:
    // Opens a PCI device by BDF ("0000:00:03.0") into this backend's address space. `kvm`, when
    // given, is told about the group or cdev before the device is opened (see KvmFileRegistrar).
    virtual Result<std::unique_ptr<VfioDevice>> openDevice(const std::string& bdf, KvmFileRegistrar* kvm = nullptr) = 0;
    virtual BackendKind kind() const = 0;
};

// Auto: iommufd when the host has /dev/iommu and VFIO device cdevs, else type1.
Result<std::unique_ptr<VfioBackend>> openBackend(HostInterface& host, BackendKind kind, const HostPaths& paths = {});

}  // namespace conduit::vfio
