/* pt_real_edu: the passthrough payload for QEMU's real edu (and igb) behind genuine vfio-pci, run by
 * tests/realkernel/ inside an L1 guest (docs/testing.md). pt_edu.c targets the simulated host's
 * edu, which real edu differs from: one MSI vector and no MSI-X, a single 1 MiB BAR0 (no memory
 * BAR, the DMA buffer is not readable through BAR0, no register 0x70), DMA addresses masked to
 * dma_mask (28 bits by default; tests/realkernel sets 32) and ~100 ms per DMA (a QEMU timer).
 * Needs two functions 1234:11e8 and one 8086:10c9 on the guest's bus 0, and one vCPU.
 *
 * Steps; each prints "pt: <step> ok ...", the first failure prints "pt: FAIL <step>: ..." and the
 * payload exits with the step's status:
 *   enumerate  bus 0 through ECAM and 0xCF8 agree; two edu functions                  (0x01..0x03)
 *   size       BAR0 sized with decode off: 32-bit memory, >= 4 KiB                      (0x04)
 *   program    BAR0 placed in boot_info mmio32, read back through ECAM and 0xCF8       (0x05)
 *   ident      ident 0x010000ed and liveness (~x) on both                               (0x06)
 *   fact       factorial computed by the device (polled)                                (0x07)
 *   dma        RAM -> edu buffer -> other RAM through the IOMMU, 4 KiB compared         (0x08, 0x09)
 *   msi        B: MSI programmed; a raise (0x60), a factorial and a DMA with their
 *              interrupt bits each deliver the vector (KVM irqfd from VFIO's eventfd)    (0x0a..0x0d)
 *   intx       A (MSI off): INTx on the I/O APIC pin in its interrupt line, level-triggered;
 *              two raises give two interrupts (the handler acks the device before EOI; the
 *              second proves KVM's resample eventfd let VFIO unmask the line), then silence (0x0e, 0x0f)
 *   p2p        A's DMA writes B's liveness register through B's BAR0 address as IOVA,
 *              then again after B's BAR0 moved, to B's old address, and with B's decode
 *              off; each reported as "pt: p2p<-what> landed" or "... not landed" (the run
 *              script decides what each backend and config must do)                     (-)
 *   iommu-fault DMA to IOVAs that map nothing (just past the end of RAM, the top MiB of
 *              mmio32): the last RAM page stays untouched; a DMA straddling the end of RAM
 *              is reported ("pt: straddle wrote N of M RAM bytes"); a normal DMA still
 *              lands afterwards                                                         (0x10, 0x11)
 * Then the third device, QEMU's igb (8086:10c9), for what edu lacks:
 *   nic        BARs sized and programmed (memory only), MSI-X capability found           (0x20, 0x21)
 *   msix       vectors 0-4 (GPIE MSI-X mode, throttling off) fired through EICS, each
 *              arriving on its own IDT vector and none before it was fired               (0x22, 0x23)
 *   msix-mask  a masked vector stays silent for 200 ms, its message is delivered on unmask (0x24, 0x25)
 *   flr        a guest "initiate FLR" (PCIe DEVCTL) resets the device: after BARs and
 *              COMMAND are programmed again, a written register (RDBAL0) reads 0; then
 *              edu A's DMA into RDBAL0 is reported as "pt: p2p-reset (not) landed"      (0x26, 0x27)
 * Last line "pt: all steps passed", exit 0. */
#include "rt.h"

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_IDENT_VALUE 0x010000edu
#define EDU_IDENT 0x00
#define EDU_LIVENESS 0x04
#define EDU_FACT 0x08
#define EDU_STATUS 0x20
#define EDU_STATUS_BUSY 0x01
#define EDU_STATUS_IRQ_FACT 0x80
#define EDU_IRQ_STATUS 0x24
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_COUNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_START 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_DMA_IRQ 0x4
#define EDU_DMA_IRQ_BIT 0x100
#define EDU_BUF 0x40000ull /* the device-side address of edu's 4 KiB buffer; QEMU aborts outside it */
#define EDU_BUF_SIZE 4096u

#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_CAP_MSI 0x05

