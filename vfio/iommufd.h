// The iommufd API: /dev/iommu with one IOAS per VM; each device is opened through its VFIO cdev
// (/dev/vfio/devices/vfioN, found from the BDF in sysfs), bound to the iommufd and attached to
// the IOAS (or to a HWPT, e.g. a nesting parent for the vSMMU).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "vfio/backend.h"
#include "vfio/iommu_nesting.h"
#include "vfio/sysfs.h"

namespace conduit::vfio {

// The RAII id of an iommufd object (IOMMU_DESTROY when dropped); see vfio/iommu_nesting.h.
using IommufdObject = IommuObject;

class IommufdBackend final : public VfioBackend, public IommuNesting, public IommuObjectOwner {
public:
    // Opens /dev/iommu and allocates the VM's IOAS.
    static Result<std::unique_ptr<IommufdBackend>> open(HostInterface& host, const HostPaths& paths = {});
    ~IommufdBackend() override;

    std::string_view backendName() const override { return "iommufd"; }
    BackendKind kind() const override { return BackendKind::Iommufd; }
    // Opens the cdev, BIND_IOMMUFD, ATTACH_IOMMUFD_PT to the IOAS.
    Result<std::unique_ptr<VfioDevice>> openDevice(const std::string& bdf, KvmFileRegistrar* kvm = nullptr) override;
    // HotResetOwner: cdev hot resets prove ownership through the iommufd (no group fds); the devices
    // open are the ones bound here.
    std::optional<int> ownedGroupFd(unsigned) const override { return std::nullopt; }
    bool deviceOpen(const std::string& bdf) const override { return devices_.count(bdf) != 0; }

    Result<void> mapDma(uint64_t iova, uint64_t size, void* vaddr, bool writable) override;
    Result<void> unmapDma(uint64_t iova, uint64_t size) override;
    Result<void> mapFile(uint64_t iova, uint64_t size, int fd, uint64_t offset, bool writable) override;
    bool mapsFiles() const override { return true; }
    Result<std::vector<IovaRange>> iovaRanges() override;
    Result<DmaLimits> limits() override;
    Result<std::vector<ReservedIova>> reservedRegions() override;
    Result<IommuNesting*> nesting() override { return static_cast<IommuNesting*>(this); }

    int iommufd() const { return iommufd_.get(); }
    uint32_t ioasId() const { return ioas_.id(); }
    // The iommufd device id of a device opened here (BIND_IOMMUFD out_devid).
    std::optional<uint32_t> devId(const std::string& bdf) const;

    Result<HwInfo> hwInfo(uint32_t devId);
    Result<HwInfo> hwInfo(const VfioDevice& dev) override;
    // IOMMU_HWPT_ALLOC of a kernel-managed HWPT on the IOAS (NEST_PARENT for the vSMMU).
    Result<IommufdObject> allocHwpt(uint32_t devId, uint32_t flags);
    // A user-managed nested HWPT over a parent (data: e.g. iommu_hwpt_arm_smmuv3).
    Result<IommufdObject> allocNestedHwpt(uint32_t devId, uint32_t parentId, uint32_t dataType,
                                          std::span<const uint8_t> data);
    Result<void> destroy(uint32_t id, const std::string& what);
    Result<void> destroyObject(uint32_t id, const std::string& what) override { return destroy(id, what); }

    // IommuNesting (vfio/iommu_nesting.h).
    Result<std::shared_ptr<NestParentHwpt>> allocNestParent(const VfioDevice& dev) override;
    Result<std::shared_ptr<Viommu>> allocViommu(const VfioDevice& dev, std::shared_ptr<const NestParentHwpt> parent,
                                                uint32_t type) override;
    Result<std::shared_ptr<Vdevice>> allocVdevice(const VfioDevice& dev, std::shared_ptr<const Viommu> viommu,
                                                  uint64_t virtId) override;
    Result<std::shared_ptr<NestedHwpt>> allocNestedHwpt(const VfioDevice& dev, std::shared_ptr<const Viommu> viommu,
                                                        const smmuv3::Ste& ste) override;
    Result<std::unique_ptr<VeventQueue>> allocVeventQueue(std::shared_ptr<const Viommu> viommu, uint32_t depth) override;
    Result<void> attach(const VfioDevice& dev, std::shared_ptr<const Hwpt> hwpt) override;
    Result<void> attachIoas(const VfioDevice& dev) override;
    Result<void> detach(const VfioDevice& dev) override;
    uint32_t attachedHwpt(const VfioDevice& dev) const override;
    Result<void> invalidate(const Viommu& viommu, std::span<const smmuv3::Command> commands,
                            uint32_t* done = nullptr) override;

private:
    // What the backend knows of a device it opened.
    struct DeviceState {
        uint32_t devId = 0;
        uint32_t attachedPt = 0;                  // the HWPT id the last attach answered with; 0: detached
        std::shared_ptr<const Hwpt> attached;     // held while attached (null: the IOAS's auto domain)
        std::vector<std::weak_ptr<Vdevice>> vdevices;  // destroyed at the device's close if still alive
        std::optional<unsigned> group;            // for reserved regions
    };
    Result<DeviceState*> stateOf(const VfioDevice& dev, const char* call);
    // VFIO_DEVICE_ATTACH_IOMMUFD_PT of pt_id (IOAS or HWPT); the id the kernel attached.
    Result<uint32_t> attachPt(int devFd, const std::string& bdf, uint32_t ptId, const std::string& target);
    // IOMMU_HWPT_INVALIDATE once; `done` is the kernel's entry_num answer, even on failure.
    Result<void> invalidateOnce(const Viommu& viommu, std::span<const smmuv3::Command> commands, uint32_t& done);

    IommufdBackend(HostInterface& host, HostPaths paths, HostFd fd)
        : host_(host), sysfs_(host, paths), iommufd_(std::move(fd)) {}

    HostInterface& host_;
    Sysfs sysfs_;
    HostFd iommufd_;
    IommufdObject ioas_;
    std::map<std::string, DeviceState> devices_;  // by bdf: the devices opened here
};

}  // namespace conduit::vfio
