/* sipi_tramp.S - AP start-up code for the sipi payload. The BSP copies [sipi_tramp_start,
 * sipi_tramp_end) to SIPI_TRAMP_ADDR and sends INIT, SIPI, SIPI with vector SIPI_VECTOR; the AP
 * then runs this at CS:IP = 0800:0000 in real mode (ring 0: emulated, ~40 instructions).
 * It enters long mode in one step (CR0.PE and PG together, as the SDM allows with EFER.LME set and
 * CR4.PAE), on the ABI's GDT and identity page tables, loads TR with its own TSS (whose GDT
 * descriptor it first marks available, since LTR faults on a busy one), takes the ABI stack of
 * vCPU i, records its arrival in the mailbox, and jumps to the payload entry with the registers
 * payload_abi.h promises (rdi = boot info, rsi = index): from there on it is an ordinary vCPU.
 * Position-dependent on purpose: every address is absolute (SIPI_TRAMP_ADDR + offset). */
#include "abi_asm.h"
#include "sipi_tramp.h"

#define ABS(label) (SIPI_TRAMP_ADDR + ((label) - sipi_tramp_start))

    .section .rodata.sipi_tramp, "a"
    .globl sipi_tramp_start, sipi_tramp_end
    .code16
sipi_tramp_start:
    cli
    xor %ax, %ax
    mov %ax, %ds                            /* DS = 0: mailbox by absolute address */
    lgdtl SIPI_MBOX_ADDR + MBOX_GDTR
    mov $TRAMP_CR4, %eax
    mov %eax, %cr4
    mov $TRAMP_PML4_ADDR, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx                   /* IA32_EFER */
    mov $TRAMP_EFER, %eax
    xor %edx, %edx
    wrmsr
    mov $TRAMP_CR0, %eax
    mov %eax, %cr0
    ljmpl $ABI_SEL_KCODE, $ABS(tramp64)

    .code64
tramp64:
    mov $ABI_SEL_KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov SIPI_MBOX_ADDR + MBOX_CPU, %esi     /* i (zero-extended into rsi) */
    mov %esi, %ecx
    shl $4, %ecx
    add $ABI_SEL_TSS0, %ecx                 /* TSS selector of vCPU i = 0x28 + 16 i */
    andb $0xfd, TRAMP_GDT_ADDR + 5(%rcx)    /* type 11 (busy) -> 9 (available) */
    ltr %cx
    mov %esi, %eax
    shl $TRAMP_STACK_SHIFT, %eax
    mov $TRAMP_STACKS_TOP, %esp
    sub %rax, %rsp                          /* 0x9f000 - i * 0x4000 */
    movl $1, SIPI_MBOX_ADDR + MBOX_ARRIVED(,%rsi,4)
    mov $TRAMP_BOOT_INFO_ADDR, %edi
    mov SIPI_MBOX_ADDR + MBOX_ENTRY, %rax
    jmp *%rax
sipi_tramp_end:

    .section .note.GNU-stack, "", @progbits
