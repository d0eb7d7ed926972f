// The kernel uAPI Conduit speaks for VFIO and iommufd.
//
// <linux/vfio.h> from linux-libc-dev 6.1 covers the type1 container/group API and the device API.
// Everything newer is written here from the kernel's documented layouts (include/uapi/linux/iommufd.h
// and include/uapi/linux/vfio.h of Linux 6.2 .. 6.15):
//   - iommufd (6.2; 6.1 has no <linux/iommufd.h> at all): IOAS alloc/map/unmap/copy/ranges, options
//   - HWPT alloc incl. NEST_PARENT, PASID and nested data types (6.6+), GET_HW_INFO (6.6+, pasid
//     width 6.14), HWPT_INVALIDATE (6.8), FAULT_QUEUE_ALLOC (6.11), IOAS_MAP_FILE (6.13),
//     VIOMMU_ALLOC / VDEVICE_ALLOC (6.13), VEVENTQ_ALLOC (6.15)
//   - VFIO device cdev: BIND_IOMMUFD, ATTACH/DETACH_IOMMUFD_PT incl. PASID (6.6, PASID 6.13)
//   - VFIO_DEVICE_FEATURE_DMA_BUF (6.19-era P2P dma-buf export)
//   - PCI hot reset of cdev-opened devices: FLAG_DEV_ID(_OWNED), VFIO_PCI_DEVID_* (6.5)
//
// Each group is guarded by its ioctl macro, so a newer system header wins where it exists; the
// static_asserts at the end check every struct size and ioctl number either way, so a system header
// with an older (shorter) layout fails the build instead of silently truncating a call.
#pragma once

#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/vfio.h>

#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif

#include <cstddef>
#include <cstdint>

#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
#endif

// ---------------------------------------------------------------------------------------------
// iommufd core (Linux 6.2)
// ---------------------------------------------------------------------------------------------
#ifndef IOMMU_DESTROY
struct iommu_destroy {
    __u32 size;
    __u32 id;
};
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)

struct iommu_ioas_alloc {
    __u32 size;
    __u32 flags;
    __u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)

struct iommu_iova_range {
    __aligned_u64 start;
    __aligned_u64 last;  // inclusive
};

struct iommu_ioas_allow_iovas {
    __u32 size;
    __u32 ioas_id;
    __u32 num_iovas;
    __u32 __reserved;
    __aligned_u64 allowed_iovas;
};
#define IOMMU_IOAS_ALLOW_IOVAS _IO(IOMMUFD_TYPE, 0x82)

struct iommu_ioas_copy {
    __u32 size;
    __u32 flags;
    __u32 dst_ioas_id;
    __u32 src_ioas_id;
    __aligned_u64 length;
    __aligned_u64 dst_iova;
    __aligned_u64 src_iova;
};
#define IOMMU_IOAS_COPY _IO(IOMMUFD_TYPE, 0x83)

struct iommu_ioas_iova_ranges {
    __u32 size;
    __u32 ioas_id;
    __u32 num_iovas;
    __u32 __reserved;
    __aligned_u64 allowed_iovas;
    __aligned_u64 out_iova_alignment;
};
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, 0x84)

enum iommufd_ioas_map_flags {
    IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0,
    IOMMU_IOAS_MAP_WRITEABLE = 1 << 1,
    IOMMU_IOAS_MAP_READABLE = 1 << 2,
};

struct iommu_ioas_map {
    __u32 size;
    __u32 flags;
    __u32 ioas_id;
    __u32 __reserved;
    __aligned_u64 user_va;
    __aligned_u64 length;
    __aligned_u64 iova;
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)

struct iommu_ioas_unmap {
    __u32 size;
    __u32 ioas_id;
    __aligned_u64 iova;
    __aligned_u64 length;
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)

