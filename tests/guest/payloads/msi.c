/* msi: counts MSIs injected by the host on vector MSI_VECTOR (address 0xFEE00000, data 0x41,
 * i.e. fixed delivery to APIC ID 0), waiting at CPL3.
 * Serial:  "msi: ready vector 0x41 count 4"    after the LAPIC is enabled: start injecting
 *          "msi: irq <k>"                      each time the count rises to k (1..4); inject the
 *                                              next MSI only after seeing this line: two MSIs
 *                                              pending at once merge into one (LAPIC IRR)
 *          "msi: done, 4 interrupts"           then exit 0
 *          "msi: timeout after <k> of 4 interrupts"  after 20 s without all of them
 * Exit:    0; RT_EXIT_TIMEOUT (0xd2) on timeout. */
#include "rt.h"

#define MSI_VECTOR 0x41
#define MSI_COUNT 4
#define MSI_TIMEOUT_MS 20000

static volatile uint32_t irqs;

static void on_msi(struct rt_frame *f) { /* ring 0: keep it tiny; the runtime EOIs */
    (void)f;
    irqs++;
}

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    (void)bi;
    if (cpu != 0) return 0;
    rt_set_handler(MSI_VECTOR, on_msi);
    pic_disable();
    lapic_enable();
    rt_printf("msi: ready vector 0x%x count %u\n", MSI_VECTOR, MSI_COUNT);

    uint32_t seen = 0;
    uint64_t deadline = rt_deadline_ms(MSI_TIMEOUT_MS);
    while (seen < MSI_COUNT) {
        uint32_t now = irqs;
        if (now == seen) {
            if (rt_expired(deadline)) {
                rt_printf("msi: timeout after %u of %u interrupts\n", seen, MSI_COUNT);
                return RT_EXIT_TIMEOUT;
            }
            rt_pause(); /* spin at CPL3 with IF=1: ~20 us delivery */
            continue;
        }
        while (seen < now) rt_printf("msi: irq %u\n", ++seen);
    }
    rt_printf("msi: done, %u interrupts\n", seen);
    return RT_EXIT_OK;
}
