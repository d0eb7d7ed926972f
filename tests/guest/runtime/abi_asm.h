/* abi_asm.h - the payload_abi.h numbers that assembly sources need. payload_abi.h itself is C
 * (stdint.h, a struct, UL suffixes), which gas cannot read; kernel.c checks with _Static_assert
 * that every value here equals the one in payload_abi.h. */
#ifndef CONDUIT_GUEST_ABI_ASM_H
#define CONDUIT_GUEST_ABI_ASM_H

#define ABI_EXIT_PORT 0x700
#define ABI_UART_PORT 0x3f8
#define ABI_TSS_ADDR 0x3000
#define ABI_TSS_STRIDE 128
#define ABI_SEL_KCODE 0x08
#define ABI_SEL_KDATA 0x10
#define ABI_SEL_UDATA 0x1b
#define ABI_SEL_UCODE 0x23
#define ABI_SEL_TSS0 0x28

#endif
