// The kernel side of the simulated host: VFIO container/group/device and iommufd semantics.
// Comments name the kernel function whose behaviour each rule follows (Linux 6.x; dma-buf revocation
// as in Linux 7.3).
#include "tests/hostsim/sim_host.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <deque>
#include <cstring>
#include <fstream>
#include <list>

#include <fmt/format.h>

#include "base/log.h"
#include "tests/hostsim/host_call_observer.h"

namespace conduit::hostsim {

namespace fs = std::filesystem;
namespace smmu = vfio::smmuv3;

namespace {

constexpr uint64_t kOffsetShift = 40;  // VFIO_PCI_OFFSET_SHIFT
constexpr uint64_t kOffsetMask = (1ull << kOffsetShift) - 1;
constexpr uint64_t kPage = 4096;

enum Kind { KContainer = 1, KGroup, KDevice, KIommufd, KDmaBuf, KEventfd, KQueue };

Result<int> fail(int err) { return Error("simulated kernel", err); }

// Is [p, p + len) mapped in this process? The kernel pins pages at map time and fails with EFAULT.
bool userRangeMapped(uint64_t p, uint64_t len) {
    uint64_t start = p & ~(kPage - 1);
    uint64_t end = (p + len + kPage - 1) & ~(kPage - 1);
    return ::msync(reinterpret_cast<void*>(start), end - start, MS_ASYNC) == 0;
}

// A VFIO BAR dma-buf (struct vfio_pci_dma_buf). Its fd handle and every IOAS area mapping it hold
// it: the dma-buf lives while iommufd holds a reference (iopt_alloc_dmabuf_pages()), whatever
// became of the fd.
struct DmaBuf {
    SimDevice* dev = nullptr;  // null once vfio_pci_dma_buf_cleanup() detached it at the device's close
    unsigned bar = 0;
    uint64_t offset = 0, length = 0;
    // vfio_pci_dma_buf::revoked: set while the device's memory decode is off (at export too:
    // vfio_pci_core_feature_dma_buf()), and for good once the device is closed.
    bool revoked = false;
};

struct Mapping {
    uint64_t iova = 0, size = 0;
    uint8_t* host = nullptr;
    bool read = true, write = true;
    void* fileMap = nullptr;  // MAP_FILE of a memfd: our own mmap of it
    size_t fileMapLen = 0;
    // MAP_FILE of a dma-buf: the buf, and whether this area's pages were revoked (iopt_pages
    // dmabuf.phys.len == 0, iopt_dmabuf_revoked()). A revoked area is unmapped from every domain
    // but stays in the IOAS; nothing maps it again (iopt_revoke_notify() returns early for it).
    std::shared_ptr<DmaBuf> dmaBuf;
    bool revoked = false;
    ~Mapping() {
        if (fileMap) ::munmap(fileMap, fileMapLen);
    }
    Mapping() = default;
    Mapping(Mapping&& o) noexcept { *this = std::move(o); }
    Mapping& operator=(Mapping&& o) noexcept {
        std::swap(iova, o.iova);
        std::swap(size, o.size);
        std::swap(host, o.host);
        std::swap(read, o.read);
        std::swap(write, o.write);
        std::swap(fileMap, o.fileMap);
        std::swap(fileMapLen, o.fileMapLen);
        std::swap(dmaBuf, o.dmaBuf);
        std::swap(revoked, o.revoked);
        return *this;
    }
};

struct AddressSpace {
    std::map<uint64_t, Mapping> maps;  // by iova
    const Mapping* find(uint64_t iova) const {
        auto it = maps.upper_bound(iova);
        if (it == maps.begin()) return nullptr;
        --it;
        return (iova - it->second.iova < it->second.size) ? &it->second : nullptr;
    }
    bool overlaps(uint64_t iova, uint64_t size) const {
        for (auto& [a, m] : maps)
            if (iova < m.iova + m.size && m.iova < iova + size) return true;
        return false;
    }
};

// [0, last] minus the given (inclusive) ranges, sorted.
std::vector<vfio::IovaRange> subtract(uint64_t first, uint64_t last, std::vector<ReservedRange> holes) {
    std::sort(holes.begin(), holes.end(), [](auto& a, auto& b) { return a.start < b.start; });
    std::vector<vfio::IovaRange> out;
    uint64_t cur = first;
    bool done = false;
    for (auto& h : holes) {
        if (h.type == "direct-relaxable") continue;
        if (h.last < cur || h.start > last) continue;
        if (h.start > cur) out.push_back({cur, h.start - 1});
        if (h.last >= last) {
            done = true;
            break;
        }
        cur = h.last + 1;
    }
    if (!done && cur <= last) out.push_back({cur, last});
    return out;
}

}  // namespace

struct SimHost::Impl {
    struct Container {
        bool iommuSet = false;
        bool fdOpen = true;
        std::set<unsigned> groups;
        AddressSpace as;
    };
    struct Group {
        int fd = -1;  // open handle, -1 when closed
        Container* container = nullptr;
        int deviceFds = 0;
    };
    struct Obj {
        enum Type { Ioas, Hwpt, Device, Viommu, Vdevice, Veventq, Fault } type;
        int users = 0;  // references from other objects / attachments
        std::unique_ptr<AddressSpace> as;  // Ioas
        uint32_t ioas = 0, parent = 0;     // Hwpt
        bool nestParent = false, nested = false, autoDomain = false;
        SimDevice* dev = nullptr;          // Device
        uint32_t attached = 0;             // Device: attached hwpt
        uint32_t ref1 = 0, ref2 = 0;       // Viommu: hwpt, dev; Vdevice: viommu, dev; Veventq: viommu
        uint64_t virtId = 0;
        uint32_t qtype = 0;
        int qfd = -1;                      // Veventq/Fault: handle fd given out
        uint64_t invalidations = 0;
        unsigned iommu = 0;                // Hwpt, Viommu: the physical IOMMU (SMMU) instance
        uint32_t viommu = 0;               // Hwpt nested on a vIOMMU (parent is the vIOMMU's HWPT)
        smmu::Ste ste{};                   // ... its vSTE as arm_vsmmu_alloc_domain_nested() keeps it
        bool enableAts = false;
        uint16_t vmid = 0;                 // Hwpt NEST_PARENT: the S2 domain's VMID
        // Device: the vmaster (arm_smmu_attach_prepare_vmaster()): set by a nested attach when the
        // device has a vDEVICE on that vIOMMU, cleared by any other attach or a detach.
        std::optional<uint64_t> vmasterVsid;
        uint32_t vmasterViommu = 0;
        // Veventq (struct iommufd_veventq): the deliver list holds normal vEVENTs and, at its tail
        // only, the lost_events_header.
        struct QueuedEvent {
            uint32_t sequence;
            smmu::Event record;
        };
        std::deque<QueuedEvent> events;
        bool lostHeader = false;
        uint32_t lostSequence = 0;
        uint32_t sequence = 0, depth = 0;
    };
    struct Ctx {
        bool fdOpen = true;
        std::map<uint32_t, Obj> objs;
        uint32_t nextId = 1;  // xa_alloc with XA_FLAGS_ALLOC1: ids start at 1 (iommufd_fops_open())
    };
    struct Handle {
        Kind kind;
        Container* container = nullptr;
        unsigned group = 0;
        SimDevice* dev = nullptr;
        bool cdev = false;
        Ctx* ctx = nullptr;        // KIommufd; KDevice: bound ctx
        uint32_t devObj = 0;       // KDevice bound id
        std::shared_ptr<DmaBuf> dmaBuf;  // KDmaBuf
    };

    SimHost& host;
    std::list<Container> containers;
    std::list<Ctx> ctxs;
    std::map<unsigned, Group> groups;
    std::map<int, Handle> handles;
    // The SMMU's VMID allocator (arm_smmu_domain_finalise_s2(): smmu->vmid_map, from 1). One for
    // the whole host, so VMIDs never repeat across iommufd contexts or SMMU instances: the walk's
    // TLB (smmuwalk::Caches) is tagged by VMID.
    uint16_t nextVmid = 1;
    // Every device's dma-bufs (vfio_pci_core_device::dmabufs); a buf whose fd and mappings are all
    // gone is gone (vfio_pci_dma_buf_release()).
    std::vector<std::weak_ptr<DmaBuf>> dmaBufs;

    explicit Impl(SimHost& h) : host(h) {}

    // ---------------------------------------------------------------- dma-buf revocation
    // __vfio_pci_memory_enabled(): the user's COMMAND.MEMORY (vconfig) and a power state above
    // D3hot. The simulated device has no PM capability and never leaves D0, so only COMMAND counts.
    // __vfio_pci_memory_enabled(): COMMAND has MEMORY and the function is not in D3hot or below.
    static bool memoryEnabled(const SimDevice& d) { return (d.command() & 0x0002) && d.powerState() < 3; }

    std::vector<std::shared_ptr<DmaBuf>> dmaBufsOf(const SimDevice& d) {
        std::erase_if(dmaBufs, [](auto& w) { return w.expired(); });
        std::vector<std::shared_ptr<DmaBuf>> out;
        for (auto& w : dmaBufs)
            if (auto b = w.lock(); b && b->dev == &d) out.push_back(b);
        return out;
    }

    // vfio_pci_dma_buf_move(): every dma-buf of the device whose state differs is revoked or
    // un-revoked, and dma_buf_invalidate_mappings() tells each importer either way. iommufd's
    // importer (iopt_revoke_notify()) unmaps the area from every domain and marks its pages revoked,
    // returning early for pages already revoked: an un-revoke restores nothing, only a new
    // IOAS_MAP_FILE does.
    void moveDmaBufs(const SimDevice& d, bool revoked) {
        for (auto& b : dmaBufsOf(d)) {
            if (b->revoked == revoked) continue;
            if (revoked) b->revoked = true;
            revokeNotify(*b);
            b->revoked = revoked;
        }
    }
    void revokeNotify(const DmaBuf& b) {
        for (auto& ctx : ctxs)
            for (auto& [id, o] : ctx.objs)
                if (o.as)
                    for (auto& [iova, m] : o.as->maps)
                        if (m.dmaBuf.get() == &b) m.revoked = true;
    }

    // vfio_pci_dma_buf_cleanup() at the device's close (vfio_pci_core_close_device()): every buf is
    // revoked and detached from the device, so nothing un-revokes it again.
    void cleanupDmaBufs(const SimDevice& d) {
        moveDmaBufs(d, true);
        for (auto& b : dmaBufsOf(d)) b->dev = nullptr;
    }

    // A config write the kernel handles in vfio_basic_config_write(): a write that starts at
    // PCI_COMMAND revokes the dma-bufs before it when it clears MEMORY, and un-revokes them after it
    // when memory is then enabled. (A write starting at COMMAND's high byte does neither.)
    //
    // A write that starts at the PM capability's PMCSR (vfio_pm_config_write(), offset ==
    // PCI_PM_CTRL) sets the power state it holds (vfio_lock_and_set_power_state()): to D3hot the
    // dma-bufs are revoked first; after, they are un-revoked if memory is enabled, which needs
    // D0..D2 (__vfio_pci_memory_enabled()). D1/D2 are simply stored.
    void configWrite(SimDevice& d, uint64_t offset, uint32_t value, unsigned size) {
        const bool command = offset == 0x04;
        const bool pmcsr = d.config_.pmCap && offset == 0xc4;
        if (command && !(value & 0x0002)) moveDmaBufs(d, true);
        if (pmcsr && (value & 0x3) == 3) moveDmaBufs(d, true);
        d.cfgWrite(offset, value, size);
        if ((command || pmcsr) && memoryEnabled(d)) moveDmaBufs(d, false);
    }

    Result<int> newHandle(Handle h, bool asEventfd = false) {
        int fd = asEventfd ? ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail(errno);
        handles[fd] = h;
        host.fds_[fd] = h.kind;
        return fd;
    }

    // ---------------------------------------------------------------- domains and translation
    std::vector<ReservedRange> resvOf(SimDevice& d) { return host.reservedFor(d.group()); }

    AddressSpace* ioasOfHwpt(Ctx& ctx, uint32_t hwpt) {
        auto it = ctx.objs.find(hwpt);
        if (it == ctx.objs.end()) return nullptr;
        // A vIOMMU's nested HWPT whose vSTE aborts (Config abort, or V clear) blocks all DMA
        // (arm_smmu_make_abort_ste()); bypass is stage 2 alone. DMA through a bypass or translating
        // vSTE goes through the stage-1 walk (SimHost::nestedTransfer()) unless
        // SimHostConfig::stage1Walk is off; then a translating vSTE is a stage-1 identity here.
        if (it->second.viommu && smmu::steConfig(it->second.ste) == smmu::kCfgAbort) return nullptr;
        if (it->second.nested) return ioasOfHwpt(ctx, it->second.parent);
        auto io = ctx.objs.find(it->second.ioas);
        return io == ctx.objs.end() ? nullptr : io->second.as.get();
    }

    AddressSpace* domainOf(SimDevice& d) {
        auto g = groups.find(d.group());
        if (g != groups.end() && g->second.container && g->second.container->iommuSet) return &g->second.container->as;
        for (auto& ctx : ctxs)
            for (auto& [id, o] : ctx.objs)
                if (o.type == Obj::Device && o.dev == &d && o.attached) return ioasOfHwpt(ctx, o.attached);
        return nullptr;
    }

    // IOAS: reserved = every attached device's group reserved regions plus what is beyond the aperture
    // (iopt_table_enforce_dev_resv_regions(), iommufd_hwpt_paging_alloc() aperture reservation).
    std::vector<ReservedRange> ioasReserved(Ctx& ctx, uint32_t ioasId) {
        std::vector<ReservedRange> out;
        bool any = false;
        for (auto& [id, o] : ctx.objs) {
            if (o.type != Obj::Device || !o.attached) continue;
            uint32_t h = o.attached;
            while (ctx.objs.count(h) && ctx.objs[h].nested) h = ctx.objs[h].parent;
            if (!ctx.objs.count(h) || ctx.objs[h].ioas != ioasId) continue;
            any = true;
            for (auto& r : resvOf(*o.dev)) out.push_back(r);
        }
        if (any && host.config_.apertureLast != ~0ull)
            out.push_back({host.config_.apertureLast + 1, ~0ull, "aperture"});
        return out;
    }
    bool ioasHasDevice(Ctx& ctx, uint32_t ioasId) {
        for (auto& [id, o] : ctx.objs)
            if (o.type == Obj::Hwpt && !o.nested && o.ioas == ioasId && o.users > 0) return true;
        return false;
    }

    std::vector<vfio::IovaRange> type1Ranges(Container& c) {
        std::vector<ReservedRange> resv;
        for (unsigned g : c.groups)
            for (auto& r : host.reservedFor(g)) resv.push_back(r);
        return subtract(0, host.config_.apertureLast, resv);
    }

    // ---------------------------------------------------------------- VFIO container (type1)
    Result<int> containerIoctl(Handle& h, unsigned long req, uintptr_t arg) {
        Container& c = *h.container;
        switch (req) {
            case VFIO_GET_API_VERSION: return VFIO_API_VERSION;
            case VFIO_CHECK_EXTENSION:
                // vfio_container_ioctl_check_extension()
                if (arg == VFIO_TYPE1_IOMMU || arg == VFIO_UNMAP_ALL) return 1;
                if (arg == VFIO_TYPE1v2_IOMMU) return host.config_.type1v2 ? 1 : 0;
                return 0;
            case VFIO_SET_IOMMU:
                // vfio_ioctl_set_iommu(): needs a group and no driver yet; unknown type: ENODEV.
                if (c.groups.empty() || c.iommuSet) return fail(EINVAL);
                if (!(arg == VFIO_TYPE1v2_IOMMU && host.config_.type1v2) && arg != VFIO_TYPE1_IOMMU) return fail(ENODEV);
                c.iommuSet = true;
                return 0;
        }
        // Everything else goes to the IOMMU driver; none set: EINVAL (vfio_fops_unl_ioctl()).
        if (!c.iommuSet) return fail(EINVAL);
        switch (req) {
            case VFIO_IOMMU_GET_INFO: return type1GetInfo(c, arg);
            case VFIO_IOMMU_MAP_DMA: return type1Map(c, arg);
            case VFIO_IOMMU_UNMAP_DMA: return type1Unmap(c, arg);
        }
        return fail(ENOTTY);
    }

    Result<int> type1GetInfo(Container& c, uintptr_t arg) {
        // vfio_iommu_type1_get_info()
        auto* user = reinterpret_cast<uint8_t*>(arg);
        vfio_iommu_type1_info info{};
        const size_t minsz = offsetof(vfio_iommu_type1_info, iova_pgsizes) + sizeof(info.iova_pgsizes);
        std::memcpy(&info, user, minsz);
        if (info.argsz < minsz) return fail(EINVAL);
        info.flags = VFIO_IOMMU_INFO_PGSIZES;
        info.iova_pgsizes = host.config_.pageSizes;
        const bool capsAllowed = info.argsz >= sizeof(vfio_iommu_type1_info);
        std::vector<uint8_t> caps;
        uint32_t lastHeader = 0;
        auto addCap = [&](const void* data, size_t size) {
            size_t at = (caps.size() + 7) & ~size_t(7);  // vfio_info_cap_add() aligns to u64
            caps.resize(at + size, 0);
            std::memcpy(caps.data() + at, data, size);
            uint32_t abs = static_cast<uint32_t>(sizeof(vfio_iommu_type1_info) + at);
            if (lastHeader) {
                auto* prev = reinterpret_cast<vfio_info_cap_header*>(caps.data() + (lastHeader - sizeof(vfio_iommu_type1_info)));
                prev->next = abs;
            }
            lastHeader = abs;
        };
        auto ranges = type1Ranges(c);
        std::vector<uint8_t> cap(sizeof(vfio_iommu_type1_info_cap_iova_range) + ranges.size() * sizeof(vfio_iova_range));
        auto* ir = reinterpret_cast<vfio_iommu_type1_info_cap_iova_range*>(cap.data());
        ir->header = {VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 0};
        ir->nr_iovas = static_cast<uint32_t>(ranges.size());
        for (size_t i = 0; i < ranges.size(); ++i) ir->iova_ranges[i] = {ranges[i].start, ranges[i].last};
        addCap(cap.data(), cap.size());
        vfio_iommu_type1_info_cap_migration mig{};
        mig.header = {VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 1, 0};
        mig.flags = 0;
        mig.pgsize_bitmap = host.config_.pageSizes & -host.config_.pageSizes;
        mig.max_dirty_bitmap_size = 256ull << 20;
        addCap(&mig, sizeof mig);
        vfio_iommu_type1_info_dma_avail avail{};
        avail.header = {VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1, 0};
        avail.avail = host.config_.dmaEntryLimit - static_cast<uint32_t>(c.as.maps.size());
        addCap(&avail, sizeof avail);
        if (capsAllowed) {
            info.flags |= VFIO_IOMMU_INFO_CAPS;
            if (info.argsz < sizeof(vfio_iommu_type1_info) + caps.size()) {
                info.argsz = static_cast<uint32_t>(sizeof(vfio_iommu_type1_info) + caps.size());
                info.cap_offset = 0;
            } else {
                std::memcpy(user + sizeof(vfio_iommu_type1_info), caps.data(), caps.size());
                info.cap_offset = sizeof(vfio_iommu_type1_info);
            }
        }
        std::memcpy(user, &info, capsAllowed ? sizeof info : minsz);
        return 0;
    }

