#include "vfio/device.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/log.h"
#include "base/mapping.h"
#include "vfio/ioctl_util.h"

namespace conduit::vfio {

namespace {
constexpr uint64_t kPageSize = 4096;  // x86-64 and the 4 KiB-granule arm64 hosts Conduit runs on
}  // namespace

const char* irqIndexName(uint32_t index) {
    switch (index) {
        case VFIO_PCI_INTX_IRQ_INDEX: return "INTx";
        case VFIO_PCI_MSI_IRQ_INDEX: return "MSI";
        case VFIO_PCI_MSIX_IRQ_INDEX: return "MSI-X";
        case VFIO_PCI_ERR_IRQ_INDEX: return "ERR";
        case VFIO_PCI_REQ_IRQ_INDEX: return "REQ";
        default: return "IRQ?";
    }
}

std::string regionName(uint32_t index) {
    if (index <= VFIO_PCI_BAR5_REGION_INDEX) return fmt::format("BAR{}", index);
    if (index == VFIO_PCI_ROM_REGION_INDEX) return "ROM";
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) return "config";
    if (index == VFIO_PCI_VGA_REGION_INDEX) return "VGA";
    return fmt::format("region {}", index);
}

Result<VfioDevice> VfioDevice::create(HostInterface& host, HostFd&& fd, std::string name) {
    // The info is read before the fd is taken: on failure the caller still owns it and closes it in
    // its own undo order (e.g. after KVM has forgotten it).
    vfio_device_info info{};
    info.argsz = sizeof info;
    TRY(ioctlPtr(host, fd.get(), VFIO_DEVICE_GET_INFO, &info, "VFIO_DEVICE_GET_INFO", name));
    if ((info.flags & VFIO_DEVICE_FLAGS_PCI) &&
        (info.num_regions < VFIO_PCI_CONFIG_REGION_INDEX + 1 || info.num_irqs < VFIO_PCI_MSIX_IRQ_INDEX + 1))
        return Error(fmt::format("VFIO device {}: PCI device reports only {} regions and {} irq indexes", name,
                                 info.num_regions, info.num_irqs),
                     EINVAL);
    VfioDevice dev(host, std::move(fd), std::move(name));
    dev.flags_ = info.flags;
    dev.numRegions_ = info.num_regions;
    dev.numIrqs_ = info.num_irqs;
    log::get("vfio").debug("device {}: flags {:#x}, {} regions, {} irq indexes", dev.name_, info.flags,
                           info.num_regions, info.num_irqs);
    return dev;
}

namespace {

// Walks a VFIO capability chain inside `buf` (offsets are from the start of buf). Defensive: a
// malformed chain (offset out of bounds, loop) ends the walk with an error.
template <class F>
Result<void> walkCaps(const std::vector<uint8_t>& buf, uint32_t first, const std::string& what, F&& visit) {
    uint32_t off = first;
    for (int guard = 0; off; ++guard) {
        if (guard > 64 || off < sizeof(vfio_info_cap_header) || off + sizeof(vfio_info_cap_header) > buf.size())
            return Error(fmt::format("{}: malformed capability chain at offset {}", what, off), EINVAL);
        vfio_info_cap_header h;
        std::memcpy(&h, buf.data() + off, sizeof h);
        TRY(visit(h, off));
        off = h.next;
    }
    return success();
}

}  // namespace