enum iommufd_option {
    IOMMU_OPTION_RLIMIT_MODE = 0,
    IOMMU_OPTION_HUGE_PAGES = 1,
};
enum iommufd_option_ops {
    IOMMU_OPTION_OP_SET = 0,
    IOMMU_OPTION_OP_GET = 1,
};
struct iommu_option {
    __u32 size;
    __u32 option_id;
    __u16 op;
    __u16 __reserved;
    __u32 object_id;
    __aligned_u64 val64;
};
#define IOMMU_OPTION _IO(IOMMUFD_TYPE, 0x87)

enum iommufd_vfio_ioas_op {
    IOMMU_VFIO_IOAS_GET = 0,
    IOMMU_VFIO_IOAS_SET = 1,
    IOMMU_VFIO_IOAS_CLEAR = 2,
};
struct iommu_vfio_ioas {
    __u32 size;
    __u32 ioas_id;
    __u16 op;
    __u16 __reserved;
};
#define IOMMU_VFIO_IOAS _IO(IOMMUFD_TYPE, 0x88)
#endif  // IOMMU_DESTROY

// ---------------------------------------------------------------------------------------------
// HWPT allocation (6.6; fault_id 6.11, PASID 6.13, ARM SMMUv3 nested STE 6.13)
// ---------------------------------------------------------------------------------------------
#ifndef IOMMU_HWPT_ALLOC
enum iommufd_hwpt_alloc_flags {
    IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1,
    IOMMU_HWPT_FAULT_ID_VALID = 1 << 2,
    IOMMU_HWPT_ALLOC_PASID = 1 << 3,
};

struct iommu_hwpt_vtd_s1 {
    __aligned_u64 flags;
    __aligned_u64 pgtbl_addr;
    __u32 addr_width;
    __u32 __reserved;
};

// The first two little-endian double words of a guest Stream Table Entry.
struct iommu_hwpt_arm_smmuv3 {
    __aligned_u64 ste[2];
};

enum iommu_hwpt_data_type {
    IOMMU_HWPT_DATA_NONE = 0,
    IOMMU_HWPT_DATA_VTD_S1 = 1,
    IOMMU_HWPT_DATA_ARM_SMMUV3 = 2,
};

struct iommu_hwpt_alloc {
    __u32 size;
    __u32 flags;
    __u32 dev_id;
    __u32 pt_id;
    __u32 out_hwpt_id;
    __u32 __reserved;
    __u32 data_type;
    __u32 data_len;
    __aligned_u64 data_uptr;
    __u32 fault_id;
    __u32 __reserved2;
};
#define IOMMU_HWPT_ALLOC _IO(IOMMUFD_TYPE, 0x89)
#endif  // IOMMU_HWPT_ALLOC

#ifndef IOMMU_GET_HW_INFO
struct iommu_hw_info_vtd {
    __u32 flags;
    __u32 __reserved;
    __aligned_u64 cap_reg;
    __aligned_u64 ecap_reg;
};

// iommu_hw_info_arm_smmuv3::flags (7.x): TLBI/CFGI + SYNC must be issued twice (T264-SMMU-3).
enum iommu_hw_info_arm_smmuv3_flags {
    IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI = 1 << 0,
};

struct iommu_hw_info_arm_smmuv3 {
    __u32 flags;
    __u32 __reserved;
    __u32 idr[6];
    __u32 iidr;
    __u32 aidr;
};

enum iommu_hw_info_type {
    IOMMU_HW_INFO_TYPE_NONE = 0,
    IOMMU_HW_INFO_TYPE_DEFAULT = 0,
    IOMMU_HW_INFO_TYPE_INTEL_VTD = 1,
    IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2,
};

enum iommufd_hw_capabilities {
    IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0,
    IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1,
    IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2,
    IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 1 << 3,  // ATS cannot be used for this device (6.17)
};

enum iommufd_hw_info_flags {
    IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0,  // in_data_type (the out_data_type field) is an input (6.16)
};

