#include "vfio/iommufd.h"

#include <fcntl.h>

#include <fmt/format.h>

#include "base/log.h"
#include "vfio/ioctl_util.h"

namespace conduit::vfio {

void IommufdObject::reset() {
    if (owner_) {
        auto r = owner_->destroy(id_, what_);
        if (!r) log::get("vfio").warn("{}", r.error().describe());
    }
    owner_ = nullptr;
    id_ = 0;
}

Result<std::unique_ptr<IommufdBackend>> IommufdBackend::open(HostInterface& host, const HostPaths& paths) {
    const std::string path = (paths.dev / "iommu").string();
    int raw = TRY_CTX(host.open(path, O_RDWR), "iommufd");
    std::unique_ptr<IommufdBackend> b(new IommufdBackend(host, paths, HostFd(host, raw)));
    iommu_ioas_alloc alloc{};
    alloc.size = sizeof alloc;
    TRY(ioctlPtr(host, b->iommufd(), IOMMU_IOAS_ALLOC, &alloc, "IOMMU_IOAS_ALLOC", path));
    b->ioas_ = IommufdObject(b.get(), alloc.out_ioas_id, fmt::format("IOAS {}", alloc.out_ioas_id));
    log::get("vfio").info("iommufd: IOAS {} allocated", alloc.out_ioas_id);
    return b;
}

IommufdBackend::~IommufdBackend() {
    if (!devIds_.empty())
        log::get("vfio").error("iommufd backend destroyed with {} device(s) still open; the IOAS stays busy",
                               devIds_.size());
    ioas_.reset();
}

Result<void> IommufdBackend::destroy(uint32_t id, const std::string& what) {
    iommu_destroy d{};
    d.size = sizeof d;
    d.id = id;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_DESTROY, &d, "IOMMU_DESTROY", what));
    return success();
}

std::optional<uint32_t> IommufdBackend::devId(const std::string& bdf) const {
    auto it = devIds_.find(bdf);
    if (it == devIds_.end()) return std::nullopt;
    return it->second;
}

Result<std::unique_ptr<VfioDevice>> IommufdBackend::openDevice(const std::string& bdfIn, KvmFileRegistrar* kvm) {
    auto bdf = TRY(normalizeBdf(bdfIn));
    if (devIds_.count(bdf)) return Error(fmt::format("VFIO device {} is already open in this VM", bdf), EBUSY);
    TRY(sysfs_.checkAssignable(bdf));
    auto cdev = TRY(sysfs_.vfioCdev(bdf));
    auto group = sysfs_.iommuGroup(bdf);  // for reserved regions; a cdev without a group is not fatal here
    int raw = TRY_CTX(host_.open(cdev, O_RDWR), "VFIO device " + bdf);
    HostFd fd(host_, raw);
    const std::string what = fmt::format("{} ({})", bdf, cdev);
    // KVM first: BIND_IOMMUFD opens the device with the kvm the cdev file was given
    // (vfio_df_ioctl_bind_iommufd()). Declared after `fd`, so a failure below undoes it first.
    auto kvmFile = TRY(KvmFileRegistration::add(kvm, fd.get(), false, "VFIO device " + what));

    vfio_device_bind_iommufd bind{};
    bind.argsz = sizeof bind;
    bind.iommufd = iommufd();
    TRY(ioctlPtr(host_, fd.get(), VFIO_DEVICE_BIND_IOMMUFD, &bind, "VFIO_DEVICE_BIND_IOMMUFD", what));

    vfio_device_attach_iommufd_pt attach{};
    attach.argsz = sizeof attach;
    attach.pt_id = ioasId();
    TRY(ioctlPtr(host_, fd.get(), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach, "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                 fmt::format("{} to IOAS {}", what, ioasId())));
    log::get("vfio").info("iommufd: {} bound as device {} and attached to IOAS {} (hwpt {})", bdf, bind.out_devid,
                          ioasId(), attach.pt_id);

    // A failure below closes the fd, which detaches and unbinds in the kernel as well.
    auto dev = VfioDevice::create(host_, std::move(fd), bdf);
    if (!dev) return std::move(dev).error();  // kvmFile undoes KVM's entry, then `fd` closes
    kvmFile.release();
    devIds_[bdf] = bind.out_devid;
    if (group) groups_[bdf] = *group;
    auto out = std::make_unique<VfioDevice>(std::move(dev).value());
    out->setHotResetOwner(this);
    out->setCloseHook([this, bdf](int devFd) {
        vfio_device_detach_iommufd_pt detach{};
        detach.argsz = sizeof detach;
        auto r = ioctlPtr(host_, devFd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach, "VFIO_DEVICE_DETACH_IOMMUFD_PT", bdf);
        if (!r) log::get("vfio").warn("{}", r.error().describe());
        devIds_.erase(bdf);
        groups_.erase(bdf);
    });
    return out;
}

Result<void> IommufdBackend::mapDma(uint64_t iova, uint64_t size, void* vaddr, bool writable) {
    iommu_ioas_map map{};
    map.size = sizeof map;
    map.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | (writable ? IOMMU_IOAS_MAP_WRITEABLE : 0);
    map.ioas_id = ioasId();
    map.user_va = reinterpret_cast<uint64_t>(vaddr);
    map.length = size;
    map.iova = iova;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_IOAS_MAP, &map, "IOMMU_IOAS_MAP",
                 fmt::format("IOAS {} iova [{:#x}, {:#x}) {}", ioasId(), iova, iova + size, writable ? "rw" : "ro")));
    return success();
}

