/* apic.c - local APIC (xAPIC MMIO), I/O APIC and legacy PIC helpers. */
#include "internal.h"

#define MSR_APIC_BASE 0x1bu
#define APIC_BASE_BSP (1ull << 8)
#define APIC_BASE_ENABLE (1ull << 11)

static uint64_t k_lapic_enable(uint64_t unused) {
    (void)unused;
    /* Set the base address as well as the enable bit: a VMM that builds kvm_sregs from scratch
     * hands KVM_SET_SREGS apic_base = 0, which leaves the LAPIC disabled *and* based at 0, and a
     * bare "| enable" would then put the LAPIC over guest RAM at address 0. */
    uint64_t base = rt_k_rdmsr(MSR_APIC_BASE);
    uint64_t want = (base & APIC_BASE_BSP) | LAPIC_BASE | APIC_BASE_ENABLE;
    if (base != want) {
        uint64_t args[2] = {MSR_APIC_BASE, want};
        rt_k_wrmsr((uint64_t)args);
    }
    lapic_write(LAPIC_SVR, 0x100 | RT_SPURIOUS_VECTOR); /* software enable */
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_LVT_TIMER, IOAPIC_MASKED);
    lapic_write(LAPIC_LVT_LINT0, IOAPIC_MASKED); /* no ExtINT from the PIC */
    lapic_write(LAPIC_LVT_LINT1, IOAPIC_MASKED);
    lapic_write(LAPIC_LVT_ERROR, IOAPIC_MASKED);
    return 0;
}

void lapic_enable(void) { rt_kcall(k_lapic_enable, 0); }

void lapic_send_ipi(uint32_t dest_apic_id, uint32_t vector) {
    lapic_write(LAPIC_ICR_HI, dest_apic_id << 24);
    lapic_write(LAPIC_ICR_LO, vector & 0xff); /* fixed, physical, edge, assert */
}

/* IOREGSEL/IOWIN is a register pair: keep each access together. Callers on several vCPUs must
 * serialise themselves (the payloads program the I/O APIC from the BSP only). */
uint32_t ioapic_read(uint32_t reg) {
    rt_mmio_write32(IOAPIC_BASE, reg);
    return rt_mmio_read32(IOAPIC_BASE + 0x10);
}
void ioapic_write(uint32_t reg, uint32_t v) {
    rt_mmio_write32(IOAPIC_BASE, reg);
    rt_mmio_write32(IOAPIC_BASE + 0x10, v);
}

void ioapic_route(unsigned pin, uint8_t vector, uint32_t flags, uint32_t dest_apic_id) {
    ioapic_write(0x10 + 2 * pin, vector | IOAPIC_MASKED); /* masked while the entry is half written */
    ioapic_write(0x11 + 2 * pin, dest_apic_id << 24);
    ioapic_write(0x10 + 2 * pin, vector | flags);
}

void ioapic_mask(unsigned pin) { ioapic_write(0x10 + 2 * pin, ioapic_read(0x10 + 2 * pin) | IOAPIC_MASKED); }

static uint64_t k_pic_disable(uint64_t unused) {
    (void)unused;
    k_outb(0x21, 0xff);
    k_outb(0xa1, 0xff);
    return 0;
}

void pic_disable(void) { rt_kcall(k_pic_disable, 0); }