#define MSI_VECTOR 0x60
#define MSIX_VECTOR_BASE 0x80
#define NIC_VENDOR 0x8086
#define NIC_DEVICE 0x10c9 /* igb (82576): MSI-X and FLR */
#define NIC_GPIE 0x1514
#define NIC_GPIE_MSIX_MODE 0x10
#define NIC_EICS 0x1520
#define NIC_EIMS 0x1524
#define NIC_EIMC 0x1528
#define NIC_EICR 0x1580
#define NIC_EITR 0x1680
#define NIC_RDBAL0 0x2800 /* queue 0 descriptor base: plain read/write, 128-byte aligned, 0 after reset */
#define PCI_CAP_EXP 0x10
#define PCI_CAP_MSIX 0x11
#define INTX_VECTOR 0x70
#define PCI_INTERRUPT_LINE 0x3c
#define TIMEOUT_MS 5000 /* a DMA takes ~100 ms of QEMU time; TCG and nesting stretch it */

static int fail(int status, const char *step, const char *what) {
    rt_printf("pt: FAIL %s: %s (exit 0x%x)\n", step, what, status);
    return status;
}

struct edu {
    unsigned dev, fn, msi_cap;
    uint64_t bar0_size, regs;
};
static struct edu edus[2];
static unsigned n_edu;
static int nic_dev = -1;

static uint32_t cfg_read32(struct edu *e, unsigned off) { return pci_ecam_read32(0, e->dev, e->fn, off); }
static void cfg_write32(struct edu *e, unsigned off, uint32_t v) { pci_ecam_write32(0, e->dev, e->fn, off, v); }
static uint32_t rd(struct edu *e, unsigned off) { return *(volatile uint32_t *)(e->regs + off); }
static void wr(struct edu *e, unsigned off, uint32_t v) { *(volatile uint32_t *)(e->regs + off) = v; }
static void wr64(struct edu *e, unsigned off, uint64_t v) { *(volatile uint64_t *)(e->regs + off) = v; }

static volatile uint32_t irq_count;
static void on_irq(struct rt_frame *f) { (void)f; irq_count++; } /* ring 0: count only */
static int wait_on(volatile uint32_t *count, uint32_t target) {
    uint64_t deadline = rt_deadline_ms(TIMEOUT_MS);
    while (*count < target)
        if (rt_expired(deadline)) return 0;
        else rt_pause();
    return 1;
}
static int wait_irq(uint32_t target) { return wait_on(&irq_count, target); }

/* INTx is level-triggered: the handler (ring 0) must make the device drop the line before the
 * runtime's EOI, or the resample would re-raise it at once. */
static volatile uint32_t intx_count;
static volatile uint64_t intx_regs;
static void on_intx(struct rt_frame *f) {
    (void)f;
    volatile uint32_t *regs = (volatile uint32_t *)intx_regs;
    regs[EDU_IRQ_ACK / 4] = regs[EDU_IRQ_STATUS / 4];
    intx_count++;
}

/* One DMA, polled to completion (edu clears the start bit when its timer has copied). */
static int edu_dma(struct edu *e, uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd) {
    wr64(e, EDU_DMA_SRC, src);
    wr64(e, EDU_DMA_DST, dst);
    wr64(e, EDU_DMA_COUNT, count);
    wr64(e, EDU_DMA_CMD, EDU_DMA_START | cmd);
    uint64_t deadline = rt_deadline_ms(TIMEOUT_MS);
    while (rd(e, EDU_DMA_CMD) & EDU_DMA_START)
        if (rt_expired(deadline)) return 0;
    return 1;
}

static uint32_t pattern(uint32_t i, uint32_t seed) { return (i * 0x9e3779b1u) ^ seed; }
static uint8_t dma_src[EDU_BUF_SIZE] __attribute__((aligned(4096)));
static uint8_t dma_dst[EDU_BUF_SIZE] __attribute__((aligned(4096)));

static int step_enumerate(void) {
    if (!pci_ecam_present()) return fail(0x01, "enumerate", "no ECAM window");
    unsigned found = 0;
    for (unsigned dev = 0; dev < 32; dev++) {
        uint32_t id = pci_ecam_read32(0, dev, 0, 0), id_cf8 = pci_cf8_read32(0, dev, 0, 0);
        if (id != id_cf8) {
            rt_printf("pt: 00:%02x.0 ecam %08x cf8 %08x\n", dev, id, id_cf8);
            return fail(0x02, "enumerate", "ECAM and 0xCF8 disagree");
        }
        if ((id & 0xffff) == 0xffff) continue;
        found++;
        rt_printf("pt: found 00:%02x.0 %04x:%04x\n", dev, id & 0xffff, id >> 16);
        if (id == (EDU_VENDOR | (uint32_t)EDU_DEVICE << 16) && n_edu < 2) edus[n_edu++] = (struct edu){.dev = dev};
        if (id == (NIC_VENDOR | (uint32_t)NIC_DEVICE << 16) && nic_dev < 0) nic_dev = (int)dev;
    }
    if (n_edu < 2) return fail(0x03, "enumerate", "fewer than two edu devices (1234:11e8)");
    rt_printf("pt: enumerate ok: %u devices, edu A 00:%02x.0, edu B 00:%02x.0\n", found, edus[0].dev, edus[1].dev);
    return 0;
}

