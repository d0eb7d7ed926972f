// viommu_probe CDEV - does L1's iommufd give a VMM the nested SMMUv3 objects a virtual SMMU needs?
// The vsmmu bed's own check (vsmmu-smoke.sh, ctest bed.vsmmu.smoke), cross-built statically for
// arm64 and run inside L1 on the NVMe's VFIO cdev. The objects, in the order a VMM makes them
// (issue 13): bind the cdev to /dev/iommu; IOMMU_GET_HW_INFO (an ARM_SMMUV3 with S1P and S2P);
// an IOAS; a NEST_PARENT HWPT over it, attached; IOMMU_VIOMMU_ALLOC(ARM_SMMUV3) (Linux allows it only
// with CANWBS or S2FWB: this is what the IORT upgrade is for); IOMMU_VDEVICE_ALLOC with a virtual
// StreamID; IOMMU_VEVENTQ_ALLOC; a nested HWPT from a bypass STE, attached by replacement; then an
// abort STE the same way; back to the parent and everything destroyed. No DMA: the device is not
// programmed. Prints "VIOMMU: PASS|FAIL <step>: <detail>" per step and stops at the first failure
// (each step needs the one before); exits 0 iff all passed.
#include <fcntl.h>
#include <sys/ioctl.h>
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