Result<RegionInfo> VfioDevice::regionInfo(uint32_t index) {
    if (auto it = regions_.find(index); it != regions_.end()) return it->second;
    const std::string what = fmt::format("{} {}", name_, regionName(index));
    std::vector<uint8_t> buf(sizeof(vfio_region_info));
    auto* info = reinterpret_cast<vfio_region_info*>(buf.data());
    info->argsz = sizeof(vfio_region_info);
    info->index = index;
    TRY(ioctlPtr(*host_, fd(), VFIO_DEVICE_GET_REGION_INFO, info, "VFIO_DEVICE_GET_REGION_INFO", what));
    if ((info->flags & VFIO_REGION_INFO_FLAG_CAPS) && info->argsz > sizeof(vfio_region_info)) {
        // The chain did not fit: the kernel told us the size it needs (vfio_pci_ioctl_get_region_info()).
        uint32_t need = info->argsz;
        buf.assign(need, 0);
        info = reinterpret_cast<vfio_region_info*>(buf.data());
        info->argsz = need;
        info->index = index;
        TRY(ioctlPtr(*host_, fd(), VFIO_DEVICE_GET_REGION_INFO, info, "VFIO_DEVICE_GET_REGION_INFO (capabilities)",
                     what));
    }
    RegionInfo r;
    r.index = index;
    r.flags = info->flags;
    r.size = info->size;
    r.offset = info->offset;
    if ((info->flags & VFIO_REGION_INFO_FLAG_CAPS) && info->cap_offset) {
        TRY(walkCaps(buf, info->cap_offset, what, [&](const vfio_info_cap_header& h, uint32_t off) -> Result<void> {
            switch (h.id) {
                case VFIO_REGION_INFO_CAP_SPARSE_MMAP: {
                    if (off + sizeof(vfio_region_info_cap_sparse_mmap) > buf.size())
                        return Error(what + ": truncated sparse mmap capability", EINVAL);
                    vfio_region_info_cap_sparse_mmap sp;
                    std::memcpy(&sp, buf.data() + off, sizeof sp);
                    size_t areasOff = off + sizeof sp;
                    if (areasOff + size_t(sp.nr_areas) * sizeof(vfio_region_sparse_mmap_area) > buf.size())
                        return Error(what + ": sparse mmap capability overruns the buffer", EINVAL);
                    r.hasSparseCap = true;
                    for (uint32_t i = 0; i < sp.nr_areas; ++i) {
                        vfio_region_sparse_mmap_area a;
                        std::memcpy(&a, buf.data() + areasOff + i * sizeof a, sizeof a);
                        if (a.size) r.sparseAreas.push_back({a.offset, a.size});
                    }
                    break;
                }
                case VFIO_REGION_INFO_CAP_TYPE: {
                    if (off + sizeof(vfio_region_info_cap_type) > buf.size())
                        return Error(what + ": truncated type capability", EINVAL);
                    vfio_region_info_cap_type t;
                    std::memcpy(&t, buf.data() + off, sizeof t);
                    r.typeSubtype = std::make_pair(t.type, t.subtype);
                    break;
                }
                case VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
                    r.msixMappable = true;
                    break;
                default:
                    log::get("vfio").debug("{}: ignoring region capability {}", what, h.id);
            }
            return success();
        }));
    }
    regions_[index] = r;
    return r;
}

Result<IrqInfo> VfioDevice::irqInfo(uint32_t index) {
    vfio_irq_info info{};
    info.argsz = sizeof info;
    info.index = index;
    TRY(ioctlPtr(*host_, fd(), VFIO_DEVICE_GET_IRQ_INFO, &info, "VFIO_DEVICE_GET_IRQ_INFO",
                 fmt::format("{} {}", name_, irqIndexName(index))));
    return IrqInfo{index, info.flags, info.count};
}

Result<int> VfioDevice::setIrqs(uint32_t flags, uint32_t index, uint32_t start, uint32_t count,
                                std::span<const uint8_t> data, const std::string& what) {
    std::vector<uint8_t> buf(sizeof(vfio_irq_set) + data.size());
    auto* set = reinterpret_cast<vfio_irq_set*>(buf.data());
    set->argsz = static_cast<uint32_t>(buf.size());
    set->flags = flags;
    set->index = index;
    set->start = start;
    set->count = count;
    if (!data.empty()) std::memcpy(buf.data() + sizeof(vfio_irq_set), data.data(), data.size());
    return ioctlPtr(*host_, fd(), VFIO_DEVICE_SET_IRQS, set, "VFIO_DEVICE_SET_IRQS",
                    fmt::format("{} {} {}", name_, irqIndexName(index), what));
}