static int size_bar0(struct edu *e) {
    cfg_write32(e, PCI_COMMAND, 0); /* decode off while BAR0 holds all-ones */
    uint32_t orig = cfg_read32(e, PCI_BAR0);
    cfg_write32(e, PCI_BAR0, 0xffffffffu);
    uint32_t lo = cfg_read32(e, PCI_BAR0);
    cfg_write32(e, PCI_BAR0, orig);
    if ((lo & 1) || ((lo >> 1) & 3) != 0) return 0; /* edu's BAR0 is 32-bit memory */
    e->bar0_size = (uint32_t)(~(lo & ~0xfu) + 1);
    rt_printf("pt: 00:%02x.0 BAR0 mem32 size 0x%lx\n", e->dev, e->bar0_size);
    return e->bar0_size >= 0x1000;
}

static uint64_t next32;
static int program(struct edu *e, const struct conduit_boot_info *bi) {
    uint64_t a = (next32 + e->bar0_size - 1) & ~(e->bar0_size - 1);
    if (a + e->bar0_size > bi->mmio32_base + bi->mmio32_size - 0x100000) return 0; /* top MiB: fault target */
    next32 = a + e->bar0_size;
    cfg_write32(e, PCI_BAR0, (uint32_t)a);
    if ((cfg_read32(e, PCI_BAR0) & ~0xfu) != a || (pci_cf8_read32(0, e->dev, 0, PCI_BAR0) & ~0xfu) != a) return 0;
    cfg_write32(e, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    if ((cfg_read32(e, PCI_COMMAND) & 6) != 6) return 0;
    e->regs = a;
    rt_printf("pt: 00:%02x.0 BAR0 at 0x%lx\n", e->dev, a);
    return 1;
}

static int check_ident(struct edu *e, uint32_t salt) {
    uint32_t id = rd(e, EDU_IDENT), x = 0x5a5a0000u ^ salt;
    wr(e, EDU_LIVENESS, x);
    uint32_t l = rd(e, EDU_LIVENESS);
    if (id == EDU_IDENT_VALUE && l == ~x) return 1;
    rt_printf("pt: 00:%02x.0 ident 0x%08x, liveness wrote 0x%08x read 0x%08x\n", e->dev, id, x, l);
    return 0;
}

static int step_fact(struct edu *e) {
    static const uint32_t n[] = {5, 10, 12}, want[] = {120, 3628800, 479001600};
    for (unsigned i = 0; i < 3; i++) {
        wr(e, EDU_FACT, n[i]);
        uint64_t deadline = rt_deadline_ms(TIMEOUT_MS);
        while (rd(e, EDU_STATUS) & EDU_STATUS_BUSY)
            if (rt_expired(deadline)) return fail(0x07, "fact", "status stayed busy");
        uint32_t f = rd(e, EDU_FACT);
        if (f != want[i]) {
            rt_printf("pt: %u! read %u\n", n[i], f);
            return fail(0x07, "fact", "wrong factorial");
        }
    }
    rt_printf("pt: fact ok: 5! 10! 12! computed by the device\n");
    return 0;
}

static int step_dma(struct edu *e) {
    uint32_t *s = (uint32_t *)dma_src, *d = (uint32_t *)dma_dst;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        s[i] = pattern(i, 0xd3a0d3a0u);
        d[i] = 0;
    }
    if (!edu_dma(e, (uint64_t)dma_src, EDU_BUF, EDU_BUF_SIZE, 0)) return fail(0x08, "dma", "RAM -> edu did not complete");
    if (!edu_dma(e, EDU_BUF, (uint64_t)dma_dst, EDU_BUF_SIZE, EDU_DMA_TO_RAM)) return fail(0x09, "dma", "edu -> RAM did not complete");
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        if (d[i] != s[i]) {
            rt_printf("pt: RAM word %u 0x%08x, expected 0x%08x\n", i, d[i], s[i]);
            return fail(0x09, "dma", "bytes differ after RAM -> edu -> RAM");
        }
    }
    rt_printf("pt: dma ok: %u bytes RAM 0x%lx -> edu -> RAM 0x%lx verified\n", EDU_BUF_SIZE, (uint64_t)dma_src,
              (uint64_t)dma_dst);
    return 0;
}

