/* sipi: the BSP starts the APs itself with INIT/SIPI (config "ap_start": "sipi", docs/payloads.md).
 * The BSP copies a real-mode trampoline (sipi_tramp.S) to 0x8000 and, for each AP in turn, sends
 * INIT, waits 10 ms, then SIPI twice (vector 0x08) as the MP spec says, through the xAPIC ICR from
 * CPL3. The AP goes real mode -> long mode on the ABI's GDT and page tables, loads its own TR,
 * marks its arrival and enters _start like any vCPU; its main() then checks in.
 *
 * Before sending anything the BSP checks that each AP is really waiting: with "sipi" the VMM
 * leaves an AP's TSS descriptor available (no LTR has happened); a busy one means the VMM started
 * that AP at the entry point itself ("ap_start": "entry"), and an INIT would only reset a running
 * vCPU, so the payload refuses instead of proving nothing.
 *
 * Serial:  "sipi: starting <k> APs by INIT/SIPI, trampoline at 0x8000 vector 0x08"   BSP
 *          "sipi: vcpu <i> started by INIT/SIPI, apic id <a>"                         each AP
 *          "sipi: all <k> APs checked in"                                            BSP, success
 *          "sipi: vcpu <i> entered at the payload entry, not by INIT/SIPI"            an AP the VMM started
 * Exit:    0     every AP started by INIT/SIPI and checked in
 *          0x01  fewer than 2 vCPUs
 *          0x02  an AP was already running before INIT/SIPI (TSS descriptor busy): ap_start is not "sipi"
 *          0x03  an AP did not reach long mode within 5 s of its SIPIs
 *          0x04  an AP reached long mode but did not check in from main() within 20 s
 *          0x05  the trampoline does not fit below the mailbox (build problem) */
#include "rt.h"
#include "sipi_tramp.h"

_Static_assert(TRAMP_BOOT_INFO_ADDR == CONDUIT_BOOT_INFO_ADDR, "sipi_tramp.h");
_Static_assert(TRAMP_GDT_ADDR == CONDUIT_GDT_ADDR, "sipi_tramp.h");
_Static_assert(TRAMP_PML4_ADDR == CONDUIT_PML4_ADDR, "sipi_tramp.h");
_Static_assert(TRAMP_STACKS_TOP == CONDUIT_STACKS_TOP, "sipi_tramp.h");
_Static_assert((1UL << TRAMP_STACK_SHIFT) == CONDUIT_STACK_SIZE, "sipi_tramp.h");
/* The trampoline page must not overlap the ABI's low layout nor the lowest vCPU stack. */
_Static_assert(SIPI_TRAMP_ADDR % 4096 == 0 && SIPI_TRAMP_ADDR < 0x100000, "SIPI needs a page below 1 MiB");
_Static_assert(SIPI_TRAMP_ADDR >= CONDUIT_TSS_ADDR + CONDUIT_TSS_STRIDE * CONDUIT_PAYLOAD_MAX_VCPUS, "TSSs");
_Static_assert(SIPI_TRAMP_ADDR + 4096 <= CONDUIT_PML4_ADDR, "page tables");
_Static_assert(SIPI_TRAMP_ADDR + 4096 <= CONDUIT_STACKS_TOP - CONDUIT_PAYLOAD_MAX_VCPUS * CONDUIT_STACK_SIZE, "stacks");
_Static_assert(MBOX_ARRIVED + 4 * CONDUIT_PAYLOAD_MAX_VCPUS <= 4096 - SIPI_TRAMP_MAX, "mailbox");

#define EXIT_TOO_FEW_VCPUS 0x01
#define EXIT_AP_ALREADY_RUNNING 0x02
#define EXIT_AP_NOT_STARTED 0x03
#define EXIT_AP_NO_CHECKIN 0x04
#define EXIT_TRAMP_TOO_BIG 0x05

#define ARRIVE_TIMEOUT_MS 5000
#define CHECKIN_TIMEOUT_MS 20000

#define ICR_INIT 0x00004500u    /* delivery mode INIT, level assert, edge */
#define ICR_STARTUP 0x00004600u /* delivery mode start-up, level assert; | vector */
#define ICR_BUSY (1u << 12)     /* delivery status: send pending */

extern const char sipi_tramp_start[], sipi_tramp_end[];
extern char _start[];

static volatile uint32_t checked_in;

static inline volatile uint8_t *mbox8(unsigned off) { return (volatile uint8_t *)(uintptr_t)(SIPI_MBOX_ADDR + off); }
static inline volatile uint32_t *arrived(unsigned cpu) {
    return (volatile uint32_t *)(uintptr_t)(SIPI_MBOX_ADDR + MBOX_ARRIVED + 4 * cpu);
}