Result<void> IommufdBackend::mapFile(uint64_t iova, uint64_t size, int fd, uint64_t offset, bool writable) {
    iommu_ioas_map_file map{};
    map.size = sizeof map;
    map.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | (writable ? IOMMU_IOAS_MAP_WRITEABLE : 0);
    map.ioas_id = ioasId();
    map.fd = fd;
    map.start = offset;
    map.length = size;
    map.iova = iova;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_IOAS_MAP_FILE, &map, "IOMMU_IOAS_MAP_FILE",
                 fmt::format("IOAS {} iova [{:#x}, {:#x}) from fd {} offset {:#x}", ioasId(), iova, iova + size, fd,
                             offset)));
    return success();
}

Result<void> IommufdBackend::unmapDma(uint64_t iova, uint64_t size) {
    iommu_ioas_unmap unmap{};
    unmap.size = sizeof unmap;
    unmap.ioas_id = ioasId();
    unmap.iova = iova;
    unmap.length = size;
    const auto what = fmt::format("IOAS {} iova [{:#x}, {:#x})", ioasId(), iova, iova + size);
    TRY(ioctlPtr(host_, iommufd(), IOMMU_IOAS_UNMAP, &unmap, "IOMMU_IOAS_UNMAP", what));
    if (unmap.length != size)
        return Error(fmt::format("IOMMU_IOAS_UNMAP {}: kernel unmapped {:#x} bytes", what, unmap.length), EINVAL);
    return success();
}

Result<std::vector<IovaRange>> IommufdBackend::iovaRanges() {
    std::vector<iommu_iova_range> ranges(8);
    iommu_ioas_iova_ranges q{};
    for (int attempt = 0; attempt < 2; ++attempt) {
        q = {};
        q.size = sizeof q;
        q.ioas_id = ioasId();
        q.num_iovas = static_cast<uint32_t>(ranges.size());
        q.allowed_iovas = reinterpret_cast<uint64_t>(ranges.data());
        auto r = host_.ioctl(iommufd(), IOMMU_IOAS_IOVA_RANGES, reinterpret_cast<uintptr_t>(&q));
        if (r) break;
        // EMSGSIZE: the array was too small and num_iovas says how many there are (iommufd_ioas_iova_ranges()).
        if (r.error().code() != EMSGSIZE || attempt == 1)
            return Error(fmt::format("IOMMU_IOAS_IOVA_RANGES IOAS {}", ioasId()), r.error().code());
        ranges.resize(q.num_iovas);
    }
    std::vector<IovaRange> out;
    for (uint32_t i = 0; i < q.num_iovas && i < ranges.size(); ++i) out.push_back({ranges[i].start, ranges[i].last});
    return out;
}

