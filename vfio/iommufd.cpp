#include "vfio/iommufd.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "base/log.h"
#include "vfio/ioctl_util.h"

namespace conduit::vfio {

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
    if (!devices_.empty())
        log::get("vfio").error("iommufd backend destroyed with {} device(s) still open; the IOAS stays busy",
                               devices_.size());
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
    auto it = devices_.find(bdf);
    if (it == devices_.end()) return std::nullopt;
    return it->second.devId;
}

Result<std::unique_ptr<VfioDevice>> IommufdBackend::openDevice(const std::string& bdfIn, KvmFileRegistrar* kvm) {
    auto bdf = TRY(normalizeBdf(bdfIn));
    if (devices_.count(bdf)) return Error(fmt::format("VFIO device {} is already open in this VM", bdf), EBUSY);
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

    const uint32_t hwpt = TRY(attachPt(fd.get(), what, ioasId(), fmt::format("IOAS {}", ioasId())));
    log::get("vfio").info("iommufd: {} bound as device {} and attached to IOAS {} (hwpt {})", bdf, bind.out_devid,
                          ioasId(), hwpt);

    // A failure below closes the fd, which detaches and unbinds in the kernel as well.
    auto dev = VfioDevice::create(host_, std::move(fd), bdf);
    if (!dev) return std::move(dev).error();  // kvmFile undoes KVM's entry, then `fd` closes
    kvmFile.release();
    DeviceState& st = devices_[bdf];
    st.devId = bind.out_devid;
    st.attachedPt = hwpt;
    if (group) st.group = *group;
    auto out = std::make_unique<VfioDevice>(std::move(dev).value());
    out->setHotResetOwner(this);
    out->setCloseHook([this, bdf](int devFd) {
        auto node = devices_.extract(bdf);
        DeviceState& st = node.mapped();
        // vDEVICEs first: unbinding would destroy them in the kernel and leak their ids until the
        // iommufd closes (iommu_vdevice_alloc's documentation); their handles go inert.
        for (auto& weak : st.vdevices)
            if (auto v = weak.lock(); v && v->obj_.valid()) {
                auto r = destroy(v->id(), v->what());
                if (!r) log::get("vfio").warn("{}", r.error().describe());
                v->obj_.abandon();
            }
        if (st.attachedPt) {
            vfio_device_detach_iommufd_pt detach{};
            detach.argsz = sizeof detach;
            auto r = ioctlPtr(host_, devFd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach, "VFIO_DEVICE_DETACH_IOMMUFD_PT",
                              fmt::format("{} from HWPT {}", bdf, st.attachedPt));
            if (!r) log::get("vfio").warn("{}", r.error().describe());
        }
        // st.attached drops here: a HWPT held only by this attachment is destroyed, now detached.
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
    for (auto& [bdf, st] : devices_) {
        if (!st.group) continue;
        const unsigned group = *st.group;
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
    if (out.dataType == IOMMU_HW_INFO_TYPE_ARM_SMMUV3) {
        if (out.data.size() < sizeof(iommu_hw_info_arm_smmuv3))
            return Error(fmt::format("IOMMU_GET_HW_INFO device {}: ARM SMMUv3 data of {} bytes, expected {}", devId,
                                     out.data.size(), sizeof(iommu_hw_info_arm_smmuv3)),
                         EPROTO);
        iommu_hw_info_arm_smmuv3 raw;
        std::memcpy(&raw, out.data.data(), sizeof raw);
        SmmuV3HwInfo s;
        s.flags = raw.flags;
        std::copy(std::begin(raw.idr), std::end(raw.idr), s.idr.begin());
        s.iidr = raw.iidr;
        s.aidr = raw.aidr;
        out.smmuv3 = s;
    }
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

// ---------------------------------------------------------------- nesting (vfio/iommu_nesting.h)

Result<IommufdBackend::DeviceState*> IommufdBackend::stateOf(const VfioDevice& dev, const char* call) {
    auto it = devices_.find(dev.name());
    if (it == devices_.end())
        return Error(fmt::format("{}: device {} was not opened by this iommufd", call, dev.name()), ENODEV);
    return &it->second;
}

Result<uint32_t> IommufdBackend::attachPt(int devFd, const std::string& bdf, uint32_t ptId, const std::string& target) {
    vfio_device_attach_iommufd_pt attach{};
    attach.argsz = sizeof attach;
    attach.pt_id = ptId;
    TRY(ioctlPtr(host_, devFd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach, "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                 fmt::format("{} to {}", bdf, target)));
    return attach.pt_id;
}

Result<HwInfo> IommufdBackend::hwInfo(const VfioDevice& dev) {
    auto* st = TRY(stateOf(dev, "IOMMU_GET_HW_INFO"));
    return TRY_CTX(hwInfo(st->devId), dev.name());
}

Result<std::shared_ptr<NestParentHwpt>> IommufdBackend::allocNestParent(const VfioDevice& dev) {
    auto* st = TRY(stateOf(dev, "IOMMU_HWPT_ALLOC"));
    iommu_hwpt_alloc a{};
    a.size = sizeof a;
    a.flags = IOMMU_HWPT_ALLOC_NEST_PARENT;
    a.dev_id = st->devId;
    a.pt_id = ioasId();
    a.data_type = IOMMU_HWPT_DATA_NONE;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_HWPT_ALLOC, &a, "IOMMU_HWPT_ALLOC(NEST_PARENT)",
                 fmt::format("{} (device {}) over IOAS {}", dev.name(), st->devId, ioasId())));
    log::get("vfio").info("iommufd: NEST_PARENT HWPT {} over IOAS {} for {}", a.out_hwpt_id, ioasId(), dev.name());
    return std::make_shared<NestParentHwpt>(
        IommuObject(this, a.out_hwpt_id, fmt::format("NEST_PARENT HWPT {}", a.out_hwpt_id)), ioasId());
}

Result<std::shared_ptr<Viommu>> IommufdBackend::allocViommu(const VfioDevice& dev,
                                                            std::shared_ptr<const NestParentHwpt> parent,
                                                            uint32_t type) {
    auto* st = TRY(stateOf(dev, "IOMMU_VIOMMU_ALLOC"));
    if (!parent || !parent->alive()) return Error("IOMMU_VIOMMU_ALLOC: no NEST_PARENT HWPT", EINVAL);
    iommu_viommu_alloc a{};
    a.size = sizeof a;
    a.type = type;
    a.dev_id = st->devId;
    a.hwpt_id = parent->id();
    TRY(ioctlPtr(host_, iommufd(), IOMMU_VIOMMU_ALLOC, &a, "IOMMU_VIOMMU_ALLOC",
                 fmt::format("type {} for {} (device {}) on {}", type, dev.name(), st->devId, parent->what())));
    log::get("vfio").info("iommufd: vIOMMU {} (type {}) on {}", a.out_viommu_id, type, parent->what());
    return std::make_shared<Viommu>(std::move(parent),
                                    IommuObject(this, a.out_viommu_id, fmt::format("vIOMMU {}", a.out_viommu_id)), type);
}

Result<std::shared_ptr<Vdevice>> IommufdBackend::allocVdevice(const VfioDevice& dev, std::shared_ptr<const Viommu> viommu,
                                                              uint64_t virtId) {
    auto* st = TRY(stateOf(dev, "IOMMU_VDEVICE_ALLOC"));
    if (!viommu || !viommu->alive()) return Error("IOMMU_VDEVICE_ALLOC: no vIOMMU", EINVAL);
    iommu_vdevice_alloc a{};
    a.size = sizeof a;
    a.viommu_id = viommu->id();
    a.dev_id = st->devId;
    a.virt_id = virtId;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_VDEVICE_ALLOC, &a, "IOMMU_VDEVICE_ALLOC",
                 fmt::format("{} (device {}) as virt id {:#x} on {}", dev.name(), st->devId, virtId, viommu->what())));
    auto out = std::make_shared<Vdevice>(
        std::move(viommu),
        IommuObject(this, a.out_vdevice_id, fmt::format("vDEVICE {} ({} as {:#x})", a.out_vdevice_id, dev.name(), virtId)),
        virtId, dev.name());
    std::erase_if(st->vdevices, [](auto& w) { return w.expired(); });
    st->vdevices.push_back(out);
    return out;
}

Result<std::shared_ptr<NestedHwpt>> IommufdBackend::allocNestedHwpt(const VfioDevice& dev,
                                                                    std::shared_ptr<const Viommu> viommu,
                                                                    const smmuv3::Ste& ste) {
    auto* st = TRY(stateOf(dev, "IOMMU_HWPT_ALLOC"));
    if (!viommu || !viommu->alive()) return Error("IOMMU_HWPT_ALLOC (nested): no vIOMMU", EINVAL);
    iommu_hwpt_arm_smmuv3 data{};
    data.ste[0] = ste[0];  // little-endian dwords: this is an x86_64 / arm64 (LE) build
    data.ste[1] = ste[1];
    iommu_hwpt_alloc a{};
    a.size = sizeof a;
    a.dev_id = st->devId;
    a.pt_id = viommu->id();
    a.data_type = IOMMU_HWPT_DATA_ARM_SMMUV3;
    a.data_len = sizeof data;
    a.data_uptr = reinterpret_cast<uint64_t>(&data);
    TRY(ioctlPtr(host_, iommufd(), IOMMU_HWPT_ALLOC, &a, "IOMMU_HWPT_ALLOC(nested)",
                 fmt::format("{} (device {}) on {} vSTE {:#018x} {:#018x}", dev.name(), st->devId, viommu->what(),
                             ste[0], ste[1])));
    // What the kernel keeps (arm_vsmmu_alloc_domain_nested()): a vSTE without V as all zeroes,
    // EATS cleared (ATS follows it through the domain's enable_ats).
    smmuv3::Ste kept = ste;
    if (!(kept[0] & smmuv3::kSte0V)) kept = {0, 0};
    kept[1] &= ~smmuv3::kSte1Eats;
    return std::make_shared<NestedHwpt>(
        std::move(viommu), IommuObject(this, a.out_hwpt_id, fmt::format("nested HWPT {}", a.out_hwpt_id)), kept);
}

Result<std::unique_ptr<VeventQueue>> IommufdBackend::allocVeventQueue(std::shared_ptr<const Viommu> viommu, uint32_t depth) {
    if (!viommu || !viommu->alive()) return Error("IOMMU_VEVENTQ_ALLOC: no vIOMMU", EINVAL);
    iommu_veventq_alloc a{};
    a.size = sizeof a;
    a.viommu_id = viommu->id();
    a.type = IOMMU_VEVENTQ_TYPE_ARM_SMMUV3;
    a.veventq_depth = depth;
    TRY(ioctlPtr(host_, iommufd(), IOMMU_VEVENTQ_ALLOC, &a, "IOMMU_VEVENTQ_ALLOC",
                 fmt::format("ARM_SMMUV3 depth {} on {}", depth, viommu->what())));
    // Own the fd at once; the object is destroyed after it (the fd holds a reference on it).
    IommuObject obj(this, a.out_veventq_id, fmt::format("vEVENTQ {}", a.out_veventq_id));
    HostFd fd(host_, static_cast<int>(a.out_veventq_fd));
    return std::make_unique<VeventQueue>(std::move(viommu), std::move(obj), std::move(fd), depth);
}

Result<void> IommufdBackend::attach(const VfioDevice& dev, std::shared_ptr<const Hwpt> hwpt) {
    auto* st = TRY(stateOf(dev, "VFIO_DEVICE_ATTACH_IOMMUFD_PT"));
    if (!hwpt || !hwpt->alive()) return Error("VFIO_DEVICE_ATTACH_IOMMUFD_PT " + dev.name() + ": no HWPT", EINVAL);
    const uint32_t from = st->attachedPt;
    st->attachedPt = TRY(attachPt(dev.fd(), dev.name(), hwpt->id(),
                                  from ? fmt::format("{} (replacing HWPT {})", hwpt->what(), from) : hwpt->what()));
    st->attached = std::move(hwpt);  // the previous HWPT, if only the attachment held it, goes now
    return success();
}

Result<void> IommufdBackend::attachIoas(const VfioDevice& dev) {
    auto* st = TRY(stateOf(dev, "VFIO_DEVICE_ATTACH_IOMMUFD_PT"));
    const uint32_t from = st->attachedPt;
    st->attachedPt = TRY(attachPt(dev.fd(), dev.name(), ioasId(),
                                  from ? fmt::format("IOAS {} (replacing HWPT {})", ioasId(), from)
                                       : fmt::format("IOAS {}", ioasId())));
    st->attached.reset();
    return success();
}

Result<void> IommufdBackend::detach(const VfioDevice& dev) {
    auto* st = TRY(stateOf(dev, "VFIO_DEVICE_DETACH_IOMMUFD_PT"));
    vfio_device_detach_iommufd_pt d{};
    d.argsz = sizeof d;
    TRY(ioctlPtr(host_, dev.fd(), VFIO_DEVICE_DETACH_IOMMUFD_PT, &d, "VFIO_DEVICE_DETACH_IOMMUFD_PT",
                 fmt::format("{} from HWPT {}", dev.name(), st->attachedPt)));
    st->attachedPt = 0;
    st->attached.reset();
    return success();
}

uint32_t IommufdBackend::attachedHwpt(const VfioDevice& dev) const {
    auto it = devices_.find(dev.name());
    return it == devices_.end() ? 0 : it->second.attachedPt;
}

Result<void> IommufdBackend::invalidateOnce(const Viommu& viommu, std::span<const smmuv3::Command> commands,
                                            uint32_t& done) {
    static_assert(sizeof(smmuv3::Command) == sizeof(iommu_viommu_arm_smmuv3_invalidate));
    iommu_hwpt_invalidate inv{};
    inv.size = sizeof inv;
    inv.hwpt_id = viommu.id();
    inv.data_uptr = reinterpret_cast<uint64_t>(commands.data());
    inv.data_type = IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;
    inv.entry_len = sizeof(iommu_viommu_arm_smmuv3_invalidate);
    inv.entry_num = static_cast<uint32_t>(commands.size());
    // entry_num comes back as the number handled on success and on failure alike
    // (iommufd_hwpt_invalidate() responds before returning the error).
    auto r = host_.ioctl(iommufd(), IOMMU_HWPT_INVALIDATE, reinterpret_cast<uintptr_t>(&inv));
    done = std::min<uint32_t>(inv.entry_num, static_cast<uint32_t>(commands.size()));
    if (r) return success();
    std::string what = fmt::format("IOMMU_HWPT_INVALIDATE {}: ", viommu.what());
    if (done < commands.size()) {
        const auto& c = commands[done];
        what += fmt::format("command {} of {} ({} {:#018x} {:#018x}) refused after {} done", done, commands.size(),
                            smmuv3::opcodeName(smmuv3::opcode(c)), c[0], c[1], done);
    } else {
        what += fmt::format("{} commands", commands.size());
    }
    return Error(what, r.error().code());
}

Result<void> IommufdBackend::invalidate(const Viommu& viommu, std::span<const smmuv3::Command> commands,
                                        uint32_t* doneOut) {
    uint32_t done = 0;
    if (doneOut) *doneOut = 0;
    if (commands.empty()) return success();  // the kernel refuses entry_num 0 on a vIOMMU (EINVAL)
    auto r = invalidateOnce(viommu, commands, done);
    if (doneOut) *doneOut = done;
    if (r) return success();
    // arm_vsmmu_cache_invalidate() converts commands one by one and issues them in batches of
    // CMDQ_BATCH_ENTRIES - 1; a refused command leaves the converted ones of its batch unissued
    // while entry_num counts them. Issue those again so that `done` means issued.
    constexpr uint32_t kBatch = smmuv3::kCmdqBatchEntries - 1;
    const uint32_t batchStart = done / kBatch * kBatch;
    if (done > batchStart) {
        uint32_t again = 0;
        auto redo = invalidateOnce(viommu, commands.subspan(batchStart, done - batchStart), again);
        if (!redo) {
            if (doneOut) *doneOut = batchStart + again;
            return std::move(redo).error().withContext(
                fmt::format("re-issuing commands {}..{} before the refused one", batchStart, done - 1));
        }
    }
    return r;
}

}  // namespace conduit::vfio
