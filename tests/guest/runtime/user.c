/* user.c - the CPL3 half of the runtime: start-up after the iretq from _start, syscall wrappers
 * and the helpers that work at either privilege level. */
#include "internal.h"

static volatile uint32_t rt_ready;   /* set by the BSP once the IDT is filled */
static rt_spinlock rt_console_lock;

/* ---- start-up (CPL3) ---------------------------------------------------------------------- */

static void fill_idt(void) {
    /* Done at CPL3 (the IDT page is mapped U/S): 256 gates natively instead of ~5000 emulated
     * instructions. Interrupts cannot arrive yet: nothing has enabled the LAPIC. */
    for (unsigned v = 0; v < 256; v++) {
        uint64_t a = (uint64_t)rt_isr_stubs + 16 * v;
        struct rt_gate *g = &rt_idt[v];
        g->offset0 = (uint16_t)a;
        g->selector = CONDUIT_SEL_KCODE;
        g->ist = 0;
        /* interrupt gate, DPL0; #BP gets DPL3 so int3 at CPL3 is reported as #BP, not #GP */
        g->type_attr = v == 3 ? 0xee : 0x8e;
        g->offset1 = (uint16_t)(a >> 16);
        g->offset2 = (uint32_t)(a >> 32);
        g->reserved = 0;
    }
}

void rt_user_main(const struct conduit_boot_info *bi, uint64_t cpu) {
    if (cpu == 0) {
        if (bi->magic != CONDUIT_BOOT_INFO_MAGIC || bi->version != CONDUIT_BOOT_INFO_VERSION) {
            rt_printf("rt: bad boot info at %p: magic 0x%x version %u\n", (const void *)bi, bi->magic, bi->version);
            rt_exit(RT_EXIT_BAD_BOOT_INFO);
        }
        fill_idt();
        __atomic_store_n(&rt_ready, 1, __ATOMIC_RELEASE);
    } else {
        while (!__atomic_load_n(&rt_ready, __ATOMIC_ACQUIRE)) rt_pause();
    }
    int r = main(bi, (unsigned)cpu);
    if (cpu == 0) rt_exit((uint32_t)r);
    rt_park();
}

const struct conduit_boot_info *rt_boot_info(void) { return rt_bi; }
unsigned rt_cpu_count(void) { return rt_bi->vcpu_count; }

unsigned rt_cpu(void) {
    if (rt_cpl() == 0) {
        uint64_t tr;
        __asm__ volatile("str %0" : "=r"(tr));
        return (unsigned)(((tr & 0xffff) - CONDUIT_SEL_TSS(0)) / 16);
    }
    uint64_t sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    return (unsigned)((sp - (uint64_t)__ustacks) / RT_USER_STACK_SIZE);
}

/* ---- syscalls ------------------------------------------------------------------------------- */

uint64_t rt_syscall(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) {
    register uint64_t r8 __asm__("r8") = a3;
    uint64_t ret;
    /* int3 through a DPL3 gate: `syscall` stays at CPL3 and `int n` raises #UD under this KVM. */
    __asm__ volatile("int3" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r8) : "memory");
    return ret;
}

uint64_t rt_kcall(rt_kfn fn, uint64_t arg) {
    if (rt_cpl() == 0) return fn(arg);
    return rt_syscall(RT_SYS_KCALL, (uint64_t)fn, arg, 0, 0);
}

void rt_halt(void) {
    if (rt_cpl() == 0) __asm__ volatile("sti; hlt; cli" ::: "memory");
    else rt_syscall(RT_SYS_HALT, 0, 0, 0, 0);
}

void rt_exit(uint32_t value) {
    if (rt_cpl() == 0) k_exit(value);
    rt_syscall(RT_SYS_EXIT, value, 0, 0, 0);
    for (;;) rt_pause();
}

void rt_park(void) {
    if (rt_cpl() == 0) __asm__ volatile("jmp rt_park_k");
    rt_syscall(RT_SYS_PARK, 0, 0, 0, 0);
    for (;;) rt_pause();
}

