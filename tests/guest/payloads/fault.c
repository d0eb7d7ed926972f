/* fault: takes a #PF at CPL3 on purpose; the runtime's exception handler reports it and exits.
 * Serial:  "fault: writing to 0x400000000000 at CPL3"
 *          "rt: EXCEPTION #PF vector=14 error=0x6 rip=0x... cr2=0x400000000000 cs=0x23 rsp=0x... cpu=0"
 * Exit:    RT_EXIT_EXCEPTION(14) = 0xee. 0x01 if the write somehow succeeded. */
#include "rt.h"

#define FAULT_ADDR 0x400000000000ull /* 64 TiB: canonical, far beyond the identity map */

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return 0;
    if (bi->identity_map_end > FAULT_ADDR) {
        rt_printf("fault: identity map reaches 0x%lx, cannot pick an unmapped address\n", bi->identity_map_end);
        return 2;
    }
    rt_printf("fault: writing to 0x%llx at CPL%u\n", FAULT_ADDR, rt_cpl());
    *(volatile uint32_t *)FAULT_ADDR = 0xdead;
    rt_printf("fault: the write did not fault\n");
    return 1;
}