static int step_msi(struct edu *e) {
    unsigned c = 0;
    if (cfg_read32(e, PCI_COMMAND) >> 16 & PCI_STATUS_CAP_LIST)
        for (unsigned p = cfg_read32(e, PCI_CAP_PTR) & 0xfc, guard = 0; p && guard < 48 && !c; guard++) {
            uint32_t h = cfg_read32(e, p);
            if ((h & 0xff) == PCI_CAP_MSI) c = p;
            p = (h >> 8) & 0xfc;
        }
    if (!c) return fail(0x0a, "msi", "edu B has no MSI capability");
    uint32_t hdr = cfg_read32(e, c);
    uint16_t ctl = hdr >> 16;
    int is64 = !!(ctl & 0x80);
    cfg_write32(e, c + 4, MSI_ADDRESS(0));
    if (is64) cfg_write32(e, c + 8, 0);
    cfg_write32(e, c + (is64 ? 0xc : 0x8), MSI_DATA(MSI_VECTOR));
    cfg_write32(e, c, (hdr & 0xffffu) | (uint32_t)((ctl & ~0x70u) | 1) << 16); /* enable, one vector */
    if (!(cfg_read32(e, c) >> 16 & 1)) return fail(0x0a, "msi", "MSI enable bit did not stick");

    uint32_t before = irq_count;
    wr(e, EDU_IRQ_RAISE, 0x40);
    if (!wait_irq(before + 1)) return fail(0x0b, "msi", "raise (0x60) gave no interrupt");
    wr(e, EDU_IRQ_ACK, 0x40);

    before = irq_count;
    wr(e, EDU_STATUS, EDU_STATUS_IRQ_FACT);
    wr(e, EDU_FACT, 10);
    if (!wait_irq(before + 1)) return fail(0x0c, "msi", "factorial with the interrupt bit gave no interrupt");
    uint32_t st = rd(e, EDU_IRQ_STATUS), f = rd(e, EDU_FACT);
    wr(e, EDU_IRQ_ACK, st);
    wr(e, EDU_STATUS, 0);
    if (f != 3628800u || !(st & 1)) return fail(0x0c, "msi", "factorial value or irq status wrong");

    before = irq_count;
    for (unsigned i = 0; i < 64 / 4; i++) ((uint32_t *)dma_dst)[i] = 0;
    if (!edu_dma(e, EDU_BUF, (uint64_t)dma_dst, 64, EDU_DMA_TO_RAM | EDU_DMA_IRQ) || !wait_irq(before + 1))
        return fail(0x0d, "msi", "DMA with the interrupt bit gave no interrupt");
    st = rd(e, EDU_IRQ_STATUS);
    wr(e, EDU_IRQ_ACK, st);
    if (!(st & EDU_DMA_IRQ_BIT)) return fail(0x0d, "msi", "irq status lacks the DMA bit 0x100");
    rt_printf("pt: msi ok: %s MSI vector 0x%x delivered for raise, factorial and DMA (%u interrupts)\n",
              is64 ? "64-bit" : "32-bit", MSI_VECTOR, irq_count);
    return 0;
}

static int step_intx(struct edu *e) {
    uint32_t line = cfg_read32(e, PCI_INTERRUPT_LINE), gsi = line & 0xff, pin = (line >> 8) & 0xff;
    if (pin != 1 || gsi >= 24) {
        rt_printf("pt: interrupt line 0x%x pin %u\n", gsi, pin);
        return fail(0x0e, "intx", "edu A has no INTx pin A on an I/O APIC input");
    }
    intx_regs = e->regs;
    ioapic_route(gsi, INTX_VECTOR, IOAPIC_LEVEL, 0);
    for (uint32_t n = 1; n <= 2; n++) {
        wr(e, EDU_IRQ_RAISE, 0x10 * n);
        if (!wait_on(&intx_count, n)) {
            rt_printf("pt: INTx interrupt %u of 2 did not arrive (GSI %u)\n", n, gsi);
            return fail(0x0e, "intx", "no interrupt");
        }
    }
    rt_delay_ms(200);
    uint32_t n = intx_count, st = rd(e, EDU_IRQ_STATUS);
    ioapic_mask(gsi);
    if (n != 2 || st) {
        rt_printf("pt: %u INTx interrupts for 2 raises, irq status 0x%x\n", n, st);
        return fail(0x0f, "intx", "the line did not go quiet after the acks");
    }
    rt_printf("pt: intx ok: GSI %u level-triggered, 2 raises -> 2 interrupts, acked, then quiet\n", gsi);
    return 0;
}

/* P2P: A's DMA of one word through the IOMMU to iova, which should be B's liveness register.
 * Reported, not judged here: the run script knows what each backend and config must do, and it
 * tells a DMA that faulted in the IOMMU from one that went elsewhere by L1's DMAR log. */