struct iommu_hw_info {
    __u32 size;
    __u32 flags;
    __u32 dev_id;
    __u32 data_len;
    __aligned_u64 data_uptr;
    __u32 out_data_type;  // in_data_type when IOMMU_HW_INFO_FLAG_INPUT_TYPE (6.16)
    __u8 out_max_pasid_log2;
    __u8 __reserved[3];
    __aligned_u64 out_capabilities;
};
#define IOMMU_GET_HW_INFO _IO(IOMMUFD_TYPE, 0x8a)
#endif  // IOMMU_GET_HW_INFO

// ---------------------------------------------------------------------------------------------
// Cache invalidation for user-managed (nested) page tables and vIOMMUs (6.8)
// ---------------------------------------------------------------------------------------------
#ifndef IOMMU_HWPT_INVALIDATE
enum iommu_hwpt_invalidate_data_type {
    IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0,
    IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1,
};

struct iommu_hwpt_vtd_s1_invalidate {
    __aligned_u64 addr;
    __aligned_u64 npages;
    __u32 flags;
    __u32 __reserved;
};

// One 128-bit SMMUv3 CMDQ command (TLBI_NH_*, ATC_INV, CFGI_CD*), little-endian.
struct iommu_viommu_arm_smmuv3_invalidate {
    __aligned_u64 cmd[2];
};

struct iommu_hwpt_invalidate {
    __u32 size;
    __u32 hwpt_id;
    __aligned_u64 data_uptr;
    __u32 data_type;
    __u32 entry_len;
    __u32 entry_num;
    __u32 __reserved;
};
#define IOMMU_HWPT_INVALIDATE _IO(IOMMUFD_TYPE, 0x8d)
#endif  // IOMMU_HWPT_INVALIDATE

// ---------------------------------------------------------------------------------------------
// I/O page fault queues (6.11)
// ---------------------------------------------------------------------------------------------
#ifndef IOMMU_FAULT_QUEUE_ALLOC
struct iommu_hwpt_pgfault {
    __u32 flags;
    __u32 dev_id;
    __u32 pasid;
    __u32 grpid;
    __u32 perm;
    __u32 __reserved;
    __aligned_u64 addr;
    __u32 length;
    __u32 cookie;
};

struct iommu_hwpt_page_response {
    __u32 cookie;
    __u32 code;
};

struct iommu_fault_alloc {
    __u32 size;
    __u32 flags;
    __u32 out_fault_id;
    __u32 out_fault_fd;
};
#define IOMMU_FAULT_QUEUE_ALLOC _IO(IOMMUFD_TYPE, 0x8e)
#endif  // IOMMU_FAULT_QUEUE_ALLOC

// ---------------------------------------------------------------------------------------------
// Map a file (memfd, or a VFIO dma-buf for P2P) instead of a user VA (6.13)
// ---------------------------------------------------------------------------------------------
#ifndef IOMMU_IOAS_MAP_FILE
struct iommu_ioas_map_file {
    __u32 size;
    __u32 flags;
    __u32 ioas_id;
    __s32 fd;
    __aligned_u64 start;
    __aligned_u64 length;
    __aligned_u64 iova;
};
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, 0x8f)
#endif  // IOMMU_IOAS_MAP_FILE

// ---------------------------------------------------------------------------------------------
// vIOMMU / vDEVICE (6.13) and vEVENTQ (6.15): the objects the nested SMMUv3 backend uses
// ---------------------------------------------------------------------------------------------
#ifndef IOMMU_VIOMMU_ALLOC
enum iommu_viommu_type {
    IOMMU_VIOMMU_TYPE_DEFAULT = 0,
    IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1,
    IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2,
};

struct iommu_viommu_alloc {
    __u32 size;
    __u32 flags;
    __u32 type;
    __u32 dev_id;
    __u32 hwpt_id;
    __u32 out_viommu_id;
    __u32 data_len;
    __u32 __reserved;
    __aligned_u64 data_uptr;
};
#define IOMMU_VIOMMU_ALLOC _IO(IOMMUFD_TYPE, 0x90)
#endif  // IOMMU_VIOMMU_ALLOC

