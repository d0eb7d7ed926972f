/* bench_msix.c - guest half of bench_msix (bench/msix_bench.cpp, bench/README.md (d)).
 *
 * Needs one edu function (1234:11e8) of the simulated host passed through. Not a test: it reports
 * to the bench through two ports the bench registers on the Machine's PIO bus, and the bench
 * decides nothing by threshold.
 *
 *   BENCH_MARK_PORT (0x520, 32-bit out): phase markers. The bench snapshots the VMM's exit counts
 *       at each marker, so the exits between two markers are what the K operations of one phase
 *       cost (the marker's own `out` is one IO exit, subtracted by the bench).
 *   BENCH_IRQ_PORT (0xe0, 8-bit out): the *first instruction* of the MSI-X handler for vector
 *       BENCH_VECTOR is `out %al, $0xe0`; the bench takes the host clock when that exit reaches its
 *       device. The handler is a hand-written IDT gate target, not the runtime's common entry:
 *       guest ring 0 is emulated here (~1-2.5 us per instruction), so the runtime's register save
 *       and dispatch before a C handler would add tens of microseconds to both paths measured.
 *
 * Sequence: enumerate through ECAM, place BAR0 (trapped registers) and the memory BAR (mmapped,
 * holds the MSI-X table and PBA), MEM + bus master; MSI-X entry 0 -> BENCH_VECTOR on APIC 0,
 * entry 1 programmed but masked; MSI-X enabled. Then one marker per phase, K operations each:
 *   MARK_MMAP_READ   K dword reads of the memory BAR      (mmapped: 0 exits expected)
 *   MARK_MMAP_WRITE  K dword writes of the memory BAR
 *   MARK_TRAP_READ   K reads of BAR0 ident                (trapped: 1 MMIO exit each)
 *   MARK_TRAP_WRITE  K writes of BAR0 liveness
 *   MARK_MASK        K writes "masked" to entry 1's vector control (trapped MSI-X table, no change)
 *   MARK_TOGGLE      K pairs (unmask, mask) of entry 1: 2K table writes, each a route change
 *   MARK_READY       then wait forever (spin at CPL3 with IF=1, or hlt: an `in` from the marker
 *                    port says which); the bench injects interrupts and stops the VM.
 */
#include "internal.h"
#include "rt.h"

#define BENCH_MARK_PORT 0x520
#define BENCH_IRQ_PORT 0xe0
#define BENCH_VECTOR 0x50
#define BENCH_OPS 1000

enum {
    MARK_START = 1,
    MARK_MMAP_READ = 2,
    MARK_MMAP_WRITE = 3,
    MARK_TRAP_READ = 4,
    MARK_TRAP_WRITE = 5,
    MARK_MASK = 6,
    MARK_TOGGLE = 7,
    MARK_END_OPS = 8,
    MARK_READY = 9,
    MARK_FAIL = 0xff,
};

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_IDENT 0x00
#define EDU_IDENT_VALUE 0x010000edu
#define EDU_LIVENESS 0x04
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_CAP_MSIX 0x11

/* The MSI-X handler: its first act is the timestamped exit, then EOI, then back to CPL3. */
void bench_irq_stub(void);
__asm__(".text\n"
        ".globl bench_irq_stub\n"
        "bench_irq_stub:\n"
        "    outb %al, $0xe0\n"
        "    pushq %rax\n"
        "    movabsq $0xfee000b0, %rax\n"
        "    movl $0, (%rax)\n"
        "    popq %rax\n"
        "    iretq\n");

static void mark(uint32_t what) { rt_outl(BENCH_MARK_PORT, what); }

static int fail(const char *what) {
    rt_printf("bench_msix: FAIL %s\n", what);
    mark(MARK_FAIL);
    return 1;
}

