// The iommufd API: /dev/iommu with one IOAS per VM; each device is opened through its VFIO cdev
// (/dev/vfio/devices/vfioN, found from the BDF in sysfs), bound to the iommufd and attached to
// the IOAS (or to a HWPT, e.g. a nesting parent for the vSMMU).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "vfio/backend.h"
#include "vfio/sysfs.h"

namespace conduit::vfio {

struct HwInfo {
    uint32_t dataType = IOMMU_HW_INFO_TYPE_NONE;
    uint64_t capabilities = 0;
    uint8_t maxPasidLog2 = 0;
    std::vector<uint8_t> data;  // type-specific (iommu_hw_info_vtd / iommu_hw_info_arm_smmuv3)
};

class IommufdBackend;

// An iommufd object id destroyed with IOMMU_DESTROY when dropped.
class IommufdObject {
public:
    IommufdObject() = default;
    IommufdObject(IommufdBackend* owner, uint32_t id, std::string what) : owner_(owner), id_(id), what_(std::move(what)) {}
    IommufdObject(IommufdObject&& o) noexcept
        : owner_(std::exchange(o.owner_, nullptr)), id_(std::exchange(o.id_, 0)), what_(std::move(o.what_)) {}
    IommufdObject& operator=(IommufdObject&& o) noexcept {
        if (this != &o) {
            reset();
            owner_ = std::exchange(o.owner_, nullptr);
            id_ = std::exchange(o.id_, 0);
            what_ = std::move(o.what_);
        }
        return *this;
    }
    ~IommufdObject() { reset(); }
    uint32_t id() const { return id_; }
    bool valid() const { return owner_ != nullptr; }
    void reset();

private:
    IommufdBackend* owner_ = nullptr;
    uint32_t id_ = 0;
    std::string what_;
};

class IommufdBackend final : public VfioBackend {
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
    bool deviceOpen(const std::string& bdf) const override { return devIds_.count(bdf) != 0; }

    Result<void> mapDma(uint64_t iova, uint64_t size, void* vaddr, bool writable) override;
    Result<void> unmapDma(uint64_t iova, uint64_t size) override;
    Result<void> mapFile(uint64_t iova, uint64_t size, int fd, uint64_t offset, bool writable) override;
    bool mapsFiles() const override { return true; }
    Result<std::vector<IovaRange>> iovaRanges() override;
    Result<DmaLimits> limits() override;
    Result<std::vector<ReservedIova>> reservedRegions() override;

    int iommufd() const { return iommufd_.get(); }
    uint32_t ioasId() const { return ioas_.id(); }
    // The iommufd device id of a device opened here (BIND_IOMMUFD out_devid).
    std::optional<uint32_t> devId(const std::string& bdf) const;

    Result<HwInfo> hwInfo(uint32_t devId);
    // IOMMU_HWPT_ALLOC of a kernel-managed HWPT on the IOAS (NEST_PARENT for the vSMMU).
    Result<IommufdObject> allocHwpt(uint32_t devId, uint32_t flags);
    // A user-managed nested HWPT over a parent (data: e.g. iommu_hwpt_arm_smmuv3).
    Result<IommufdObject> allocNestedHwpt(uint32_t devId, uint32_t parentId, uint32_t dataType,
                                          std::span<const uint8_t> data);
    Result<void> destroy(uint32_t id, const std::string& what);

private:
    IommufdBackend(HostInterface& host, HostPaths paths, HostFd fd)
        : host_(host), sysfs_(host, paths), iommufd_(std::move(fd)) {}
    friend class IommufdObject;

    HostInterface& host_;
    Sysfs sysfs_;
    HostFd iommufd_;
    IommufdObject ioas_;
    std::map<std::string, uint32_t> devIds_;   // bdf -> dev id of devices opened here
    std::map<std::string, unsigned> groups_;   // bdf -> IOMMU group (for reserved regions)
};

}  // namespace conduit::vfio