#ifndef IOMMU_VDEVICE_ALLOC
struct iommu_vdevice_alloc {
    __u32 size;
    __u32 viommu_id;
    __u32 dev_id;
    __u32 out_vdevice_id;
    __aligned_u64 virt_id;  // e.g. the vSID of a vSMMUv3
};
#define IOMMU_VDEVICE_ALLOC _IO(IOMMUFD_TYPE, 0x91)
#endif  // IOMMU_VDEVICE_ALLOC

#ifndef IOMMU_VEVENTQ_ALLOC
struct iommufd_vevent_header {
    __u32 flags;  // IOMMU_VEVENTQ_FLAG_LOST_EVENTS
    __u32 sequence;
};
#define IOMMU_VEVENTQ_FLAG_LOST_EVENTS (1U << 0)

enum iommu_veventq_type {
    IOMMU_VEVENTQ_TYPE_DEFAULT = 0,
    IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1,
    IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2,
};

struct iommu_vevent_arm_smmuv3 {
    __aligned_u64 evt[4];
};

struct iommu_veventq_alloc {
    __u32 size;
    __u32 flags;
    __u32 viommu_id;
    __u32 type;
    __u32 veventq_depth;
    __u32 out_veventq_id;
    __u32 out_veventq_fd;
    __u32 __reserved;
};
#define IOMMU_VEVENTQ_ALLOC _IO(IOMMUFD_TYPE, 0x93)
#endif  // IOMMU_VEVENTQ_ALLOC

// ---------------------------------------------------------------------------------------------
// VFIO device cdev (/dev/vfio/devices/vfioN) with iommufd (6.6; PASID attach 6.13)
// ---------------------------------------------------------------------------------------------
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
    __u32 argsz;
    __u32 flags;
    __s32 iommufd;
    __u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
struct vfio_device_attach_iommufd_pt {
    __u32 argsz;
    __u32 flags;
#define VFIO_DEVICE_ATTACH_PASID (1 << 0)
    __u32 pt_id;  // in: IOAS or HWPT id; out: the HWPT actually attached
    __u32 pasid;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)

struct vfio_device_detach_iommufd_pt {
    __u32 argsz;
    __u32 flags;
#define VFIO_DEVICE_DETACH_PASID (1 << 0)
    __u32 pasid;
};
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)
#endif

// ---------------------------------------------------------------------------------------------
// P2P: export a slice of a BAR as a dma-buf (VFIO_DEVICE_FEATURE_GET), for IOMMU_IOAS_MAP_FILE
// ---------------------------------------------------------------------------------------------
#ifndef VFIO_DEVICE_FEATURE_DMA_BUF
#define VFIO_DEVICE_FEATURE_DMA_BUF 11
struct vfio_region_dma_range {
    __u64 offset;
    __u64 length;
};
struct vfio_device_feature_dma_buf {
    __u32 region_index;
    __u32 open_flags;
    __u32 flags;
    __u32 nr_ranges;
    struct vfio_region_dma_range dma_ranges[];
};
#endif

// ---------------------------------------------------------------------------------------------
// PCI hot reset of a cdev-opened device (6.5): VFIO_DEVICE_GET_PCI_HOT_RESET_INFO answers with
// iommufd device ids instead of group ids, and VFIO_DEVICE_PCI_HOT_RESET takes a zero-length
// group fd array (ownership is proven by the iommufd context). 6.1's vfio_pci_dependent_device
// names its first field only group_id; newer headers make it a union of group_id and devid.
// Conduit reads that field as group_id, which both headers have.
// ---------------------------------------------------------------------------------------------
#ifndef VFIO_PCI_HOT_RESET_FLAG_DEV_ID
#define VFIO_PCI_HOT_RESET_FLAG_DEV_ID (1 << 0)
#define VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED (1 << 1)
#endif
#ifndef VFIO_PCI_DEVID_OWNED
#define VFIO_PCI_DEVID_OWNED 0
#define VFIO_PCI_DEVID_NOT_OWNED -1
#endif