    Result<int> type1Map(Container& c, uintptr_t arg) {
        // vfio_iommu_type1_ioctl() MAP_DMA + vfio_dma_do_map()
        vfio_iommu_type1_dma_map map{};
        const size_t minsz = offsetof(vfio_iommu_type1_dma_map, size) + sizeof(map.size);
        std::memcpy(&map, reinterpret_cast<void*>(arg), minsz);
        const uint32_t mask = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
        if (map.argsz < minsz || (map.flags & ~mask)) return fail(EINVAL);
        if (map.flags & VFIO_DMA_MAP_FLAG_VADDR) return fail(EINVAL);  // no vaddr update without a prior invalidate
        const uint64_t pgmask = (host.config_.pageSizes & -host.config_.pageSizes) - 1;
        bool prot = map.flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
        if (!prot || !map.size || ((map.size | map.iova | map.vaddr) & pgmask)) return fail(EINVAL);
        if (map.iova + map.size - 1 < map.iova || map.vaddr + map.size - 1 < map.vaddr) return fail(EINVAL);
        if (c.as.overlaps(map.iova, map.size)) return fail(EEXIST);
        if (c.as.maps.size() >= host.config_.dmaEntryLimit) return fail(ENOSPC);
        bool valid = false;
        for (auto& r : type1Ranges(c)) valid = valid || r.contains(map.iova, map.size);
        if (!valid) return fail(EINVAL);  // vfio_iommu_iova_dma_valid()
        if (!userRangeMapped(map.vaddr, map.size)) return fail(EFAULT);  // vfio_pin_pages_remote()
        Mapping m;
        m.iova = map.iova;
        m.size = map.size;
        m.host = reinterpret_cast<uint8_t*>(map.vaddr);
        m.read = map.flags & VFIO_DMA_MAP_FLAG_READ;
        m.write = map.flags & VFIO_DMA_MAP_FLAG_WRITE;
        c.as.maps[map.iova] = std::move(m);
        return 0;
    }

    Result<int> type1Unmap(Container& c, uintptr_t arg) {
        // vfio_iommu_type1_unmap_dma() + vfio_dma_do_unmap() (v2: no bisecting a mapping)
        vfio_iommu_type1_dma_unmap unmap{};
        const size_t minsz = offsetof(vfio_iommu_type1_dma_unmap, size) + sizeof(unmap.size);
        std::memcpy(&unmap, reinterpret_cast<void*>(arg), minsz);
        const uint32_t mask = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR;
        if (unmap.argsz < minsz || (unmap.flags & ~mask)) return fail(EINVAL);
        if (unmap.flags & (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR)) return fail(EINVAL);
        uint64_t first = unmap.iova, last = unmap.iova + unmap.size - 1;
        if (unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL) {
            if (unmap.iova || unmap.size) return fail(EINVAL);
            first = 0;
            last = ~0ull;
        } else {
            const uint64_t pgmask = (host.config_.pageSizes & -host.config_.pageSizes) - 1;
            if (!unmap.size || ((unmap.size | unmap.iova) & pgmask) || last < first) return fail(EINVAL);
            if (auto* m = c.as.find(first); m && m->iova != first) return fail(EINVAL);
            if (auto* m = c.as.find(last); m && m->iova + m->size - 1 != last) return fail(EINVAL);
        }
        uint64_t done = 0;
        for (auto it = c.as.maps.begin(); it != c.as.maps.end();) {
            if (it->second.iova >= first && it->second.iova + it->second.size - 1 <= last) {
                done += it->second.size;
                it = c.as.maps.erase(it);
            } else {
                ++it;
            }
        }
        unmap.size = done;
        std::memcpy(reinterpret_cast<void*>(arg), &unmap, minsz);
        return 0;
    }

    // ---------------------------------------------------------------- VFIO group
    Result<int> groupIoctl(Handle& h, unsigned long req, uintptr_t arg) {
        Group& g = groups[h.group];
        switch (req) {
            case VFIO_GROUP_GET_STATUS: {
                // vfio_group_ioctl_get_status()
                vfio_group_status st{};
                std::memcpy(&st, reinterpret_cast<void*>(arg), sizeof st);
                if (st.argsz < sizeof st) return fail(EINVAL);
                st.flags = (host.groupViable(h.group) ? VFIO_GROUP_FLAGS_VIABLE : 0) |
                           (g.container ? VFIO_GROUP_FLAGS_CONTAINER_SET : 0);
                std::memcpy(reinterpret_cast<void*>(arg), &st, sizeof st);
                return 0;
            }
            case VFIO_GROUP_SET_CONTAINER: {
                // vfio_group_ioctl_set_container(): one container per group; the container fd must be
                // one; claiming DMA ownership of a group with a member owned by a kernel driver fails
                // with EPERM (iommu_group_claim_dma_owner()).
                int cfd;
                std::memcpy(&cfd, reinterpret_cast<void*>(arg), sizeof cfd);
                if (g.container) return fail(EINVAL);
                auto it = handles.find(cfd);
                if (it == handles.end()) return fail(EBADF);
                if (it->second.kind != KContainer) return fail(EINVAL);
                if (!host.groupViable(h.group)) return fail(EPERM);
                g.container = it->second.container;
                g.container->groups.insert(h.group);
                return 0;
            }
            case VFIO_GROUP_UNSET_CONTAINER:
                // vfio_group_ioctl_unset_container(): EBUSY while device fds are open.
                if (!g.container) return fail(EINVAL);
                if (g.deviceFds) return fail(EBUSY);
                detachGroup(g, h.group);
                return 0;
            case VFIO_GROUP_GET_DEVICE_FD: {
                // vfio_group_ioctl_get_device_fd(): needs a container with an IOMMU driver.
                const char* name = reinterpret_cast<const char*>(arg);
                if (!g.container || !g.container->iommuSet) return fail(EINVAL);
                SimDevice* dev = host.device(name);
                if (!dev || dev->group() != h.group) return fail(ENODEV);
                Handle dh{KDevice};
                dh.dev = dev;
                dh.group = h.group;
                auto fd = newHandle(dh);
                if (!fd) return fd;
                ++g.deviceFds;
                if (dev->openCount_++ == 0) dev->enable();  // vfio_df_open() -> vfio_pci_core_enable()
                return fd;
            }
        }
        return fail(ENOTTY);
    }

    void detachGroup(Group& g, unsigned id) {
        Container* c = g.container;
        c->groups.erase(id);
        g.container = nullptr;
        // __vfio_group_unset_container(): the last group takes the IOMMU (and all its mappings) along.
        if (c->groups.empty()) {
            c->iommuSet = false;
            c->as.maps.clear();
        }
        maybeFreeContainer(c);
    }
    void maybeFreeContainer(Container* c) {
        if (c->fdOpen || !c->groups.empty()) return;
        containers.remove_if([&](Container& x) { return &x == c; });
    }

    // ---------------------------------------------------------------- VFIO device
    Result<int> deviceIoctl(Handle& h, unsigned long req, uintptr_t arg) {
        SimDevice& d = *h.dev;
        if (h.cdev) {
            if (req == VFIO_DEVICE_BIND_IOMMUFD) return bind(h, arg);
            // vfio_device_fops_unl_ioctl(): nothing but BIND before the cdev is bound.
            if (!h.ctx) return fail(EINVAL);
            if (req == VFIO_DEVICE_ATTACH_IOMMUFD_PT) return attach(h, arg);
            if (req == VFIO_DEVICE_DETACH_IOMMUFD_PT) return detach(h, arg);
        } else if (req == VFIO_DEVICE_BIND_IOMMUFD || req == VFIO_DEVICE_ATTACH_IOMMUFD_PT ||
                   req == VFIO_DEVICE_DETACH_IOMMUFD_PT) {
            return fail(EINVAL);  // cdev-only ioctls on a group-obtained fd
        }
        switch (req) {
            case VFIO_DEVICE_GET_INFO: {
                // vfio_pci_ioctl_get_info()
                vfio_device_info info{};
                const size_t minsz = offsetof(vfio_device_info, num_irqs) + sizeof(info.num_irqs);
                std::memcpy(&info, reinterpret_cast<void*>(arg), minsz);
                if (info.argsz < minsz) return fail(EINVAL);
                info.flags = VFIO_DEVICE_FLAGS_PCI | (d.config_.resetSupported ? VFIO_DEVICE_FLAGS_RESET : 0);
                info.num_regions = VFIO_PCI_NUM_REGIONS;
                info.num_irqs = VFIO_PCI_NUM_IRQS;
                std::memcpy(reinterpret_cast<void*>(arg), &info, minsz);
                return 0;
            }
            case VFIO_DEVICE_GET_REGION_INFO: return regionInfo(d, arg);
            case VFIO_DEVICE_GET_IRQ_INFO: {
                // vfio_pci_ioctl_get_irq_info()
                vfio_irq_info info{};
                const size_t minsz = offsetof(vfio_irq_info, count) + sizeof(info.count);
                std::memcpy(&info, reinterpret_cast<void*>(arg), minsz);
                if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS) return fail(EINVAL);
                info.count = d.irqCount(info.index);
                info.flags = VFIO_IRQ_INFO_EVENTFD;
                // NORESIZE on everything but INTx, except MSI-X when the host can add vectors to
                // it while enabled (vdev->has_dyn_msix).
                if (info.index == VFIO_PCI_INTX_IRQ_INDEX)
                    info.flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
                else if (info.index != VFIO_PCI_MSIX_IRQ_INDEX || !host.config_.dynamicMsix)
                    info.flags |= VFIO_IRQ_INFO_NORESIZE;
                std::memcpy(reinterpret_cast<void*>(arg), &info, minsz);
                return 0;
            }
            case VFIO_DEVICE_SET_IRQS: return setIrqs(d, arg);
            case VFIO_DEVICE_RESET:
                // vfio_pci_ioctl_reset(): EINVAL when the device has no reset method;
                // pci_try_reset_function() restores the config state it saved before.
                // The dma-bufs are revoked around it and un-revoked only if memory is enabled after.
                if (!d.config_.resetSupported) return fail(EINVAL);
                moveDmaBufs(d, true);
                d.resetRestoringConfig();
                if (memoryEnabled(d)) moveDmaBufs(d, false);
                return 0;
            case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: return hotResetInfo(h, arg);
            case VFIO_DEVICE_PCI_HOT_RESET: return hotReset(h, arg);
            case VFIO_DEVICE_FEATURE: return feature(h, arg);
        }
        return fail(ENOTTY);
    }