Result<DmaLimits> IommufdBackend::limits() {
    iommu_iova_range one{};
    iommu_ioas_iova_ranges q{};
    q.size = sizeof q;
    q.ioas_id = ioasId();
    q.num_iovas = 1;
    q.allowed_iovas = reinterpret_cast<uint64_t>(&one);
    auto r = host_.ioctl(iommufd(), IOMMU_IOAS_IOVA_RANGES, reinterpret_cast<uintptr_t>(&q));
    if (!r && r.error().code() != EMSGSIZE)
        return Error(fmt::format("IOMMU_IOAS_IOVA_RANGES IOAS {}", ioasId()), r.error().code());
    DmaLimits l;
    l.alignment = q.out_iova_alignment ? q.out_iova_alignment : 1;
    l.pageSizes = l.alignment < 0x1000 ? 0x1000 : l.alignment;
    return l;  // iommufd has no per-container mapping count limit (dmaAvail stays empty)
}

Result<std::vector<ReservedIova>> IommufdBackend::reservedRegions() {
    std::vector<ReservedIova> out;
    std::vector<unsigned> seen;
    for (auto& [bdf, group] : groups_) {
        if (std::find(seen.begin(), seen.end(), group) != seen.end()) continue;
        seen.push_back(group);
        auto regions = TRY(sysfs_.reservedRegions(group));
        for (auto& r : regions) out.push_back({{r.start, r.last}, r.type, group});
    }
    return out;
}

Result<HwInfo> IommufdBackend::hwInfo(uint32_t devId) {
    std::vector<uint8_t> data(256);
    iommu_hw_info info{};
    info.size = sizeof info;
    info.dev_id = devId;
    info.data_len = static_cast<uint32_t>(data.size());
    info.data_uptr = reinterpret_cast<uint64_t>(data.data());
    TRY(ioctlPtr(host_, iommufd(), IOMMU_GET_HW_INFO, &info, "IOMMU_GET_HW_INFO", fmt::format("device {}", devId)));
    HwInfo out;
    out.dataType = info.out_data_type;
    out.capabilities = info.out_capabilities;
    out.maxPasidLog2 = info.out_max_pasid_log2;
    data.resize(std::min<size_t>(info.data_len, data.size()));
    out.data = std::move(data);
    return out;
}

Result<IommufdObject> IommufdBackend::allocHwpt(uint32_t devId, uint32_t flags) {
    iommu_hwpt_alloc a{};
    a.size = sizeof a;
    a.flags = flags;
    a.dev_id = devId;
    a.pt_id = ioasId();
    a.data_type = IOMMU_HWPT_DATA_NONE;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_HWPT_ALLOC, &a, "IOMMU_HWPT_ALLOC",
                 fmt::format("device {} on IOAS {} flags {:#x}", devId, ioasId(), flags)));
    return IommufdObject(this, a.out_hwpt_id, fmt::format("HWPT {}", a.out_hwpt_id));
}

Result<IommufdObject> IommufdBackend::allocNestedHwpt(uint32_t devId, uint32_t parentId, uint32_t dataType,
                                                      std::span<const uint8_t> data) {
    iommu_hwpt_alloc a{};
    a.size = sizeof a;
    a.dev_id = devId;
    a.pt_id = parentId;
    a.data_type = dataType;
    a.data_len = static_cast<uint32_t>(data.size());
    a.data_uptr = reinterpret_cast<uint64_t>(data.data());
    TRY(ioctlPtr(host_, iommufd(), IOMMU_HWPT_ALLOC, &a, "IOMMU_HWPT_ALLOC (nested)",
                 fmt::format("device {} parent {} data type {}", devId, parentId, dataType)));
    return IommufdObject(this, a.out_hwpt_id, fmt::format("nested HWPT {}", a.out_hwpt_id));
}

}  // namespace conduit::vfio
