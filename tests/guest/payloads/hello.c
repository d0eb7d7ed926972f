/* hello: the smallest payload. Prints a greeting with what the boot info says, exits 0.
 * Serial:  "Hello from a Conduit guest"
 *          "hello: vcpus=<N> ram_low=<bytes> ram_high=<bytes> ram_mib=<MiB>"
 *          "hello: payload at 0x<base> size <bytes>"
 * Exit:    0 */
#include "rt.h"

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return 0; /* APs park */
    rt_printf("Hello from a Conduit guest\n");
    uint64_t ram = bi->ram_low_size + bi->ram_high_size;
    rt_printf("hello: vcpus=%u ram_low=%lu ram_high=%lu ram_mib=%lu\n", bi->vcpu_count, bi->ram_low_size,
              bi->ram_high_size, ram >> 20);
    rt_printf("hello: payload at 0x%lx size %lu\n", bi->payload_base, bi->payload_size);
    return RT_EXIT_OK;
}
