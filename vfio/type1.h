// The legacy VFIO API: one container (/dev/vfio/vfio) per VM using VFIO_TYPE1v2_IOMMU, shared by
// every IOMMU group (/dev/vfio/N) whose devices are assigned; device fds come from their group.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "vfio/backend.h"
#include "vfio/sysfs.h"

namespace conduit::vfio {

class Type1Group {
public:
    Type1Group(unsigned id, HostFd fd) : id_(id), fd_(std::move(fd)) {}
    unsigned id() const { return id_; }
    int fd() const { return fd_.get(); }
    HostFd& ownedFd() { return fd_; }

private:
    unsigned id_;
    HostFd fd_;
};

struct Type1Info {
    uint64_t pageSizes = 0;
    std::vector<IovaRange> iovaRanges;  // empty when the kernel gave no IOVA_RANGE cap
    std::optional<uint32_t> dmaAvail;
    bool migrationCap = false;
    uint64_t migrationPageSizes = 0;
    uint64_t maxDirtyBitmapSize = 0;
};

class Type1Backend final : public VfioBackend {
public:
    // Opens the container and checks the API version and VFIO_TYPE1v2_IOMMU support. SET_IOMMU
    // happens when the first group is attached (the kernel requires a group first).
    static Result<std::unique_ptr<Type1Backend>> open(HostInterface& host, const HostPaths& paths = {});
    ~Type1Backend() override;

    std::string_view backendName() const override { return "type1"; }
    BackendKind kind() const override { return BackendKind::Type1; }
    Result<std::unique_ptr<VfioDevice>> openDevice(const std::string& bdf, KvmFileRegistrar* kvm = nullptr) override;
    // HotResetOwner: the groups attached to this container, the devices opened from them.
    std::optional<int> ownedGroupFd(unsigned group) const override;
    bool deviceOpen(const std::string& bdf) const override { return openDevices_.count(bdf) != 0; }

    Result<void> mapDma(uint64_t iova, uint64_t size, void* vaddr, bool writable) override;
    Result<void> unmapDma(uint64_t iova, uint64_t size) override;
    Result<void> mapFile(uint64_t iova, uint64_t size, int fd, uint64_t offset, bool writable) override;
    bool mapsFiles() const override { return false; }
    Result<std::vector<IovaRange>> iovaRanges() override;
    Result<DmaLimits> limits() override;
    Result<std::vector<ReservedIova>> reservedRegions() override;
    // A VFIO container has no HWPTs, vIOMMUs or vDEVICEs: nesting needs the iommufd backend.
    Result<IommuNesting*> nesting() override {
        return Error("VFIO type1 container has no iommufd nesting (NEST_PARENT HWPT, vIOMMU, vDEVICE): "
                     "open the VM's devices with the iommufd backend",
                     EOPNOTSUPP);
    }

    // VFIO_IOMMU_GET_INFO with its capability chain (IOVA ranges, dma_avail, migration).
    Result<Type1Info> info();
    size_t groupCount() const { return groups_.size(); }

private:
    // Attaches the group (viability checked first, offending device and driver named). Private:
    // openDevice() tells KVM about a group it attaches before opening a device from it.
    Result<Type1Group*> attachGroup(unsigned group);
    Type1Backend(HostInterface& host, HostPaths paths, HostFd container)
        : host_(host), sysfs_(host, paths), container_(std::move(container)) {}
    Result<void> detachGroup(Type1Group& group);

    HostInterface& host_;
    Sysfs sysfs_;
    HostFd container_;
    bool iommuSet_ = false;
    std::map<unsigned, std::unique_ptr<Type1Group>> groups_;
    std::set<std::string> openDevices_;  // bdfs of the devices open from those groups
};

}  // namespace conduit::vfio
