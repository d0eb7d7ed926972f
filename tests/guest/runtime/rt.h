/* rt.h - the freestanding runtime for Conduit's 64-bit test payloads (docs/payloads.md).
 *
 * Execution model, shaped by this machine's KVM (/work/shared/kvm-here/REPORT.md):
 *   - guest ring 0 is emulated instruction by instruction (~14,000x slower), ring 3 runs natively.
 *     So the runtime does the minimum at ring 0 (MSRs, TSS.RSP0, lidt, UART set-up) and then enters
 *     CPL3, where it fills the IDT and calls the payload's main(). Payload logic runs at CPL3.
 *   - CPL3 cannot do port I/O (#GP) nor `int n` (#UD), and `syscall` does not leave CPL3:
 *     privileged work goes through an int3 gate (rt_syscall, rt_kcall). The helpers below (rt_outb, rt_printf, rt_exit, pci_*...) work at
 *     either privilege level: at ring 0 they act directly, at CPL3 they make the syscall.
 *   - Interrupt and exception handlers run at ring 0 (emulated): keep them short.
 *   - Only edge-triggered interrupts (MSI, edge IOAPIC pins) work reliably.
 *
 * All runtime and payload code is built with -mgeneral-regs-only, so any of it may run at ring 0.
 */
#ifndef CONDUIT_GUEST_RT_H
#define CONDUIT_GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/arch/x86_64/payload_abi.h"

/* ---------------------------------------------------------------------------------------------
 * Exit statuses (the low byte is what `conduit run` exits with). 0 = success. Payload-specific
 * failures use 0x01..0x7f; the runtime reserves 0xd0..0xff.
 * ------------------------------------------------------------------------------------------- */
#define RT_EXIT_OK 0x00
#define RT_EXIT_BAD_BOOT_INFO 0xd0   /* boot info magic/version wrong */
#define RT_EXIT_UNEXPECTED_IRQ 0xd1  /* interrupt vector >= 32 arrived with no handler */
#define RT_EXIT_TIMEOUT 0xd2         /* a payload gave up waiting (rt_deadline) */
#define RT_EXIT_BAD_SYSCALL 0xd3     /* unknown syscall number */
#define RT_EXIT_TOO_MANY_VCPUS 0xd4  /* reserved: vCPU index >= RT_MAX_CPUS (that vCPU parks) */
#define RT_EXIT_EXCEPTION(v) (0xe0 + (v)) /* CPU exception v (0..31) with no handler: 0xe6 #UD, 0xed #GP, 0xee #PF */

#define RT_MAX_CPUS CONDUIT_PAYLOAD_MAX_VCPUS
#define RT_USER_STACK_SIZE 0x8000UL /* per-vCPU CPL3 stack (NOLOAD, after the image) */

/* The payload defines this. It runs at CPL3 on every vCPU (index `cpu`, 0 = BSP) once the runtime
 * is ready (IDT filled, UART initialised). When the BSP's main returns, the VM exits with its
 * return value through the exit device; when an AP's main returns, that vCPU parks (cli; hlt). */
int main(const struct conduit_boot_info *bi, unsigned cpu);

/* ---------------------------------------------------------------------------------------------
 * Basics
 * ------------------------------------------------------------------------------------------- */
