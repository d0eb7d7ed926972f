// viommu_probe CDEV - does L1's iommufd give a VMM the nested SMMUv3 objects a virtual SMMU needs?
// The vsmmu bed's own check (vsmmu-smoke.sh, ctest bed.vsmmu.smoke), cross-built statically for
// arm64 and run inside L1 on the NVMe's VFIO cdev. The objects, in the order a VMM makes them
// (issue 13): bind the cdev to /dev/iommu; IOMMU_GET_HW_INFO (an ARM_SMMUV3 with S1P and S2P);
// an IOAS; a NEST_PARENT HWPT over it, attached; IOMMU_VIOMMU_ALLOC(ARM_SMMUV3) (Linux allows it only
// with CANWBS or S2FWB: this is what the IORT upgrade is for); IOMMU_VDEVICE_ALLOC with a virtual
// StreamID; IOMMU_VEVENTQ_ALLOC; a nested HWPT from a bypass STE, attached by replacement; then an
// abort STE the same way; then a stage-1 STE over an empty stage-1 table, and the NVMe made to
// fetch an admin command (a stage-1 translation fault, which must come out of the vEVENTQ with the
// virtual StreamID: nestedFault below); back to the parent and everything destroyed. Prints "VIOMMU: PASS|FAIL <step>: <detail>" per step and stops at the first failure
// (each step needs the one before); exits 0 iff all passed.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "vfio/uapi_compat.h"

namespace {

int failures = 0;
bool step(bool ok, const char* name, const char* fmt, ...) {
    std::va_list ap;
    va_start(ap, fmt);
    std::printf("VIOMMU: %s %s: ", ok ? "PASS" : "FAIL", name);
    std::vprintf(fmt, ap);
    std::printf("\n");
    va_end(ap);
    if (!ok) failures++;
    return ok;
}
// The ioctl's own errno in a failing step's detail.
const char* why(int r) { return r == 0 ? "ok" : std::strerror(errno); }

// STE dword 0: V (bit 0) and Config (bits 3:1): 0b000 abort, 0b100 bypass (SMMUv3 spec, STE).
constexpr uint64_t kSteValid = 1;
constexpr uint64_t steConfig(uint64_t c) { return c << 1; }
constexpr uint64_t kCfgAbort = 0, kCfgBypass = 4;
// The virtual StreamID the vDEVICE gets: not the physical one (0x10 for 00:02.0), so the mapping is real.
constexpr uint64_t kVirtualSid = 0x42;

// The NVMe's registers (NVMe base specification) that make it fetch an admin command.
constexpr uint32_t kCc = 0x14, kCsts = 0x1c, kAqa = 0x24, kAsq = 0x28, kAcq = 0x30, kSq0Doorbell = 0x1000;
// Where the probe's "guest memory" sits in the IOAS (an IPA), and the stage-1 address the NVMe is
// sent to: nothing maps it, as the stage-1 table is empty.
constexpr uint64_t kIpa = 0x100000, kUnmappedIova = 0xdead0000;

struct Regions {
    uint64_t config = 0, bar0 = 0;
};
bool regions(int dev, Regions& out) {
    for (auto [index, where] : {std::pair{VFIO_PCI_CONFIG_REGION_INDEX, &out.config},
                                std::pair{VFIO_PCI_BAR0_REGION_INDEX, &out.bar0}}) {
        vfio_region_info info{};
        info.argsz = sizeof(info);
        info.index = index;
        if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &info) != 0) return false;
        *where = info.offset;
    }
    return true;
}
uint32_t rd32(int dev, uint64_t at) {
    uint32_t v = ~0u;
    if (pread(dev, &v, 4, static_cast<off_t>(at)) != 4) return ~0u;
    return v;
}
void wr32(int dev, uint64_t at, uint32_t v) {
    if (pwrite(dev, &v, 4, static_cast<off_t>(at)) != 4) std::printf("VIOMMU: pwrite at 0x%llx: %s\n", static_cast<unsigned long long>(at), std::strerror(errno));
}
bool waitReady(int dev, uint64_t bar0, uint32_t want) {
    for (int i = 0; i < 200; i++) {
        if ((rd32(dev, bar0 + kCsts) & 1) == want) return true;
        usleep(10000);
    }
    return false;
}

