/* pci_scan: lists bus 0 through mechanism #1 (0xCF8/0xCFC) and through ECAM.
 * Serial:  "pci: ecam base 0x<base> size 0x<size>"  or "pci: no ecam window"
 *          "pci: cf8 00:<dd>.<f> <vendor>:<device> class <cc>"   per function found
 *          "pci: ecam 00:<dd>.<f> <vendor>:<device> class <cc>"  per function found
 *          "pci: cf8 found <n> functions", "pci: ecam found <n> functions"
 *          "pci: no PCI devices"                 when neither found anything
 * Exit:    0 (a missing host bridge is not an error; the counts are in the output). */
#include "rt.h"

typedef uint32_t (*cfg_read)(unsigned bus, unsigned dev, unsigned fn, unsigned off);

static unsigned scan(const char *how, cfg_read rd) {
    unsigned found = 0;
    for (unsigned dev = 0; dev < 32; dev++) {
        for (unsigned fn = 0; fn < 8; fn++) {
            uint32_t id = rd(0, dev, fn, 0);
            if ((id & 0xffff) == 0xffff) {
                if (fn == 0) break;
                continue;
            }
            uint32_t cls = rd(0, dev, fn, 8);
            rt_printf("pci: %s 00:%02x.%u %04x:%04x class %06x\n", how, dev, fn, id & 0xffff, id >> 16, cls >> 8);
            found++;
            if (fn == 0 && !((rd(0, dev, 0, 0xc) >> 16) & 0x80)) break; /* not multi-function */
        }
    }
    rt_printf("pci: %s found %u functions\n", how, found);
    return found;
}

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return 0;
    unsigned total = scan("cf8", pci_cf8_read32);
    if (pci_ecam_present()) {
        rt_printf("pci: ecam base 0x%lx size 0x%lx\n", bi->ecam_base, bi->ecam_size);
        total += scan("ecam", pci_ecam_read32);
    } else {
        rt_printf("pci: no ecam window\n");
    }
    if (!total) rt_printf("pci: no PCI devices\n");
    return RT_EXIT_OK;
}
