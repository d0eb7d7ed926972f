/* hello16: the bench's "hello" for real mode, one source for two machines (bench/README.md).
 * Prints the hello payload's first line on COM1 (0x3f8), polling LSR.THRE like a firmware would,
 * then stops the VM through the machine's exit device:
 *   conduit (--defsym BENCH_QEMU=0): image loaded and linked at 0x8000, payload mode "real16",
 *       exit device port 0x700 (vmm/arch/x86_64/payload_abi.h), value 0 -> `conduit run` exits 0;
 *   qemu    (--defsym BENCH_QEMU=1): a 64 KiB -bios image; the CPU starts at f000:fff0 (CS base
 *       0xffff0000), where .reset jumps back to `start`; isa-debug-exit at port 0xf4, value 0 ->
 *       qemu exits (0 << 1) | 1 = 1.
 * No stack, no far jumps: code is reached IP-relative and data through %cs with link-time offsets,
 * so the same instructions run in both places. Every instruction here runs at ring 0, which this
 * host's KVM emulates one instruction at a time; both machines pay that equally. */

    .code16
    .text
    .globl start
start:
    cli
    cld
    mov $msg, %si
1:  movb %cs:(%si), %bl
    inc %si
    test %bl, %bl
    jz 3f
    mov $0x3fd, %dx             /* LSR */
2:  inb %dx, %al
    test $0x20, %al             /* THRE */
    jz 2b
    mov $0x3f8, %dx             /* THR */
    mov %bl, %al
    outb %al, %dx
    jmp 1b

3:  xor %eax, %eax
.if BENCH_QEMU
    mov $0xf4, %dx              /* isa-debug-exit, iosize 1 */
    outb %al, %dx
.else
    mov $0x700, %dx             /* CONDUIT_EXIT_PORT */
    outl %eax, %dx
.endif
4:  hlt
    jmp 4b

msg:
    .asciz "Hello from a Conduit guest\n"

.if BENCH_QEMU
    .section .reset, "ax"
    .globl reset
reset:
    jmp start                   /* near jump: CS keeps its reset base 0xffff0000 */
.endif

    .section .note.GNU-stack, "", @progbits