    // ---------------------------------------------------------------- PCI hot reset
    // The simulated topology has no bridges and no hotplug slots: bus 0 is the root bus, which
    // has no secondary bus reset (pci_probe_reset_bus() fails: ENODEV), and every other bus sits
    // behind a bridge that can reset it, with every function on it (devices and group peers).
    struct BusMember {
        std::string bdf;
        unsigned group = 0;
        SimDevice* dev = nullptr;  // null: a group peer (no simulated state)
        bool vfio = false;         // bound to vfio-pci: in the bus's dev_set (vfio_find_device_in_devset())
    };
    static bool busResettable(const SimDevice& d) { return d.bdf().substr(5, 2) != "00"; }
    std::vector<BusMember> busMembers(const SimDevice& d) {
        std::vector<BusMember> out;
        const std::string bus = d.bdf().substr(0, 7);  // "0000:01"
        for (auto& other : host.devices_)
            if (other->bdf().substr(0, 7) == bus)
                out.push_back({other->bdf(), other->group(), other.get(), other->config().driver == "vfio-pci"});
        for (auto& [bdf, group, driver] : host.peers_)
            if (bdf.substr(0, 7) == bus) out.push_back({bdf, group, nullptr, driver == "vfio-pci"});
        std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.bdf < b.bdf; });  // pci_walk_bus() order
        return out;
    }
    // The iommufd device id `m` has in `ctx` (vfio_iommufd_get_dev_id()): its id when bound there,
    // -ENOENT when not bound but a device of its group is (iommufd_ctx_has_group()), else -ENODEV.
    int devIdIn(const Ctx& ctx, const BusMember& m) {
        for (auto& [fd, other] : handles)
            if (other.kind == KDevice && m.dev && other.dev == m.dev && other.ctx == &ctx) return int(other.devObj);
        for (auto& [id, o] : ctx.objs)
            if (o.type == Obj::Device && o.dev->group() == m.group) return -ENOENT;
        return -ENODEV;
    }

    Result<int> hotResetInfo(Handle& h, uintptr_t arg) {
        // vfio_pci_ioctl_get_pci_hot_reset_info() + vfio_pci_fill_devs()
        vfio_pci_hot_reset_info hdr{};
        const size_t minsz = offsetof(vfio_pci_hot_reset_info, count) + sizeof(hdr.count);
        std::memcpy(&hdr, reinterpret_cast<void*>(arg), minsz);
        if (hdr.argsz < minsz) return fail(EINVAL);
        hdr.flags = 0;
        SimDevice& d = *h.dev;
        if (!busResettable(d)) return fail(ENODEV);
        const auto members = busMembers(d);
        // Too small: ENOSPC with the count (and flags 0) in the header, nothing else written.
        if (members.size() > (hdr.argsz - sizeof hdr) / sizeof(vfio_pci_dependent_device)) {
            hdr.count = static_cast<uint32_t>(members.size());
            std::memcpy(reinterpret_cast<void*>(arg), &hdr, minsz);
            return fail(ENOSPC);
        }
        // A cdev-opened device answers with iommufd device ids (vfio_device_cdev_opened()).
        uint32_t flags = h.cdev ? (VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED) : 0;
        auto* out = reinterpret_cast<uint8_t*>(arg) + sizeof hdr;
        for (size_t i = 0; i < members.size(); ++i) {
            const auto& m = members[i];
            vfio_pci_dependent_device dd{};
            unsigned bus, dev, fn;
            std::sscanf(m.bdf.c_str(), "%*x:%x:%x.%x", &bus, &dev, &fn);
            dd.segment = 0;
            dd.bus = static_cast<uint8_t>(bus);
            dd.devfn = static_cast<uint8_t>((dev << 3) | fn);
            if (flags & VFIO_PCI_HOT_RESET_FLAG_DEV_ID) {
                const int id = m.vfio ? devIdIn(*h.ctx, m) : -ENODEV;
                dd.group_id = id > 0 ? uint32_t(id) : id == -ENOENT ? uint32_t(VFIO_PCI_DEVID_OWNED)
                                                                    : uint32_t(VFIO_PCI_DEVID_NOT_OWNED);
                if (dd.group_id == uint32_t(VFIO_PCI_DEVID_NOT_OWNED)) flags &= ~VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
            } else {
                dd.group_id = m.group;  // (a function without an IOMMU group would be EPERM; the sim has none)
            }
            std::memcpy(out + i * sizeof dd, &dd, sizeof dd);
        }
        hdr.count = static_cast<uint32_t>(members.size());
        hdr.flags = flags;
        std::memcpy(reinterpret_cast<void*>(arg), &hdr, minsz);
        return 0;
    }

    Result<int> hotReset(Handle& h, uintptr_t arg) {
        // vfio_pci_ioctl_pci_hot_reset() -> _groups() / vfio_pci_dev_set_hot_reset()
        vfio_pci_hot_reset hdr{};
        const size_t minsz = offsetof(vfio_pci_hot_reset, count) + sizeof(hdr.count);
        std::memcpy(&hdr, reinterpret_cast<void*>(arg), minsz);
        if (hdr.argsz < minsz || hdr.flags) return fail(EINVAL);
        // The zero-length array is for cdev-opened devices only, and they take nothing else.
        if (bool(hdr.count) == h.cdev) return fail(EINVAL);
        SimDevice& d = *h.dev;
        if (!busResettable(d)) return fail(ENODEV);
        const auto members = busMembers(d);
        std::set<unsigned> groupsGiven;
        if (hdr.count) {
            // Between 1 and the number of affected functions. argsz is not checked against the
            // array: the kernel copies `count` fds whatever argsz says.
            if (hdr.count > members.size()) return fail(EINVAL);
            std::vector<int32_t> fds(hdr.count);
            std::memcpy(fds.data(), reinterpret_cast<uint8_t*>(arg) + sizeof hdr, fds.size() * sizeof(int32_t));
            for (int32_t fd : fds) {
                auto it = handles.find(fd);
                if (it == handles.end()) return fail(::fcntl(fd, F_GETFD) < 0 ? EBADF : EINVAL);  // fget() / not VFIO
                if (it->second.kind != KGroup) return fail(EINVAL);  // vfio_file_is_group()
                groupsGiven.insert(it->second.group);
            }
        }
        // vfio_pci_dev_set_resettable(): every function on the bus is in the dev_set (vfio-pci's);
        // then each must be owned: in one of the groups given, or (cdev) bound to the caller's
        // iommufd or in a group that is. Otherwise EINVAL, and nothing is reset.
        for (auto& m : members)
            if (!m.vfio) return fail(EINVAL);
        // vfio_pci_dev_set_hot_reset() walks the dev_set in its list order (the order the functions
        // registered: the sim's devices as added, then its vfio-pci group peers), revoking each
        // owned function's dma-bufs before checking the next one. An unowned one ends the walk with
        // EINVAL and the functions already walked get their dma-bufs back if they are open with
        // memory enabled, but an IOAS area of one of them stays revoked (iopt_revoke_notify()).
        std::vector<const BusMember*> devSet;
        for (auto& m : members) devSet.push_back(&m);
        auto registered = [&](const BusMember* m) {
            for (size_t i = 0; i < host.devices_.size(); ++i)
                if (host.devices_[i].get() == m->dev && m->dev) return i;
            return host.devices_.size();
        };
        std::stable_sort(devSet.begin(), devSet.end(), [&](auto* a, auto* b) { return registered(a) < registered(b); });
        auto undo = [&](size_t walked) {
            for (size_t i = 0; i < walked; ++i)
                if (SimDevice* d = devSet[i]->dev; d && d->openCount_ && memoryEnabled(*d)) moveDmaBufs(*d, false);
        };
        for (size_t i = 0; i < devSet.size(); ++i) {
            const BusMember& m = *devSet[i];
            const bool owned = hdr.count ? groupsGiven.count(m.group) != 0 : [&] {
                const int id = devIdIn(*h.ctx, m);
                return id > 0 || id == -ENOENT;
            }();
            if (!owned) {
                undo(i);
                return fail(EINVAL);
            }
            if (m.dev) moveDmaBufs(*m.dev, true);
        }
        // pci_reset_bus(): every function saved, the bus reset, every function restored; then each
        // open function with memory enabled gets its dma-bufs back.
        for (auto& m : members)
            if (m.dev) m.dev->resetRestoringConfig();
        undo(devSet.size());
        return 0;
    }

    // vfio_pci_dev_set_try_reset() at a close: when no function of the bus is open any more, one
    // of them still needs a reset (it had no function reset) and the whole bus is vfio-pci's, the
    // kernel resets the bus itself.
    void tryBusResetAfterClose(SimDevice& d) {
        if (!busResettable(d)) return;
        bool needed = false;
        const auto members = busMembers(d);
        for (auto& m : members) {
            if (!m.vfio || (m.dev && m.dev->openCount_)) return;
            needed = needed || (m.dev && m.dev->needsReset_);
        }
        if (!needed) return;
        for (auto& m : members) {
            if (!m.dev) continue;
            m.dev->resetRestoringConfig();
            m.dev->needsReset_ = false;
        }
    }

    std::vector<vfio::SparseArea> sparseOf(const SimDevice& d, unsigned bar) {
        auto& b = d.config_.bars[bar];
        if (!b.sparseAreas.empty()) return b.sparseAreas;
        if (d.config_.msixVectors && d.config_.msixBar == bar && !d.config_.msixMappable) {
            // Areas around the MSI-X table and PBA, page aligned (what older kernels reported).
            uint64_t lo = std::min(d.config_.msixTableOffset, d.config_.msixPbaOffset) & ~(kPage - 1);
            uint64_t hi = (std::max(d.config_.msixTableOffset + 16ull * d.config_.msixVectors,
                                    d.config_.msixPbaOffset + 8ull * ((d.config_.msixVectors + 63) / 64)) +
                           kPage - 1) & ~(kPage - 1);
            std::vector<vfio::SparseArea> out;
            if (lo) out.push_back({0, lo});
            if (hi < b.size) out.push_back({hi, b.size - hi});
            return out;
        }
        return {};
    }

    bool mmappable(const SimDevice& d, unsigned index) {
        if (index > VFIO_PCI_BAR5_REGION_INDEX) return false;
        auto& b = d.config_.bars[index];
        if (!b.size) return false;
        if (b.kind == BarKind::Registers) return d.config_.registerBarMmap;  // real edu's BAR0 is mmappable
        return b.kind == BarKind::Memory && b.mmappable;
    }

    Result<int> regionInfo(SimDevice& d, uintptr_t arg) {
        // vfio_pci_ioctl_get_region_info()
        auto* user = reinterpret_cast<uint8_t*>(arg);
        vfio_region_info info{};
        const size_t minsz = offsetof(vfio_region_info, offset) + sizeof(info.offset);
        std::memcpy(&info, user, minsz);
        if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_REGIONS) return fail(EINVAL);
        info.offset = uint64_t(info.index) << kOffsetShift;
        info.flags = 0;
        info.size = 0;
        std::vector<uint8_t> caps;
        if (info.index <= VFIO_PCI_BAR5_REGION_INDEX) {
            auto& b = d.config_.bars[info.index];
            if (b.kind != BarKind::None && b.size) {
                info.size = b.size;
                info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
                if (mmappable(d, info.index)) {
                    info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
                    auto sparse = sparseOf(d, info.index);
                    if (!sparse.empty()) {
                        std::vector<uint8_t> cap(sizeof(vfio_region_info_cap_sparse_mmap) +
                                                 sparse.size() * sizeof(vfio_region_sparse_mmap_area));
                        auto* sp = reinterpret_cast<vfio_region_info_cap_sparse_mmap*>(cap.data());
                        sp->header = {VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 0};
                        sp->nr_areas = static_cast<uint32_t>(sparse.size());
                        for (size_t i = 0; i < sparse.size(); ++i) { sp->areas[i].offset = sparse[i].offset; sp->areas[i].size = sparse[i].size; }
                        caps = cap;
                    }
                    if (d.config_.msixVectors && d.config_.msixBar == info.index && d.config_.msixMappable) {
                        size_t at = (caps.size() + 7) & ~size_t(7);
                        if (!caps.empty())
                            reinterpret_cast<vfio_info_cap_header*>(caps.data())->next =
                                static_cast<uint32_t>(sizeof(vfio_region_info) + at);
                        caps.resize(at + sizeof(vfio_info_cap_header), 0);
                        vfio_info_cap_header hdr{VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0};
                        std::memcpy(caps.data() + at, &hdr, sizeof hdr);
                    }
                }
            }
        } else if (info.index == VFIO_PCI_CONFIG_REGION_INDEX) {
            info.size = d.configSize();  // pdev->cfg_size
            info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        } else if (info.index == VFIO_PCI_ROM_REGION_INDEX) {
            // The ROM BAR's size, READ only, if pci_map_rom() finds an image; else size 0.
            if (d.config_.romBarSize && d.romImageSize()) {
                info.size = d.config_.romBarSize;
                info.flags = VFIO_REGION_INFO_FLAG_READ;
            }
        }
        if (!caps.empty()) {
            info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
            if (info.argsz < sizeof(vfio_region_info) + caps.size()) {
                info.argsz = static_cast<uint32_t>(sizeof(vfio_region_info) + caps.size());
                info.cap_offset = 0;
            } else {
                std::memcpy(user + sizeof(vfio_region_info), caps.data(), caps.size());
                info.cap_offset = sizeof(vfio_region_info);
            }
            std::memcpy(user, &info, sizeof info);
        } else {
            std::memcpy(user, &info, minsz);
        }
        return 0;
    }

    Result<int> setIrqs(SimDevice& d, uintptr_t arg) {
        // vfio_pci_ioctl_set_irqs() -> vfio_set_irqs_validate_and_prepare(), then
        // vfio_pci_set_irqs_ioctl() picks the handler for the index and action.
        auto* user = reinterpret_cast<uint8_t*>(arg);
        vfio_irq_set hdr{};
        const size_t minsz = offsetof(vfio_irq_set, count) + sizeof(hdr.count);
        std::memcpy(&hdr, user, minsz);
        const uint32_t dataMask = VFIO_IRQ_SET_DATA_TYPE_MASK, actionMask = VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if (hdr.argsz < minsz || hdr.index >= VFIO_PCI_NUM_IRQS || hdr.count >= UINT32_MAX - hdr.start ||
            (hdr.flags & ~(dataMask | actionMask)))
            return fail(EINVAL);
        // The range must lie inside the index whatever the action; a count of 0 still needs start < max.
        const uint32_t max = d.irqCount(hdr.index);
        if (hdr.start >= max || hdr.start + hdr.count > max) return fail(EINVAL);
        size_t elem = 0;
        switch (hdr.flags & dataMask) {
            case VFIO_IRQ_SET_DATA_NONE: elem = 0; break;
            case VFIO_IRQ_SET_DATA_BOOL: elem = 1; break;
            case VFIO_IRQ_SET_DATA_EVENTFD: elem = 4; break;
            default: return fail(EINVAL);  // none, or more than one data type
        }
        if (elem && (hdr.argsz - minsz < size_t(hdr.count) * elem)) return fail(EINVAL);
        const uint32_t action = hdr.flags & actionMask;
        // No handler for no action or several at once: vfio_pci_set_irqs_ioctl() returns ENOTTY.
        if (action != VFIO_IRQ_SET_ACTION_MASK && action != VFIO_IRQ_SET_ACTION_UNMASK &&
            action != VFIO_IRQ_SET_ACTION_TRIGGER)
            return fail(ENOTTY);
        const uint8_t* data = user + minsz;
        const bool dataNone = hdr.flags & VFIO_IRQ_SET_DATA_NONE, dataEventfd = hdr.flags & VFIO_IRQ_SET_DATA_EVENTFD;
        const uint32_t idx = hdr.index;
        const bool active = d.activeIndex_ == idx, idle = d.activeIndex_ == VFIO_PCI_NUM_IRQS;

        if (idx == VFIO_PCI_INTX_IRQ_INDEX) {
            if (action == VFIO_IRQ_SET_ACTION_MASK || action == VFIO_IRQ_SET_ACTION_UNMASK) {
                // vfio_pci_set_intx_mask() / _unmask(): INTx enabled, and exactly its one vector.
                if (!active || hdr.start != 0 || hdr.count != 1) return fail(EINVAL);
                if (action == VFIO_IRQ_SET_ACTION_MASK) {
                    if (dataEventfd) return fail(ENOTTY);  // a mask eventfd is not implemented
                    if (dataNone || data[0]) d.intx_.masked = true;
                    return 0;
                }
                if (dataEventfd) {
                    int32_t efd;
                    std::memcpy(&efd, data, 4);
                    if (d.intx_.unmaskFd >= 0) ::close(std::exchange(d.intx_.unmaskFd, -1));
                    if (efd >= 0) {
                        int dupfd = ::fcntl(efd, F_DUPFD_CLOEXEC, 0);
                        if (dupfd < 0) return fail(EBADF);
                        d.intx_.unmaskFd = dupfd;
                    }
                    return 0;
                }
                if (dataNone || data[0]) d.intxUnmask();
                return 0;
            }
            // vfio_pci_set_intx_trigger()
            if (active && hdr.count == 0 && dataNone) {
                disableIndex(d, idx);
                return 0;
            }
            if (!(active || idle) || hdr.start != 0 || hdr.count != 1) return fail(EINVAL);
            if (dataEventfd) {
                // vfio_intx_enable() when idle, then vfio_intx_set_signal(): -1 leaves INTx enabled
                // without a trigger.
                int32_t efd;
                std::memcpy(&efd, data, 4);
                int dupfd = -1;
                if (efd >= 0 && (dupfd = ::fcntl(efd, F_DUPFD_CLOEXEC, 0)) < 0) return fail(EBADF);
                auto& t = d.intx_.triggers[0];
                if (t >= 0) ::close(std::exchange(t, -1));
                t = dupfd;
                d.activeIndex_ = idx;
                if (t >= 0 && d.intx_.level && !d.intx_.masked) d.intxAssert();
                return 0;
            }
            if (!active) return fail(EINVAL);
            if (dataNone || data[0]) d.signal(d.intx_.triggers[0]);
            return 0;
        }
        if (idx == VFIO_PCI_MSI_IRQ_INDEX || idx == VFIO_PCI_MSIX_IRQ_INDEX) {
            // vfio_pci_set_msi_trigger(); MASK/UNMASK have no handler for MSI/MSI-X: ENOTTY.
            if (action != VFIO_IRQ_SET_ACTION_TRIGGER) return fail(ENOTTY);
            if (active && hdr.count == 0 && dataNone) {
                disableIndex(d, idx);
                return 0;
            }
            if (!(active || idle)) return fail(EINVAL);
            if (dataEventfd) {
                const bool enabling = idle;
                if (enabling) {
                    // vfio_msi_enable(start + count): pci_alloc_irq_vectors(1, nvec). With fewer
                    // host vectors than asked nothing is enabled and the ioctl returns how many
                    // there are (the caller may retry with that many); none at all is ENOSPC.
                    const uint32_t nvec = hdr.start + hdr.count;
                    if (nvec == 0) return fail(ERANGE);
                    const uint32_t avail = d.config_.hostIrqVectors.value_or(nvec);
                    if (avail == 0) return fail(ENOSPC);
                    if (avail < nvec) return static_cast<int>(avail);
                    for (uint32_t v = 0; v < nvec; ++v) d.allocated_.insert(v);
                    d.activeIndex_ = idx;
                }
                // vfio_msi_set_block(): vector by vector; the old trigger goes first, a vector
                // without a host interrupt gets one only with dynamic MSI-X (vfio_msi_alloc_irq()).
                // On a failure the vectors set so far are cleared again, and an index enabled by
                // this call is disabled.
                auto& trig = d.irqs_[idx].triggers;
                for (uint32_t i = 0; i < hdr.count; ++i) {
                    const uint32_t j = hdr.start + i;
                    int32_t efd;
                    std::memcpy(&efd, data + 4 * i, 4);
                    if (trig[j] >= 0) ::close(std::exchange(trig[j], -1));
                    if (efd < 0) continue;
                    int err = 0;
                    if (!d.allocated_.count(j)) {
                        if (idx != VFIO_PCI_MSIX_IRQ_INDEX || !host.config_.dynamicMsix) err = EINVAL;
                        else if (d.allocated_.size() >= d.config_.hostIrqVectors.value_or(UINT32_MAX)) err = ENOSPC;
                        else d.allocated_.insert(j);
                    }
                    if (!err && (trig[j] = ::fcntl(efd, F_DUPFD_CLOEXEC, 0)) < 0) err = EBADF;
                    if (err) {
                        for (uint32_t k = hdr.start; k < j; ++k)
                            if (trig[k] >= 0) ::close(std::exchange(trig[k], -1));
                        if (enabling) disableIndex(d, idx);
                        return fail(err);
                    }
                }
                return 0;
            }
            if (!active) return fail(EINVAL);
            for (uint32_t i = 0; i < hdr.count; ++i)
                if (dataNone || data[i]) d.deliver(idx, hdr.start + i);
            return 0;
        }
        // ERR / REQ: trigger eventfd only (vfio_pci_set_err_trigger(), vfio_pci_set_req_trigger()).
        if (action != VFIO_IRQ_SET_ACTION_TRIGGER) return fail(ENOTTY);
        auto& trig = d.irqs_[idx].triggers;
        if (hdr.flags & VFIO_IRQ_SET_DATA_EVENTFD) {
            if (hdr.count != 1) return fail(EINVAL);
            int32_t efd;
            std::memcpy(&efd, data, 4);
            if (trig[0] >= 0) ::close(std::exchange(trig[0], -1));
            if (efd >= 0 && (trig[0] = ::fcntl(efd, F_DUPFD_CLOEXEC, 0)) < 0) return fail(EBADF);
            return 0;
        }
        if (hdr.count && !trig.empty()) d.signal(trig[0]);
        return 0;
    }

    void disableIndex(SimDevice& d, uint32_t idx) {
        auto& irq = d.irqs_[idx];
        for (auto& fd : irq.triggers)
            if (fd >= 0) ::close(std::exchange(fd, -1));
        if (idx == VFIO_PCI_INTX_IRQ_INDEX) {
            if (irq.unmaskFd >= 0) ::close(std::exchange(irq.unmaskFd, -1));
            irq.masked = false;
        }
        d.allocated_.clear();  // pci_free_irq_vectors()
        d.activeIndex_ = VFIO_PCI_NUM_IRQS;
    }

    Result<int> feature(Handle& h, uintptr_t arg) {
        // vfio_ioctl_device_feature() + vfio_pci_core_feature_dma_buf()
        auto* user = reinterpret_cast<uint8_t*>(arg);
        vfio_device_feature f{};
        const size_t minsz = offsetof(vfio_device_feature, flags) + sizeof(f.flags);
        std::memcpy(&f, user, minsz);
        const uint32_t ops = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PROBE;
        if (f.argsz < minsz || (f.flags & ~(VFIO_DEVICE_FEATURE_MASK | ops))) return fail(EINVAL);
        if ((f.flags & VFIO_DEVICE_FEATURE_GET) && (f.flags & VFIO_DEVICE_FEATURE_SET)) return fail(EINVAL);
        if ((f.flags & VFIO_DEVICE_FEATURE_MASK) != VFIO_DEVICE_FEATURE_DMA_BUF) return fail(ENOTTY);
        // 6.12's vfio_pci_core_ioctl_feature() has no DMA_BUF case: -ENOTTY.
        if (host.config_.kernel == HostKernel::Linux6_12) return fail(ENOTTY);
        if (f.flags & VFIO_DEVICE_FEATURE_SET) return fail(EINVAL);  // GET only
        if (f.flags & VFIO_DEVICE_FEATURE_PROBE) return 0;
        vfio_device_feature_dma_buf db{};
        if (f.argsz < minsz + sizeof db) return fail(EINVAL);
        std::memcpy(&db, user + minsz, sizeof db);
        if (db.flags || db.nr_ranges != 1 || f.argsz < minsz + sizeof db + sizeof(vfio_region_dma_range))
            return fail(EINVAL);
        vfio_region_dma_range r;
        std::memcpy(&r, user + minsz + sizeof db, sizeof r);
        SimDevice& d = *h.dev;
        if (!mmappable(d, db.region_index)) return fail(ENODEV);
        uint64_t size = d.config_.bars[db.region_index].size;
        if (!r.length || (r.offset | r.length) & (kPage - 1) || r.offset > size || r.length > size - r.offset)
            return fail(EINVAL);
        // Created revoked when memory decode is off (priv->revoked = !__vfio_pci_memory_enabled());
        // the export itself succeeds.
        auto buf = std::make_shared<DmaBuf>(DmaBuf{&d, db.region_index, r.offset, r.length, !memoryEnabled(d)});
        Handle bh{KDmaBuf};
        bh.dev = &d;
        bh.dmaBuf = buf;
        auto fd = newHandle(bh);
        if (fd) dmaBufs.push_back(buf);
        return fd;
    }

    // ---------------------------------------------------------------- cdev bind / attach
    Result<int> bind(Handle& h, uintptr_t arg) {
        // vfio_df_ioctl_bind_iommufd()
        vfio_device_bind_iommufd b{};
        const size_t minsz = offsetof(vfio_device_bind_iommufd, out_devid) + sizeof(b.out_devid);
        std::memcpy(&b, reinterpret_cast<void*>(arg), minsz);
        if (b.argsz < minsz || b.flags) return fail(EINVAL);
        if (h.ctx) return fail(EINVAL);  // already bound
        auto it = handles.find(b.iommufd);
        if (it == handles.end()) return fail(EBADF);
        if (it->second.kind != KIommufd) return fail(EINVAL);
        // iommufd_device_bind() -> iommu_device_claim_dma_owner(): a group member owned by a
        // kernel driver (or a type1 user) blocks it.
        Group& g = groups[h.dev->group()];
        if (!host.groupViable(h.dev->group()) || g.container) return fail(EBUSY);
        for (auto& [fd, other] : handles)
            if (other.kind == KDevice && other.dev == h.dev && other.ctx) return fail(EBUSY);
        Ctx& ctx = *it->second.ctx;
        uint32_t id = ctx.nextId++;
        Impl::Obj o{Obj::Device};
        o.dev = h.dev;
        ctx.objs[id] = std::move(o);
        h.ctx = &ctx;
        h.devObj = id;
        b.out_devid = id;
        if (h.dev->openCount_++ == 0) h.dev->enable();  // vfio_df_open() runs at bind for a cdev
        std::memcpy(reinterpret_cast<void*>(arg), &b, minsz);
        return 0;
    }

    Result<int> attach(Handle& h, uintptr_t arg) {
        // vfio_df_ioctl_attach_pt() -> iommufd_device_attach()
        vfio_device_attach_iommufd_pt a{};
        const size_t minsz = offsetof(vfio_device_attach_iommufd_pt, pt_id) + sizeof(a.pt_id);
        std::memcpy(&a, reinterpret_cast<void*>(arg), std::min<size_t>(sizeof a, reinterpret_cast<uint32_t*>(arg)[0]));
        if (a.argsz < minsz || (a.flags & ~VFIO_DEVICE_ATTACH_PASID)) return fail(EINVAL);
        if (a.flags & VFIO_DEVICE_ATTACH_PASID) {
            if (a.argsz < sizeof a) return fail(EINVAL);
            return fail(EOPNOTSUPP);  // the simulated IOMMU has no PASID support
        }
        Ctx& ctx = *h.ctx;
        auto pt = ctx.objs.find(a.pt_id);
        if (pt == ctx.objs.end()) return fail(ENOENT);
        Obj& dev = ctx.objs[h.devObj];
        uint32_t hwpt;
        if (pt->second.type == Obj::Ioas) {
            // Attaching must not cover an existing mapping with the device's reserved regions
            // (iopt_table_enforce_dev_resv_regions(): EADDRINUSE).
            for (auto& r : resvOf(*h.dev)) {
                if (r.type == "direct-relaxable") continue;
                if (pt->second.as->overlaps(r.start, r.last - r.start + 1)) return fail(EADDRINUSE);
            }
            if (host.config_.apertureLast != ~0ull &&
                pt->second.as->overlaps(host.config_.apertureLast + 1, ~0ull - host.config_.apertureLast))
                return fail(EADDRINUSE);
            // iommufd_device_auto_get_domain(): reuse an auto domain of this IOAS or make one.
            hwpt = 0;
            for (auto& [id, o] : ctx.objs)
                if (o.type == Obj::Hwpt && o.autoDomain && o.ioas == a.pt_id) hwpt = id;
            if (!hwpt) {
                hwpt = ctx.nextId++;
                Obj o{Obj::Hwpt};
                o.ioas = a.pt_id;
                o.autoDomain = true;
                o.iommu = h.dev->config().iommu;
                ctx.objs[hwpt] = std::move(o);
                ctx.objs[a.pt_id].users++;
            }
        } else if (pt->second.type == Obj::Hwpt) {
            hwpt = a.pt_id;
            const Obj& target = pt->second;
            if (target.viommu) {
                // arm_smmu_attach_dev_nested(): the vIOMMU's SMMU must be the device's, and a
                // translating vSTE needs the device's vDEVICE (its vSID) on that vIOMMU first
                // (arm_smmu_attach_prepare_vmaster(): iommufd_viommu_get_vdev_id() -ENOENT);
                // abort and bypass attach without one (the GBPA case).
                if (target.iommu != h.dev->config().iommu) return fail(EINVAL);
                std::optional<uint64_t> vsid;
                for (auto& [id, o] : ctx.objs)
                    if (o.type == Obj::Vdevice && o.ref1 == target.viommu && o.ref2 == h.devObj) vsid = o.virtId;
                if (!vsid && smmu::steConfig(target.ste) == smmu::kCfgS1Trans) return fail(ENOENT);
                dev.vmasterVsid = vsid;
                dev.vmasterViommu = vsid ? target.viommu : 0;
            }
        } else {
            return fail(EINVAL);
        }
        // Any attach but a vIOMMU-nested one clears the vmaster (arm_smmu_master_clear_vmaster()).
        if (!ctx.objs[hwpt].viommu) {
            dev.vmasterVsid.reset();
            dev.vmasterViommu = 0;
        }
        if (dev.attached == hwpt) {  // iommufd_device_do_replace(): the same HWPT is a no-op
            a.pt_id = hwpt;
            std::memcpy(reinterpret_cast<void*>(arg), &a, minsz);
            return 0;
        }
        if (dev.attached) releaseAttachment(ctx, dev.attached);  // replacement
        dev.attached = hwpt;
        ctx.objs[hwpt].users++;
        // The kernel rewrote the device's STE (and issued CFGI_STE): the SMMU forgets its CDs.
        for (uint32_t sid : h.dev->config().streamIds) host.smmuCaches_.dropStream(sid);
        a.pt_id = hwpt;
        std::memcpy(reinterpret_cast<void*>(arg), &a, minsz);
        return 0;
    }

    void releaseAttachment(Ctx& ctx, uint32_t hwpt) {
        auto it = ctx.objs.find(hwpt);
        if (it == ctx.objs.end()) return;
        if (--it->second.users == 0 && it->second.autoDomain) {
            // Auto domains die with their last attachment (iommufd_hw_pagetable_put()).
            ctx.objs[it->second.ioas].users--;
            ctx.objs.erase(it);
        }
    }

    Result<int> detach(Handle& h, uintptr_t arg) {
        // vfio_df_ioctl_detach_pt()
        vfio_device_detach_iommufd_pt dt{};
        const size_t minsz = offsetof(vfio_device_detach_iommufd_pt, flags) + sizeof(dt.flags);
        std::memcpy(&dt, reinterpret_cast<void*>(arg), minsz);
        if (dt.argsz < minsz || (dt.flags & ~VFIO_DEVICE_DETACH_PASID)) return fail(EINVAL);
        if (dt.flags) return fail(EOPNOTSUPP);
        Obj& dev = h.ctx->objs[h.devObj];
        if (dev.attached) releaseAttachment(*h.ctx, std::exchange(dev.attached, 0));
        dev.vmasterVsid.reset();
        dev.vmasterViommu = 0;
        return 0;
    }

    void unbind(Handle& h) {
        if (!h.ctx) return;
        Ctx& ctx = *h.ctx;
        Obj& dev = ctx.objs[h.devObj];
        if (dev.attached) releaseAttachment(ctx, dev.attached);
        // vDEVICEs of this device are destroyed with it (iommufd_device_destroy()).
        for (auto it = ctx.objs.begin(); it != ctx.objs.end();) {
            if (it->second.type == Obj::Vdevice && it->second.ref2 == h.devObj) {
                ctx.objs[it->second.ref1].users--;
                it = ctx.objs.erase(it);
            } else {
                ++it;
            }
        }
        ctx.objs.erase(h.devObj);
        h.ctx = nullptr;
        maybeFreeCtx(&ctx);
    }

    void maybeFreeCtx(Ctx* ctx) {
        if (ctx->fdOpen || ctxHeld(ctx)) return;  // bound devices and queue fds keep the context alive
        ctxs.remove_if([&](Ctx& c) { return &c == ctx; });
    }

    // ---------------------------------------------------------------- iommufd
    // iommufd_fops_ioctl(): size below the op's minimum is EINVAL; a larger struct is fine when the
    // extra bytes are zero, else E2BIG (copy_struct_from_user()).
    template <class T>
    int copyIn(uintptr_t arg, size_t minsz, T& out) {
        uint32_t size;
        std::memcpy(&size, reinterpret_cast<void*>(arg), 4);
        if (size < minsz) return EINVAL;
        out = T{};
        std::memcpy(&out, reinterpret_cast<void*>(arg), std::min<size_t>(size, sizeof(T)));
        auto* p = reinterpret_cast<const uint8_t*>(arg);
        for (size_t i = sizeof(T); i < size; ++i)
            if (p[i]) return E2BIG;
        return 0;
    }
    template <class T>
    void copyOut(uintptr_t arg, const T& v) {
        uint32_t size;
        std::memcpy(&size, reinterpret_cast<void*>(arg), 4);
        std::memcpy(reinterpret_cast<void*>(arg), &v, std::min<size_t>(size, sizeof(T)));
    }
