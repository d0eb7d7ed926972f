#include "vfio/type1.h"

#include <fcntl.h>

#include <cstring>

#include <fmt/format.h>

#include "base/log.h"
#include "vfio/ioctl_util.h"

namespace conduit::vfio {

Result<std::unique_ptr<Type1Backend>> Type1Backend::open(HostInterface& host, const HostPaths& paths) {
    const std::string path = (paths.dev / "vfio/vfio").string();
    int raw = TRY_CTX(host.open(path, O_RDWR), "VFIO type1 container");
    HostFd container(host, raw);
    int api = TRY(ioctlVal(host, container.get(), VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION", path));
    if (api != VFIO_API_VERSION)
        return Error(fmt::format("{}: VFIO API version {} (Conduit speaks {})", path, api, VFIO_API_VERSION), EINVAL);
    int v2 = TRY(ioctlVal(host, container.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU,
                          "VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)", path));
    if (v2 <= 0)
        return Error(fmt::format("{}: the kernel's VFIO IOMMU driver does not offer VFIO_TYPE1v2_IOMMU, which Conduit "
                                 "requires (exact unmap semantics); use the iommufd backend or a newer kernel",
                                 path),
                     ENOTSUP);
    return std::unique_ptr<Type1Backend>(new Type1Backend(host, paths, std::move(container)));
}

Type1Backend::~Type1Backend() {
    // Groups leave the container before it closes (the kernel would do this on close as well).
    for (auto it = groups_.rbegin(); it != groups_.rend(); ++it) {
        auto r = detachGroup(*it->second);
        if (!r) log::get("vfio").warn("{}", r.error().describe());
    }
    groups_.clear();
}

Result<void> Type1Backend::detachGroup(Type1Group& group) {
    TRY(ioctlVal(host_, group.fd(), VFIO_GROUP_UNSET_CONTAINER, 0, "VFIO_GROUP_UNSET_CONTAINER",
                 fmt::format("group {}", group.id())));
    return success();
}

Result<Type1Group*> Type1Backend::attachGroup(unsigned groupId) {
    if (auto it = groups_.find(groupId); it != groups_.end()) return it->second.get();
    const std::string path = (sysfs_.paths().dev / "vfio" / std::to_string(groupId)).string();
    const std::string what = fmt::format("IOMMU group {}", groupId);
    int raw = TRY_CTX(host_.open(path, O_RDWR), what);
    HostFd fd(host_, raw);

    vfio_group_status status{};
    status.argsz = sizeof status;
    TRY(ioctlPtr(host_, fd.get(), VFIO_GROUP_GET_STATUS, &status, "VFIO_GROUP_GET_STATUS", what));
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        // Name the culprits: every member bound to a driver that keeps the group from VFIO.
        std::string culprits = sysfs_.groupCulprits(groupId);
        if (culprits.empty()) culprits = "a member device (sysfs gave no details)";
        return Error(fmt::format("{} is not viable: {} must be unbound or bound to vfio-pci", what, culprits), EPERM);
    }
    int containerFd = container_.get();
    TRY(ioctlPtr(host_, fd.get(), VFIO_GROUP_SET_CONTAINER, &containerFd, "VFIO_GROUP_SET_CONTAINER", what));
    auto group = std::make_unique<Type1Group>(groupId, std::move(fd));
    if (!iommuSet_) {
        auto set = ioctlVal(host_, container_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU,
                            "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)", what);
        if (!set) {
            (void)detachGroup(*group);
            return std::move(set).error();
        }
        iommuSet_ = true;
    }
    log::get("vfio").info("type1: {} attached to the container", what);
    auto* raw_ptr = group.get();
    groups_[groupId] = std::move(group);
    return raw_ptr;
}

Result<std::unique_ptr<VfioDevice>> Type1Backend::openDevice(const std::string& bdfIn, KvmFileRegistrar* kvm) {
    auto bdf = TRY(normalizeBdf(bdfIn));
    TRY(sysfs_.checkAssignable(bdf));
    unsigned groupId = TRY(sysfs_.iommuGroup(bdf));
    const bool newGroup = !groups_.count(groupId);
    auto* group = TRY(attachGroup(groupId));
    // Undone in this order on failure: KVM forgets the group, then the group leaves the container
    // (which closes its fd).
    KvmFileRegistration kvmGroup;
    auto fail = [&](Error e) -> Error {
        kvmGroup.reset();
        if (newGroup) {
            (void)detachGroup(*group);
            groups_.erase(groupId);
            if (groups_.empty()) iommuSet_ = false;  // the kernel drops the IOMMU with the last group
        }
        return e;
    };
    if (newGroup) {
        // KVM first: the device open below takes group->kvm (vfio_device_group_open()).
        auto reg = KvmFileRegistration::add(kvm, group->fd(), true, fmt::format("IOMMU group {}", groupId));
        if (!reg) return fail(std::move(reg).error());
        kvmGroup = std::move(reg).value();
    }
    std::vector<char> name(bdf.begin(), bdf.end());
    name.push_back('\0');
    auto fdr = ioctlPtr(host_, group->fd(), VFIO_GROUP_GET_DEVICE_FD, name.data(), "VFIO_GROUP_GET_DEVICE_FD",
                        fmt::format("{} (group {})", bdf, groupId));
    if (!fdr) return fail(std::move(fdr).error());
    auto dev = VfioDevice::create(host_, HostFd(host_, *fdr), bdf);
    if (!dev) return fail(std::move(dev).error());
    kvmGroup.release();
    auto out = std::make_unique<VfioDevice>(std::move(dev).value());
    out->setHotResetOwner(this);
    openDevices_.insert(bdf);
    out->setCloseHook([this, bdf](int) { openDevices_.erase(bdf); });
    return out;
}

std::optional<int> Type1Backend::ownedGroupFd(unsigned group) const {
    auto it = groups_.find(group);
    if (it == groups_.end()) return std::nullopt;
    return it->second->fd();
}

Result<Type1Info> Type1Backend::info() {
    std::vector<uint8_t> buf(sizeof(vfio_iommu_type1_info));
    auto* info = reinterpret_cast<vfio_iommu_type1_info*>(buf.data());
    info->argsz = sizeof(vfio_iommu_type1_info);
    TRY(ioctlPtr(host_, container_.get(), VFIO_IOMMU_GET_INFO, info, "VFIO_IOMMU_GET_INFO"));
    if ((info->flags & VFIO_IOMMU_INFO_CAPS) && info->argsz > sizeof(vfio_iommu_type1_info)) {
        uint32_t need = info->argsz;
        buf.assign(need, 0);
        info = reinterpret_cast<vfio_iommu_type1_info*>(buf.data());
        info->argsz = need;
        TRY(ioctlPtr(host_, container_.get(), VFIO_IOMMU_GET_INFO, info, "VFIO_IOMMU_GET_INFO (capabilities)"));
    }
    Type1Info out;
    out.pageSizes = (info->flags & VFIO_IOMMU_INFO_PGSIZES) ? info->iova_pgsizes : 0x1000;
    uint32_t off = (info->flags & VFIO_IOMMU_INFO_CAPS) ? info->cap_offset : 0;
    for (int guard = 0; off; ++guard) {
        if (guard > 64 || off + sizeof(vfio_info_cap_header) > buf.size())
            return Error(fmt::format("VFIO_IOMMU_GET_INFO: malformed capability chain at offset {}", off), EINVAL);
        vfio_info_cap_header h;
        std::memcpy(&h, buf.data() + off, sizeof h);
        if (h.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
            vfio_iommu_type1_info_cap_iova_range r;
            if (off + sizeof r > buf.size()) return Error("VFIO_IOMMU_GET_INFO: truncated IOVA range cap", EINVAL);
            std::memcpy(&r, buf.data() + off, sizeof r);
            size_t at = off + sizeof r;
            if (at + size_t(r.nr_iovas) * sizeof(vfio_iova_range) > buf.size())
                return Error("VFIO_IOMMU_GET_INFO: IOVA range cap overruns the buffer", EINVAL);
            for (uint32_t i = 0; i < r.nr_iovas; ++i) {
                vfio_iova_range range;
                std::memcpy(&range, buf.data() + at + i * sizeof range, sizeof range);
                out.iovaRanges.push_back({range.start, range.end});
            }
        } else if (h.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
            vfio_iommu_type1_info_dma_avail a;
            if (off + sizeof a > buf.size()) return Error("VFIO_IOMMU_GET_INFO: truncated dma_avail cap", EINVAL);
            std::memcpy(&a, buf.data() + off, sizeof a);
            out.dmaAvail = a.avail;
        } else if (h.id == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION) {
            vfio_iommu_type1_info_cap_migration m;
            if (off + sizeof m > buf.size()) return Error("VFIO_IOMMU_GET_INFO: truncated migration cap", EINVAL);
            std::memcpy(&m, buf.data() + off, sizeof m);
            out.migrationCap = true;
            out.migrationPageSizes = m.pgsize_bitmap;
            out.maxDirtyBitmapSize = m.max_dirty_bitmap_size;
        }
        off = h.next;
    }
    return out;
}

Result<void> Type1Backend::mapDma(uint64_t iova, uint64_t size, void* vaddr, bool writable) {
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof map;
    map.flags = VFIO_DMA_MAP_FLAG_READ | (writable ? VFIO_DMA_MAP_FLAG_WRITE : 0);
    map.vaddr = reinterpret_cast<uint64_t>(vaddr);
    map.iova = iova;
    map.size = size;
    TRY(ioctlPtr(host_, container_.get(), VFIO_IOMMU_MAP_DMA, &map, "VFIO_IOMMU_MAP_DMA",
                 fmt::format("iova [{:#x}, {:#x}) {}", iova, iova + size, writable ? "rw" : "ro")));
    return success();
}

Result<void> Type1Backend::unmapDma(uint64_t iova, uint64_t size) {
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof unmap;
    unmap.iova = iova;
    unmap.size = size;
    const auto what = fmt::format("iova [{:#x}, {:#x})", iova, iova + size);
    TRY(ioctlPtr(host_, container_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap, "VFIO_IOMMU_UNMAP_DMA", what));
    if (unmap.size != size)
        return Error(fmt::format("VFIO_IOMMU_UNMAP_DMA {}: kernel unmapped {:#x} bytes", what, unmap.size), EINVAL);
    return success();
}

Result<void> Type1Backend::mapFile(uint64_t iova, uint64_t size, int, uint64_t, bool) {
    return Error(fmt::format("map file at iova [{:#x}, {:#x}): the type1 backend maps process memory only "
                             "(map the BAR's mmap with mapDma instead)",
                             iova, iova + size),
                 EOPNOTSUPP);
}

Result<std::vector<IovaRange>> Type1Backend::iovaRanges() {
    auto i = TRY(info());
    if (i.iovaRanges.empty()) return std::vector<IovaRange>{{0, ~0ull}};  // pre-5.4 kernels: no cap, no limits known
    return i.iovaRanges;
}

Result<DmaLimits> Type1Backend::limits() {
    auto i = TRY(info());
    DmaLimits l;
    l.pageSizes = i.pageSizes;
    l.alignment = i.pageSizes ? (i.pageSizes & -i.pageSizes) : 0x1000;  // smallest page size
    l.dmaAvail = i.dmaAvail;
    return l;
}

Result<std::vector<ReservedIova>> Type1Backend::reservedRegions() {
    std::vector<ReservedIova> out;
    for (auto& [id, g] : groups_) {
        auto regions = TRY(sysfs_.reservedRegions(id));
        for (auto& r : regions) out.push_back({{r.start, r.last}, r.type, id});
    }
    return out;
}

}  // namespace conduit::vfio