static inline unsigned rt_cpl(void) {
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    return cs & 3;
}
static inline uint64_t rt_rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void rt_pause(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void rt_barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline uint32_t rt_mmio_read32(uint64_t addr) { return *(volatile uint32_t *)addr; }
static inline void rt_mmio_write32(uint64_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }
/* lock xadd: returns the old value */
static inline uint32_t rt_atomic_add(volatile uint32_t *p, uint32_t v) {
    __asm__ volatile("lock xaddl %0, %1" : "+r"(v), "+m"(*p) :: "memory");
    return v;
}
static inline uint32_t rt_atomic_load(volatile uint32_t *p) { return *p; }

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

/* The boot info handed to the entry point (also at CONDUIT_BOOT_INFO_ADDR). */
const struct conduit_boot_info *rt_boot_info(void);
/* This vCPU's index. Works at CPL3 (derived from the user stack) and ring 0 (from TR). */
unsigned rt_cpu(void);
unsigned rt_cpu_count(void);

/* ---------------------------------------------------------------------------------------------
 * Syscalls (CPL3 -> ring 0). The gate is `int3` (vector 3, a DPL3 interrupt gate): under this
 * KVM `syscall` at CPL3 jumps to LSTAR without leaving CPL3, and `int n` raises #UD. ABI: rax =
 * number, args rdi, rsi, rdx, r8; result in rax; every other register is preserved. An int3 at
 * CPL3 is therefore always a syscall, never a breakpoint (and int3 at ring 0 kills the vCPU).
 * ------------------------------------------------------------------------------------------- */
#define RT_SYSCALL_VECTOR 3
enum rt_sysno {
    RT_SYS_WRITE = 1,  /* (buf, len): bytes to the serial port */
    RT_SYS_EXIT = 2,   /* (value): write value to the exit device; never returns */
    RT_SYS_OUT = 3,    /* (port, value, size 1/2/4) */
    RT_SYS_IN = 4,     /* (port, size 1/2/4) -> value */
    RT_SYS_KCALL = 5,  /* (fn, arg) -> fn(arg) run at ring 0 with IF=0 */
    RT_SYS_HALT = 6,   /* sti; hlt; cli once: returns after the next interrupt was handled */
    RT_SYS_PARK = 7,   /* cli; hlt forever */
};
uint64_t rt_syscall(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3);
/* Run fn(arg) at ring 0 (IF=0) and return its result. Usable for wrmsr, lidt, cr reads, etc. */
typedef uint64_t (*rt_kfn)(uint64_t arg);
uint64_t rt_kcall(rt_kfn fn, uint64_t arg);
/* Wait for one interrupt in `sti; hlt` (ring 0). Spinning at CPL3 (IF=1) reacts faster. */
void rt_halt(void);
void rt_exit(uint32_t value) __attribute__((noreturn));
void rt_park(void) __attribute__((noreturn));

/* Port I/O (at CPL3 each call is one syscall). */
void rt_outb(uint16_t port, uint8_t v);
void rt_outw(uint16_t port, uint16_t v);
void rt_outl(uint16_t port, uint32_t v);
uint8_t rt_inb(uint16_t port);
uint16_t rt_inw(uint16_t port);
uint32_t rt_inl(uint16_t port);

/* MSRs (through rt_kcall at CPL3). */
uint64_t rt_rdmsr(uint32_t msr);
void rt_wrmsr(uint32_t msr, uint64_t v);

/* ---------------------------------------------------------------------------------------------
 * Serial console: 16550 at CONDUIT_UART_PORT, 115200 8N1, polled (waits for LSR.THRE).
 * Lines end in "\n" only. At CPL3 output is serialised between vCPUs by a spinlock, so lines
 * from different vCPUs do not interleave (one rt_printf call = one atomic write).
 * ------------------------------------------------------------------------------------------- */
#define UART_THR 0 /* DLAB=0 */
#define UART_RBR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_LSR_DR 0x01
#define UART_LSR_THRE 0x20
#define UART_IER_RDA 0x01  /* received data available */
#define UART_IER_THRE 0x02 /* transmitter holding register empty */

void rt_serial_write(const char *buf, size_t len);
void rt_puts(const char *s); /* no newline added */
int rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* %d %i %u %x %X %o %c %s %p %% with flags '-' '0', a width, and length l / ll / z. */
int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int rt_snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------------------------------------
 * Interrupts. Handlers run at ring 0 with IF=0 on the vCPU that took the interrupt. For vectors
 * >= 32 the runtime writes the LAPIC EOI after the handler returns (never for 0xff, spurious).
 * Vectors < 32 with no handler: the runtime prints the exception and exits with
 * RT_EXIT_EXCEPTION(vector). Vectors >= 32 with no handler: prints and exits RT_EXIT_UNEXPECTED_IRQ.
 * ------------------------------------------------------------------------------------------- */
struct rt_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};
typedef void (*rt_irq_handler)(struct rt_frame *f);
void rt_set_handler(unsigned vector, rt_irq_handler fn);