#define COPY_IN(T, field)                                                       \
    T cmd;                                                                      \
    if (int e = copyIn(arg, offsetof(T, field) + sizeof(cmd.field), cmd)) return fail(e)

    Obj* obj(Ctx& ctx, uint32_t id, Obj::Type type) {
        auto it = ctx.objs.find(id);
        return (it != ctx.objs.end() && it->second.type == type) ? &it->second : nullptr;
    }

    Result<int> iommufdIoctl(Handle& h, unsigned long req, uintptr_t arg) {
        Ctx& ctx = *h.ctx;
        switch (req) {
            case IOMMU_DESTROY: {
                // iommufd_destroy() -> iommufd_object_remove(): ENOENT unknown, EBUSY while referenced.
                COPY_IN(iommu_destroy, id);
                auto it = ctx.objs.find(cmd.id);
                if (it == ctx.objs.end()) return fail(ENOENT);
                Obj& o = it->second;
                // refcount_dec_if_one(): a vEVENTQ's open fd counts too (iommufd_eventq_init()).
                if (o.users > 0 || o.type == Obj::Device) return fail(EBUSY);
                if (o.type == Obj::Hwpt) {
                    // iommufd_hwpt_nested_destroy(): a vIOMMU's nested HWPT references the vIOMMU.
                    if (o.nested) ctx.objs[o.viommu ? o.viommu : o.parent].users--;
                    else ctx.objs[o.ioas].users--;
                } else if (o.type == Obj::Viommu) {
                    ctx.objs[o.ref1].users--;
                } else if (o.type == Obj::Vdevice || o.type == Obj::Veventq) {
                    ctx.objs[o.ref1].users--;
                }
                ctx.objs.erase(it);
                return 0;
            }
            case IOMMU_IOAS_ALLOC: {
                // iommufd_ioas_alloc_ioctl(): flags must be 0 (EOPNOTSUPP).
                COPY_IN(iommu_ioas_alloc, out_ioas_id);
                if (cmd.flags) return fail(EOPNOTSUPP);
                uint32_t id = ctx.nextId++;
                Obj o{Obj::Ioas};
                o.as = std::make_unique<AddressSpace>();
                ctx.objs[id] = std::move(o);
                cmd.out_ioas_id = id;
                copyOut(arg, cmd);
                return 0;
            }
            case IOMMU_IOAS_IOVA_RANGES: {
                // iommufd_ioas_iova_ranges(): EMSGSIZE with num_iovas = needed when the array is short.
                COPY_IN(iommu_ioas_iova_ranges, out_iova_alignment);
                if (cmd.__reserved) return fail(EOPNOTSUPP);
                Obj* io = obj(ctx, cmd.ioas_id, Obj::Ioas);
                if (!io) return fail(ENOENT);
                auto ranges = subtract(0, ~0ull, ioasReserved(ctx, cmd.ioas_id));
                auto* out = reinterpret_cast<iommu_iova_range*>(cmd.allowed_iovas);
                for (size_t i = 0; i < ranges.size() && i < cmd.num_iovas; ++i) out[i] = {ranges[i].start, ranges[i].last};
                bool tooSmall = ranges.size() > cmd.num_iovas;
                cmd.num_iovas = static_cast<uint32_t>(ranges.size());
                cmd.out_iova_alignment = ioasHasDevice(ctx, cmd.ioas_id) ? kPage : 1;
                copyOut(arg, cmd);
                return tooSmall ? fail(EMSGSIZE) : Result<int>(0);
            }
            case IOMMU_IOAS_MAP: {
                COPY_IN(iommu_ioas_map, iova);
                return ioasMap(ctx, arg, cmd.flags, cmd.__reserved, cmd.ioas_id, cmd.length, cmd.iova,
                               [] { return 0; },
                               [&](Mapping& m) -> int {
                                   if (!userRangeMapped(cmd.user_va, cmd.length)) return EFAULT;  // iopt_pages pin
                                   // Every kernel: pin_user_pages() refuses a VM_PFNMAP vma (a VFIO
                                   // BAR mmap); iommufd maps BARs only through a dma-buf.
                                   if (host.overlapsBarMmap(cmd.user_va, cmd.length)) return EFAULT;
                                   m.host = reinterpret_cast<uint8_t*>(cmd.user_va);
                                   return 0;
                               },
                               [&](uint64_t iova) {
                                   cmd.iova = iova;
                                   copyOut(arg, cmd);
                               });
            }
            case IOMMU_IOAS_MAP_FILE: {
                if (host.config_.kernel == HostKernel::Linux6_12) return fail(ENOTTY);  // added in 6.13
                COPY_IN(iommu_ioas_map_file, iova);
                std::shared_ptr<DmaBuf> buf;
                return ioasMap(ctx, arg, cmd.flags, 0, cmd.ioas_id, cmd.length, cmd.iova,
                               [&]() -> int { return resolveDmaBuf(cmd.fd, cmd.start, cmd.length, buf); },
                               [&](Mapping& m) -> int {
                                   if (buf) {
                                       m.host = buf->dev->barMem_[buf->bar].ptr + buf->offset + cmd.start;
                                       m.dmaBuf = buf;
                                       return 0;
                                   }
                                   return mapFileBacking(m, cmd.fd, cmd.start, cmd.length, cmd.flags);
                               },
                               [&](uint64_t iova) {
                                   cmd.iova = iova;
                                   copyOut(arg, cmd);
                               });
            }
            case IOMMU_IOAS_UNMAP: {
                // iommufd_ioas_unmap() -> iopt_unmap_iova(): whole areas only, ENOENT otherwise.
                COPY_IN(iommu_ioas_unmap, length);
                Obj* io = obj(ctx, cmd.ioas_id, Obj::Ioas);
                if (!io) return fail(ENOENT);
                uint64_t first = cmd.iova, last;
                if (cmd.iova == 0 && cmd.length == ~0ull) {
                    last = ~0ull;
                } else {
                    if (!cmd.length) return fail(EINVAL);
                    if (__builtin_add_overflow(cmd.iova, cmd.length - 1, &last)) return fail(EOVERFLOW);
                }
                uint64_t done = 0;
                for (auto& [a, m] : io->as->maps)
                    if (m.iova <= last && m.iova + m.size - 1 >= first &&
                        (m.iova < first || m.iova + m.size - 1 > last))
                        return fail(ENOENT);  // would cut an area
                for (auto it = io->as->maps.begin(); it != io->as->maps.end();) {
                    if (it->second.iova >= first && it->second.iova + it->second.size - 1 <= last) {
                        done += it->second.size;
                        it = io->as->maps.erase(it);
                    } else {
                        ++it;
                    }
                }
                if (!done && !(cmd.iova == 0 && cmd.length == ~0ull)) return fail(ENOENT);
                cmd.length = done;
                copyOut(arg, cmd);
                return 0;
            }
            case IOMMU_HWPT_ALLOC: return hwptAlloc(ctx, arg);
            case IOMMU_GET_HW_INFO: {
                // iommufd_get_hw_info()
                COPY_IN(iommu_hw_info, __reserved);
                if (cmd.flags & ~uint32_t(IOMMU_HW_INFO_FLAG_INPUT_TYPE)) return fail(EOPNOTSUPP);
                if (cmd.__reserved[0] || cmd.__reserved[1] || cmd.__reserved[2]) return fail(EOPNOTSUPP);
                // Without INPUT_TYPE the field is an output only; with it, a type the driver does not
                // report is EOPNOTSUPP (arm_smmu_hw_info(), intel_iommu_hw_info()).
                if (!(cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE)) cmd.out_data_type = IOMMU_HW_INFO_TYPE_DEFAULT;
                if (cmd.out_data_type != IOMMU_HW_INFO_TYPE_DEFAULT && cmd.out_data_type != host.config_.hwInfoType)
                    return fail(EOPNOTSUPP);
                if (!obj(ctx, cmd.dev_id, Obj::Device)) return fail(ENOENT);
                std::vector<uint8_t> data;
                if (host.config_.hwInfoType == IOMMU_HW_INFO_TYPE_INTEL_VTD) {
                    iommu_hw_info_vtd v{};
                    v.cap_reg = 0x00d2008c22260206ull;
                    v.ecap_reg = host.config_.nesting ? (1ull << 26) : 0;  // ecap.NEST
                    data.assign(reinterpret_cast<uint8_t*>(&v), reinterpret_cast<uint8_t*>(&v) + sizeof v);
                } else if (host.config_.hwInfoType == IOMMU_HW_INFO_TYPE_ARM_SMMUV3) {
                    iommu_hw_info_arm_smmuv3 s{};
                    for (int i = 0; i < 6; ++i) s.idr[i] = host.config_.smmuIdr[i];
                    s.iidr = host.config_.smmuIidr;
                    s.aidr = host.config_.smmuAidr;
                    data.assign(reinterpret_cast<uint8_t*>(&s), reinterpret_cast<uint8_t*>(&s) + sizeof s);
                }
                auto* out = reinterpret_cast<uint8_t*>(cmd.data_uptr);
                if (cmd.data_len && out) {
                    size_t n = std::min<size_t>(cmd.data_len, data.size());
                    std::memcpy(out, data.data(), n);
                    if (cmd.data_len > n) std::memset(out + n, 0, cmd.data_len - n);  // trailing bytes zeroed
                }
                cmd.data_len = static_cast<uint32_t>(data.size());
                cmd.out_data_type = host.config_.hwInfoType;
                // The edu has no ATS capability: device_iommu_capable(PCI_ATS_SUPPORTED) is false.
                cmd.out_capabilities = IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED;
                cmd.out_max_pasid_log2 = 0;
                // PASID (SMMUv3 only here): arm_smmu_probe_device() -> arm_smmu_enable_pasid() turns
                // the device's PASID capability on with the EXEC/PRIV features it supports, and
                // dev->iommu->max_pasids = min(pci_max_pasids(), 1 << IDR1.SSIDSIZE)
                // (dev_iommu_get_max_pasids()); iommufd_get_hw_info() reports its log2 and the
                // enabled EXEC/PRIV bits. The capability register follows the 4-byte header.
                const SimDevice& sd = *obj(ctx, cmd.dev_id, Obj::Device)->dev;
                for (auto& c : sd.config().extCaps) {
                    if (host.config_.hwInfoType != IOMMU_HW_INFO_TYPE_ARM_SMMUV3 || c.id != 0x1b || c.body.size() < 2) continue;
                    const uint16_t pcap = uint16_t(c.body[0] | (c.body[1] << 8));
                    const unsigned width = (pcap >> 8) & 0x1f;  // PCI_PASID_CAP_WIDTH
                    cmd.out_max_pasid_log2 = uint8_t(std::min(width, ssidBits()));
                    if (pcap & 0x2) cmd.out_capabilities |= IOMMU_HW_CAP_PCI_PASID_EXEC;
                    if (pcap & 0x4) cmd.out_capabilities |= IOMMU_HW_CAP_PCI_PASID_PRIV;
                }
                copyOut(arg, cmd);
                return 0;
            }
            case IOMMU_HWPT_INVALIDATE: return hwptInvalidate(ctx, arg);
            case IOMMU_VIOMMU_ALLOC: return viommuAlloc(ctx, arg);
            case IOMMU_VDEVICE_ALLOC: return vdeviceAlloc(ctx, arg);
            case IOMMU_VEVENTQ_ALLOC: return veventqAlloc(ctx, arg);
            case IOMMU_FAULT_QUEUE_ALLOC: {
                COPY_IN(iommu_fault_alloc, out_fault_fd);
                if (cmd.flags) return fail(EOPNOTSUPP);
                uint32_t id = ctx.nextId++;
                Handle qh{KQueue};
                auto fd = newHandle(qh, true);
                if (!fd) return fd;
                Obj o{Obj::Fault};
                o.qfd = *fd;
                ctx.objs[id] = std::move(o);
                cmd.out_fault_id = id;
                cmd.out_fault_fd = static_cast<uint32_t>(*fd);
                copyOut(arg, cmd);
                return 0;
            }
        }
        return fail(ENOTTY);  // IOAS_COPY, ALLOW_IOVAS, OPTION, VFIO_IOAS, dirty tracking: not simulated
    }

    // `resolve` runs before the IOVA is allocated or checked (MAP_FILE's dma-buf: iopt_map_file_pages()
    // makes its pages before iopt_map_common()), `fill` after.
    template <class Resolve, class Fill, class Out>
    Result<int> ioasMap(Ctx& ctx, uintptr_t, uint32_t flags, uint32_t reserved, uint32_t ioasId, uint64_t length,
                        uint64_t iova, Resolve&& resolve, Fill&& fill, Out&& out) {
        // iommufd_ioas_map() -> iopt_map_user_pages() / iopt_alloc_iova() / iopt_check_iova()
        const uint32_t known = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
        if ((flags & ~known) || reserved) return fail(EOPNOTSUPP);
        if (!length) return fail(EINVAL);
        Obj* io = obj(ctx, ioasId, Obj::Ioas);
        if (!io) return fail(ENOENT);
        if (int e = resolve()) return fail(e);
        const uint64_t align = ioasHasDevice(ctx, ioasId) ? kPage : 1;
        auto reservedRanges = ioasReserved(ctx, ioasId);
        if (!(flags & IOMMU_IOAS_MAP_FIXED_IOVA)) {
            // Lowest free, aligned hole in the allowed ranges (iopt_alloc_iova(), simplified).
            bool found = false;
            for (auto& r : subtract(0, ~0ull, reservedRanges)) {
                uint64_t cand = std::max<uint64_t>(r.start, kPage);
                cand = (cand + kPage - 1) & ~(kPage - 1);
                while (cand <= r.last && r.last - cand >= length - 1) {
                    if (!io->as->overlaps(cand, length)) {
                        found = true;
                        break;
                    }
                    auto* m = io->as->find(cand);
                    uint64_t next = m ? m->iova + m->size : cand + kPage;
                    for (auto& [a, mm] : io->as->maps)
                        if (mm.iova >= cand && mm.iova < cand + length) next = std::max(next, mm.iova + mm.size);
                    cand = (next + kPage - 1) & ~(kPage - 1);
                }
                if (found) {
                    iova = cand;
                    break;
                }
            }
            if (!found) return fail(ENOSPC);
        } else {
            uint64_t last;
            if (iova % align || length % align) return fail(EINVAL);
            if (__builtin_add_overflow(iova, length - 1, &last)) return fail(EOVERFLOW);
            if (io->as->overlaps(iova, length)) return fail(EEXIST);
            for (auto& r : reservedRanges)
                if (r.type != "direct-relaxable" && iova <= r.last && last >= r.start) return fail(EADDRINUSE);
        }
        Mapping m;
        m.iova = iova;
        m.size = length;
        m.read = flags & IOMMU_IOAS_MAP_READABLE;
        m.write = flags & IOMMU_IOAS_MAP_WRITEABLE;
        if (int e = fill(m)) return fail(e);
        io->as->maps[iova] = std::move(m);
        out(iova);
        return 0;
    }

    // IOMMU_IOAS_MAP_FILE of a VFIO dma-buf: iopt_alloc_dmabuf_pages() checks the range against
    // the buf's size (EINVAL), then iopt_map_dmabuf() attaches, which a revoked buf refuses with
    // ENODEV (vfio_pci_dma_buf_attach(), vfio_pci_dma_buf_iommufd_map()). The same fd maps again
    // once it is un-revoked: each MAP_FILE is a new attachment. Not a dma-buf: `buf` stays null.
    int resolveDmaBuf(int fd, uint64_t start, uint64_t length, std::shared_ptr<DmaBuf>& buf) {
        auto it = handles.find(fd);
        if (it == handles.end() || it->second.kind != KDmaBuf) return 0;
        const auto& b = it->second.dmaBuf;
        if (start > b->length || length > b->length - start) return EINVAL;
        if (b->revoked) return ENODEV;
        buf = b;
        return 0;
    }

    int mapFileBacking(Mapping& m, int fd, uint64_t start, uint64_t length, uint32_t flags) {
        // Another simulated handle (a device or iommufd fd) is no file iommufd can map.
        if (handles.count(fd)) return EINVAL;
        // A memfd (iopt_map_file_pages() accepts memfds and hugetlbfs files).
        struct stat st;
        if (::fstat(fd, &st) != 0) return EBADF;
        if (start > uint64_t(st.st_size) || length > uint64_t(st.st_size) - start) return EINVAL;
        if (start & (kPage - 1)) return EINVAL;
        int prot = PROT_READ | ((flags & IOMMU_IOAS_MAP_WRITEABLE) ? PROT_WRITE : 0);
        void* p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(start));
        if (p == MAP_FAILED) return errno;
        m.host = static_cast<uint8_t*>(p);
        m.fileMap = p;
        m.fileMapLen = length;
        return 0;
    }

    // ---------------------------------------------------------------- nesting
    bool armSmmu() const { return host.config_.hwInfoType == IOMMU_HW_INFO_TYPE_ARM_SMMUV3; }
    // The arm_smmu_device features the nesting checks read, from the ID registers.
    unsigned asidBits() const { return (host.config_.smmuIdr[0] & smmu::kIdr0Asid16) ? 16 : 8; }
    bool rangeInv() const { return host.config_.smmuIdr[3] & smmu::kIdr3Ril; }
    bool ats() const { return host.config_.smmuIdr[0] & smmu::kIdr0Ats; }
    unsigned ssidBits() const { return (host.config_.smmuIdr[1] >> smmu::kIdr1SsidSizeShift) & 0x1f; }
    bool s2fwb() const { return host.config_.smmuIdr[3] & smmu::kIdr3Fwb; }

    Result<int> hwptAlloc(Ctx& ctx, uintptr_t arg) {
        // iommufd_hwpt_alloc(): a paging HWPT over an IOAS, a nested one over a NEST_PARENT paging
        // HWPT (drivers with domain_alloc_nested: VT-d) or over a vIOMMU (SMMUv3).
        COPY_IN(iommu_hwpt_alloc, __reserved);
        if (cmd.__reserved) return fail(EOPNOTSUPP);
        if ((cmd.data_type == IOMMU_HWPT_DATA_NONE && cmd.data_len) ||
            (cmd.data_type != IOMMU_HWPT_DATA_NONE && !cmd.data_len))
            return fail(EINVAL);
        Obj* devObj = obj(ctx, cmd.dev_id, Obj::Device);
        if (!devObj) return fail(ENOENT);
        const unsigned iommu = devObj->dev->config().iommu;
        auto pt = ctx.objs.find(cmd.pt_id);
        if (pt == ctx.objs.end()) return fail(EINVAL);  // iommufd_get_object() failing is EINVAL here
        Obj o{Obj::Hwpt};
        o.iommu = iommu;
        const uint32_t faultOrPasid = IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID;
        if (pt->second.type == Obj::Ioas) {
            // iommufd_hwpt_paging_alloc() and the driver's domain_alloc_paging_flags().
            const uint32_t valid = IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING | faultOrPasid;
            if (cmd.flags & ~valid) return fail(EOPNOTSUPP);
            if (cmd.flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) return fail(EOPNOTSUPP);  // no dirty tracking here
            if ((cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) && (cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT))
                return fail(EOPNOTSUPP);
            if (cmd.data_len) return fail(EOPNOTSUPP);  // paging domains take no user data
            if (cmd.flags & IOMMU_HWPT_ALLOC_PASID) return fail(EOPNOTSUPP);  // the simulated IOMMU has no PASID
            // arm_smmu_domain_alloc_paging_flags(): NEST_PARENT needs ARM_SMMU_FEAT_NESTING (S1P + S2P).
            if ((cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT) && !host.config_.nesting) return fail(EOPNOTSUPP);
            o.ioas = cmd.pt_id;
            o.nestParent = cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT;
            if (o.nestParent) o.vmid = nextVmid++;
        } else if (pt->second.type == Obj::Hwpt && !pt->second.nested) {
            // iommufd_hwpt_nested_alloc(): the driver's domain_alloc_nested; arm-smmu-v3 has none
            // (its nested domains come from a vIOMMU).
            if ((cmd.flags & ~faultOrPasid) || armSmmu()) return fail(EOPNOTSUPP);
            if (!pt->second.nestParent) return fail(EINVAL);
            if (cmd.flags & IOMMU_HWPT_ALLOC_PASID) return fail(EOPNOTSUPP);
            if (cmd.data_type != IOMMU_HWPT_DATA_VTD_S1) return fail(EOPNOTSUPP);
            if (cmd.data_len != sizeof(iommu_hwpt_vtd_s1) || !cmd.data_uptr) return fail(EINVAL);
            o.nested = true;
            o.parent = cmd.pt_id;
        } else if (pt->second.type == Obj::Viommu) {
            Obj& vi = pt->second;
            if (vi.iommu != iommu) return fail(EINVAL);  // viommu->iommu_dev != the device's
            // iommufd_viommu_alloc_hwpt_nested(), then arm_vsmmu_alloc_domain_nested().
            if (cmd.flags & ~faultOrPasid) return fail(EOPNOTSUPP);
            if (cmd.flags) return fail(EOPNOTSUPP);
            // iommu_copy_struct_from_user(): the type, then min_len <= len <= sizeof.
            if (cmd.data_type != IOMMU_HWPT_DATA_ARM_SMMUV3) return fail(EINVAL);
            if (cmd.data_len != sizeof(iommu_hwpt_arm_smmuv3)) return fail(EINVAL);
            if (!cmd.data_uptr) return fail(EFAULT);
            iommu_hwpt_arm_smmuv3 data;
            std::memcpy(&data, reinterpret_cast<const void*>(cmd.data_uptr), sizeof data);
            smmu::Ste ste{data.ste[0], data.ste[1]};
            if (int e = validateVste(ste, o.enableAts)) return fail(e);
            o.nested = true;
            o.viommu = cmd.pt_id;
            o.parent = vi.ref1;
            o.ste = ste;
            o.iommu = vi.iommu;
        } else {
            return fail(EINVAL);
        }
        if ((cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) && !obj(ctx, cmd.fault_id, Obj::Fault)) return fail(ENOENT);
        uint32_t id = ctx.nextId++;
        ctx.objs[o.nested ? (o.viommu ? o.viommu : o.parent) : o.ioas].users++;
        ctx.objs[id] = std::move(o);
        cmd.out_hwpt_id = id;
        copyOut(arg, cmd);
        return 0;
    }

    // arm_smmu_validate_vste(): a vSTE without V becomes all zeroes (an abort); otherwise only the
    // NESTING_ALLOWED bits, Config abort/bypass/S1 and EATS 0/1 (kept aside, then cleared) pass.
    // "EIO is reserved for invalid STE data."
    static int validateVste(smmu::Ste& ste, bool& enableAts) {
        if (!(ste[0] & smmu::kSte0V)) {
            ste = {0, 0};
            return 0;
        }
        if ((ste[0] & ~smmu::kSte0NestingAllowed) || (ste[1] & ~smmu::kSte1NestingAllowed)) return EIO;
        const auto cfg = smmu::field(ste[0], smmu::kSte0Cfg);
        if (cfg != smmu::kCfgAbort && cfg != smmu::kCfgBypass && cfg != smmu::kCfgS1Trans) return EIO;
        const auto eats = smmu::field(ste[1], smmu::kSte1Eats);
        ste[1] &= ~smmu::kSte1Eats;
        if (eats != smmu::kEatsAbort && eats != smmu::kEatsTrans) return EIO;
        if (cfg == smmu::kCfgS1Trans) enableAts = eats == smmu::kEatsTrans;
        return 0;
    }

    Result<int> viommuAlloc(Ctx& ctx, uintptr_t arg) {
        // iommufd_viommu_alloc_ioctl(), arm_smmu_get_viommu_size(), arm_vsmmu_init(). __reserved and
        // the driver data are not checked for ARM_SMMUV3.
        COPY_IN(iommu_viommu_alloc, out_viommu_id);
        if (cmd.flags || cmd.type == IOMMU_VIOMMU_TYPE_DEFAULT) return fail(EOPNOTSUPP);
        Obj* devObj = obj(ctx, cmd.dev_id, Obj::Device);
        if (!devObj) return fail(ENOENT);
        if (!armSmmu()) return fail(EOPNOTSUPP);        // the driver has no viommu ops
        if (!host.config_.nesting) return fail(EOPNOTSUPP);  // !ARM_SMMU_FEAT_NESTING
        // "Must support some way to prevent the VM from bypassing the cache": CANWBS or S2FWB.
        if (!host.config_.canwbs && !s2fwb()) return fail(EOPNOTSUPP);
        if (cmd.type != IOMMU_VIOMMU_TYPE_ARM_SMMUV3) return fail(EOPNOTSUPP);  // no impl_ops (Tegra CMDQV)
        auto it = ctx.objs.find(cmd.hwpt_id);  // iommufd_get_hwpt_paging(): a paging HWPT or ENOENT
        if (it == ctx.objs.end() || it->second.type != Obj::Hwpt || it->second.nested) return fail(ENOENT);
        Obj& parent = it->second;
        if (!parent.nestParent) return fail(EINVAL);
        if (parent.iommu != devObj->dev->config().iommu) return fail(EINVAL);  // s2_parent->smmu != smmu
        uint32_t id = ctx.nextId++;
        Obj o{Obj::Viommu};
        o.ref1 = cmd.hwpt_id;
        o.ref2 = cmd.dev_id;
        o.qtype = cmd.type;
        o.iommu = parent.iommu;
        parent.users++;
        ctx.objs[id] = std::move(o);
        cmd.out_viommu_id = id;
        copyOut(arg, cmd);
        return 0;
    }

    Result<int> vdeviceAlloc(Ctx& ctx, uintptr_t arg) {
        // iommufd_vdevice_alloc_ioctl(): one vDEVICE per device (idev->vdev), virt ids unique per
        // vIOMMU (xa_insert: EEXIST), then arm_vsmmu_vdevice_init() (exactly one StreamID).
        COPY_IN(iommu_vdevice_alloc, virt_id);
        Obj* vi = obj(ctx, cmd.viommu_id, Obj::Viommu);
        if (!vi) return fail(ENOENT);
        Obj* devObj = obj(ctx, cmd.dev_id, Obj::Device);
        if (!devObj) return fail(ENOENT);
        if (devObj->dev->config().iommu != vi->iommu) return fail(EINVAL);
        for (auto& [id, o] : ctx.objs)
            if (o.type == Obj::Vdevice && o.ref2 == cmd.dev_id) return fail(EEXIST);
        for (auto& [id, o] : ctx.objs)
            if (o.type == Obj::Vdevice && o.ref1 == cmd.viommu_id && o.virtId == cmd.virt_id) return fail(EEXIST);
        if (devObj->dev->config().streamIds.size() != 1) return fail(EOPNOTSUPP);
        uint32_t id = ctx.nextId++;
        Obj o{Obj::Vdevice};
        o.ref1 = cmd.viommu_id;
        o.ref2 = cmd.dev_id;
        o.virtId = cmd.virt_id;
        vi->users++;
        ctx.objs[id] = std::move(o);
        cmd.out_vdevice_id = id;
        copyOut(arg, cmd);
        return 0;
    }

    Result<int> veventqAlloc(Ctx& ctx, uintptr_t arg) {
        // iommufd_veventq_alloc(): one queue per type per vIOMMU; depth in [1, 1 << 19].
        COPY_IN(iommu_veventq_alloc, out_veventq_fd);
        if (cmd.flags || cmd.__reserved || cmd.type == IOMMU_VEVENTQ_TYPE_DEFAULT) return fail(EOPNOTSUPP);
        if (!cmd.veventq_depth || cmd.veventq_depth > (1u << 19)) return fail(EINVAL);
        Obj* vi = obj(ctx, cmd.viommu_id, Obj::Viommu);
        if (!vi) return fail(ENOENT);
        for (auto& [id, o] : ctx.objs)
            if (o.type == Obj::Veventq && o.ref1 == cmd.viommu_id && o.qtype == cmd.type) return fail(EEXIST);
        uint32_t id = ctx.nextId++;
        Handle qh{KQueue};
        qh.ctx = &ctx;
        qh.devObj = id;
        auto fd = newHandle(qh, true);
        if (!fd) return fd;
        Obj o{Obj::Veventq};
        o.ref1 = cmd.viommu_id;
        o.qtype = cmd.type;
        o.qfd = *fd;
        o.depth = cmd.veventq_depth;
        o.users = 1;  // the fd's reference (iommufd_eventq_init())
        vi->users++;
        ctx.objs[id] = std::move(o);
        cmd.out_veventq_id = id;
        cmd.out_veventq_fd = static_cast<uint32_t>(*fd);
        copyOut(arg, cmd);
        return 0;
    }

    Result<int> hwptInvalidate(Ctx& ctx, uintptr_t arg) {
        // iommufd_hwpt_invalidate(): entry_num is written back (how many were handled) on success
        // and on failure alike.
        COPY_IN(iommu_hwpt_invalidate, __reserved);
        uint32_t done = 0;
        int rc = 0;
        auto respond = [&]() -> Result<int> {
            cmd.entry_num = done;
            copyOut(arg, cmd);
            return rc ? fail(rc) : Result<int>(0);
        };
        if (cmd.__reserved) {
            rc = EOPNOTSUPP;
            return respond();
        }
        if (cmd.entry_num && (!cmd.data_uptr || !cmd.entry_len || cmd.entry_len > kPage || cmd.entry_num > (1u << 19))) {
            rc = EINVAL;
            return respond();
        }
        auto it = ctx.objs.find(cmd.hwpt_id);
        if (it == ctx.objs.end()) {
            rc = ENOENT;
            return respond();
        }
        Obj& o = it->second;
        if (o.type == Obj::Hwpt && o.nested) {
            // cache_invalidate_user of the nested domain: VT-d has one; an SMMUv3 nested domain
            // has none (invalidations go to its vIOMMU).
            if (o.viommu || armSmmu()) {
                rc = EOPNOTSUPP;
            } else if (cmd.data_type != IOMMU_HWPT_INVALIDATE_DATA_VTD_S1) {
                rc = EINVAL;
            } else {
                o.invalidations += cmd.entry_num;
                done = cmd.entry_num;
            }
        } else if (o.type == Obj::Viommu) {
            rc = viommuInvalidate(ctx, it->first, o, cmd, done);
        } else {
            rc = EINVAL;
        }
        return respond();
    }

    // arm_vsmmu_cache_invalidate(): copy the whole array, then convert command by command and
    // issue in batches of CMDQ_BATCH_ENTRIES - 1. A refused command stops the loop; entry_num is
    // its index, and the converted commands of its batch are not issued.
    int viommuInvalidate(Ctx& ctx, uint32_t viommuId, Obj& vi, const iommu_hwpt_invalidate& cmd, uint32_t& done) {
        if (cmd.data_type != IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3) return EINVAL;
        if (!cmd.entry_num) return EINVAL;  // iommu_copy_struct_from_full_user_array()
        std::vector<smmu::Command> cmds(cmd.entry_num, smmu::Command{0, 0});
        const auto* src = reinterpret_cast<const uint8_t*>(cmd.data_uptr);
        for (uint32_t i = 0; i < cmd.entry_num; ++i) {
            // copy_struct_from_user(): a shorter entry is zero-extended, a longer one must be zero beyond.
            const uint8_t* e = src + size_t(i) * cmd.entry_len;
            std::memcpy(cmds[i].data(), e, std::min<size_t>(cmd.entry_len, sizeof(smmu::Command)));
            for (size_t b = sizeof(smmu::Command); b < cmd.entry_len; ++b)
                if (e[b]) return E2BIG;
        }
        const uint16_t vmid = ctx.objs[vi.ref1].vmid;
        size_t cur = 0, last = 0;
        const size_t end = cmds.size();
        int rc = 0;
        while (cur != end) {
            if ((rc = convertCommand(ctx, viommuId, vmid, cmds[cur]))) break;
            ++cur;
            if (cur != end && cur - last != smmu::kCmdqBatchEntries - 1) continue;
            for (size_t i = last; i < cur; ++i) {
                host.smmuCommands_.push_back({viommuId, cmds[i]});
                host.smmuCaches_.apply(cmds[i]);
            }
            last = cur;
        }
        done = static_cast<uint32_t>(cur);
        vi.invalidations += cur;
        return rc;
    }

    // arm_vsmmu_validate_user_cmd() + arm_vsmmu_convert_user_cmd().
    int convertCommand(Ctx& ctx, uint32_t viommuId, uint16_t vmid, smmu::Command& c) {
        uint64_t allowed[2] = {smmu::kCmd0Op, 0};
        auto& d = c;
        switch (smmu::opcode(c)) {
            case smmu::kOpTlbiNsnhAll:
                break;
            case smmu::kOpTlbiNhVa:
            case smmu::kOpTlbiNhVaa:
                if (smmu::opcode(c) == smmu::kOpTlbiNhVa)
                    allowed[0] |= smmu::prep(smmu::kTlbi0Asid, smmu::mask(asidBits() - 1, 0));
                if (rangeInv()) {
                    if (int e = validateRange(d)) return e;
                    allowed[0] |= smmu::kTlbi0Num | smmu::kTlbi0Scale;
                    allowed[1] |= smmu::kTlbi1Tg | smmu::kTlbi1Ttl;
                    allowed[0] &= ~smmu::prep(smmu::kTlbi0Scale, 1u << 5);  // no FEAT_DS here
                }
                allowed[0] |= smmu::kTlbi0Vmid;
                allowed[1] |= smmu::kTlbi1Leaf | smmu::kTlbi1VaMask;
                break;
            case smmu::kOpTlbiNhAsid:
            case smmu::kOpTlbiNhAll:
                if (smmu::opcode(c) == smmu::kOpTlbiNhAsid)
                    allowed[0] |= smmu::prep(smmu::kTlbi0Asid, smmu::mask(asidBits() - 1, 0));
                allowed[0] |= smmu::kTlbi0Vmid;
                break;
            case smmu::kOpAtcInv:
                if (!ats()) return EIO;
                if (smmu::field(d[1], smmu::kAtc1Size) > smmu::kAtcInvSizeAll) return EIO;
                if (ssidBits()) allowed[0] |= smmu::kCmd0Ssv | smmu::kAtc0Ssid | smmu::kAtc0Global;
                allowed[0] |= smmu::kAtc0Sid;
                allowed[1] |= smmu::kAtc1Size | smmu::kAtc1AddrMask;
                break;
            case smmu::kOpCfgiCd:
            case smmu::kOpCfgiCdAll:
                if (smmu::opcode(c) == smmu::kOpCfgiCd) {
                    if (ssidBits()) allowed[0] |= smmu::kCfgi0Ssid;
                    allowed[1] |= smmu::kCfgi1Leaf;
                }
                allowed[0] |= smmu::kCfgi0Sid;
                break;
            default:
                return EIO;
        }
        if ((d[0] & ~allowed[0]) || (d[1] & ~allowed[1])) return EIO;
        switch (smmu::opcode(c)) {
            case smmu::kOpTlbiNsnhAll:
                d[0] = smmu::kOpTlbiNhAll | smmu::prep(smmu::kTlbi0Vmid, vmid);
                d[1] = 0;
                break;
            case smmu::kOpTlbiNhVa:
            case smmu::kOpTlbiNhVaa:
            case smmu::kOpTlbiNhAll:
            case smmu::kOpTlbiNhAsid:
                d[0] = (d[0] & ~smmu::kTlbi0Vmid) | smmu::prep(smmu::kTlbi0Vmid, vmid);
                break;
            case smmu::kOpAtcInv:
            case smmu::kOpCfgiCd:
            case smmu::kOpCfgiCdAll: {  // the vSID becomes the physical StreamID
                const uint64_t vsid = smmu::field(d[0], smmu::kCfgi0Sid);
                std::optional<uint32_t> sid;
                for (auto& [id, o] : ctx.objs)
                    if (o.type == Obj::Vdevice && o.ref1 == viommuId && o.virtId == vsid)
                        sid = ctx.objs[o.ref2].dev->config().streamIds.at(0);
                if (!sid) return EIO;  // arm_vsmmu_vsid_to_sid()
                d[0] = (d[0] & ~smmu::kCfgi0Sid) | smmu::prep(smmu::kCfgi0Sid, *sid);
                break;
            }
            default:
                return EIO;
        }
        return 0;
    }

    // arm_vsmmu_validate_range(): the Reserved range encodings.
    static int validateRange(const smmu::Command& d) {
        const bool range = d[0] & (smmu::kTlbi0Num | smmu::kTlbi0Scale);
        const auto ttl = smmu::field(d[1], smmu::kTlbi1Ttl);
        const auto tg = smmu::field(d[1], smmu::kTlbi1Tg);
        if (!tg) return (range || ttl) ? EIO : 0;
        if (tg == 2 && ttl == 1) return EIO;  // needs SMMU_IDR5.DS, which the simulated SMMU lacks
        if (!range && !ttl) return EIO;
        return 0;
    }

    // iommufd_viommu_report_event() + iommufd_vevent_handler(): a full queue turns the event into
    // the lost_events_header (moved to the tail, with this event's sequence); a normal event
    // appended after it removes it. Every report takes a sequence number.
    SmmuEventFate reportEvent(Obj& q, const smmu::Event& record) {
        SmmuEventFate fate;
        if (q.events.size() == q.depth) {
            q.lostHeader = true;
            q.lostSequence = q.sequence;
            fate = SmmuEventFate::Lost;
        } else {
            q.lostHeader = false;
            q.events.push_back({q.sequence, record});
            fate = SmmuEventFate::Forwarded;
        }
        q.sequence = (q.sequence + 1) & INT_MAX;
        uint64_t one = 1;
        if (::write(q.qfd, &one, sizeof one) != sizeof one) log::get("hostsim").warn("vEVENTQ eventfd write failed");
        return fate;
    }

    // iommufd_veventq_fops_read(): whole records only; at least a header's room; a normal vEVENT
    // that does not fit the first slot is EINVAL; nothing queued reads 0.
    Result<size_t> veventqRead(Obj& q, uint8_t* out, size_t count) {
        constexpr size_t kHdr = sizeof(iommufd_vevent_header), kRec = sizeof(smmu::Event);
        if (count < kHdr) return Error("read", EINVAL);
        size_t done = 0;
        while (!q.events.empty() || q.lostHeader) {
            if (count - done < kHdr) break;
            iommufd_vevent_header h{};
            if (!q.events.empty()) {
                if (kHdr + kRec > count - done) {
                    if (done == 0) return Error("read", EINVAL);
                    break;
                }
                h.sequence = q.events.front().sequence;
                std::memcpy(out + done, &h, kHdr);
                std::memcpy(out + done + kHdr, q.events.front().record.data(), kRec);
                done += kHdr + kRec;
                q.events.pop_front();
            } else {
                h.flags = IOMMU_VEVENTQ_FLAG_LOST_EVENTS;
                h.sequence = q.lostSequence;
                std::memcpy(out + done, &h, kHdr);
                done += kHdr;
                q.lostHeader = false;
            }
        }
        if (q.events.empty() && !q.lostHeader) {
            uint64_t v;
            (void)!::read(q.qfd, &v, sizeof v);  // drained: the fd stops polling readable
        }
        return done;
    }

    Obj* walkedDomain(SimDevice& dev, Ctx** ctxOut, uint16_t* vmid);

    Obj* deviceObjOf(const SimDevice& d, Ctx** ctxOut) {
        for (auto& ctx : ctxs)
            for (auto& [id, o] : ctx.objs)
                if (o.type == Obj::Device && o.dev == &d) {
                    if (ctxOut) *ctxOut = &ctx;
                    return &o;
                }
        return nullptr;
    }

    // A context goes once its fd is closed and neither a bound device nor an open queue fd holds it.
    bool ctxHeld(const Ctx* ctx) const {
        for (auto& [id, o] : ctx->objs)
            if (o.type == Obj::Device) return true;
        for (auto& [fd, h] : handles)
            if (h.kind == KQueue && h.ctx == ctx) return true;
        return false;
    }