// ---------------------------------------------------------------------------------------------
// Layout checks: sizes and ioctl numbers as the kernel defines them.
// ---------------------------------------------------------------------------------------------
static_assert(sizeof(struct iommu_destroy) == 8);
static_assert(sizeof(struct iommu_ioas_alloc) == 12);
static_assert(sizeof(struct iommu_iova_range) == 16);
static_assert(sizeof(struct iommu_ioas_allow_iovas) == 24);
static_assert(sizeof(struct iommu_ioas_copy) == 40);
static_assert(sizeof(struct iommu_ioas_iova_ranges) == 32);
static_assert(sizeof(struct iommu_ioas_map) == 40);
static_assert(sizeof(struct iommu_ioas_unmap) == 24);
static_assert(sizeof(struct iommu_option) == 24);
static_assert(sizeof(struct iommu_vfio_ioas) == 12);
static_assert(sizeof(struct iommu_hwpt_vtd_s1) == 24);
static_assert(sizeof(struct iommu_hwpt_arm_smmuv3) == 16);
static_assert(sizeof(struct iommu_hwpt_alloc) == 48);
static_assert(offsetof(struct iommu_hwpt_alloc, fault_id) == 40);
static_assert(sizeof(struct iommu_hw_info_vtd) == 24);
static_assert(sizeof(struct iommu_hw_info_arm_smmuv3) == 40);
static_assert(sizeof(struct iommu_hw_info) == 40);
static_assert(offsetof(struct iommu_hw_info, out_capabilities) == 32);
static_assert(sizeof(struct iommu_hwpt_vtd_s1_invalidate) == 24);
static_assert(sizeof(struct iommu_viommu_arm_smmuv3_invalidate) == 16);
static_assert(sizeof(struct iommu_hwpt_invalidate) == 32);
static_assert(sizeof(struct iommu_hwpt_pgfault) == 40);
static_assert(sizeof(struct iommu_hwpt_page_response) == 8);
static_assert(sizeof(struct iommu_fault_alloc) == 16);
static_assert(sizeof(struct iommu_ioas_map_file) == 40);
static_assert(sizeof(struct iommu_viommu_alloc) == 40);
static_assert(sizeof(struct iommu_vdevice_alloc) == 24);
static_assert(sizeof(struct iommufd_vevent_header) == 8);
static_assert(sizeof(struct iommu_vevent_arm_smmuv3) == 32);
static_assert(sizeof(struct iommu_veventq_alloc) == 32);
static_assert(sizeof(struct vfio_device_bind_iommufd) == 16);
static_assert(sizeof(struct vfio_device_attach_iommufd_pt) == 16);
static_assert(sizeof(struct vfio_device_detach_iommufd_pt) == 12);
static_assert(sizeof(struct vfio_region_dma_range) == 16);
static_assert(sizeof(struct vfio_device_feature_dma_buf) == 16);

