/* kernel.c - the ring-0 half of the runtime: per-vCPU set-up, syscall and interrupt dispatch,
 * exception reports. Everything here runs emulated (~1-2.5 us per instruction), so it stays small:
 * no loops over large data, no rep-string over big buffers. */
#include "internal.h"

#include "abi_asm.h"

/* start.S and real16.S use abi_asm.h: keep it equal to payload_abi.h. */
_Static_assert(ABI_EXIT_PORT == CONDUIT_EXIT_PORT, "abi_asm.h");
_Static_assert(ABI_UART_PORT == CONDUIT_UART_PORT, "abi_asm.h");
_Static_assert(ABI_TSS_ADDR == CONDUIT_TSS_ADDR, "abi_asm.h");
_Static_assert(ABI_TSS_STRIDE == CONDUIT_TSS_STRIDE, "abi_asm.h");
_Static_assert(ABI_SEL_KCODE == CONDUIT_SEL_KCODE, "abi_asm.h");
_Static_assert(ABI_SEL_KDATA == CONDUIT_SEL_KDATA, "abi_asm.h");
_Static_assert(ABI_SEL_UDATA == CONDUIT_SEL_UDATA, "abi_asm.h");
_Static_assert(ABI_SEL_UCODE == CONDUIT_SEL_UCODE, "abi_asm.h");
_Static_assert(ABI_SEL_TSS0 == CONDUIT_SEL_TSS(0), "abi_asm.h");
_Static_assert(ABI_TSS_STRIDE == 8 * (CONDUIT_SEL_TSS(1) - CONDUIT_SEL_TSS(0)), "start.S computes TSS(i) from TR");
_Static_assert(RT_MAX_CPUS * RT_USER_STACK_SIZE == 8 * 0x8000, "payload.ld reserves the CPL3 stacks");

#define MSR_LSTAR 0xc0000082u

extern char rt_syscall_stray[];

/* Shared runtime state. It lives in .data/.bss, which the linker script places inside the loaded
 * image (zero-filled in the file), so nothing has to be cleared at ring 0. */
const struct conduit_boot_info *rt_bi;
rt_irq_handler rt_handlers[256];
struct rt_gate rt_idt[256] __attribute__((aligned(4096)));
static const struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
} rt_idtr = {sizeof(rt_idt) - 1, (uint64_t)rt_idt};

static inline void k_wrmsr(uint32_t msr, uint64_t v) {
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline uint64_t k_rdmsr(uint32_t msr) {
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static void k_serial_init(void) {
    const uint16_t p = CONDUIT_UART_PORT;
    k_outb(p + UART_IER, 0);
    k_outb(p + UART_LCR, 0x80); /* DLAB: divisor 1 = 115200 baud */
    k_outb(p + 0, 1);
    k_outb(p + 1, 0);
    k_outb(p + UART_LCR, 0x03); /* 8N1 */
    /* FCR is left alone: toggling the FIFO enable empties the receive queue, and the host may
     * already have queued input (e.g. piped into stdin) before this runs. */
    k_outb(p + UART_MCR, 0x0b); /* DTR, RTS, OUT2 (OUT2 gates the IRQ line on PCs) */
}

/* Called from _start on every vCPU. Returns the CPL3 stack top, or 0 to park this vCPU. */
uint64_t rt_kernel_init(const struct conduit_boot_info *bi, uint64_t cpu, uint64_t kstack_top) {
    if (cpu >= RT_MAX_CPUS) return 0;
    *(volatile uint64_t *)(CONDUIT_TSS_ADDR + CONDUIT_TSS_STRIDE * cpu + 4) = kstack_top; /* RSP0 */
    /* `syscall` does not enter ring 0 here (see start.S); make a stray one fault visibly. */
    k_wrmsr(MSR_LSTAR, (uint64_t)rt_syscall_stray);
    __asm__ volatile("lidt %0" ::"m"(rt_idtr));
    if (cpu == 0) {
        rt_bi = bi;
        k_serial_init();
    }
    return (uint64_t)__ustacks + (cpu + 1) * RT_USER_STACK_SIZE;
}

void k_serial_write(const char *buf, size_t len) {
    const uint16_t p = CONDUIT_UART_PORT;
    for (size_t i = 0; i < len; i++) {
        for (unsigned spin = 0; spin < 100000 && !(k_inb(p + UART_LSR) & UART_LSR_THRE); spin++) {
        }
        k_outb(p + UART_THR, (uint8_t)buf[i]);
    }
}

void __attribute__((noreturn)) k_exit(uint32_t value) {
    k_outl(CONDUIT_EXIT_PORT, value);
    /* The VMM stops on that write; if it did not (no exit device), stop this vCPU. */
    for (;;) __asm__ volatile("cli; hlt");
}

uint64_t rt_syscall_dispatch(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t nr) {
    (void)a3;
    switch (nr) {
    case RT_SYS_WRITE:
        k_serial_write((const char *)a0, a1);
        return a1;
    case RT_SYS_EXIT:
        k_exit((uint32_t)a0);
    case RT_SYS_OUT:
        if (a2 == 1) k_outb((uint16_t)a0, (uint8_t)a1);
        else if (a2 == 2) k_outw((uint16_t)a0, (uint16_t)a1);
        else k_outl((uint16_t)a0, (uint32_t)a1);
        return 0;
    case RT_SYS_IN:
        if (a1 == 1) return k_inb((uint16_t)a0);
        if (a1 == 2) return k_inw((uint16_t)a0);
        return k_inl((uint16_t)a0);
    case RT_SYS_KCALL:
        return ((rt_kfn)a0)(a1);
    case RT_SYS_HALT:
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        return 0;
    case RT_SYS_PARK:
        for (;;) __asm__ volatile("cli; hlt");
    default:
        rt_printf("rt: bad syscall %lu\n", nr);
        k_exit(RT_EXIT_BAD_SYSCALL);
    }
}

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
};

void rt_isr_dispatch(struct rt_frame *f) {
    unsigned v = (unsigned)f->vector & 0xff;
    if (v == RT_SYSCALL_VECTOR && (f->cs & 3) == 3) { /* the CPL3 -> ring 0 gate (rt_syscall) */
        f->rax = rt_syscall_dispatch(f->rdi, f->rsi, f->rdx, f->r8, f->rax);
        return;
    }
    rt_irq_handler h = rt_handlers[v];
    if (h) {
        h(f);
        if (v >= 32 && v != RT_SPURIOUS_VECTOR) lapic_eoi();
        return;
    }
    if (v == RT_SPURIOUS_VECTOR) return;
    if (v < 32) {
        uint64_t cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        rt_printf("rt: EXCEPTION %s vector=%u error=0x%lx rip=0x%lx cr2=0x%lx cs=0x%lx rsp=0x%lx cpu=%u\n",
                  exception_names[v], v, f->error, f->rip, cr2, f->cs, f->rsp, rt_cpu());
        k_exit(RT_EXIT_EXCEPTION(v));
    }
    rt_printf("rt: UNEXPECTED INTERRUPT vector=0x%x rip=0x%lx cpu=%u\n", v, f->rip, rt_cpu());
    k_exit(RT_EXIT_UNEXPECTED_IRQ);
}

uint64_t rt_k_rdmsr(uint64_t msr) { return k_rdmsr((uint32_t)msr); }
uint64_t rt_k_wrmsr(uint64_t arg) {
    const uint64_t *a = (const uint64_t *)arg; /* {msr, value}; ring 0 reads the user stack (no SMAP) */
    k_wrmsr((uint32_t)a[0], a[1]);
    return 0;
}