#undef COPY_IN

    // ---------------------------------------------------------------- close
    void close(int fd) {
        auto it = handles.find(fd);
        Handle h = it->second;
        handles.erase(it);
        switch (h.kind) {
            case KContainer:
                host.dmaDroppedByClose_ += h.container->as.maps.size();
                h.container->fdOpen = false;
                maybeFreeContainer(h.container);
                break;
            case KGroup: {
                // vfio_group_fops_release(): the group leaves its container (device fds hold the
                // group, so it stays attached until they are closed too).
                Group& g = groups[h.group];
                g.fd = -1;
                if (g.container && !g.deviceFds) detachGroup(g, h.group);
                break;
            }
            case KDevice: {
                SimDevice& d = *h.dev;
                const bool opened = !h.cdev || h.ctx;  // a cdev never bound was never opened
                if (h.cdev) unbind(h);
                if (opened && --d.openCount_ == 0) {
                    // vfio_pci_core_close_device(): vfio_pci_dma_buf_cleanup() revokes the dma-bufs
                    // for good, then vfio_pci_core_disable(), then the bus reset the kernel may
                    // still owe the bus.
                    cleanupDmaBufs(d);
                    d.disable();
                    tryBusResetAfterClose(d);
                }
                if (!h.cdev) {
                    Group& g = groups[h.group];
                    --g.deviceFds;
                    if (g.fd < 0 && g.container && !g.deviceFds) detachGroup(g, h.group);
                }
                break;
            }
            case KIommufd: {
                Ctx* ctx = h.ctx;
                for (auto& [id, o] : ctx->objs)
                    if (o.as) host.dmaDroppedByClose_ += o.as->maps.size();
                ctx->fdOpen = false;
                // iommufd_fops_release() destroys every object once nothing else holds the context.
                maybeFreeCtx(ctx);
                break;
            }
            case KQueue: {
                // iommufd_eventq_fops_release(): the fd's reference on the vEVENTQ goes.
                if (!h.ctx) break;
                auto o = h.ctx->objs.find(h.devObj);
                if (o != h.ctx->objs.end() && o->second.type == Obj::Veventq) {
                    o->second.users--;
                    o->second.qfd = -1;
                }
                maybeFreeCtx(h.ctx);
                break;
            }
            default:
                break;
        }
    }
};