/* Type field of vCPU i's TSS descriptor in the ABI's GDT: 11 busy, 9 available. */
static unsigned tss_type(unsigned cpu) {
    return ((volatile const uint8_t *)(uintptr_t)CONDUIT_GDT_ADDR)[CONDUIT_SEL_TSS(cpu) + 5] & 0xf;
}

static void icr_send(uint32_t apic_id, uint32_t lo) {
    lapic_write(LAPIC_ICR_HI, apic_id << 24);
    lapic_write(LAPIC_ICR_LO, lo); /* the write to the low half sends */
    for (unsigned i = 0; i < 1000 && (lapic_read(LAPIC_ICR_LO) & ICR_BUSY); i++) rt_pause();
}

static int ap_main(unsigned cpu) {
    if (!*arrived(cpu)) {
        rt_printf("sipi: vcpu %u entered at the payload entry, not by INIT/SIPI\n", cpu);
        return 0;
    }
    rt_printf("sipi: vcpu %u started by INIT/SIPI, apic id %u\n", cpu, lapic_id());
    rt_atomic_add(&checked_in, 1);
    return 0;
}

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return ap_main(cpu);

    const unsigned n = bi->vcpu_count;
    if (n < 2) {
        rt_printf("sipi: needs at least 2 vcpus, got %u\n", n);
        return EXIT_TOO_FEW_VCPUS;
    }
    for (unsigned i = 1; i < n; i++) {
        unsigned type = tss_type(i);
        if (type != 9) {
            rt_printf("sipi: vcpu %u was already started by the VMM (TSS descriptor type %u, not 9): "
                      "not waiting for INIT/SIPI, is \"ap_start\" \"sipi\"?\n", i, type);
            return EXIT_AP_ALREADY_RUNNING;
        }
    }
    const size_t len = (size_t)(sipi_tramp_end - sipi_tramp_start);
    if (len > SIPI_TRAMP_MAX) {
        rt_printf("sipi: trampoline is %zu bytes, more than %u\n", len, SIPI_TRAMP_MAX);
        return EXIT_TRAMP_TOO_BIG;
    }

    /* Copy at CPL3 (native); the identity map is user-accessible. */
    memcpy((void *)(uintptr_t)SIPI_TRAMP_ADDR, sipi_tramp_start, len);
    *(volatile uint64_t *)mbox8(MBOX_ENTRY) = (uint64_t)(uintptr_t)_start;
    *(volatile uint16_t *)mbox8(MBOX_GDTR) = (uint16_t)(CONDUIT_SEL_TSS(n) - 1); /* GDT limit */
    *(volatile uint32_t *)mbox8(MBOX_GDTR + 2) = CONDUIT_GDT_ADDR;
    for (unsigned i = 0; i < CONDUIT_PAYLOAD_MAX_VCPUS; i++) *arrived(i) = 0;

    pic_disable();
    lapic_enable();
    rt_printf("sipi: starting %u APs by INIT/SIPI, trampoline at 0x%x vector 0x%02x\n", n - 1, SIPI_TRAMP_ADDR,
              SIPI_VECTOR);

    /* One AP at a time: the mailbox holds the index of the one being started. The APIC ID of
     * vCPU i is i (KVM's default, and what Conduit's CPUID reports). */
    for (unsigned i = 1; i < n; i++) {
        *(volatile uint32_t *)mbox8(MBOX_CPU) = i;
        icr_send(i, ICR_INIT);
        rt_delay_ms(10);
        icr_send(i, ICR_STARTUP | SIPI_VECTOR);
        rt_delay_ms(1);
        icr_send(i, ICR_STARTUP | SIPI_VECTOR); /* ignored by an AP the first one started */
        uint64_t deadline = rt_deadline_ms(ARRIVE_TIMEOUT_MS);
        while (!*arrived(i) && !rt_expired(deadline)) rt_pause();
        if (!*arrived(i)) {
            rt_printf("sipi: vcpu %u did not reach long mode after INIT/SIPI\n", i);
            return EXIT_AP_NOT_STARTED;
        }
    }

    uint64_t deadline = rt_deadline_ms(CHECKIN_TIMEOUT_MS);
    while (rt_atomic_load(&checked_in) < n - 1 && !rt_expired(deadline)) rt_pause();
    uint32_t k = rt_atomic_load(&checked_in);
    if (k < n - 1) {
        rt_printf("sipi: timeout, %u of %u APs checked in\n", k, n - 1);
        return EXIT_AP_NO_CHECKIN;
    }
    rt_printf("sipi: all %u APs checked in\n", n - 1);
    return RT_EXIT_OK;
}
