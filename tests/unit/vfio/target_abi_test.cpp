// What a cross build must get right that a native x86_64 build cannot check (docs/testing.md, "The
// arm64 build"): the test binaries really run as the architecture they were built for (so the
// results of the arm64 tree under qemu-user count as arm64 results), the host page size the VFIO
// code maps with, and the uAPI layouts. vfio/uapi_compat.h's static_asserts (every struct size and
// ioctl number) and the offsets below are compiled for the target, so the arm64 build proves them
// on aarch64; the tests below are what only running can show.
#include "vfio/uapi_compat.h"

#include <gtest/gtest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstddef>

namespace conduit::vfio {
namespace {

// The fields the vSMMU (issue 12) will read and write, where a layout slip would be silent: the
// kernel copies `size` bytes and takes the rest as zero.
static_assert(offsetof(struct iommu_hwpt_alloc, data_type) == 24 && offsetof(struct iommu_hwpt_alloc, data_uptr) == 32);
static_assert(offsetof(struct iommu_hw_info_arm_smmuv3, idr) == 8 && offsetof(struct iommu_hw_info_arm_smmuv3, iidr) == 32);
static_assert(offsetof(struct iommu_hw_info, data_uptr) == 16 && offsetof(struct iommu_hw_info, out_max_pasid_log2) == 28);
static_assert(offsetof(struct iommu_viommu_alloc, data_uptr) == 32);
static_assert(offsetof(struct iommu_vdevice_alloc, virt_id) == 16);
static_assert(offsetof(struct iommu_hwpt_invalidate, data_uptr) == 8 && offsetof(struct iommu_hwpt_invalidate, entry_num) == 24);
static_assert(offsetof(struct iommu_veventq_alloc, out_veventq_fd) == 24);
static_assert(offsetof(struct iommu_ioas_map, user_va) == 16 && offsetof(struct iommu_ioas_map_file, start) == 16);
static_assert(offsetof(struct vfio_iommu_type1_dma_map, vaddr) == 8 && offsetof(struct vfio_iommu_type1_dma_map, iova) == 16);
static_assert(offsetof(struct vfio_region_info, offset) == 24);
// LP64 on both targets: the kernel's __u64 fields and user pointers passed as integers fit.
static_assert(sizeof(long) == 8 && sizeof(void*) == 8 && alignof(__aligned_u64) == 8);

TEST(TargetAbi, RunsAsTheArchitectureItWasBuiltFor) {
    utsname u{};
    ASSERT_EQ(::uname(&u), 0);
    // CONDUIT_TARGET_PROCESSOR is CMake's CMAKE_SYSTEM_PROCESSOR (tests/unit/CMakeLists.txt):
    // aarch64 in build-arm64, whose binaries qemu-aarch64 runs; x86_64 in build.
    EXPECT_STREQ(u.machine, CONDUIT_TARGET_PROCESSOR);
#if defined(__aarch64__)
    EXPECT_STREQ(CONDUIT_TARGET_PROCESSOR, "aarch64");
#elif defined(__x86_64__)
    EXPECT_STREQ(CONDUIT_TARGET_PROCESSOR, "x86_64");
#endif
}

TEST(TargetAbi, HostPagesAreTheFourKibTheVfioCodeMapsWith) {
    // vfio/device.cpp (mmap limits), devices/vfio_pci (sub-page BARs, MSI-X holes) and the simulated
    // host align to 4 KiB. arm64 kernels may use 16 or 64 KiB pages; there this fails rather than
    // Conduit mapping BARs at offsets the kernel refuses.
    EXPECT_EQ(::sysconf(_SC_PAGESIZE), 4096);
}

}  // namespace
}  // namespace conduit::vfio