// ======================================================================== SimHost

SimHost::SimHost(SimHostConfig config) : config_(std::move(config)), impl_(std::make_unique<Impl>(*this)) {
    SimulatedHostScope scope;
    char tmpl[] = "/tmp/conduit-hostsim-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("hostsim: mkdtemp");
    root_ = tmpl;
    fs::create_directories(root_ / "sys/bus/pci/devices");
    fs::create_directories(root_ / "sys/kernel/iommu_groups");
    fs::create_directories(root_ / "dev");
}

SimHost::~SimHost() {
    SimulatedHostScope scope;
    if (HostCallObserver* o = hostCallObserver())
        o->hostDestroyed({fds_.size(), mmaps_.size(), dmaMappingCount(), iommufdObjectCount(), dmaDroppedByClose_});
    for (auto& [fd, kind] : fds_) ::close(fd);
    for (auto& [p, len] : mmaps_) ::munmap(p, len);
    devices_.clear();
    impl_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
}

SimDevice& SimHost::addDevice(SimDeviceConfig config) {
    SimulatedHostScope scope;
    unsigned cdev = static_cast<unsigned>(devices_.size());
    devices_.push_back(std::make_unique<SimDevice>(*this, std::move(config), cdev));
    writeSysfs(*devices_.back());
    return *devices_.back();
}