// The whole nested path on the bed's own device, without a VMM: a stage-1 STE whose context
// descriptor (in the probe's memory, mapped in the IOAS at an IPA, so L1's SMMU reads it through
// stage 2) has an empty translation table; the NVMe, told through its BAR to fetch an admin command
// from an address, takes a stage-1 translation fault; the record must come out of the vEVENTQ with
// the virtual StreamID (what a VMM copies into its guest's event queue).
template <class Attach>
bool nestedFault(int iommufd, int dev, uint32_t devId, uint32_t ioasId, uint32_t viommuId, int veventqFd, uint32_t oas,
                 Attach& attach, std::vector<uint32_t>& nested) {
    void* mem = mmap(nullptr, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return step(false, "nested-s1-fault", "mmap: %s", std::strerror(errno));
    auto* cd = static_cast<uint64_t*>(mem);  // the CD at +0; the (empty) level-0 table at +0x1000
    // CD dword 0: T0SZ 16 (48-bit input), TG0 4 KiB, IRGN0/ORGN0 write-back, SH0 inner shareable,
    // EPD1 (no TTB1), V, IPS = the SMMU's OAS, AA64, R (record faults), A (abort them), ASID 5.
    cd[0] = 16 | (1ull << 8) | (1ull << 10) | (3ull << 12) | (1ull << 30) | (1ull << 31) |
            (static_cast<uint64_t>(oas) << 32) | (1ull << 41) | (1ull << 45) | (1ull << 46) | (5ull << 48);
    cd[1] = (kIpa + 0x1000) & 0x000ffffffffffff0ull;  // TTB0
    cd[3] = 0xff;                                      // MAIR: attr 0 normal write-back
    iommu_ioas_map map{};
    map.size = sizeof(map);
    map.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    map.ioas_id = ioasId;
    map.user_va = reinterpret_cast<uintptr_t>(mem);
    map.length = 0x2000;
    map.iova = kIpa;
    int r = ioctl(iommufd, IOMMU_IOAS_MAP, &map);
    if (!step(r == 0, "ioas-map", "IOMMU_IOAS_MAP(the CD and an empty table at IPA 0x%llx): %s",
              static_cast<unsigned long long>(kIpa), why(r)))
        return false;
    // STE: V, Config S1 translate, S1ContextPtr = the CD's IPA, S1CDMax 0; S1CIR/S1COR WB, S1CSH inner.
    iommu_hwpt_arm_smmuv3 ste{};
    ste.ste[0] = kSteValid | steConfig(5) | (kIpa & 0x000fffffffffffc0ull);
    ste.ste[1] = (1ull << 2) | (1ull << 4) | (3ull << 6);
    iommu_hwpt_alloc hwpt{};
    hwpt.size = sizeof(hwpt);
    hwpt.dev_id = devId;
    hwpt.pt_id = viommuId;
    hwpt.data_type = IOMMU_HWPT_DATA_ARM_SMMUV3;
    hwpt.data_len = sizeof(ste);
    hwpt.data_uptr = reinterpret_cast<uintptr_t>(&ste);
    r = ioctl(iommufd, IOMMU_HWPT_ALLOC, &hwpt);
    int ra = r == 0 ? attach(hwpt.out_hwpt_id) : -1;
    if (r == 0) nested.push_back(hwpt.out_hwpt_id);
    if (!step(r == 0 && ra == 0, "nested-s1", "IOMMU_HWPT_ALLOC(vIOMMU, STE 0x%llx 0x%llx): %s, id %u; attached: %s",
              static_cast<unsigned long long>(ste.ste[0]), static_cast<unsigned long long>(ste.ste[1]), why(r),
              hwpt.out_hwpt_id, r == 0 ? why(ra) : "-"))
        return false;

    Regions reg;
    if (!step(regions(dev, reg), "regions", "VFIO_DEVICE_GET_REGION_INFO(config, BAR0): %s", std::strerror(errno)))
        return false;
    uint16_t command = 0;
    if (pread(dev, &command, 2, static_cast<off_t>(reg.config + 4)) != 2) command = 0;
    uint16_t on = command | 6;  // memory space, bus master
    if (pwrite(dev, &on, 2, static_cast<off_t>(reg.config + 4)) != 2) return step(false, "nested-s1-fault", "config write: %s", std::strerror(errno));
    uint64_t b = reg.bar0;
    wr32(dev, b + kCc, 0);
    bool off = waitReady(dev, b, 0);
    wr32(dev, b + kAqa, 0x000f000f);
    wr32(dev, b + kAsq, static_cast<uint32_t>(kUnmappedIova));
    wr32(dev, b + kAsq + 4, 0);
    wr32(dev, b + kAcq, static_cast<uint32_t>(kUnmappedIova + 0x10000));
    wr32(dev, b + kAcq + 4, 0);
    wr32(dev, b + kCc, 0x00460001);  // IOCQES 16 B, IOSQES 64 B, EN
    bool ready = waitReady(dev, b, 1);
    wr32(dev, b + kSq0Doorbell, 1);

    // The records: a header (flags, sequence) and the SMMUv3 event's four dwords each.
    pollfd pfd{.fd = veventqFd, .events = POLLIN, .revents = 0};
    int n = poll(&pfd, 1, 3000);
    alignas(8) unsigned char buf[64 * 40];
    ssize_t got = n > 0 ? read(veventqFd, buf, sizeof(buf)) : -1;
    int records = 0, matching = 0;
    uint64_t first[4] = {};
    uint32_t firstSeq = 0;
    for (ssize_t at = 0; got > 0 && at + 40 <= got; at += 40, records++) {
        iommufd_vevent_header h;
        iommu_vevent_arm_smmuv3 e;
        std::memcpy(&h, buf + at, sizeof(h));
        std::memcpy(&e, buf + at + sizeof(h), sizeof(e));
        if (records == 0) { std::memcpy(first, e.evt, sizeof(first)); firstSeq = h.sequence; }
        if ((e.evt[0] & 0xff) == 0x10 && (e.evt[0] >> 32) == kVirtualSid) matching++;
    }
    wr32(dev, b + kCc, 0);
    waitReady(dev, b, 0);
    if (pwrite(dev, &command, 2, static_cast<off_t>(reg.config + 4)) != 2) std::printf("VIOMMU: restoring the command register failed\n");
    munmap(mem, 0x2000);
    return step(off && ready && matching > 0, "nested-s1-fault",
                "NVMe disabled %s, enabled %s with its admin queues at IOVA 0x%llx, doorbell rung: %d vEVENTQ record(s), "
                "%d F_TRANSLATION (0x10) for virtual StreamID 0x%llx; the first: seq %u, %016llx %016llx %016llx %016llx",
                off ? "ok" : "never", ready ? "ok" : "never", static_cast<unsigned long long>(kUnmappedIova), records,
                matching, static_cast<unsigned long long>(kVirtualSid), firstSeq,
                static_cast<unsigned long long>(first[0]), static_cast<unsigned long long>(first[1]),
                static_cast<unsigned long long>(first[2]), static_cast<unsigned long long>(first[3]));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: viommu_probe /dev/vfio/devices/vfioN\n");
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    int iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    int dev = open(argv[1], O_RDWR | O_CLOEXEC);
    if (!step(iommufd >= 0 && dev >= 0, "open", "/dev/iommu fd %d, %s fd %d (%s)", iommufd, argv[1], dev,
              iommufd >= 0 && dev >= 0 ? "ok" : std::strerror(errno)))
        return 1;
    vfio_device_bind_iommufd bind{.argsz = sizeof(bind), .flags = 0, .iommufd = iommufd, .out_devid = 0};
    int r = ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind);
    if (!step(r == 0, "bind", "VFIO_DEVICE_BIND_IOMMUFD: %s, dev_id %u", why(r), bind.out_devid)) return 1;

    iommu_hw_info_arm_smmuv3 smmu{};
    iommu_hw_info info{};
    info.size = sizeof(info);
    info.dev_id = bind.out_devid;
    info.data_len = sizeof(smmu);
    info.data_uptr = reinterpret_cast<uintptr_t>(&smmu);
    r = ioctl(iommufd, IOMMU_GET_HW_INFO, &info);
    bool s1p = smmu.idr[0] & 2, s2p = smmu.idr[0] & 1;
    if (!step(r == 0 && info.out_data_type == IOMMU_HW_INFO_TYPE_ARM_SMMUV3 && s1p && s2p, "hw-info",
              "IOMMU_GET_HW_INFO: %s, type %u (2 = ARM_SMMUV3), IDR0 0x%08x (S1P %d S2P %d) IDR1 0x%08x "
              "IDR3 0x%08x IDR5 0x%08x, max_pasid_log2 %u",
              why(r), info.out_data_type, smmu.idr[0], s1p, s2p, smmu.idr[1], smmu.idr[3], smmu.idr[5],
              info.out_max_pasid_log2))
        return 1;

    iommu_ioas_alloc ioas{.size = sizeof(ioas), .flags = 0, .out_ioas_id = 0};
    r = ioctl(iommufd, IOMMU_IOAS_ALLOC, &ioas);
    if (!step(r == 0, "ioas", "IOMMU_IOAS_ALLOC: %s, id %u", why(r), ioas.out_ioas_id)) return 1;
    iommu_hwpt_alloc parent{};
    parent.size = sizeof(parent);
    parent.flags = IOMMU_HWPT_ALLOC_NEST_PARENT;
    parent.dev_id = bind.out_devid;
    parent.pt_id = ioas.out_ioas_id;
    r = ioctl(iommufd, IOMMU_HWPT_ALLOC, &parent);
    if (!step(r == 0, "nest-parent", "IOMMU_HWPT_ALLOC(NEST_PARENT): %s, id %u", why(r), parent.out_hwpt_id)) return 1;
    auto attach = [&](uint32_t id) {
        vfio_device_attach_iommufd_pt at{.argsz = sizeof(at), .flags = 0, .pt_id = id, .pasid = 0};
        return ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at);
    };
    r = attach(parent.out_hwpt_id);
    if (!step(r == 0, "attach-parent", "VFIO_DEVICE_ATTACH_IOMMUFD_PT(parent): %s", why(r))) return 1;

    iommu_viommu_alloc viommu{};
    viommu.size = sizeof(viommu);
    viommu.type = IOMMU_VIOMMU_TYPE_ARM_SMMUV3;
    viommu.dev_id = bind.out_devid;
    viommu.hwpt_id = parent.out_hwpt_id;
    r = ioctl(iommufd, IOMMU_VIOMMU_ALLOC, &viommu);
    if (!step(r == 0, "viommu", "IOMMU_VIOMMU_ALLOC(ARM_SMMUV3): %s, id %u%s", why(r), viommu.out_viommu_id,
              r != 0 && errno == EOPNOTSUPP ? " (the root complex is not CANWBS: was the IORT upgraded?)" : ""))
        return 1;
    iommu_vdevice_alloc vdev{};
    vdev.size = sizeof(vdev);
    vdev.viommu_id = viommu.out_viommu_id;
    vdev.dev_id = bind.out_devid;
    vdev.virt_id = kVirtualSid;
    r = ioctl(iommufd, IOMMU_VDEVICE_ALLOC, &vdev);
    if (!step(r == 0, "vdevice", "IOMMU_VDEVICE_ALLOC(virt_id 0x%llx): %s, id %u",
              static_cast<unsigned long long>(kVirtualSid), why(r), vdev.out_vdevice_id))
        return 1;
    iommu_veventq_alloc veventq{};
    veventq.size = sizeof(veventq);
    veventq.viommu_id = viommu.out_viommu_id;
    veventq.type = IOMMU_VEVENTQ_TYPE_ARM_SMMUV3;
    veventq.veventq_depth = 64;
    r = ioctl(iommufd, IOMMU_VEVENTQ_ALLOC, &veventq);
    if (!step(r == 0, "veventq", "IOMMU_VEVENTQ_ALLOC(ARM_SMMUV3, depth 64): %s, id %u fd %u", why(r),
              veventq.out_veventq_id, veventq.out_veventq_fd))
        return 1;

    std::vector<uint32_t> nested;
    for (auto [name, cfg] : {std::pair{"bypass", kCfgBypass}, std::pair{"abort", kCfgAbort}}) {
        iommu_hwpt_arm_smmuv3 ste{};
        ste.ste[0] = kSteValid | steConfig(cfg);
        iommu_hwpt_alloc hwpt{};
        hwpt.size = sizeof(hwpt);
        hwpt.dev_id = bind.out_devid;
        hwpt.pt_id = viommu.out_viommu_id;
        hwpt.data_type = IOMMU_HWPT_DATA_ARM_SMMUV3;
        hwpt.data_len = sizeof(ste);
        hwpt.data_uptr = reinterpret_cast<uintptr_t>(&ste);
        r = ioctl(iommufd, IOMMU_HWPT_ALLOC, &hwpt);
        int ra = r == 0 ? attach(hwpt.out_hwpt_id) : -1;
        if (r == 0) nested.push_back(hwpt.out_hwpt_id);
        char stepName[32];
        std::snprintf(stepName, sizeof(stepName), "nested-%s", name);
        if (!step(r == 0 && ra == 0, stepName, "IOMMU_HWPT_ALLOC(vIOMMU, STE 0x%llx): %s, id %u; attached: %s",
                  static_cast<unsigned long long>(ste.ste[0]), why(r), hwpt.out_hwpt_id, r == 0 ? why(ra) : "-"))
            return 1;
    }

    if (!nestedFault(iommufd, dev, bind.out_devid, ioas.out_ioas_id, viommu.out_viommu_id,
                     static_cast<int>(veventq.out_veventq_fd), smmu.idr[5] & 7, attach, nested))
        return 1;

    r = attach(parent.out_hwpt_id);
    int bad = 0;
    close(static_cast<int>(veventq.out_veventq_fd));
    std::vector<uint32_t> ids = nested;
    ids.insert(ids.end(), {veventq.out_veventq_id, vdev.out_vdevice_id, viommu.out_viommu_id, parent.out_hwpt_id,
                           ioas.out_ioas_id});
    vfio_device_detach_iommufd_pt det{.argsz = sizeof(det), .flags = 0, .pasid = 0};
    int rd = ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &det);
    for (uint32_t id : ids) {
        iommu_destroy d{.size = sizeof(d), .id = id};
        if (ioctl(iommufd, IOMMU_DESTROY, &d) != 0) bad++;
    }
    step(r == 0 && rd == 0 && bad == 0, "teardown", "back to the parent: %s; detached: %s; %zu objects destroyed, %d failed",
         why(r), rd == 0 ? "ok" : std::strerror(errno), ids.size(), bad);
    close(dev);
    close(iommufd);
    return failures ? 1 : 0;
}