static unsigned edu_dev;
static uint32_t cfg_rd(unsigned off) { return pci_ecam_read32(0, edu_dev, 0, off); }
static void cfg_wr(unsigned off, uint32_t v) { pci_ecam_write32(0, edu_dev, 0, off, v); }

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return 0;
    if (!pci_ecam_present() || !bi->mmio32_size) return fail("no ECAM or no mmio32 window");

    /* IDT gate for BENCH_VECTOR -> bench_irq_stub (the IDT page is user-accessible). */
    uint64_t stub = (uint64_t)bench_irq_stub;
    struct rt_gate *g = &rt_idt[BENCH_VECTOR];
    g->offset0 = (uint16_t)stub;
    g->selector = 0x08;
    g->ist = 0;
    g->type_attr = 0x8e; /* present, DPL0, interrupt gate */
    g->offset1 = (uint16_t)(stub >> 16);
    g->offset2 = (uint32_t)(stub >> 32);
    g->reserved = 0;
    pic_disable();
    lapic_enable();

    unsigned dev;
    for (dev = 0; dev < 32; dev++)
        if (pci_ecam_read32(0, dev, 0, 0) == (EDU_VENDOR | (uint32_t)EDU_DEVICE << 16)) break;
    if (dev == 32) return fail("no edu function on bus 0");
    edu_dev = dev;

    /* Size and place the memory BARs: BAR0 (32-bit registers) and the first other memory BAR. */
    uint64_t next = bi->mmio32_base, end = bi->mmio32_base + bi->mmio32_size;
    uint64_t addr[6] = {0};
    int is64[6] = {0};
    cfg_wr(PCI_COMMAND, 0);
    for (unsigned i = 0; i < 6; i++) {
        unsigned off = PCI_BAR0 + 4 * i;
        cfg_wr(off, 0xffffffffu);
        uint32_t lo = cfg_rd(off);
        if (lo == 0 || lo == 0xffffffffu || (lo & 1)) continue;
        is64[i] = ((lo >> 1) & 3) == 2;
        uint64_t mask = lo & ~0xfull;
        if (is64[i]) {
            cfg_wr(off + 4, 0xffffffffu);
            mask |= (uint64_t)cfg_rd(off + 4) << 32;
        } else {
            mask |= 0xffffffff00000000ull;
        }
        uint64_t size = ~mask + 1;
        uint64_t a = (next + size - 1) & ~(size - 1);
        if (a + size > end) return fail("BARs do not fit the mmio32 window");
        next = a + size;
        cfg_wr(off, (uint32_t)a);
        if (is64[i]) cfg_wr(off + 4, (uint32_t)(a >> 32));
        addr[i] = a;
        if (is64[i]) i++;
    }
    unsigned mem_bar = 0;
    for (unsigned i = 1; i < 6 && !mem_bar; i++)
        if (addr[i]) mem_bar = i;
    if (!addr[0] || !mem_bar) return fail("edu needs BAR0 and a memory BAR");
    cfg_wr(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    uint64_t regs = addr[0], mem = addr[mem_bar];
    if (rt_mmio_read32(regs + EDU_IDENT) != EDU_IDENT_VALUE) return fail("edu ident through BAR0");

    /* MSI-X: entry 0 -> BENCH_VECTOR, entry 1 masked; enable. */
    unsigned cap = cfg_rd(PCI_CAP_PTR) & 0xfc;
    for (unsigned guard = 0; cap && guard < 48 && (cfg_rd(cap) & 0xff) != PCI_CAP_MSIX; guard++) cap = (cfg_rd(cap) >> 8) & 0xfc;
    if (!cap) return fail("edu has no MSI-X capability");
    uint32_t tbl = cfg_rd(cap + 4);
    uint64_t table = addr[tbl & 7] + (tbl & ~7u);
    if (!addr[tbl & 7]) return fail("MSI-X table in a BAR this payload did not place");
    for (unsigned i = 0; i < 2; i++) {
        rt_mmio_write32(table + 16 * i + 0, MSI_ADDRESS(0));
        rt_mmio_write32(table + 16 * i + 4, 0);
        rt_mmio_write32(table + 16 * i + 8, MSI_DATA(BENCH_VECTOR + i));
        rt_mmio_write32(table + 16 * i + 12, i == 0 ? 0 : 1);
    }
    uint32_t ctl = cfg_rd(cap);
    cfg_wr(cap, (ctl & 0x0000ffffu) | (0x8000u << 16)); /* MSI-X enable, function mask clear */
    if (!(cfg_rd(cap) & (0x8000u << 16))) return fail("MSI-X enable did not stick");
    rt_printf("bench_msix: edu 00:%02x.0 BAR0 0x%lx BAR%u 0x%lx, MSI-X table 0x%lx, vector 0x%x, %u ops per phase\n",
              dev, regs, mem_bar, mem, table, BENCH_VECTOR, BENCH_OPS);

    /* The exit-count phases: each marker closes the previous phase. */
    volatile uint32_t sink = 0;
    uint64_t mmap_base = mem; /* first page of the memory BAR: far from the MSI-X table/PBA pages */
    mark(MARK_START);
    for (unsigned k = 0; k < BENCH_OPS; k++) sink += rt_mmio_read32(mmap_base + 4 * (k % 1024));
    mark(MARK_MMAP_READ);
    for (unsigned k = 0; k < BENCH_OPS; k++) rt_mmio_write32(mmap_base + 4 * (k % 1024), k);
    mark(MARK_MMAP_WRITE);
    for (unsigned k = 0; k < BENCH_OPS; k++) sink += rt_mmio_read32(regs + EDU_IDENT);
    mark(MARK_TRAP_READ);
    for (unsigned k = 0; k < BENCH_OPS; k++) rt_mmio_write32(regs + EDU_LIVENESS, k);
    mark(MARK_TRAP_WRITE);
    for (unsigned k = 0; k < BENCH_OPS; k++) rt_mmio_write32(table + 16 + 12, 1); /* already masked */
    mark(MARK_MASK);
    for (unsigned k = 0; k < BENCH_OPS; k++) {
        rt_mmio_write32(table + 16 + 12, 0); /* unmask entry 1 */
        rt_mmio_write32(table + 16 + 12, 1); /* mask it again */
    }
    mark(MARK_TOGGLE);
    if (rt_mmio_read32(mmap_base + 4 * ((BENCH_OPS - 1) % 1024)) != BENCH_OPS - 1) return fail("mmapped BAR write did not read back");
    mark(MARK_END_OPS);
    (void)sink;

    /* The latency phase, until the bench stops the VM. How to wait is the bench's choice (an `in`
     * from the marker port): 0 = spin at CPL3 with IF=1 (the vCPU thread never sleeps), 1 = `sti; hlt`
     * at ring 0 (the vCPU thread sleeps in KVM and is woken by the injection, as an idle guest is). */
    uint32_t wait_mode = rt_inl(BENCH_MARK_PORT);
    rt_printf("bench_msix: ready, waiting by %s\n", wait_mode ? "hlt" : "spinning at CPL3");
    mark(MARK_READY);
    if (wait_mode)
        for (;;) rt_halt();
    for (;;) rt_pause();
}