static int p2p_write(struct edu *a, uint64_t iova, uint32_t v) {
    ((uint32_t *)dma_src)[0] = v;
    return edu_dma(a, (uint64_t)dma_src, EDU_BUF, 4, 0) && edu_dma(a, EDU_BUF, iova, 4, EDU_DMA_TO_RAM);
}
static void p2p_report(const char *what, int ok, uint32_t l, uint32_t v, uint64_t iova) {
    rt_printf("pt: p2p%s %s: A's DMA to iova 0x%lx, B's liveness reads 0x%08x (dma %s)\n", what,
              ok && l == ~v ? "landed" : "not landed", iova, l, ok ? "completed" : "timed out");
}
static void set_command(struct edu *e, uint32_t cmd) { cfg_write32(e, PCI_COMMAND, cmd); }

/* p2p        A's DMA writes B's liveness register at B's BAR0 address
 * p2p-moved  the same after the guest moved B's BAR0 (decode off, new address, decode on): the
 *            mapping follows the BAR (and on type1 it was made with the BAR's mmap untouched,
 *            since vfio-pci zapped it when decode went off)
 * p2p-old    A's DMA to B's old address: nothing there any more
 * p2p-off    A's DMA to B's BAR while B's memory decode is off: no stale mapping
 * (p2p-reset, in the igb's FLR step: A's DMA into the igb's BAR after its reset.) */
static void step_p2p(struct edu *a, struct edu *b, const struct conduit_boot_info *bi) {
    const uint64_t old = b->regs;
    uint32_t v = 0x0f0f1234u;
    wr(b, EDU_LIVENESS, 0);
    int ok = p2p_write(a, b->regs + EDU_LIVENESS, v);
    p2p_report("", ok, rd(b, EDU_LIVENESS), v, b->regs + EDU_LIVENESS);

    set_command(b, PCI_COMMAND_MASTER);
    if (!program(b, bi)) {
        rt_printf("pt: p2p-moved: B's BAR0 could not be moved\n");
        return;
    }
    v = 0x0f0f5678u;
    wr(b, EDU_LIVENESS, 0);
    ok = p2p_write(a, b->regs + EDU_LIVENESS, v);
    p2p_report("-moved", ok, rd(b, EDU_LIVENESS), v, b->regs + EDU_LIVENESS);

    v = 0x0f0f9abcu;
    wr(b, EDU_LIVENESS, 0);
    ok = p2p_write(a, old + EDU_LIVENESS, v);
    p2p_report("-old", ok, rd(b, EDU_LIVENESS), v, old + EDU_LIVENESS);

    v = 0x0f0fdef0u;
    wr(b, EDU_LIVENESS, 0);
    set_command(b, PCI_COMMAND_MASTER);
    ok = p2p_write(a, b->regs + EDU_LIVENESS, v);
    set_command(b, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    p2p_report("-off", ok, rd(b, EDU_LIVENESS), v, b->regs + EDU_LIVENESS);
}

static int step_iommu_fault(const struct conduit_boot_info *bi, struct edu *e) {
    const uint64_t ram_end = bi->ram_low_size; /* tests/realkernel gives 64 MiB: no high RAM */
    volatile uint8_t *last = (volatile uint8_t *)(ram_end - EDU_BUF_SIZE);
    for (unsigned i = 0; i < EDU_BUF_SIZE; i++) last[i] = 0xc5;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) ((uint32_t *)dma_src)[i] = 0x3c3c3c3cu;
    if (!edu_dma(e, (uint64_t)dma_src, EDU_BUF, EDU_BUF_SIZE, 0)) return fail(0x10, "iommu-fault", "fill DMA did not complete");
    /* Wholly unmapped: the page just past RAM and the top MiB of mmio32 (no BAR there). */
    const uint64_t hole = bi->mmio32_base + bi->mmio32_size - 0x100000;
    edu_dma(e, EDU_BUF, ram_end, EDU_BUF_SIZE, EDU_DMA_TO_RAM);
    edu_dma(e, EDU_BUF, hole, 256, EDU_DMA_TO_RAM);
    for (unsigned i = 0; i < EDU_BUF_SIZE; i++)
        if (last[i] != 0xc5) {
            rt_printf("pt: RAM byte 0x%lx is 0x%02x\n", ram_end - EDU_BUF_SIZE + i, last[i]);
            return fail(0x10, "iommu-fault", "guest memory changed by DMA to unmapped IOVAs");
        }
    /* Straddling the end of RAM: a real IOMMU translates page by page, so the mapped half may land. */
    const uint64_t straddle = ram_end - EDU_BUF_SIZE / 2;
    edu_dma(e, EDU_BUF, straddle, EDU_BUF_SIZE, EDU_DMA_TO_RAM);
    unsigned written = 0;
    for (unsigned i = EDU_BUF_SIZE / 2; i < EDU_BUF_SIZE; i++) written += last[i] != 0xc5;
    rt_printf("pt: straddle wrote %u of %u RAM bytes (iova 0x%lx +0x%x)\n", written, EDU_BUF_SIZE / 2, straddle, EDU_BUF_SIZE);
    uint32_t *d = (uint32_t *)dma_dst;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) d[i] = 0;
    if (!edu_dma(e, EDU_BUF, (uint64_t)dma_dst, EDU_BUF_SIZE, EDU_DMA_TO_RAM)) return fail(0x11, "iommu-fault", "DMA after the faults did not complete");
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++)
        if (d[i] != 0x3c3c3c3cu) return fail(0x11, "iommu-fault", "a normal DMA after the faults did not land");
    rt_printf("pt: iommu-fault ok: DMA to iova 0x%lx and 0x%lx left RAM untouched, the device still works\n", ram_end, hole);
    return 0;
}


