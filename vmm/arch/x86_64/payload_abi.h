/* The contract between Conduit and a raw guest payload on x86_64 (docs/payloads.md).
 * C and C++: the payload runtime in tests/guest/ includes this header too. */
#ifndef CONDUIT_PAYLOAD_ABI_H
#define CONDUIT_PAYLOAD_ABI_H

#include <stdint.h>

/* Exit device: a 32-bit port. Writing V (outb/outw/outl) stops the VM; `conduit run` exits with
 * status V & 0xff and logs V in full. */
#define CONDUIT_EXIT_PORT 0x700
#define CONDUIT_EXIT_PORT_SIZE 4

/* Standard COM1 16550 UART, IRQ 4 (IOAPIC pin 4, edge). */
#define CONDUIT_UART_PORT 0x3f8
#define CONDUIT_UART_IRQ 4

/* Fixed low-memory layout for 64-bit payloads; the payload image must not overlap it (load at
 * 0x100000 or above). */
#define CONDUIT_BOOT_INFO_ADDR 0x1000UL   /* struct conduit_boot_info */
#define CONDUIT_GDT_ADDR       0x2000UL   /* see selectors below */
#define CONDUIT_TSS_ADDR       0x3000UL   /* one 128-byte TSS per vCPU: TSS(i) = 0x3000 + 128*i */
#define CONDUIT_TSS_STRIDE     128UL
#define CONDUIT_PML4_ADDR      0x10000UL  /* then the PDPT and the page directories */
#define CONDUIT_STACKS_TOP     0x9f000UL  /* vCPU i starts with rsp = 0x9f000 - i * 0x4000 */
#define CONDUIT_STACK_SIZE     0x4000UL
#define CONDUIT_PAYLOAD_MAX_VCPUS 8

/* GDT selectors set up for 64-bit payloads. TR = CONDUIT_SEL_TSS(i) (busy) on vCPU i. */
#define CONDUIT_SEL_KCODE 0x08   /* 64-bit code, DPL0 */
#define CONDUIT_SEL_KDATA 0x10   /* data, DPL0 */
#define CONDUIT_SEL_UDATA 0x1b   /* data, DPL3 (descriptor 0x18) */
#define CONDUIT_SEL_UCODE 0x23   /* 64-bit code, DPL3 (descriptor 0x20) */
#define CONDUIT_SEL_TSS(i) (0x28 + 16 * (i))

#define CONDUIT_BOOT_INFO_MAGIC 0x54444e43u /* "CNDT" */
#define CONDUIT_BOOT_INFO_VERSION 1u

/* At 64-bit entry every vCPU starts at `entry`, at CPL0 with interrupts off, in long mode with:
 *   rdi = CONDUIT_BOOT_INFO_ADDR, rsi = vCPU index (0 = BSP), rsp = its stack top,
 *   CR0 = PE|MP|ET|NE|WP|AM|PG, CR4 = PAE|PGE|OSFXSR|OSXMMEXCPT, EFER = SCE|LME|LMA,
 *   CR3 = CONDUIT_PML4_ADDR: identity map of [0, boot_info.identity_map_end) with 2 MiB pages,
 *   present|writable|user on every level, so CPL3 code reaches RAM, the LAPIC/IOAPIC and BARs.
 *   2 MiB pages that hold no RAM (BAR windows, ECAM, LAPIC/IOAPIC) are mapped uncached (PCD|PWT).
 *   GDT entries for the TSSs are marked busy (type 11), as LTR leaves them.
 * With "ap_start": "sipi" only the BSP starts so; the APs wait in the reset state for the payload's
 * INIT/SIPI, and their TSS descriptors are left available (type 9) for their own LTR.
 * No IDT is loaded (IDTR limit 0): the payload installs its own before enabling interrupts. */
struct conduit_boot_info {
    uint32_t magic;           /* CONDUIT_BOOT_INFO_MAGIC */
    uint32_t version;         /* CONDUIT_BOOT_INFO_VERSION */
    uint32_t vcpu_count;
    uint32_t reserved0;
    uint64_t ram_low_size;    /* RAM at [0, ram_low_size) */
    uint64_t ram_high_size;   /* RAM at [4 GiB, 4 GiB + ram_high_size) */
    uint64_t ecam_base;       /* PCI ECAM window (0 if none) */
    uint64_t ecam_size;
    uint64_t mmio32_base;     /* PCI BAR windows */
    uint64_t mmio32_size;
    uint64_t mmio64_base;
    uint64_t mmio64_size;
    uint64_t identity_map_end;
    uint64_t payload_base;    /* where the image was loaded, and its size */
    uint64_t payload_size;
};

#endif
