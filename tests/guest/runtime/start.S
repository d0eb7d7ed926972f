/* start.S - ring-0 entry, CPL3 entry, syscall entry and the 256 interrupt stubs.
 *
 * Every vCPU enters _start (payload_abi.h): CPL0, IF=0, long mode, rdi = boot info, rsi = vCPU
 * index, rsp = this vCPU's stack top. Ring 0 is emulated here (~1-2.5 us per instruction), so this
 * file does only what needs ring 0 and leaves for CPL3 as soon as it can:
 *   _start -> rt_kernel_init() (C, ring 0: TSS.RSP0, LSTAR, lidt, UART) -> iretq to
 *   CPL3 at rt_user_trampoline -> rt_user_main() (C, CPL3: fills the IDT, calls main()).
 * The ring-0 stack given by the VMM becomes this vCPU's TSS.RSP0 stack: syscalls and interrupts
 * from CPL3 start at its top again each time.
 */
#include "abi_asm.h"

    .section .text.entry, "ax"
    .globl _start
    .code64
_start:
    cli
    cld
    and $-16, %rsp
    mov %rdi, %r12                  /* boot info */
    mov %rsi, %r13                  /* vCPU index */
    mov %rsp, %rdx                  /* ring-0 stack top -> TSS.RSP0 */
    call rt_kernel_init             /* returns the CPL3 stack top, 0 to park */
    test %rax, %rax
    jz rt_park_k
    mov %r12, %rdi
    mov %r13, %rsi
    pushq $ABI_SEL_UDATA        /* SS */
    push %rax                       /* RSP */
    pushq $0x202                    /* RFLAGS: IF=1, IOPL=0 */
    pushq $ABI_SEL_UCODE        /* CS */
    lea rt_user_trampoline(%rip), %rax
    push %rax                       /* RIP */
    iretq

    .globl rt_park_k
rt_park_k:
    cli
1:  hlt
    jmp 1b

    .text
/* CPL3, rsp 16-byte aligned: call rt_user_main(bi, cpu); it never returns. */
rt_user_trampoline:
    xor %ebp, %ebp
    call rt_user_main
    ud2

/* LSTAR target. Under this KVM (kvm_pvm) `syscall` at CPL3 does NOT reach ring 0: it jumps to
 * LSTAR still at CPL3 with RFLAGS unmasked (measured). The runtime's CPL3 -> ring 0 gate is int3
 * instead (rt_syscall in user.c); a stray syscall lands here and is reported as #UD. */
    .globl rt_syscall_stray
rt_syscall_stray:
    ud2

/* 256 interrupt stubs, 16 bytes apart from rt_isr_stubs. Vectors without a CPU-pushed error
 * code push a 0 so every frame has the same layout (struct rt_frame in rt.h). */
    .macro ISR_STUB v
    .balign 16
    .if (\v == 8) || (\v >= 10 && \v <= 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    .else
    pushq $0
    .endif
    pushq $\v
    jmp rt_isr_common
    .endm

    .balign 16
    .globl rt_isr_stubs
rt_isr_stubs:
    .altmacro
    .set vec, 0
    .rept 256
    ISR_STUB %vec
    .set vec, vec + 1
    .endr
    .noaltmacro

rt_isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call rt_isr_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp                   /* vector, error */
    iretq

    .section .note.GNU-stack, "", @progbits