/* ---- igb: MSI-X and FLR ---- */
static volatile uint32_t msix_counts[8];
static void on_msix(struct rt_frame *f) { msix_counts[(f->vector - MSIX_VECTOR_BASE) & 7]++; }

static unsigned find_cap(unsigned dev, uint8_t id) {
    if (!(pci_ecam_read32(0, dev, 0, PCI_COMMAND) >> 16 & PCI_STATUS_CAP_LIST)) return 0;
    for (unsigned p = pci_ecam_read32(0, dev, 0, PCI_CAP_PTR) & 0xfc, guard = 0; p && guard < 48; guard++) {
        uint32_t h = pci_ecam_read32(0, dev, 0, p);
        if ((h & 0xff) == id) return p;
        p = (h >> 8) & 0xfc;
    }
    return 0;
}

static struct {
    unsigned dev, msix_cap, vectors;
    uint64_t bar[6];
} nic;

static uint32_t nic_rd(unsigned off) { return *(volatile uint32_t *)(nic.bar[0] + off); }
static void nic_wr(unsigned off, uint32_t v) { *(volatile uint32_t *)(nic.bar[0] + off) = v; }
static uint64_t msix_entry(unsigned i) {
    uint32_t t = pci_ecam_read32(0, nic.dev, 0, nic.msix_cap + 4);
    return nic.bar[t & 7] + (t & ~7u) + 16ull * i;
}
static void msix_mask(unsigned i, int masked) { *(volatile uint32_t *)(msix_entry(i) + 12) = masked ? 1 : 0; }