// The nesting layouts field by field, as Linux 7.3's include/uapi/linux/iommufd.h has them (and as
// ../shared/smmunest/REPORT.md confirmed with offsetof on an arm64 7.3.4 build).
static_assert(offsetof(struct iommu_hw_info, data_uptr) == 16 && offsetof(struct iommu_hw_info, out_data_type) == 24);
static_assert(offsetof(struct iommu_hw_info, out_max_pasid_log2) == 28);
static_assert(offsetof(struct iommu_hw_info_arm_smmuv3, idr) == 8 && offsetof(struct iommu_hw_info_arm_smmuv3, iidr) == 32);
static_assert(offsetof(struct iommu_hw_info_arm_smmuv3, aidr) == 36);
static_assert(offsetof(struct iommu_hwpt_alloc, pt_id) == 12 && offsetof(struct iommu_hwpt_alloc, out_hwpt_id) == 16);
static_assert(offsetof(struct iommu_hwpt_alloc, __reserved) == 20 && offsetof(struct iommu_hwpt_alloc, data_type) == 24);
static_assert(offsetof(struct iommu_hwpt_alloc, data_len) == 28 && offsetof(struct iommu_hwpt_alloc, data_uptr) == 32);
static_assert(offsetof(struct iommu_viommu_alloc, type) == 8 && offsetof(struct iommu_viommu_alloc, dev_id) == 12);
static_assert(offsetof(struct iommu_viommu_alloc, hwpt_id) == 16 && offsetof(struct iommu_viommu_alloc, out_viommu_id) == 20);
static_assert(offsetof(struct iommu_viommu_alloc, data_len) == 24 && offsetof(struct iommu_viommu_alloc, data_uptr) == 32);
static_assert(offsetof(struct iommu_vdevice_alloc, viommu_id) == 4 && offsetof(struct iommu_vdevice_alloc, dev_id) == 8);
static_assert(offsetof(struct iommu_vdevice_alloc, out_vdevice_id) == 12 && offsetof(struct iommu_vdevice_alloc, virt_id) == 16);
static_assert(offsetof(struct iommu_hwpt_invalidate, hwpt_id) == 4 && offsetof(struct iommu_hwpt_invalidate, data_uptr) == 8);
static_assert(offsetof(struct iommu_hwpt_invalidate, data_type) == 16 && offsetof(struct iommu_hwpt_invalidate, entry_len) == 20);
static_assert(offsetof(struct iommu_hwpt_invalidate, entry_num) == 24 && offsetof(struct iommu_hwpt_invalidate, __reserved) == 28);
static_assert(offsetof(struct iommu_veventq_alloc, viommu_id) == 8 && offsetof(struct iommu_veventq_alloc, type) == 12);
static_assert(offsetof(struct iommu_veventq_alloc, veventq_depth) == 16 && offsetof(struct iommu_veventq_alloc, out_veventq_id) == 20);
static_assert(offsetof(struct iommu_veventq_alloc, out_veventq_fd) == 24 && offsetof(struct iommu_veventq_alloc, __reserved) == 28);
static_assert(offsetof(struct iommufd_vevent_header, sequence) == 4);
static_assert(offsetof(struct vfio_device_attach_iommufd_pt, pt_id) == 8 && offsetof(struct vfio_device_attach_iommufd_pt, pasid) == 12);
static_assert(offsetof(struct vfio_device_detach_iommufd_pt, pasid) == 8);
static_assert(IOMMU_VIOMMU_TYPE_ARM_SMMUV3 == 1 && IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 == 1);
static_assert(IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 == 1 && IOMMU_VEVENTQ_FLAG_LOST_EVENTS == 1);
static_assert(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED == 8 && IOMMU_HW_INFO_FLAG_INPUT_TYPE == 1);

