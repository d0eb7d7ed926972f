/* pci.c - PCI configuration space through mechanism #1 (0xCF8/0xCFC) and through ECAM. */
#include "internal.h"

static uint32_t cf8_address(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    return 0x80000000u | (bus & 0xff) << 16 | (dev & 0x1f) << 11 | (fn & 7) << 8 | (off & 0xfc);
}

/* The address/data pair must not be split by another vCPU: one ring-0 call does both. */
static uint64_t k_cf8_read(uint64_t address) {
    k_outl(0xcf8, (uint32_t)address);
    return k_inl(0xcfc);
}
static uint64_t k_cf8_write(uint64_t arg) {
    const uint32_t *a = (const uint32_t *)arg;
    k_outl(0xcf8, a[0]);
    k_outl(0xcfc, a[1]);
    return 0;
}

uint32_t pci_cf8_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    return (uint32_t)rt_kcall(k_cf8_read, cf8_address(bus, dev, fn, off));
}
void pci_cf8_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v) {
    uint32_t a[2] = {cf8_address(bus, dev, fn, off), v};
    rt_kcall(k_cf8_write, (uint64_t)a);
}

int pci_ecam_present(void) {
    const struct conduit_boot_info *bi = rt_boot_info();
    return bi->ecam_base != 0 && bi->ecam_size != 0 && bi->ecam_base + bi->ecam_size <= bi->identity_map_end;
}

static volatile uint32_t *ecam_ptr(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    const struct conduit_boot_info *bi = rt_boot_info();
    uint64_t o = (uint64_t)(bus & 0xff) << 20 | (dev & 0x1f) << 15 | (fn & 7) << 12 | (off & 0xffc);
    if (!pci_ecam_present() || o >= bi->ecam_size) return 0;
    return (volatile uint32_t *)(bi->ecam_base + o);
}

uint32_t pci_ecam_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    volatile uint32_t *p = ecam_ptr(bus, dev, fn, off);
    return p ? *p : 0xffffffffu;
}
void pci_ecam_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v) {
    volatile uint32_t *p = ecam_ptr(bus, dev, fn, off);
    if (p) *p = v;
}