static int step_nic(const struct conduit_boot_info *bi) {
    (void)bi;
    if (nic_dev < 0) return fail(0x20, "nic", "no igb (8086:10c9) on bus 0");
    nic.dev = (unsigned)nic_dev;
    unsigned d = nic.dev;
    pci_ecam_write32(0, d, 0, PCI_COMMAND, 0);
    for (unsigned i = 0; i < 6; i++) {
        unsigned off = PCI_BAR0 + 4 * i;
        pci_ecam_write32(0, d, 0, off, 0xffffffffu);
        uint32_t lo = pci_ecam_read32(0, d, 0, off);
        if (!lo || (lo & 1)) continue; /* absent or I/O (no I/O window in the boot info) */
        int is64 = ((lo >> 1) & 3) == 2;
        uint64_t mask = (lo & ~0xfull) | 0xffffffff00000000ull;
        if (is64) {
            pci_ecam_write32(0, d, 0, off + 4, 0xffffffffu);
            mask = (lo & ~0xfull) | (uint64_t)pci_ecam_read32(0, d, 0, off + 4) << 32;
        }
        uint64_t size = ~mask + 1, a = (next32 + size - 1) & ~(size - 1);
        next32 = a + size;
        pci_ecam_write32(0, d, 0, off, (uint32_t)a);
        if (is64) pci_ecam_write32(0, d, 0, off + 4, 0);
        if ((pci_ecam_read32(0, d, 0, off) & ~0xfu) != a) return fail(0x20, "nic", "BAR did not read back");
        nic.bar[i] = a;
        rt_printf("pt: 00:%02x.0 BAR%u %s size 0x%lx at 0x%lx\n", d, i, is64 ? "mem64" : "mem32", size, a);
        if (is64) i++;
    }
    pci_ecam_write32(0, d, 0, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    nic.msix_cap = find_cap(d, PCI_CAP_MSIX);
    if (!nic.bar[0] || !nic.msix_cap) return fail(0x21, "nic", "no BAR0 or no MSI-X capability");
    nic.vectors = (pci_ecam_read32(0, d, 0, nic.msix_cap) >> 16 & 0x7ff) + 1;
    rt_printf("pt: nic ok: igb 00:%02x.0, MSI-X with %u vectors\n", d, nic.vectors);
    return 0;
}

static int fire(unsigned i) {
    uint32_t before = msix_counts[i];
    nic_wr(NIC_EICS, 1u << i);
    int ok = wait_on(&msix_counts[i], before + 1);
    nic_wr(NIC_EICR, 1u << i); /* write 1 to clear: the next raise is a new edge */
    return ok;
}

static int step_msix(void) {
    unsigned n = nic.vectors < 5 ? nic.vectors : 5;
    if (n < 5) return fail(0x22, "msix", "fewer than 5 MSI-X vectors");
    for (unsigned i = 0; i < n; i++) {
        uint64_t e = msix_entry(i);
        *(volatile uint32_t *)(e + 0) = MSI_ADDRESS(0);
        *(volatile uint32_t *)(e + 4) = 0;
        *(volatile uint32_t *)(e + 8) = MSI_DATA(MSIX_VECTOR_BASE + i);
        *(volatile uint32_t *)(e + 12) = 0;
    }
    uint32_t h = pci_ecam_read32(0, nic.dev, 0, nic.msix_cap);
    pci_ecam_write32(0, nic.dev, 0, nic.msix_cap, (h & 0x3fffffffu) | 0xc0000000u); /* enable, function masked */
    pci_ecam_write32(0, nic.dev, 0, nic.msix_cap, (h & 0x3fffffffu) | 0x80000000u); /* then unmask, as Linux does */
    if ((pci_ecam_read32(0, nic.dev, 0, nic.msix_cap) >> 30) != 2) return fail(0x22, "msix", "MSI-X enable did not stick");
    nic_wr(NIC_EIMC, 0xffffffffu);
    nic_wr(NIC_GPIE, NIC_GPIE_MSIX_MODE);
    nic_wr(NIC_EICR, 0xffffffffu);
    /* No throttling: with a non-zero EITR QEMU's e1000e/igb send a message at once and again when
     * the throttling timer expires. */
    for (unsigned i = 0; i < n; i++) nic_wr(NIC_EITR + 4 * i, 0);
    nic_wr(NIC_EIMS, (1u << n) - 1);
    /* Each vector must arrive on its own IDT entry, and none before it was fired. Counts are not
     * compared: an eventfd may coalesce two signals into one injection, and QEMU's e1000e was
     * seen to send each message twice (docs/testing.md). */
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = i; j < n; j++)
            if (msix_counts[j]) {
                rt_printf("pt: MSI-X vector %u arrived %u times before it was fired\n", j, msix_counts[j]);
                return fail(0x23, "msix", "an interrupt on a vector that was not fired");
            }
        if (!fire(i)) {
            rt_printf("pt: MSI-X vector %u (IDT 0x%x) did not arrive\n", i, MSIX_VECTOR_BASE + i);
            return fail(0x23, "msix", "interrupt timeout");
        }
    }
    rt_printf("pt: msix ok: %u vectors, each cause on its own vector\n", n);
    return 0;
}

static int step_msix_mask(void) {
    const unsigned v = 2;
    uint32_t before = msix_counts[v];
    msix_mask(v, 1);
    nic_wr(NIC_EICS, 1u << v);
    rt_delay_ms(200);
    if (msix_counts[v] != before) return fail(0x24, "msix-mask", "a masked vector was delivered");
    msix_mask(v, 0);
    if (!wait_on(&msix_counts[v], before + 1)) return fail(0x25, "msix-mask", "the pending message was not delivered on unmask");
    nic_wr(NIC_EICR, 0xffffffffu);
    rt_printf("pt: msix-mask ok: vector %u silent while masked, delivered on unmask\n", v);
    return 0;
}

