/* smp: every vCPU checks in; the BSP exits 0 only if all of them did.
 * Serial:  "vcpu <i> of <M> up"                      one per vCPU, in any order
 *          "smp: all <M> vcpus checked in"           BSP, on success
 *          "smp: timeout, <k> of <M> vcpus checked in" BSP, after 20 s
 * Exit:    0 on success, else the number of vCPUs that did not check in (1..M-1). */
#include "rt.h"

#define SMP_TIMEOUT_MS 20000

static volatile uint32_t checked_in;

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    unsigned m = bi->vcpu_count;
    rt_printf("vcpu %u of %u up\n", cpu, m);
    rt_atomic_add(&checked_in, 1);
    if (cpu != 0) return 0; /* AP: park */

    uint64_t deadline = rt_deadline_ms(SMP_TIMEOUT_MS);
    while (rt_atomic_load(&checked_in) < m && !rt_expired(deadline)) rt_pause();
    uint32_t n = rt_atomic_load(&checked_in);
    if (n >= m) {
        rt_printf("smp: all %u vcpus checked in\n", m);
        return RT_EXIT_OK;
    }
    rt_printf("smp: timeout, %u of %u vcpus checked in\n", n, m);
    return (int)(m - n);
}
