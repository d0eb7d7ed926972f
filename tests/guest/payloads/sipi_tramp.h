/* sipi_tramp.h - numbers shared by sipi.c and sipi_tramp.S (gas reads this file too: plain
 * #defines only). sipi.c checks with _Static_assert that the ABI values equal payload_abi.h. */
#ifndef CONDUIT_GUEST_SIPI_TRAMP_H
#define CONDUIT_GUEST_SIPI_TRAMP_H

/* Where the BSP copies the trampoline: page-aligned and below 1 MiB, so SIPI vector 0x08 starts the
 * AP at 0800:0000. It lies between the ABI's TSSs (0x3000..0x3400) and page tables (0x10000+), and
 * under the lowest vCPU stack (0x9f000 - 8 * 0x4000 = 0x7f000 is the bottom of vCPU 7's). */
#define SIPI_TRAMP_ADDR 0x8000
#define SIPI_VECTOR (SIPI_TRAMP_ADDR >> 12)
#define SIPI_TRAMP_MAX 0xf00               /* code must end before the mailbox */
#define SIPI_MBOX_ADDR (SIPI_TRAMP_ADDR + SIPI_TRAMP_MAX)

/* Mailbox (in the trampoline page), written by the BSP before each INIT/SIPI. */
#define MBOX_ENTRY 0x00   /* u64: the 64-bit entry the AP jumps to (_start) */
#define MBOX_CPU 0x08     /* u32: index of the AP being started */
#define MBOX_GDTR 0x10    /* u16 limit + u32 base, for lgdtl in real mode */
#define MBOX_ARRIVED 0x20 /* u32[8]: AP i writes 1 at [i] once in long mode with its TR loaded */

/* payload_abi.h values the trampoline needs (asserted equal in sipi.c). */
#define TRAMP_BOOT_INFO_ADDR 0x1000
#define TRAMP_GDT_ADDR 0x2000
#define TRAMP_PML4_ADDR 0x10000
#define TRAMP_STACKS_TOP 0x9f000
#define TRAMP_STACK_SHIFT 14               /* CONDUIT_STACK_SIZE = 1 << 14 */

/* The 64-bit entry state of payload_abi.h. */
#define TRAMP_CR0 0x80050033 /* PG AM WP NE ET MP PE */
#define TRAMP_CR4 0x6a0      /* OSXMMEXCPT OSFXSR PGE PAE */
#define TRAMP_EFER 0x101     /* LME SCE (the CPU sets LMA when paging comes on) */

#endif