static void io_out(uint16_t port, uint32_t v, unsigned size) {
    if (rt_cpl() == 0) {
        if (size == 1) k_outb(port, (uint8_t)v);
        else if (size == 2) k_outw(port, (uint16_t)v);
        else k_outl(port, v);
        return;
    }
    rt_syscall(RT_SYS_OUT, port, v, size, 0);
}
static uint32_t io_in(uint16_t port, unsigned size) {
    if (rt_cpl() == 0) return size == 1 ? k_inb(port) : size == 2 ? k_inw(port) : k_inl(port);
    return (uint32_t)rt_syscall(RT_SYS_IN, port, size, 0, 0);
}
void rt_outb(uint16_t port, uint8_t v) { io_out(port, v, 1); }
void rt_outw(uint16_t port, uint16_t v) { io_out(port, v, 2); }
void rt_outl(uint16_t port, uint32_t v) { io_out(port, v, 4); }
uint8_t rt_inb(uint16_t port) { return (uint8_t)io_in(port, 1); }
uint16_t rt_inw(uint16_t port) { return (uint16_t)io_in(port, 2); }
uint32_t rt_inl(uint16_t port) { return io_in(port, 4); }

uint64_t rt_rdmsr(uint32_t msr) { return rt_kcall(rt_k_rdmsr, msr); }
void rt_wrmsr(uint32_t msr, uint64_t v) {
    uint64_t args[2] = {msr, v};
    rt_kcall(rt_k_wrmsr, (uint64_t)args);
}

/* ---- console -------------------------------------------------------------------------------- */

void rt_serial_write(const char *buf, size_t len) {
    if (rt_cpl() == 0) {
        /* Ring 0 (exception reports, handlers): take the lock if it comes quickly, print anyway. */
        int got = 0;
        for (unsigned i = 0; i < 64 && !got; i++) got = !__atomic_exchange_n(&rt_console_lock.v, 1, __ATOMIC_ACQUIRE);
        k_serial_write(buf, len);
        if (got) rt_unlock(&rt_console_lock);
        return;
    }
    rt_lock(&rt_console_lock);
    rt_syscall(RT_SYS_WRITE, (uint64_t)buf, len, 0, 0);
    rt_unlock(&rt_console_lock);
}

void rt_puts(const char *s) { rt_serial_write(s, strlen(s)); }

int rt_printf(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = rt_vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    rt_serial_write(buf, len);
    return n;
}

/* ---- locks and time ------------------------------------------------------------------------- */

void rt_lock(rt_spinlock *l) {
    while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED)) rt_pause();
}
void rt_unlock(rt_spinlock *l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

uint64_t rt_tsc_hz(void) {
    static uint64_t hz;
    if (hz) return hz;
    uint32_t a, b, c, d, max;
    cpuid(0, &max, &b, &c, &d);
    uint64_t r = 0;
    if (max >= 0x15) {
        cpuid(0x15, &a, &b, &c, &d); /* TSC = crystal * ebx / eax */
        if (a && b && c) r = (uint64_t)c * b / a;
    }
    if (!r && max >= 0x16) {
        cpuid(0x16, &a, &b, &c, &d); /* base frequency in MHz */
        if (a & 0xffff) r = (uint64_t)(a & 0xffff) * 1000000ull;
    }
    hz = r ? r : RT_TSC_HZ_FALLBACK;
    return hz;
}

uint64_t rt_deadline_ms(uint64_t ms) { return rt_rdtsc() + rt_tsc_hz() / 1000 * ms; }

void rt_delay_ms(uint64_t ms) {
    uint64_t d = rt_deadline_ms(ms);
    while (!rt_expired(d)) rt_pause();
}

/* ---- interrupts ----------------------------------------------------------------------------- */

void rt_set_handler(unsigned vector, rt_irq_handler fn) {
    __atomic_store_n(&rt_handlers[vector & 0xff], fn, __ATOMIC_RELEASE);
}

/* ---- libc bits (gcc may call these for struct copies and zeroing) --------------------------- */

void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}
size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
int strcmp(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}