Result<void> VfioDevice::setIrqEventfds(uint32_t index, uint32_t start, std::span<const int32_t> fds) {
    const auto what = fmt::format("trigger eventfds for vectors {}..{}", start, start + fds.size());
    const int r = TRY(setIrqs(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, index, start,
                              static_cast<uint32_t>(fds.size()),
                              std::span(reinterpret_cast<const uint8_t*>(fds.data()), fds.size_bytes()), what));
    // A positive value is not success: nothing was enabled (see enableVectors()).
    if (r > 0)
        return Error(fmt::format("VFIO_DEVICE_SET_IRQS {} {} {}: the host has only {} of the {} vectors asked for; "
                                 "nothing was enabled",
                                 name_, irqIndexName(index), what, r, start + fds.size()),
                     ENOSPC);
    return success();
}

Result<uint32_t> VfioDevice::enableVectors(uint32_t index, std::span<const int32_t> fds) {
    const auto what = fmt::format("enable with eventfds for vectors 0..{}", fds.size());
    const int r = TRY(setIrqs(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, index, 0,
                              static_cast<uint32_t>(fds.size()),
                              std::span(reinterpret_cast<const uint8_t*>(fds.data()), fds.size_bytes()), what));
    if (r <= 0) return static_cast<uint32_t>(fds.size());
    if (static_cast<size_t>(r) >= fds.size())
        return Error(fmt::format("VFIO_DEVICE_SET_IRQS {} {} {}: returned {}, not fewer vectors than asked", name_,
                                 irqIndexName(index), what, r),
                     EIO);
    return static_cast<uint32_t>(r);
}

Result<void> VfioDevice::disableIrq(uint32_t index) {
    TRY(setIrqs(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, 0, {}, "disable"));
    return success();
}

Result<void> VfioDevice::triggerIrq(uint32_t index, uint32_t start, uint32_t count) {
    TRY(setIrqs(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, index, start, count, {},
                fmt::format("trigger vectors {}..{}", start, start + count)));
    return success();
}

Result<void> VfioDevice::maskIrq(uint32_t index, uint32_t subindex) {
    TRY(setIrqs(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, index, subindex, 1, {},
                fmt::format("mask {}", subindex)));
    return success();
}

Result<void> VfioDevice::unmaskIrq(uint32_t index, uint32_t subindex) {
    TRY(setIrqs(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, index, subindex, 1, {},
                fmt::format("unmask {}", subindex)));
    return success();
}

Result<void> VfioDevice::setUnmaskEventfd(uint32_t index, uint32_t subindex, int32_t efd) {
    TRY(setIrqs(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK, index, subindex, 1,
                std::span(reinterpret_cast<const uint8_t*>(&efd), sizeof efd),
                fmt::format("unmask (resample) eventfd {}", efd)));
    return success();
}

