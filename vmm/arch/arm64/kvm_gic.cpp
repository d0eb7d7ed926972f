#include "vmm/arch/arm64/kvm_gic.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

namespace {

Result<UniqueFd> createDevice(int vmFd, uint32_t type, const char* name) {
    kvm_create_device cd{};
    cd.type = type;
    if (::ioctl(vmFd, KVM_CREATE_DEVICE, &cd) < 0)
        return Error::fromErrno(fmt::format("KVM_CREATE_DEVICE {}", name));
    return UniqueFd(static_cast<int>(cd.fd));
}

template <class T>
Result<void> setAttr(int fd, const char* device, uint32_t group, uint64_t attr, const T* value, const char* what) {
    kvm_device_attr a{};
    a.group = group;
    a.attr = attr;
    a.addr = reinterpret_cast<uint64_t>(value);
    if (::ioctl(fd, KVM_SET_DEVICE_ATTR, &a) < 0)
        return Error::fromErrno(fmt::format("KVM_SET_DEVICE_ATTR {} {} (group {} attr {})", device, what, group, attr));
    return success();
}

Result<void> setAddr(int fd, const char* device, uint64_t type, uint64_t gpa, const char* what) {
    return setAttr(fd, device, KVM_DEV_ARM_VGIC_GRP_ADDR, type, &gpa, fmt::format("{} at {:#x}", what, gpa).c_str());
}

Result<void> ctrlInit(int fd, const char* device) {
    return setAttr<uint64_t>(fd, device, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, nullptr, "CTRL_INIT");
}

}  // namespace

Result<KvmGic> KvmGic::create(int vmFd, const GicConfig& c) {
    if (c.spis == 0 || c.spis % 32 || c.spis > 988)
        return Error(fmt::format("vgic-v3: {} SPIs; KVM takes a multiple of 32 up to 988", c.spis));
    auto gic = TRY(createDevice(vmFd, KVM_DEV_TYPE_ARM_VGIC_V3, "vgic-v3"));
    TRY(setAddr(gic.get(), "vgic-v3", KVM_VGIC_V3_ADDR_TYPE_DIST, c.distributor.base, "distributor"));
    TRY(setAddr(gic.get(), "vgic-v3", KVM_VGIC_V3_ADDR_TYPE_REDIST, c.redistributorBase, "redistributors"));
    uint32_t nrIrqs = 32 + c.spis;  // SGIs and PPIs count too
    TRY(setAttr(gic.get(), "vgic-v3", KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nrIrqs, "nr_irqs"));
    UniqueFd its;
    if (c.itsBase) {
        its = TRY(createDevice(vmFd, KVM_DEV_TYPE_ARM_VGIC_ITS, "vgic-its"));
        TRY(setAddr(its.get(), "vgic-its", KVM_VGIC_ITS_ADDR_TYPE, *c.itsBase, "ITS"));
    }
    return KvmGic(std::move(gic), std::move(its));
}

Result<void> KvmGic::finalize() {
    TRY(ctrlInit(gic_.get(), "vgic-v3"));
    if (its_) TRY(ctrlInit(its_.get(), "vgic-its"));
    return success();
}

}  // namespace conduit::vmm::arm64