// _IO(';', nr) == 0x3b00 | nr: no size or direction bits, the size travels in the struct.
static_assert(IOMMU_DESTROY == 0x3b80);
static_assert(IOMMU_IOAS_ALLOC == 0x3b81);
static_assert(IOMMU_IOAS_ALLOW_IOVAS == 0x3b82);
static_assert(IOMMU_IOAS_COPY == 0x3b83);
static_assert(IOMMU_IOAS_IOVA_RANGES == 0x3b84);
static_assert(IOMMU_IOAS_MAP == 0x3b85);
static_assert(IOMMU_IOAS_UNMAP == 0x3b86);
static_assert(IOMMU_OPTION == 0x3b87);
static_assert(IOMMU_VFIO_IOAS == 0x3b88);
static_assert(IOMMU_HWPT_ALLOC == 0x3b89);
static_assert(IOMMU_GET_HW_INFO == 0x3b8a);
static_assert(IOMMU_HWPT_INVALIDATE == 0x3b8d);
static_assert(IOMMU_FAULT_QUEUE_ALLOC == 0x3b8e);
static_assert(IOMMU_IOAS_MAP_FILE == 0x3b8f);
static_assert(IOMMU_VIOMMU_ALLOC == 0x3b90);
static_assert(IOMMU_VDEVICE_ALLOC == 0x3b91);
static_assert(IOMMU_VEVENTQ_ALLOC == 0x3b93);
static_assert(VFIO_DEVICE_BIND_IOMMUFD == 0x3b76);       // VFIO_BASE (100) + 18
static_assert(VFIO_DEVICE_ATTACH_IOMMUFD_PT == 0x3b77);  // + 19
static_assert(VFIO_DEVICE_DETACH_IOMMUFD_PT == 0x3b78);  // + 20
static_assert(VFIO_DEVICE_FEATURE_DMA_BUF == 11);
static_assert(IOMMU_HWPT_ALLOC_NEST_PARENT == 1 && IOMMU_HWPT_ALLOC_PASID == 8);
static_assert(IOMMU_HWPT_DATA_ARM_SMMUV3 == 2 && IOMMU_HW_INFO_TYPE_ARM_SMMUV3 == 2);
// The 6.1 VFIO numbers this code relies on (from <linux/vfio.h>), checked against the kernel's.
static_assert(VFIO_GET_API_VERSION == 0x3b64 && VFIO_CHECK_EXTENSION == 0x3b65 && VFIO_SET_IOMMU == 0x3b66);
static_assert(VFIO_GROUP_GET_STATUS == 0x3b67 && VFIO_GROUP_SET_CONTAINER == 0x3b68);
static_assert(VFIO_GROUP_UNSET_CONTAINER == 0x3b69 && VFIO_GROUP_GET_DEVICE_FD == 0x3b6a);
static_assert(VFIO_DEVICE_GET_INFO == 0x3b6b && VFIO_DEVICE_GET_REGION_INFO == 0x3b6c);
static_assert(VFIO_DEVICE_GET_IRQ_INFO == 0x3b6d && VFIO_DEVICE_SET_IRQS == 0x3b6e && VFIO_DEVICE_RESET == 0x3b6f);
static_assert(VFIO_DEVICE_GET_PCI_HOT_RESET_INFO == 0x3b70 && VFIO_DEVICE_FEATURE == 0x3b75);
static_assert(VFIO_DEVICE_PCI_HOT_RESET == 0x3b71);  // VFIO_BASE + 13 (the same number as VFIO_IOMMU_MAP_DMA)
static_assert(sizeof(struct vfio_pci_dependent_device) == 8 && offsetof(struct vfio_pci_dependent_device, segment) == 4);
static_assert(sizeof(struct vfio_pci_hot_reset_info) == 12 && offsetof(struct vfio_pci_hot_reset_info, count) == 8);
static_assert(sizeof(struct vfio_pci_hot_reset) == 12 && offsetof(struct vfio_pci_hot_reset, count) == 8);
static_assert(VFIO_PCI_HOT_RESET_FLAG_DEV_ID == 1 && VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED == 2);
static_assert(uint32_t(VFIO_PCI_DEVID_OWNED) == 0 && uint32_t(VFIO_PCI_DEVID_NOT_OWNED) == 0xffffffffu);
static_assert(VFIO_IOMMU_GET_INFO == 0x3b70 && VFIO_IOMMU_MAP_DMA == 0x3b71 && VFIO_IOMMU_UNMAP_DMA == 0x3b72);
static_assert(sizeof(struct vfio_iommu_type1_info) == 24 && sizeof(struct vfio_iommu_type1_dma_map) == 32);
static_assert(sizeof(struct vfio_iommu_type1_dma_unmap) == 24 && sizeof(struct vfio_region_info) == 32);
static_assert(sizeof(struct vfio_irq_set) == 20 && sizeof(struct vfio_irq_info) == 16);
static_assert(sizeof(struct vfio_device_info) == 20 && sizeof(struct vfio_group_status) == 8);