#define RT_SPURIOUS_VECTOR 0xff

/* Local APIC, xAPIC MMIO at 0xFEE00000 (mapped U/S, so CPL3 may touch it directly). */
#define LAPIC_BASE 0xfee00000UL
#define LAPIC_ID 0x20
#define LAPIC_VERSION 0x30
#define LAPIC_TPR 0x80
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
static inline uint32_t lapic_read(uint32_t reg) { return rt_mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_write(uint32_t reg, uint32_t v) { rt_mmio_write32(LAPIC_BASE + reg, v); }
static inline void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }
static inline uint32_t lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
/* Global enable in IA32_APIC_BASE, SVR = 0x100 | RT_SPURIOUS_VECTOR, TPR = 0, timer/LINT0/LINT1/
 * error LVTs masked. Per vCPU; call on each vCPU that should take interrupts. */
void lapic_enable(void);
void lapic_send_ipi(uint32_t dest_apic_id, uint32_t vector);

/* I/O APIC at 0xFEC00000 (MMIO, usable from CPL3). */
#define IOAPIC_BASE 0xfec00000UL
uint32_t ioapic_read(uint32_t reg);
void ioapic_write(uint32_t reg, uint32_t v);
#define IOAPIC_LEVEL (1u << 15)
#define IOAPIC_ACTIVE_LOW (1u << 13)
#define IOAPIC_MASKED (1u << 16)
/* Redirection entry of `pin`: fixed delivery, physical destination `dest_apic_id`; flags is an OR of
 * IOAPIC_LEVEL / IOAPIC_ACTIVE_LOW / IOAPIC_MASKED (0 = edge, active high, unmasked). */
void ioapic_route(unsigned pin, uint8_t vector, uint32_t flags, uint32_t dest_apic_id);
void ioapic_mask(unsigned pin);

/* Legacy 8259 PICs: remap to 0x20/0x28 and mask every line (port I/O). */
void pic_disable(void);

/* MSI message for a fixed-delivery interrupt to `dest_apic_id`. */
#define MSI_ADDRESS(dest) (0xfee00000u | ((uint32_t)(dest) << 12))
#define MSI_DATA(vector) ((uint32_t)(vector))

/* ---------------------------------------------------------------------------------------------
 * Time. The TSC rate comes from CPUID 0x15/0x16 when present, else RT_TSC_HZ_FALLBACK
 * (the timeouts are generous, so an estimate is good enough).
 * ------------------------------------------------------------------------------------------- */
#define RT_TSC_HZ_FALLBACK 3000000000ull
uint64_t rt_tsc_hz(void);
/* A deadline `ms` milliseconds from now; rt_expired() tells if it has passed. */
uint64_t rt_deadline_ms(uint64_t ms);
static inline int rt_expired(uint64_t deadline) { return rt_rdtsc() >= deadline; }
void rt_delay_ms(uint64_t ms); /* CPL3 busy wait */

/* ---------------------------------------------------------------------------------------------
 * Locks (spin at CPL3; don't hold across a long ring-0 path).
 * ------------------------------------------------------------------------------------------- */
typedef struct { volatile uint32_t v; } rt_spinlock;
void rt_lock(rt_spinlock *l);
void rt_unlock(rt_spinlock *l);

/* ---------------------------------------------------------------------------------------------
 * PCI configuration space: mechanism #1 (0xCF8/0xCFC, port I/O) and ECAM (boot_info.ecam_base).
 * A read of an absent function returns all-ones.
 * ------------------------------------------------------------------------------------------- */
uint32_t pci_cf8_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off);
void pci_cf8_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v);
/* ECAM; returns 0xffffffff if there is no ECAM window or it lies outside the identity map. */
uint32_t pci_ecam_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off);
void pci_ecam_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v);
int pci_ecam_present(void);

#endif