void SimHost::addGroupPeer(const std::string& bdf, unsigned group, const std::string& driver) {
    peers_.emplace_back(bdf, group, driver);
    auto dir = root_ / "sys/bus/pci/devices" / bdf;
    fs::create_directories(dir);
    std::ofstream(dir / "vendor") << "0x8086\n";
    std::ofstream(dir / "device") << "0x10d3\n";
    std::ofstream(dir / "class") << "0x020000\n";
    std::error_code ec;
    fs::remove(dir / "iommu_group", ec);
    fs::create_symlink(fs::path("../../../../kernel/iommu_groups") / std::to_string(group), dir / "iommu_group");
    fs::remove(dir / "driver", ec);
    if (!driver.empty()) {
        fs::create_directories(root_ / "sys/bus/pci/drivers" / driver);
        fs::create_symlink(fs::path("../../../../bus/pci/drivers") / driver, dir / "driver");
    }
    writeGroupSysfs(group);
}

void SimHost::writeSysfs(const SimDevice& dev) {
    auto dir = root_ / "sys/bus/pci/devices" / dev.bdf();
    fs::create_directories(dir);
    std::ofstream(dir / "vendor") << fmt::format("{:#06x}\n", dev.config().vendor);
    std::ofstream(dir / "device") << fmt::format("{:#06x}\n", dev.config().device);
    std::ofstream(dir / "class") << fmt::format("{:#08x}\n", dev.config().classCode);
    std::error_code ec;
    fs::remove(dir / "iommu_group", ec);
    fs::create_symlink(fs::path("../../../../kernel/iommu_groups") / std::to_string(dev.group()), dir / "iommu_group");
    fs::remove(dir / "driver", ec);
    fs::remove_all(dir / "vfio-dev", ec);
    if (!dev.config().driver.empty()) {
        fs::create_directories(root_ / "sys/bus/pci/drivers" / dev.config().driver);
        fs::create_symlink(fs::path("../../../../bus/pci/drivers") / dev.config().driver, dir / "driver");
    }
    if (config_.cdev && dev.config().driver == "vfio-pci")
        fs::create_directories(dir / "vfio-dev" / fmt::format("vfio{}", dev.cdevIndex()));
    writeGroupSysfs(dev.group());
}

std::vector<ReservedRange> SimHost::reservedFor(unsigned group) const {
    auto it = config_.reservedPerGroup.find(group);
    return it != config_.reservedPerGroup.end() ? it->second : config_.reserved;
}

void SimHost::writeGroupSysfs(unsigned group) {
    auto gdir = root_ / "sys/kernel/iommu_groups" / std::to_string(group);
    fs::create_directories(gdir / "devices");
    std::ofstream out(gdir / "reserved_regions");
    for (auto& r : reservedFor(group)) out << fmt::format("0x{:016x} 0x{:016x} {}\n", r.start, r.last, r.type);
    auto link = [&](const std::string& bdf) {
        std::error_code ec;
        fs::remove(gdir / "devices" / bdf, ec);
        fs::create_symlink(fs::path("../../../../bus/pci/devices") / bdf, gdir / "devices" / bdf);
    };
    for (auto& d : devices_)
        if (d->group() == group) link(d->bdf());
    for (auto& [bdf, g, drv] : peers_)
        if (g == group) link(bdf);
}

bool SimHost::groupViable(unsigned group) const {
    auto ok = [](const std::string& drv) {
        return drv.empty() || drv == "vfio-pci" || drv == "pci-stub" || drv == "pcieport";
    };
    for (auto& d : devices_)
        if (d->group() == group && !ok(d->config().driver)) return false;
    for (auto& [bdf, g, drv] : peers_)
        if (g == group && !ok(drv)) return false;
    return true;
}

SimDevice* SimHost::device(const std::string& bdf) {
    for (auto& d : devices_)
        if (d->bdf() == bdf) return d.get();
    return nullptr;
}

void SimHost::failIoctl(unsigned long request, int err, unsigned nth) { rules_.push_back({request, err, nth}); }
void SimHost::failNthIoctl(unsigned n, int err) {
    failNth_ = n;
    failNthErr_ = err;
}
void SimHost::clearInjectedFaults() {
    rules_.clear();
    failNth_ = 0;
}

size_t SimHost::dmaMappingCount() const {
    size_t n = 0;
    for (auto& c : impl_->containers) n += c.as.maps.size();
    for (auto& ctx : impl_->ctxs)
        for (auto& [id, o] : ctx.objs)
            if (o.as) n += o.as->maps.size();
    return n;
}

std::vector<SimHost::DmaMappingView> SimHost::dmaMappings() const {
    std::vector<DmaMappingView> out;
    auto add = [&](const AddressSpace& as) {
        for (auto& [iova, m] : as.maps)
            if (!m.revoked) out.push_back({m.iova, m.size, m.host, m.read, m.write});
    };
    for (auto& c : impl_->containers) add(c.as);
    for (auto& ctx : impl_->ctxs)
        for (auto& [id, o] : ctx.objs)
            if (o.as) add(*o.as);
    return out;
}

size_t SimHost::iommufdObjectCount() const {
    size_t n = 0;
    for (auto& ctx : impl_->ctxs) n += ctx.objs.size();
    return n;
}

std::vector<std::string> SimHost::iommufdObjectKinds() const {
    std::vector<std::string> out;
    for (auto& ctx : impl_->ctxs) {
        for (auto& [id, o] : ctx.objs) {
            switch (o.type) {
                case Impl::Obj::Ioas: out.push_back("ioas"); break;
                case Impl::Obj::Device: out.push_back("device"); break;
                case Impl::Obj::Hwpt:
                    if (o.nestParent) out.push_back("nest-parent");
                    else if (!o.nested) out.push_back("hwpt");
                    else if (smmu::steConfig(o.ste) == smmu::kCfgS1Trans) out.push_back("nested-s1");
                    else if (smmu::steConfig(o.ste) == smmu::kCfgBypass) out.push_back("nested-bypass");
                    else out.push_back("nested-abort");
                    break;
                case Impl::Obj::Viommu: out.push_back("viommu"); break;
                case Impl::Obj::Vdevice: out.push_back("vdevice"); break;
                case Impl::Obj::Veventq: out.push_back("veventq"); break;
                case Impl::Obj::Fault: out.push_back("fault"); break;
            }
        }
    }
    return out;
}

std::string SimHost::ioctlNameFor(int fd, unsigned long req) const {
    auto it = impl_->handles.find(fd);
    int kind = it == impl_->handles.end() ? 0 : it->second.kind;
    if (kind == KContainer) {
        switch (req) {
            case VFIO_GET_API_VERSION: return "VFIO_GET_API_VERSION";
            case VFIO_CHECK_EXTENSION: return "VFIO_CHECK_EXTENSION";
            case VFIO_SET_IOMMU: return "VFIO_SET_IOMMU";
            case VFIO_IOMMU_GET_INFO: return "VFIO_IOMMU_GET_INFO";
            case VFIO_IOMMU_MAP_DMA: return "VFIO_IOMMU_MAP_DMA";
            case VFIO_IOMMU_UNMAP_DMA: return "VFIO_IOMMU_UNMAP_DMA";
        }
    } else if (kind == KGroup) {
        switch (req) {
            case VFIO_GROUP_GET_STATUS: return "VFIO_GROUP_GET_STATUS";
            case VFIO_GROUP_SET_CONTAINER: return "VFIO_GROUP_SET_CONTAINER";
            case VFIO_GROUP_UNSET_CONTAINER: return "VFIO_GROUP_UNSET_CONTAINER";
            case VFIO_GROUP_GET_DEVICE_FD: return "VFIO_GROUP_GET_DEVICE_FD";
        }
    } else if (kind == KDevice) {
        switch (req) {
            case VFIO_DEVICE_GET_INFO: return "VFIO_DEVICE_GET_INFO";
            case VFIO_DEVICE_GET_REGION_INFO: return "VFIO_DEVICE_GET_REGION_INFO";
            case VFIO_DEVICE_GET_IRQ_INFO: return "VFIO_DEVICE_GET_IRQ_INFO";
            case VFIO_DEVICE_SET_IRQS: return "VFIO_DEVICE_SET_IRQS";
            case VFIO_DEVICE_RESET: return "VFIO_DEVICE_RESET";
            case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: return "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO";
            case VFIO_DEVICE_PCI_HOT_RESET: return "VFIO_DEVICE_PCI_HOT_RESET";
            case VFIO_DEVICE_FEATURE: return "VFIO_DEVICE_FEATURE";
            case VFIO_DEVICE_BIND_IOMMUFD: return "VFIO_DEVICE_BIND_IOMMUFD";
            case VFIO_DEVICE_ATTACH_IOMMUFD_PT: return "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
            case VFIO_DEVICE_DETACH_IOMMUFD_PT: return "VFIO_DEVICE_DETACH_IOMMUFD_PT";
        }
    } else if (kind == KIommufd) {
        switch (req) {
            case IOMMU_DESTROY: return "IOMMU_DESTROY";
            case IOMMU_IOAS_ALLOC: return "IOMMU_IOAS_ALLOC";
            case IOMMU_IOAS_IOVA_RANGES: return "IOMMU_IOAS_IOVA_RANGES";
            case IOMMU_IOAS_MAP: return "IOMMU_IOAS_MAP";
            case IOMMU_IOAS_MAP_FILE: return "IOMMU_IOAS_MAP_FILE";
            case IOMMU_IOAS_UNMAP: return "IOMMU_IOAS_UNMAP";
            case IOMMU_HWPT_ALLOC: return "IOMMU_HWPT_ALLOC";
            case IOMMU_GET_HW_INFO: return "IOMMU_GET_HW_INFO";
            case IOMMU_HWPT_INVALIDATE: return "IOMMU_HWPT_INVALIDATE";
            case IOMMU_VIOMMU_ALLOC: return "IOMMU_VIOMMU_ALLOC";
            case IOMMU_VDEVICE_ALLOC: return "IOMMU_VDEVICE_ALLOC";
            case IOMMU_VEVENTQ_ALLOC: return "IOMMU_VEVENTQ_ALLOC";
            case IOMMU_FAULT_QUEUE_ALLOC: return "IOMMU_FAULT_QUEUE_ALLOC";
        }
    }
    return "?";
}

int SimHost::observe(const std::string& call) {
    HostCallObserver* o = hostCallObserver();
    return o ? o->beforeCall(call) : 0;
}

void SimHost::pump() {
    SimulatedHostScope scope;
    for (auto& d : devices_) {
        int fd = d->intx_.unmaskFd;
        if (fd < 0) continue;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
            uint64_t v;
            if (::read(fd, &v, sizeof v) == sizeof v) d->intxUnmask();  // vfio_intx virqfd unmask
        }
    }
}

// ---------------------------------------------------------------- HostInterface

Result<int> SimHost::open(const std::string& path, int) {
    SimulatedHostScope scope;
    if (int err = observe("open " + path)) return Error("open " + path, err);
    pump();
    const auto dev = paths().dev;
    Impl::Handle h{KContainer};
    if (path == (dev / "vfio/vfio").string()) {
        impl_->containers.emplace_back();
        h.container = &impl_->containers.back();
        auto fd = impl_->newHandle(h);
        if (!fd) impl_->containers.pop_back();
        return fd;
    }
    if (path == (dev / "iommu").string()) {
        if (!config_.iommufd) return Error("open " + path, ENOENT);
        impl_->ctxs.emplace_back();
        h.kind = KIommufd;
        h.ctx = &impl_->ctxs.back();
        auto fd = impl_->newHandle(h);
        if (!fd) impl_->ctxs.pop_back();
        return fd;
    }
    const std::string cdevPrefix = (dev / "vfio/devices/vfio").string();
    if (path.rfind(cdevPrefix, 0) == 0) {
        if (!config_.cdev) return Error("open " + path, ENOENT);
        unsigned index = static_cast<unsigned>(std::stoul(path.substr(cdevPrefix.size())));
        for (auto& d : devices_) {
            if (d->cdevIndex() != index || d->config().driver != "vfio-pci") continue;
            h.kind = KDevice;
            h.dev = d.get();
            h.cdev = true;
            return impl_->newHandle(h);  // opened (enabled) at VFIO_DEVICE_BIND_IOMMUFD
        }
        return Error("open " + path, ENOENT);
    }
    const std::string groupPrefix = (dev / "vfio/").string();
    if (path.rfind(groupPrefix, 0) == 0) {
        std::string rest = path.substr(groupPrefix.size());
        if (rest.empty() || rest.find_first_not_of("0123456789") != std::string::npos)
            return Error("open " + path, ENOENT);
        unsigned group = static_cast<unsigned>(std::stoul(rest));
        // /dev/vfio/N exists once a member is bound to vfio-pci (vfio_group_find_or_alloc()).
        bool exists = false;
        for (auto& d : devices_) exists = exists || (d->group() == group && d->config().driver == "vfio-pci");
        if (!exists) return Error("open " + path, ENOENT);
        auto& g = impl_->groups[group];
        if (g.fd >= 0) return Error("open " + path, EBUSY);  // vfio_group_fops_open(): one opener at a time
        h.kind = KGroup;
        h.group = group;
        auto fd = impl_->newHandle(h);
        if (fd) g.fd = *fd;
        return fd;
    }
    return Error("open " + path, ENOENT);
}

void SimHost::close(int fd) {
    SimulatedHostScope scope;
    auto it = fds_.find(fd);
    if (it == fds_.end()) {
        log::get("hostsim").error("close of fd {} that the simulated host never gave out", fd);
        return;
    }
    if (impl_->handles.count(fd)) impl_->close(fd);
    fds_.erase(it);
    ::close(fd);
}

Result<int> SimHost::ioctl(int fd, unsigned long request, uintptr_t arg) {
    SimulatedHostScope scope;
    if (int err = observe(ioctlNameFor(fd, request))) return Error("injected", err);
    pump();
    ++ioctlCount_;
    // Fault injection first: a refused call has no side effect.
    int injectErr = 0;
    if (failNth_ && ioctlCount_ == failNth_) injectErr = failNthErr_;
    for (auto& r : rules_) {
        if (r.request != request) continue;
        ++r.seen;
        if (!injectErr && (r.nth == 0 || r.seen == r.nth)) injectErr = r.err;
    }
    if (injectErr) {
        injected_.push_back({request, ioctlNameFor(fd, request)});
        return Error("injected", injectErr);
    }
    auto it = impl_->handles.find(fd);
    if (it == impl_->handles.end()) return Error("ioctl", EBADF);
    switch (it->second.kind) {
        case KContainer: return impl_->containerIoctl(it->second, request, arg);
        case KGroup: return impl_->groupIoctl(it->second, request, arg);
        case KDevice: return impl_->deviceIoctl(it->second, request, arg);
        case KIommufd: return impl_->iommufdIoctl(it->second, request, arg);
        default: return Error("ioctl", ENOTTY);
    }
}

Result<void*> SimHost::mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
    SimulatedHostScope scope;
    if (int err = observe("mmap")) return Error("mmap", err);
    pump();
    auto it = impl_->handles.find(fd);
    if (it == impl_->handles.end()) return Error("mmap", EBADF);
    auto& h = it->second;
    if (h.kind != KDevice) return Error("mmap", ENODEV);
    if (h.cdev && !h.ctx) return Error("mmap", EINVAL);
    // vfio_pci_core_mmap(): BARs only, MAP_SHARED, within the BAR, region must be mmappable.
    uint64_t index = uint64_t(offset) >> kOffsetShift, off = uint64_t(offset) & kOffsetMask;
    if (index > VFIO_PCI_BAR5_REGION_INDEX || !(flags & MAP_SHARED) || !impl_->mmappable(*h.dev, unsigned(index)))
        return Error("mmap", EINVAL);
    // mmap(2) takes a page-aligned offset and rounds the length up to pages; vfio_pci_core_mmap()
    // allows up to PAGE_ALIGN(BAR size), so a sub-page BAR maps its whole page (barMem_ holds that).
    auto& bar = h.dev->barMem_[index];
    const uint64_t len = (uint64_t(length) + kPage - 1) & ~(kPage - 1);
    if ((off & (kPage - 1)) || !length || off > bar.size || len > bar.size - off) return Error("mmap", EINVAL);
    auto sparse = impl_->sparseOf(*h.dev, unsigned(index));
    if (!sparse.empty()) {
        // The sim is stricter than the kernel: mmap() must stay inside one advertised area.
        bool inside = false;
        for (auto& a : sparse) inside = inside || (off >= a.offset && off + length <= a.offset + a.size);
        if (!inside) return Error("mmap outside the sparse mmap areas", EINVAL);
    }
    void* p = ::mmap(addr, len, prot, flags, bar.fd, static_cast<off_t>(off));
    if (p == MAP_FAILED) return Error::fromErrno("mmap");
    mmaps_[p] = len;
    return p;
}

void SimHost::munmap(void* addr, size_t length) {
    SimulatedHostScope scope;
    auto it = mmaps_.find(addr);
    if (it == mmaps_.end()) {
        log::get("hostsim").error("munmap of {} that the simulated host never mapped", addr);
        return;
    }
    mmaps_.erase(it);
    ::munmap(addr, length);
}

Result<size_t> SimHost::pread(int fd, void* buf, size_t count, off_t offset) {
    SimulatedHostScope scope;
    if (int err = observe("pread")) return Error("pread", err);
    pump();
    auto it = impl_->handles.find(fd);
    if (it == impl_->handles.end()) return Error("pread", EBADF);
    auto& h = it->second;
    if (h.kind != KDevice || (h.cdev && !h.ctx)) return Error("pread", EINVAL);
    SimDevice& d = *h.dev;
    uint64_t index = uint64_t(offset) >> kOffsetShift, off = uint64_t(offset) & kOffsetMask;
    auto* out = static_cast<uint8_t*>(buf);
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
        // vfio_pci_config_rw(): any size, split into naturally aligned pieces.
        if (off >= d.configSize()) return size_t(0);
        count = std::min<size_t>(count, d.configSize() - off);
        for (size_t i = 0; i < count; ++i) out[i] = static_cast<uint8_t>(d.cfgRead(off + i, 1));
        return count;
    }
    if (index == VFIO_PCI_ROM_REGION_INDEX) {
        // vfio_pci_bar_rw() for the ROM: within the ROM BAR; past the images
        // (pci_get_rom_size()) reads fill with 0xff; no image: pci_map_rom() fails, ENOMEM.
        const uint64_t end = d.config_.romBarSize;
        if (!end || off >= end) return Error("pread", EINVAL);
        const uint64_t image = d.romImageSize();
        if (!image) return Error("pread: no ROM image", ENOMEM);
        count = std::min<size_t>(count, end - off);
        for (size_t i = 0; i < count; ++i)
            out[i] = off + i < image && off + i < d.config_.rom.size() ? d.config_.rom[off + i] : 0xff;
        return count;
    }
    if (index > VFIO_PCI_BAR5_REGION_INDEX) return Error("pread", EINVAL);
    auto& bar = d.config_.bars[index];
    if (bar.kind == BarKind::None || off >= bar.size) return Error("pread", EINVAL);
    count = std::min<size_t>(count, bar.size - off);
    if (bar.kind == BarKind::Memory) {
        std::memcpy(out, d.barMem_[index].ptr + off, count);
        return count;
    }
    if (count == 1 || count == 2 || count == 4 || count == 8) {
        uint64_t v = d.regRead(off, unsigned(count));
        std::memcpy(out, &v, count);
        return count;
    }
    return Error("pread: register BAR access must be 1, 2, 4 or 8 bytes", EINVAL);
}