Result<void> VfioDevice::reset() {
    if (!canReset()) return Error(fmt::format("VFIO_DEVICE_RESET {}: device does not support reset", name_), ENOTTY);
    TRY(ioctlVal(*host_, fd(), VFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET", name_));
    return success();
}

Result<HotResetInfo> VfioDevice::hotResetInfo() {
    const std::string what = "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO " + name_;
    std::vector<uint8_t> buf(sizeof(vfio_pci_hot_reset_info));
    auto* info = reinterpret_cast<vfio_pci_hot_reset_info*>(buf.data());
    info->argsz = sizeof(vfio_pci_hot_reset_info);
    auto r = host_->ioctl(fd(), VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, reinterpret_cast<uintptr_t>(info));
    if (!r && r.error().code() == ENOSPC) {
        // Too small for the list: the kernel wrote the count back in the header
        // (vfio_pci_ioctl_get_pci_hot_reset_info()); the flags come with the full answer only.
        const uint32_t count = info->count;
        if (count == 0 || count > 256) return Error(fmt::format("{}: the kernel asks room for {} functions", what, count), EINVAL);
        buf.assign(sizeof(vfio_pci_hot_reset_info) + count * sizeof(vfio_pci_dependent_device), 0);
        info = reinterpret_cast<vfio_pci_hot_reset_info*>(buf.data());
        info->argsz = static_cast<uint32_t>(buf.size());
        r = host_->ioctl(fd(), VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, reinterpret_cast<uintptr_t>(info));
    }
    if (!r) return Error(what, r.error().code());
    const size_t room = (buf.size() - sizeof(vfio_pci_hot_reset_info)) / sizeof(vfio_pci_dependent_device);
    if (info->count > room)
        return Error(fmt::format("{}: the kernel lists {} functions in room for {}", what, info->count, room), EINVAL);
    HotResetInfo out;
    out.flags = info->flags;
    for (uint32_t i = 0; i < info->count; ++i) {
        vfio_pci_dependent_device d;
        std::memcpy(&d, buf.data() + sizeof(vfio_pci_hot_reset_info) + i * sizeof d, sizeof d);
        HotResetDevice dev;
        // One field, two meanings (a union in newer headers): group id, or iommufd device id.
        (out.devIdForm() ? dev.devId : dev.groupId) = d.group_id;
        dev.segment = d.segment;
        dev.bus = d.bus;
        dev.devfn = d.devfn;
        out.devices.push_back(dev);
    }
    return out;
}

Result<HotResetPlan> VfioDevice::planHotReset(OpenSiblings siblings) {
    if (!hotResetOwner_)
        return Error("VFIO_DEVICE_PCI_HOT_RESET " + name_ + ": the backend that opened the device says nothing of "
                     "what it owns",
                     EINVAL);
    auto info = TRY(hotResetInfo());
    return vfio::planHotReset(info, name_, *hotResetOwner_, siblings);
}

Result<void> VfioDevice::hotReset(const HotResetPlan& plan) {
    std::vector<uint8_t> buf(sizeof(vfio_pci_hot_reset) + plan.groupFds.size() * sizeof(int32_t));
    auto* reset = reinterpret_cast<vfio_pci_hot_reset*>(buf.data());
    reset->argsz = static_cast<uint32_t>(buf.size());
    reset->flags = 0;
    reset->count = static_cast<uint32_t>(plan.groupFds.size());
    if (!plan.groupFds.empty())
        std::memcpy(buf.data() + sizeof(vfio_pci_hot_reset), plan.groupFds.data(), plan.groupFds.size() * sizeof(int32_t));
    TRY(ioctlPtr(*host_, fd(), VFIO_DEVICE_PCI_HOT_RESET, reset, "VFIO_DEVICE_PCI_HOT_RESET",
                 plan.devIdForm ? fmt::format("{} (iommufd-owned, resets {})", name_, fmt::join(plan.affected, ", "))
                                : fmt::format("{} ({} group fds, resets {})", name_, plan.groupFds.size(),
                                              fmt::join(plan.affected, ", "))));
    return success();
}

Result<void> VfioDevice::readRegion(uint32_t index, uint64_t offset, std::span<uint8_t> out) {
    auto region = TRY(regionInfo(index));
    const auto what = fmt::format("pread {} {} [{:#x}, +{:#x})", name_, regionName(index), offset, out.size());
    if (!region.readable() || offset > region.size || out.size() > region.size - offset)
        return Error(what + ": outside the readable region", EINVAL);
    auto n = host_->pread(fd(), out.data(), out.size(), static_cast<off_t>(region.offset + offset));
    if (!n) return Error(what, n.error().code());
    if (*n != out.size()) return Error(fmt::format("{}: short read ({} bytes)", what, *n), EIO);
    return success();
}

Result<void> VfioDevice::writeRegion(uint32_t index, uint64_t offset, std::span<const uint8_t> in) {
    auto region = TRY(regionInfo(index));
    const auto what = fmt::format("pwrite {} {} [{:#x}, +{:#x})", name_, regionName(index), offset, in.size());
    if (!region.writable() || offset > region.size || in.size() > region.size - offset)
        return Error(what + ": outside the writable region", EINVAL);
    auto n = host_->pwrite(fd(), in.data(), in.size(), static_cast<off_t>(region.offset + offset));
    if (!n) return Error(what, n.error().code());
    if (*n != in.size()) return Error(fmt::format("{}: short write ({} bytes)", what, *n), EIO);
    return success();
}

Result<HostMapping> VfioDevice::mapRegion(uint32_t index, uint64_t offset, uint64_t size, int prot) {
    auto region = TRY(regionInfo(index));
    const auto what = fmt::format("mmap {} {} [{:#x}, +{:#x})", name_, regionName(index), offset, size);
    if (!region.mmappable()) return Error(what + ": region is not mmappable", EINVAL);
    // vfio_pci_core_mmap() allows up to PAGE_ALIGN(region size) (a sub-page BAR's whole page).
    const uint64_t limit = (region.size + kPageSize - 1) & ~(kPageSize - 1);
    if (size == 0 || offset > limit || size > limit - offset) return Error(what + ": outside the region", EINVAL);
    // Huge pages: vfio-pci maps a BAR with PMD or PUD entries (vfio_pci_mmap_huge_fault(), Linux
    // 6.12+) where the virtual address agrees with the BAR's physical address modulo that size,
    // and KVM then maps the guest's view with huge pages too (Conduit places BARs size-aligned in
    // guest memory). A BAR is naturally aligned in physical memory, so the address must be
    // congruent to `offset` modulo the largest of 1 GiB and 2 MiB the mapping spans: reserve a
    // window with room to slide, map over it there, and give back what is left on either side.
    const uint64_t align = size >= (1ull << 30) ? (1ull << 30) : size >= (2ull << 20) ? (2ull << 20) : 0;
    if (!align) {
        void* p = TRY_CTX(host_->mmap(nullptr, size, prot, MAP_SHARED, fd(), static_cast<off_t>(region.offset + offset)),
                          what);
        return HostMapping(*host_, p, size);
    }
    auto window = TRY(Mapping::map(size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
                                   what + ": a window to align it in"));
    const auto base = reinterpret_cast<uintptr_t>(window.data());
    const uintptr_t at = base + ((offset % align) + align - base % align) % align;
    void* p = TRY_CTX(host_->mmap(reinterpret_cast<void*>(at), size, prot, MAP_SHARED | MAP_FIXED, fd(),
                                  static_cast<off_t>(region.offset + offset)),
                      what);
    // The mapping replaced the middle of the window: only its head and tail are still ours.
    const uintptr_t end = base + size + align;
    (void)window.release();
    if (at > base) ::munmap(reinterpret_cast<void*>(base), at - base);
    if (at + size < end) ::munmap(reinterpret_cast<void*>(at + size), end - (at + size));
    return HostMapping(*host_, p, size);
}

Result<std::vector<SparseArea>> VfioDevice::mmapAreas(uint32_t index) {
    auto region = TRY(regionInfo(index));
    if (!region.mmappable() || region.size == 0) return std::vector<SparseArea>{};
    if (region.hasSparseCap) return region.sparseAreas;
    return std::vector<SparseArea>{{0, region.size}};
}

Result<HostFd> VfioDevice::exportDmaBuf(uint32_t index, uint64_t offset, uint64_t length) {
    std::vector<uint8_t> buf(sizeof(vfio_device_feature) + sizeof(vfio_device_feature_dma_buf) +
                             sizeof(vfio_region_dma_range));
    auto* feature = reinterpret_cast<vfio_device_feature*>(buf.data());
    feature->argsz = static_cast<uint32_t>(buf.size());
    feature->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
    auto* dmabuf = reinterpret_cast<vfio_device_feature_dma_buf*>(buf.data() + sizeof(vfio_device_feature));
    dmabuf->region_index = index;
    dmabuf->open_flags = O_RDWR | O_CLOEXEC;
    dmabuf->nr_ranges = 1;
    dmabuf->dma_ranges[0] = {offset, length};
    int fd = TRY(ioctlPtr(*host_, this->fd(), VFIO_DEVICE_FEATURE, feature, "VFIO_DEVICE_FEATURE(DMA_BUF)",
                          fmt::format("{} {} [{:#x}, +{:#x})", name_, regionName(index), offset, length)));
    return HostFd(*host_, fd);
}

}  // namespace conduit::vfio