static int step_flr(void) {
    unsigned x = find_cap(nic.dev, PCI_CAP_EXP);
    if (!x || !(pci_ecam_read32(0, nic.dev, 0, x + 4) & (1u << 28))) return fail(0x26, "flr", "no PCIe capability with FLR");
    nic_wr(NIC_RDBAL0, 0x12345600u);
    if (nic_rd(NIC_RDBAL0) != 0x12345600u) return fail(0x26, "flr", "RDBAL0 did not hold a written value");
    uint32_t ctl = pci_ecam_read32(0, nic.dev, 0, x + 8);
    pci_ecam_write32(0, nic.dev, 0, x + 8, (ctl & 0xffffu) | 0x8000u); /* DEVCTL initiate FLR; DEVSTA 0 */
    rt_delay_ms(100); /* PCIe: 100 ms before the function must respond again */
    /* An FLR clears BARs and COMMAND like any function reset: program them again. */
    uint32_t bar0 = pci_ecam_read32(0, nic.dev, 0, PCI_BAR0), cmd = pci_ecam_read32(0, nic.dev, 0, PCI_COMMAND) & 0xffff;
    for (unsigned i = 0; i < 6; i++)
        if (nic.bar[i]) pci_ecam_write32(0, nic.dev, 0, PCI_BAR0 + 4 * i, (uint32_t)nic.bar[i]);
    pci_ecam_write32(0, nic.dev, 0, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    uint32_t after = nic_rd(NIC_RDBAL0);
    if (after != 0) {
        rt_printf("pt: RDBAL0 reads 0x%08x after FLR\n", after);
        return fail(0x27, "flr", "the device kept its register state across the FLR");
    }
    /* P2P into the igb after its reset: the kernel revoked the BAR's dma-buf during the reset
     * (iommufd then unmaps its range for good), so only a mapping made afresh lets this land. */
    const uint32_t v = 0x0abcd000u; /* RDBAL0 is 128-byte aligned */
    ((uint32_t *)dma_src)[0] = v;
    int ok = edu_dma(&edus[0], (uint64_t)dma_src, EDU_BUF, 4, 0) &&
             edu_dma(&edus[0], EDU_BUF, nic.bar[0] + NIC_RDBAL0, 4, EDU_DMA_TO_RAM);
    uint32_t l = nic_rd(NIC_RDBAL0);
    rt_printf("pt: p2p-reset %s: A's DMA to iova 0x%lx, the igb's RDBAL0 reads 0x%08x after its FLR (dma %s)\n",
              ok && l == v ? "landed" : "not landed", nic.bar[0] + NIC_RDBAL0, l, ok ? "completed" : "timed out");
    rt_printf("pt: flr ok: RDBAL0 0x12345600 -> 0 after a guest-initiated FLR (BAR0 read 0x%x, COMMAND 0x%x before reprogramming)\n",
              bar0, cmd);
    return 0;
}

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return 0;
    int r;
    rt_printf("pt: real edu payload, ram %lu MiB, mmio32 0x%lx+0x%lx\n", bi->ram_low_size >> 20, bi->mmio32_base, bi->mmio32_size);
    next32 = bi->mmio32_base;
    rt_set_handler(MSI_VECTOR, on_irq);
    rt_set_handler(INTX_VECTOR, on_intx);
    for (unsigned v = 0; v < 8; v++) rt_set_handler(MSIX_VECTOR_BASE + v, on_msix);
    pic_disable();
    lapic_enable();

    if ((r = step_enumerate())) return r;
    for (unsigned k = 0; k < 2; k++)
        if (!size_bar0(&edus[k])) return fail(0x04, "size", "BAR0 is not 32-bit memory of >= 4 KiB");
    rt_printf("pt: size ok\n");
    for (unsigned k = 0; k < 2; k++)
        if (!program(&edus[k], bi)) return fail(0x05, "program", "BAR0 placement or COMMAND did not read back");
    rt_printf("pt: program ok: memory + bus master enabled\n");
    for (unsigned k = 0; k < 2; k++)
        if (!check_ident(&edus[k], k)) return fail(0x06, "ident", "edu ident or liveness through BAR0");
    rt_printf("pt: ident ok: 0x%08x on both, liveness inverted\n", EDU_IDENT_VALUE);
    struct edu *a = &edus[0], *b = &edus[1];
    if ((r = step_fact(a))) return r;
    if ((r = step_dma(a))) return r;
    if ((r = step_msi(b))) return r;
    if ((r = step_intx(a))) return r;
    step_p2p(a, b, bi);
    if ((r = step_iommu_fault(bi, a))) return r;
    if ((r = step_nic(bi))) return r;
    if ((r = step_msix())) return r;
    if ((r = step_msix_mask())) return r;
    if ((r = step_flr())) return r;
    rt_printf("pt: interrupts %u MSI, %u INTx, %u MSI-X\n", irq_count, intx_count,
              msix_counts[0] + msix_counts[1] + msix_counts[2] + msix_counts[3] + msix_counts[4]);
    rt_printf("pt: all steps passed\n");
    return RT_EXIT_OK;
}
