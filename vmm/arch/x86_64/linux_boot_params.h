// The Linux x86 boot protocol structures (Documentation/arch/x86/boot.rst and zero-page.rst;
// arch/x86/include/uapi/asm/bootparam.h): the setup header a bzImage carries at 0x1f1 and the
// 4 KiB "zero page" (struct boot_params) the boot loader hands the kernel in %rsi.
// Written out here with their fixed offsets checked at compile time, because the kernel headers are
// not a userspace uAPI we can include.
#pragma once

#include <cstddef>
#include <cstdint>

#include "vmm/arch/x86_64/e820.h"

namespace conduit::vmm::x86::linux_boot {

inline constexpr uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
inline constexpr uint16_t kBootFlag = 0xaa55;
inline constexpr uint64_t kSetupHeaderOffset = 0x1f1;
inline constexpr uint16_t kMinProtocol = 0x020c;  // 2.12: xloadflags, needed to know about the 64-bit entry

// loadflags
inline constexpr uint8_t kLoadedHigh = 1 << 0;
inline constexpr uint8_t kKaslrFlag = 1 << 1;
inline constexpr uint8_t kQuietFlag = 1 << 5;
inline constexpr uint8_t kKeepSegments = 1 << 6;
inline constexpr uint8_t kCanUseHeap = 1 << 7;
// xloadflags
inline constexpr uint16_t kXlfKernel64 = 1 << 0;
inline constexpr uint16_t kXlfCanBeLoadedAbove4G = 1 << 1;
// type_of_loader 0xff: "undefined" boot loader, the value for loaders without an assigned id.
inline constexpr uint8_t kLoaderUndefined = 0xff;
// The 64-bit entry is 0x200 bytes into the protected-mode kernel (boot.rst, "64-bit boot protocol").
inline constexpr uint64_t kEntry64Offset = 0x200;

struct __attribute__((packed)) SetupHeader {
    uint8_t setup_sects;          // 0x1f1
    uint16_t root_flags;          // 0x1f2
    uint32_t syssize;             // 0x1f4
    uint16_t ram_size;            // 0x1f8
    uint16_t vid_mode;            // 0x1fa
    uint16_t root_dev;            // 0x1fc
    uint16_t boot_flag;           // 0x1fe
    uint16_t jump;                // 0x200
    uint32_t header;              // 0x202
    uint16_t version;             // 0x206
    uint32_t realmode_swtch;      // 0x208
    uint16_t start_sys_seg;       // 0x20c
    uint16_t kernel_version;      // 0x20e
    uint8_t type_of_loader;       // 0x210
    uint8_t loadflags;            // 0x211
    uint16_t setup_move_size;     // 0x212
    uint32_t code32_start;        // 0x214
    uint32_t ramdisk_image;       // 0x218
    uint32_t ramdisk_size;        // 0x21c
    uint32_t bootsect_kludge;     // 0x220
    uint16_t heap_end_ptr;        // 0x224
    uint8_t ext_loader_ver;       // 0x226
    uint8_t ext_loader_type;      // 0x227
    uint32_t cmd_line_ptr;        // 0x228
    uint32_t initrd_addr_max;     // 0x22c
    uint32_t kernel_alignment;    // 0x230
    uint8_t relocatable_kernel;   // 0x234
    uint8_t min_alignment;        // 0x235
    uint16_t xloadflags;          // 0x236
    uint32_t cmdline_size;        // 0x238
    uint32_t hardware_subarch;    // 0x23c
    uint64_t hardware_subarch_data;  // 0x240
    uint32_t payload_offset;      // 0x248
    uint32_t payload_length;      // 0x24c
    uint64_t setup_data;          // 0x250
    uint64_t pref_address;        // 0x258
    uint32_t init_size;           // 0x260
    uint32_t handover_offset;     // 0x264
    uint32_t kernel_info_offset;  // 0x268
};
static_assert(sizeof(SetupHeader) == 0x26c - 0x1f1);
static_assert(offsetof(SetupHeader, header) == 0x202 - 0x1f1);
static_assert(offsetof(SetupHeader, xloadflags) == 0x236 - 0x1f1);
static_assert(offsetof(SetupHeader, pref_address) == 0x258 - 0x1f1);

inline constexpr size_t kE820Max = 128;  // E820_MAX_ENTRIES_ZEROPAGE

struct __attribute__((packed)) BootParams {
    uint8_t screen_info[0x40];        // 0x000
    uint8_t apm_bios_info[0x14];      // 0x040
    uint8_t pad2[4];                  // 0x054
    uint64_t tboot_addr;              // 0x058
    uint8_t ist_info[0x10];           // 0x060
    uint64_t acpi_rsdp_addr;          // 0x070
    uint8_t pad3[8];                  // 0x078
    uint8_t hd0_info[0x10];           // 0x080
    uint8_t hd1_info[0x10];           // 0x090
    uint8_t sys_desc_table[0x10];     // 0x0a0
    uint8_t olpc_ofw_header[0x10];    // 0x0b0
    uint32_t ext_ramdisk_image;       // 0x0c0
    uint32_t ext_ramdisk_size;        // 0x0c4
    uint32_t ext_cmd_line_ptr;        // 0x0c8
    uint8_t pad4[0x13c - 0xcc];       // 0x0cc
    uint32_t cc_blob_address;         // 0x13c
    uint8_t edid_info[0x80];          // 0x140
    uint8_t efi_info[0x20];           // 0x1c0
    uint32_t alt_mem_k;               // 0x1e0
    uint32_t scratch;                 // 0x1e4
    uint8_t e820_entries;             // 0x1e8
    uint8_t eddbuf_entries;           // 0x1e9
    uint8_t edd_mbr_sig_buf_entries;  // 0x1ea
    uint8_t kbd_status;               // 0x1eb
    uint8_t secure_boot;              // 0x1ec
    uint8_t pad5[2];                  // 0x1ed
    uint8_t sentinel;                 // 0x1ef: must stay 0, else the kernel wipes "uninitialised" fields
    uint8_t pad6[1];                  // 0x1f0
    SetupHeader hdr;                  // 0x1f1
    uint8_t pad7[0x290 - 0x1f1 - sizeof(SetupHeader)];
    uint32_t edd_mbr_sig_buffer[16];  // 0x290
    E820Entry e820_table[kE820Max];   // 0x2d0
    uint8_t pad8[48];                 // 0xcd0
    uint8_t eddbuf[0x1ec];            // 0xd00
    uint8_t pad9[276];                // 0xeec
};
static_assert(sizeof(BootParams) == 4096);
static_assert(offsetof(BootParams, ext_ramdisk_image) == 0x0c0);
static_assert(offsetof(BootParams, e820_entries) == 0x1e8);
static_assert(offsetof(BootParams, sentinel) == 0x1ef);
static_assert(offsetof(BootParams, hdr) == 0x1f1);
static_assert(offsetof(BootParams, e820_table) == 0x2d0);

}  // namespace conduit::vmm::x86::linux_boot
