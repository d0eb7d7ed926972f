/* internal.h - runtime internals shared between the ring-0 (kernel.c) and CPL3 (user.c) halves. */
#ifndef CONDUIT_GUEST_RT_INTERNAL_H
#define CONDUIT_GUEST_RT_INTERNAL_H

#include "rt.h"

/* 64-bit IDT gate */
struct rt_gate {
    uint16_t offset0;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr; /* P | DPL | type (0xE interrupt gate) */
    uint16_t offset1;
    uint32_t offset2;
    uint32_t reserved;
} __attribute__((packed));

extern const struct conduit_boot_info *rt_bi;
extern rt_irq_handler rt_handlers[256];
extern struct rt_gate rt_idt[256];
extern char rt_isr_stubs[];         /* start.S: 256 stubs, 16 bytes apart */
extern char __ustacks[], __ustacks_end[]; /* linker script: RT_MAX_CPUS CPL3 stacks */

/* Raw port I/O: ring 0 only (CPL3 port I/O raises #GP). */
static inline void k_outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(p)); }
static inline void k_outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(p)); }
static inline void k_outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(p)); }
static inline uint8_t k_inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t k_inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t k_inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }

void k_serial_write(const char *buf, size_t len);
void k_exit(uint32_t value) __attribute__((noreturn));
uint64_t rt_k_rdmsr(uint64_t msr);
uint64_t rt_k_wrmsr(uint64_t arg);

uint64_t rt_kernel_init(const struct conduit_boot_info *bi, uint64_t cpu, uint64_t kstack_top);
void rt_user_main(const struct conduit_boot_info *bi, uint64_t cpu) __attribute__((noreturn));
uint64_t rt_syscall_dispatch(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t nr);
void rt_isr_dispatch(struct rt_frame *f);

#endif