Result<size_t> SimHost::pwrite(int fd, const void* buf, size_t count, off_t offset) {
    SimulatedHostScope scope;
    if (int err = observe("pwrite")) return Error("pwrite", err);
    pump();
    auto it = impl_->handles.find(fd);
    if (it == impl_->handles.end()) return Error("pwrite", EBADF);
    auto& h = it->second;
    if (h.kind != KDevice || (h.cdev && !h.ctx)) return Error("pwrite", EINVAL);
    SimDevice& d = *h.dev;
    uint64_t index = uint64_t(offset) >> kOffsetShift, off = uint64_t(offset) & kOffsetMask;
    auto* in = static_cast<const uint8_t*>(buf);
    if (index == VFIO_PCI_ROM_REGION_INDEX) return Error("pwrite: the ROM is read-only", EINVAL);  // vfio_pci_rw()
    if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
        if (off >= d.configSize()) return size_t(0);
        count = std::min<size_t>(count, d.configSize() - off);
        if ((count == 2 || count == 4) && off % count == 0) {
            uint32_t v = 0;
            std::memcpy(&v, in, count);
            impl_->configWrite(d, off, v, unsigned(count));
        } else {
            for (size_t i = 0; i < count; ++i) impl_->configWrite(d, off + i, in[i], 1);
        }
        return count;
    }
    if (index > VFIO_PCI_BAR5_REGION_INDEX) return Error("pwrite", EINVAL);
    auto& bar = d.config_.bars[index];
    if (bar.kind == BarKind::None || off >= bar.size) return Error("pwrite", EINVAL);
    count = std::min<size_t>(count, bar.size - off);
    if (bar.kind == BarKind::Memory) {
        std::memcpy(d.barMem_[index].ptr + off, in, count);
        return count;
    }
    if (count == 1 || count == 2 || count == 4 || count == 8) {
        uint64_t v = 0;
        std::memcpy(&v, in, count);
        d.regWrite(off, v, unsigned(count));
        return count;
    }
    return Error("pwrite: register BAR access must be 1, 2, 4 or 8 bytes", EINVAL);
}

Result<size_t> SimHost::read(int fd, void* buf, size_t count) {
    SimulatedHostScope scope;
    if (int err = observe("read")) return Error("read", err);
    auto it = impl_->handles.find(fd);
    if (it == impl_->handles.end()) return Error("read", EBADF);
    auto& h = it->second;
    if (h.kind != KQueue || !h.ctx) return Error("read", EINVAL);
    auto o = h.ctx->objs.find(h.devObj);
    if (o == h.ctx->objs.end() || o->second.type != Impl::Obj::Veventq) return Error("read", EINVAL);
    return impl_->veventqRead(o->second, static_cast<uint8_t*>(buf), count);
}

SmmuEventFate SimHost::raiseSmmuEvent(SimDevice& dev, const smmu::Event& record, bool stage2) {
    SimulatedHostScope scope;
    // arm_smmu_handle_evt(): forwarded only for a vmaster and a stage-1 fault; the SID becomes
    // the vSID (arm_vmaster_report_event()).
    Impl::Ctx* ctx = nullptr;
    Impl::Obj* d = impl_->deviceObjOf(dev, &ctx);
    auto logged = [&](SmmuEventFate fate) {
        smmuEvents_.push_back({dev.bdf(), record, stage2, fate});
        return fate;
    };
    if (!d || !d->vmasterVsid || stage2) return logged(SmmuEventFate::HostOnly);
    for (auto& [id, o] : ctx->objs) {
        if (o.type != Impl::Obj::Veventq || o.ref1 != d->vmasterViommu || o.qtype != IOMMU_VEVENTQ_TYPE_ARM_SMMUV3)
            continue;
        smmu::Event e = record;
        e[0] = (e[0] & ~smmu::kEvt0Sid) | smmu::prep(smmu::kEvt0Sid, *d->vmasterVsid);
        return logged(impl_->reportEvent(o, e));
    }
    return logged(SmmuEventFate::NoQueue);
}

std::optional<SimNestedDomain> SimHost::nestedDomainOf(const SimDevice& dev) const {
    Impl::Ctx* ctx = nullptr;
    Impl::Obj* d = impl_->deviceObjOf(dev, &ctx);
    if (!d || !d->attached) return std::nullopt;
    auto it = ctx->objs.find(d->attached);
    if (it == ctx->objs.end() || !it->second.viommu) return std::nullopt;
    SimNestedDomain out;
    out.hwpt = it->first;
    out.viommu = it->second.viommu;
    out.parent = it->second.parent;
    out.ste = it->second.ste;
    out.vsid = d->vmasterVsid;
    return out;
}

Result<int> SimHost::eventfd(unsigned initval, int flags) {
    SimulatedHostScope scope;
    if (int err = observe("eventfd")) return Error("eventfd", err);
    int fd = ::eventfd(initval, flags);
    if (fd < 0) return Error::fromErrno("eventfd");
    fds_[fd] = KEventfd;
    return fd;
}

Result<std::string> SimHost::readFile(const fs::path& path) { return vfio::realHost().readFile(path); }
Result<fs::path> SimHost::readLink(const fs::path& path) { return vfio::realHost().readLink(path); }
Result<std::vector<std::string>> SimHost::listDirectory(const fs::path& path) {
    return vfio::realHost().listDirectory(path);
}
bool SimHost::exists(const fs::path& path) {
    const auto dev = paths().dev;
    if (path == dev / "iommu") return config_.iommufd;
    if (path == dev / "vfio/devices") return config_.cdev;
    if (path == dev / "vfio/vfio") return true;
    return vfio::realHost().exists(path);
}

// ---------------------------------------------------------------- the simulated IOMMU

bool SimHost::dmaRead(SimDevice& dev, uint64_t iova, void* out, size_t size, std::optional<uint32_t> pasid) {
    return dmaTransfer(dev, iova, static_cast<uint8_t*>(out), size, false, pasid);
}

bool SimHost::dmaWrite(SimDevice& dev, uint64_t iova, const void* in, size_t size, std::optional<uint32_t> pasid) {
    // dmaTransfer() only reads `buf` for a write.
    return dmaTransfer(dev, iova, static_cast<uint8_t*>(const_cast<void*>(in)), size, true, pasid);
}

namespace {
// The nested SMMU's view of stage 2: the IOAS the NEST_PARENT HWPT holds.
smmuwalk::Stage2 stage2Of(const AddressSpace* as) {
    return [as](uint64_t ipa) -> std::optional<smmuwalk::Stage2Hit> {
        const Mapping* m = as ? as->find(ipa) : nullptr;
        if (!m || m->revoked) return std::nullopt;
        return smmuwalk::Stage2Hit{m->host + (ipa - m->iova), m->iova + m->size - ipa, m->read, m->write};
    };
}
}  // namespace

// The vIOMMU nested HWPT `dev` is attached to, when the walk applies to it (SMMUv3 host with
// stage1Walk, vSTE bypass or S1: bypass too, for its C_BAD_SUBSTREAMID), else null.
SimHost::Impl::Obj* SimHost::Impl::walkedDomain(SimDevice& dev, Ctx** ctxOut, uint16_t* vmid) {
    if (!host.config_.stage1Walk) return nullptr;
    Ctx* ctx = nullptr;
    Obj* d = deviceObjOf(dev, &ctx);
    if (!d || !d->attached) return nullptr;
    auto it = ctx->objs.find(d->attached);
    if (it == ctx->objs.end() || !it->second.viommu) return nullptr;
    const auto cfg = smmu::steConfig(it->second.ste);
    if (cfg != smmu::kCfgS1Trans && cfg != smmu::kCfgBypass) return nullptr;
    if (ctxOut) *ctxOut = ctx;
    if (vmid) {
        auto vi = ctx->objs.find(it->second.viommu);
        *vmid = vi != ctx->objs.end() && ctx->objs.count(vi->second.ref1) ? ctx->objs[vi->second.ref1].vmid : 0;
    }
    return &it->second;
}

std::optional<smmuwalk::Result> SimHost::smmuTranslate(const SimDevice& cdev, uint64_t iova, bool write,
                                                       std::optional<uint32_t> pasid) {
    SimulatedHostScope scope;
    auto& dev = const_cast<SimDevice&>(cdev);
    Impl::Ctx* ctx = nullptr;
    Impl::Obj* hwpt = impl_->walkedDomain(dev, &ctx, nullptr);
    if (!hwpt) return std::nullopt;
    const auto caps = smmuwalk::Caps::fromIdr(config_.smmuIdr.data());
    const smmuwalk::Transaction t{dev.config().streamIds.at(0), iova, write, pasid, false};
    return smmuwalk::translate(hwpt->ste, t, caps, stage2Of(impl_->ioasOfHwpt(*ctx, hwpt->parent)));
}

bool SimHost::msiWriteReaches(SimDevice& dev) {
    if (!config_.smmuMsiThroughStage1 || config_.hwInfoType != IOMMU_HW_INFO_TYPE_ARM_SMMUV3) return true;
    Impl::Ctx* ctx = nullptr;
    uint16_t vmid = 0;
    Impl::Obj* hwpt = impl_->walkedDomain(dev, &ctx, &vmid);
    if (!hwpt) return true;
    std::optional<ReservedRange> msi;
    for (auto& r : reservedFor(dev.group()))
        if (r.type == "msi") {
            msi = r;
            break;
        }
    if (!msi) return true;
    const uint64_t doorbell = msi->start + 0x40;
    // Stage 2 of the parent holds the doorbell page the kernel mapped at the SW_MSI IOVA
    // (iommu_dma_get_msi_page()), besides the IOAS.
    static uint8_t doorbellPage[kPage];
    const auto ioas = stage2Of(impl_->ioasOfHwpt(*ctx, hwpt->parent));
    auto s2 = [&](uint64_t ipa) -> std::optional<smmuwalk::Stage2Hit> {
        if (ipa >= msi->start && ipa <= msi->last)
            return smmuwalk::Stage2Hit{doorbellPage + (ipa & (kPage - 1)), kPage - (ipa & (kPage - 1)), false, true};
        return ioas(ipa);
    };
    const auto caps = smmuwalk::Caps::fromIdr(config_.smmuIdr.data());
    const smmuwalk::Transaction t{dev.config().streamIds.at(0), doorbell, true, std::nullopt, false};
    const auto r = smmuwalk::translate(hwpt->ste, t, caps, s2, config_.smmuCaches ? &smmuCaches_ : nullptr, vmid);
    if (r.kind == smmuwalk::Result::Kind::Fault) {
        recordSmmuFault(dev, r, doorbell, 4, true, std::nullopt);
        return false;
    }
    if (r.ipa != doorbell) {
        // Stage 1 sent the message elsewhere: a 4-byte write into guest memory, no interrupt.
        log::get("hostsim").warn("{}: MSI write to {:#x} translated to IPA {:#x}, not the doorbell: interrupt lost",
                                 dev.bdf(), doorbell, r.ipa);
        return false;
    }
    return true;
}

void SimHost::recordSmmuFault(SimDevice& dev, const smmuwalk::Result& r, uint64_t at, uint64_t left, bool write,
                              std::optional<uint32_t> pasid) {
    DmaFault f{dev.bdf(), at, left, write, r.why, DmaFaultKind::Stage1Fault, 0};
    f.pasid = pasid;
    if (r.stage2) {
        // Stage 2 refused the IPA stage 1 produced (or a table/CD fetch): the same kinds as an
        // unnested domain.
        f.kind = r.eventId() == smmu::kEvtFPermission ? (write ? DmaFaultKind::WriteToReadOnly : DmaFaultKind::ReadFromWriteOnly)
                                                        : DmaFaultKind::NotPresent;
        f.ipa = smmu::field(r.event[3], smmuwalk::kEvt3Ipa) << 12;
    }
    if (r.kind == smmuwalk::Result::Kind::Fault && r.record) {
        f.smmuEvent = r.event;
        (void)raiseSmmuEvent(dev, r.event, r.stage2);
    }
    dmaFaults_.push_back(std::move(f));
}

// Page by page as dmaTransfer(), each page's first byte translated by the nested SMMU: the guest's
// stage 1 (CD table and page tables in guest memory, read through stage 2), then stage 2. The
// first fault ends the transfer and raises one event (the SMMU's MEV merging aside, a real device
// would see its DMA aborted at that point too).
bool SimHost::nestedTransfer(SimDevice& dev, uint64_t iova, uint8_t* buf, size_t size, bool write,
                             std::optional<uint32_t> pasid) {
    Impl::Ctx* ctx = nullptr;
    uint16_t vmid = 0;
    Impl::Obj* hwpt = impl_->walkedDomain(dev, &ctx, &vmid);
    const auto caps = smmuwalk::Caps::fromIdr(config_.smmuIdr.data());
    const auto s2 = stage2Of(impl_->ioasOfHwpt(*ctx, hwpt->parent));
    smmuwalk::Caches* caches = config_.smmuCaches ? &smmuCaches_ : nullptr;
    for (uint64_t done = 0; done < size;) {
        const uint64_t at = iova + done;
        const smmuwalk::Transaction t{dev.config().streamIds.at(0), at, write, pasid, false};
        const auto r = smmuwalk::translate(hwpt->ste, t, caps, s2, caches, vmid);
        if (r.kind != smmuwalk::Result::Kind::Translated && r.kind != smmuwalk::Result::Kind::Bypass) {
            recordSmmuFault(dev, r, at, size - done, write, pasid);
            return false;
        }
        const uint64_t n = std::min<uint64_t>({size - done, kPage - (at & (kPage - 1)), r.span});
        if (dmaAudit_) dmaAudit_({dev.bdf(), at, r.host, static_cast<size_t>(n), write});
        if (write)
            std::memcpy(r.host, buf + done, n);
        else
            std::memcpy(buf + done, r.host, n);
        done += n;
    }
    return true;
}

bool SimHost::dmaTransfer(SimDevice& dev, uint64_t iova, uint8_t* buf, size_t size, bool write,
                          std::optional<uint32_t> pasid) {
    if (impl_->walkedDomain(dev, nullptr, nullptr)) return nestedTransfer(dev, iova, buf, size, write, pasid);
    auto* as = impl_->domainOf(dev);
    if (pasid) {
        // Only a nested SMMU domain has a CD table: the other domains the sim offers attach no
        // PASIDs (IOMMU_HWPT_ALLOC_PASID / pasid attach are not modelled), so the IOMMU finds no
        // translation for a PASID-tagged transaction.
        DmaFault f{dev.bdf(), iova, size, write, "PASID-tagged DMA with no domain attached to the PASID",
                   as ? DmaFaultKind::NotPresent : DmaFaultKind::NoDomain, 0};
        f.pasid = pasid;
        dmaFaults_.push_back(std::move(f));
        return false;
    }
    if (!as) {
        dmaFaults_.push_back({dev.bdf(), iova, size, write, "device has no IOMMU domain (DMA blocked)",
                              DmaFaultKind::NoDomain, 0});
        return false;
    }
    // Page by page, as the IOMMU translates each transaction: the pages before the first failing
    // one are transferred (a 4 KiB DMA straddling the end of RAM writes the RAM half on real
    // VT-d), then the transfer stops and the fault names the first failing IOVA.
    for (uint64_t done = 0; done < size;) {
        const uint64_t at = iova + done;
        const Mapping* m = as->find(at);
        // A revoked dma-buf area is still allocated in the IOAS but unmapped from the domain
        // (iopt_revoke_notify()): the IOMMU finds no PTE, as for any unmapped IOVA.
        const bool absent = !m || m->revoked;
        if (absent || !(write ? m->write : m->read)) {
            DmaFaultKind kind = absent ? DmaFaultKind::NotPresent
                                       : write ? DmaFaultKind::WriteToReadOnly : DmaFaultKind::ReadFromWriteOnly;
            const char* why = !m ? "unmapped IOVA"
                              : absent ? "unmapped IOVA (area of a revoked dma-buf)"
                              : write  ? "read-only mapping"
                                       : "not readable";
            dmaFaults_.push_back({dev.bdf(), at, size - done, write, why, kind, uint8_t(write ? 5 : 6)});
            return false;
        }
        uint64_t n = std::min<uint64_t>({size - done, kPage - (at & (kPage - 1)), m->iova + m->size - at});
        uint8_t* host = m->host + (at - m->iova);
        if (dmaAudit_) dmaAudit_({dev.bdf(), at, host, static_cast<size_t>(n), write});
        if (write)
            std::memcpy(host, buf + done, n);
        else
            std::memcpy(buf + done, host, n);
        done += n;
    }
    return true;
}

bool SimHost::overlapsBarMmap(uint64_t va, uint64_t len) const {
    for (auto& [p, n] : mmaps_) {
        uint64_t a = reinterpret_cast<uint64_t>(p);
        if (va < a + n && a < va + len) return true;
    }
    return false;
}

}  // namespace conduit::hostsim
