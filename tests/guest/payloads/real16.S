/* real16: a real-mode payload (payload mode "real16", load address 0x8000, entry 0x8000).
 * Works whether the VMM enters at CS:IP = 0000:8000 or 0800:0000: data is addressed with DS = 0
 * through absolute addresses (it is linked at 0x8000) and every jump is IP-relative.
 * Serial:  "real16: hello from real mode"
 * Exit:    42 (0x2a) through the exit device; 43 (0x2b) if CR0.PE was set (not real mode). */
#include "abi_asm.h"

    .code16
    .text
    .globl start
start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp            /* below the image */

    mov $msg, %si
1:  lodsb                       /* al = ds:[si++] */
    test %al, %al
    jz 3f
    mov %al, %bl
    mov $(ABI_UART_PORT + 5), %dx
2:  inb %dx, %al                /* LSR: wait for THRE */
    test $0x20, %al
    jz 2b
    mov $ABI_UART_PORT, %dx
    mov %bl, %al
    outb %al, %dx
    jmp 1b

3:  smsw %ax                    /* CR0 low word: PE must be clear */
    mov $42, %eax
    test $1, %ax
    jz 4f
    mov $43, %eax
4:  mov $ABI_EXIT_PORT, %dx
    outl %eax, %dx
5:  hlt
    jmp 5b

msg:
    .asciz "real16: hello from real mode\n"

    .section .note.GNU-stack, "", @progbits
