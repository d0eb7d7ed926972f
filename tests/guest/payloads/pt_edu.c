/* pt_edu: drives two passed-through edu devices (docs/passthrough.md, issue 4) end to end from the
 * guest side. Needs at least two functions 1234:11e8 on bus 0 (the simulated host's edu, or QEMU's
 * edu behind real VFIO) and one vCPU. Everything below runs at CPL3 except the interrupt handler
 * (one increment) and the 0xCF8 accesses (ring-0 port I/O through rt_kcall).
 *
 * Device A (the first edu found) uses MSI-X, device B (the second) uses MSI. Steps, in order; each
 * prints "pt: <step> ok ..." and the payload stops at the first failure with "pt: FAIL <step>: ..."
 * and the step's exit status:
 *
 *   1 enumerate  bus 0 through ECAM and through 0xCF8; both must list the same functions  (0x01, 0x02)
 *   2 find       two edu functions                                                         (0x03)
 *   3 size       BARs sized by writing all-ones with decode off: BAR0 registers (>= 0x41000),
 *                one more memory BAR (the mmapped one; 64-bit on the simulated host)        (0x04)
 *   4 program    BARs placed inside boot_info mmio32/mmio64, read back through ECAM and
 *                0xCF8, COMMAND = memory | bus master                                       (0x05)
 *   5 ident      edu ident 0x010000ed and liveness (~x) through the trapped BAR0            (0x06)
 *   6 mmap       64 KiB pattern written/read through the memory BAR (no VMM exits)          (0x07)
 *   7 dma        RAM -> edu buffer (checked through BAR0 at 0x40000) -> RAM, 4 KiB          (0x08, 0x09)
 *   8 msix       A: MSI-X table programmed (vectors 0x50+i), every vector fired through
 *                register 0x70 and counted in the handler                                   (0x0a, 0x0b)
 *   9 msix-mask  A: a masked vector does not arrive; after unmasking it does (pending)     (0x0c, 0x0d)
 *  10 fact-irq   A: factorial 10 with the "interrupt when done" bit: value and MSI-X vector 0 (0x0e)
 *  11 dma-irq    A: DMA with the irq bit raises MSI-X vector 0 (status 0x100, acked)         (0x0f)
 *  12 msi        B: MSI programmed (vectors 0x60+i, all the function offers up to 4), each
 *                vector fired through 0x70 and counted, then a raise (0x60) on vector 0    (0x10, 0x11)
 *  13 relocate   A: decode off, BAR0 and the memory BAR moved, decode on: ident through the
 *                new BAR0, the pattern of step 6 read at the new memory BAR address, the old
 *                address no longer reaches the device, MSI-X (table in the moved BAR) works (0x12..0x15)
 *  14 p2p        A's DMA engine writes into B's memory BAR (B's address as IOVA); the bytes
 *                are read through B's mapping; then again from B's buffer into A's moved BAR (0x16, 0x17)
 *  15 iommu-fault DMA to IOVAs that map nothing: one straddling the end of RAM (the IOMMU
 *                translates page by page, as real VT-d does: exactly its RAM half is written,
 *                the RAM below it is not) and one in an unused part of the 32-bit MMIO window
 *                (RAM stays untouched); then a normal DMA still works                        (0x18, 0x19)
 *
 * Last lines: "pt: trapped mmio accesses <T>" (every access this payload made that must exit to
 * the VMM: ECAM, BAR0, MSI-X table, the old BAR address), "pt: mmapped accesses <M>",
 * "pt: interrupts <I>", "pt: all steps passed". Exit 0.
 * The integration test compares <T> with the VMM's MMIO exit count (docs/passthrough.md). */
#include "rt.h"

/* ---- edu (QEMU docs/specs/edu.rst, plus the simulated host's 0x70 and BAR0 buffer window) ---- */
#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_IDENT_VALUE 0x010000edu
#define EDU_IDENT 0x00
#define EDU_LIVENESS 0x04
#define EDU_FACT 0x08
#define EDU_STATUS 0x20
#define EDU_STATUS_IRQ_FACT 0x80
#define EDU_IRQ_STATUS 0x24
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64
#define EDU_FIRE_VECTOR 0x70
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_COUNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_START 0x1
#define EDU_DMA_TO_RAM 0x2 /* direction: edu buffer -> RAM */
#define EDU_DMA_IRQ 0x4
#define EDU_DMA_IRQ_BIT 0x100
#define EDU_BUF 0x40000ull
#define EDU_BUF_SIZE 4096u

/* ---- PCI config space ---- */
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_CAP_MSI 0x05
#define PCI_CAP_MSIX 0x11

#define MSIX_VECTOR_BASE 0x50
#define MSI_VECTOR_BASE 0x60 /* aligned to 32, as multiple-message MSI requires */
#define IRQ_TIMEOUT_MS 1000 /* the simulated device answers in microseconds; the fault sweep waits this out when an interrupt path is failed on purpose */
#define QUIET_MS 200 /* how long a masked vector must stay silent */
#define MAX_EDU 2
#define MMAP_TEST_BYTES 0x10000u

enum step_status {
    ST_NO_ECAM = 0x01,
    ST_ENUM_MISMATCH = 0x02,
    ST_NO_EDU = 0x03,
    ST_SIZE = 0x04,
    ST_PROGRAM = 0x05,
    ST_IDENT = 0x06,
    ST_MMAP = 0x07,
    ST_DMA_TO_DEV = 0x08,
    ST_DMA_TO_RAM = 0x09,
    ST_MSIX_SETUP = 0x0a,
    ST_MSIX_IRQ = 0x0b,
    ST_MSIX_MASKED = 0x0c,
    ST_MSIX_PENDING = 0x0d,
    ST_FACT_IRQ = 0x0e,
    ST_DMA_IRQ = 0x0f,
    ST_MSI_SETUP = 0x10,
    ST_MSI_IRQ = 0x11,
    ST_RELOC_IDENT = 0x12,
    ST_RELOC_MEM = 0x13,
    ST_RELOC_OLD = 0x14,
    ST_RELOC_IRQ = 0x15,
    ST_P2P_A_TO_B = 0x16,
    ST_P2P_B_TO_A = 0x17,
    ST_FAULT_TOUCHED = 0x18,
    ST_FAULT_AFTER = 0x19,
};

/* ---- access accounting: what must exit to the VMM and what must not ---- */
static uint64_t trapped_accesses; /* MMIO that exits: ECAM, BAR0, MSI-X table, unbacked addresses */
static uint64_t mmapped_accesses; /* accesses to memslot-backed BAR memory */

static uint32_t tr_read32(uint64_t a) { trapped_accesses++; return *(volatile uint32_t *)a; }
static void tr_write32(uint64_t a, uint32_t v) { trapped_accesses++; *(volatile uint32_t *)a = v; }
static void tr_write64(uint64_t a, uint64_t v) { trapped_accesses++; *(volatile uint64_t *)a = v; }
static uint32_t mm_read32(uint64_t a) { mmapped_accesses++; return *(volatile uint32_t *)a; }
static void mm_write32(uint64_t a, uint32_t v) { mmapped_accesses++; *(volatile uint32_t *)a = v; }

/* Config space through ECAM (counted as trapped MMIO). */
static uint32_t cfg_read32(unsigned dev, unsigned fn, unsigned off) {
    trapped_accesses++;
    return pci_ecam_read32(0, dev, fn, off);
}
static void cfg_write32(unsigned dev, unsigned fn, unsigned off, uint32_t v) {
    trapped_accesses++;
    pci_ecam_write32(0, dev, fn, off, v);
}
static uint16_t cfg_read16(unsigned dev, unsigned fn, unsigned off) {
    return (uint16_t)(cfg_read32(dev, fn, off & ~3u) >> (8 * (off & 2)));
}
/* 16-bit write as a dword read-modify-write of the containing dword. Only used where the other
 * half is read-only or write-as-read is harmless (capability id/next, MSI-X message control). */
static void cfg_write16(unsigned dev, unsigned fn, unsigned off, uint16_t v) {
    uint32_t cur = cfg_read32(dev, fn, off & ~3u);
    unsigned sh = 8 * (off & 2);
    cfg_write32(dev, fn, off & ~3u, (cur & ~(0xffffu << sh)) | ((uint32_t)v << sh));
}
/* COMMAND with STATUS written as zero (its error bits are write-1-to-clear). */
static void cfg_set_command(unsigned dev, unsigned fn, uint16_t cmd) { cfg_write32(dev, fn, PCI_COMMAND, cmd); }

/* ---- interrupts ---- */
static volatile uint32_t irq_counts[256];
static void on_irq(struct rt_frame *f) { irq_counts[f->vector & 0xff]++; } /* ring 0: count only */

static uint64_t total_irqs(void) {
    uint64_t n = 0;
    for (unsigned v = 0; v < 256; v++) n += irq_counts[v];
    return n;
}
/* Spin at CPL3 (IF=1) until irq_counts[vector] reaches `target`; 1 if it did. */
static int wait_irq(unsigned vector, uint32_t target, uint64_t ms) {
    uint64_t deadline = rt_deadline_ms(ms);
    while (irq_counts[vector] < target) {
        if (rt_expired(deadline)) return 0;
        rt_pause();
    }
    return 1;
}

/* ---- devices ---- */
struct bar {
    uint64_t size; /* 0: not implemented */
    int is64, io, prefetch;
    uint64_t addr; /* where this payload placed it */
};
struct edu {
    unsigned dev, fn;
    struct bar bars[6];
    unsigned mem_bar; /* the memory BAR besides BAR0 (mmapped by the VMM) */
    unsigned msi_cap, msix_cap;
    uint64_t regs; /* BAR0 address */
    uint64_t mem;  /* mem_bar address */
};
static struct edu edus[MAX_EDU];
static unsigned n_edu;

static int fail(int status, const char *step, const char *what) {
    rt_printf("pt: FAIL %s: %s (exit 0x%x)\n", step, what, status);
    return status;
}

/* Bump allocators over the boot info's BAR windows. */
static uint64_t next32, end32, next64, end64;
static uint64_t alloc_bar(uint64_t size, int is64) {
    uint64_t *next = is64 && end64 ? &next64 : &next32;
    uint64_t end = is64 && end64 ? end64 : end32;
    uint64_t a = (*next + size - 1) & ~(size - 1);
    if (a + size > end) return 0;
    *next = a + size;
    return a;
}

/* ---- step 1+2: enumeration ---- */
typedef uint32_t (*cfg_rd)(unsigned bus, unsigned dev, unsigned fn, unsigned off);
static uint32_t ecam_rd_counted(unsigned bus, unsigned dev, unsigned fn, unsigned off) {
    trapped_accesses++;
    return pci_ecam_read32(bus, dev, fn, off);
}
/* ids[dev*8+fn] = vendor/device dword, or 0xffffffff. Returns functions found. */
static unsigned scan(cfg_rd rd, uint32_t *ids) {
    unsigned found = 0;
    for (unsigned i = 0; i < 256; i++) ids[i] = 0xffffffffu;
    for (unsigned dev = 0; dev < 32; dev++) {
        for (unsigned fn = 0; fn < 8; fn++) {
            uint32_t id = rd(0, dev, fn, 0);
            if ((id & 0xffff) == 0xffff) {
                if (fn == 0) break;
                continue;
            }
            ids[dev * 8 + fn] = id;
            found++;
            if (fn == 0 && !((rd(0, dev, 0, 0xc) >> 16) & 0x80)) break; /* single-function */
        }
    }
    return found;
}

static int step_enumerate(const struct conduit_boot_info *bi) {
    static uint32_t by_ecam[256], by_cf8[256];
    if (!pci_ecam_present() || !bi->mmio32_size) return fail(ST_NO_ECAM, "enumerate", "no ECAM window or no mmio32 window in the boot info");
    unsigned ne = scan(ecam_rd_counted, by_ecam);
    unsigned nc = scan(pci_cf8_read32, by_cf8);
    for (unsigned i = 0; i < 256; i++) {
        if (by_ecam[i] == by_cf8[i]) continue;
        rt_printf("pt: 00:%02x.%u ecam %08x cf8 %08x\n", i / 8, i % 8, by_ecam[i], by_cf8[i]);
        return fail(ST_ENUM_MISMATCH, "enumerate", "ECAM and 0xCF8 disagree");
    }
    for (unsigned i = 0; i < 256; i++) {
        if (by_ecam[i] == 0xffffffffu) continue;
        uint32_t cls = cfg_read32(i / 8, i % 8, 8) >> 8;
        rt_printf("pt: found 00:%02x.%u %04x:%04x class %06x\n", i / 8, i % 8, by_ecam[i] & 0xffff, by_ecam[i] >> 16, cls);
        if (by_ecam[i] == (EDU_VENDOR | (uint32_t)EDU_DEVICE << 16) && n_edu < MAX_EDU) {
            edus[n_edu].dev = i / 8;
            edus[n_edu].fn = i % 8;
            n_edu++;
        }
    }
    rt_printf("pt: enumerate ok: %u functions through ECAM, %u through 0xCF8, ecam 0x%lx\n", ne, nc, bi->ecam_base);
    if (n_edu < MAX_EDU) return fail(ST_NO_EDU, "find", "fewer than two edu devices (1234:11e8)");
    rt_printf("pt: find ok: edu A 00:%02x.%u, edu B 00:%02x.%u\n", edus[0].dev, edus[0].fn, edus[1].dev, edus[1].fn);
    return 0;
}

/* ---- step 3: BAR sizing ---- */
static unsigned find_cap(struct edu *e, uint8_t id) {
    if (!(cfg_read16(e->dev, e->fn, 0x6) & PCI_STATUS_CAP_LIST)) return 0;
    unsigned p = cfg_read32(e->dev, e->fn, PCI_CAP_PTR) & 0xfc;
    for (unsigned guard = 0; p && guard < 48; guard++) {
        uint32_t h = cfg_read32(e->dev, e->fn, p);
        if ((h & 0xff) == id) return p;
        p = (h >> 8) & 0xfc;
    }
    return 0;
}

static int size_bars(struct edu *e) {
    unsigned d = e->dev, f = e->fn;
    uint16_t cmd = cfg_read16(d, f, PCI_COMMAND);
    cfg_set_command(d, f, cmd & ~(PCI_COMMAND_MEMORY | 1)); /* decode off while BARs hold all-ones */
    for (unsigned i = 0; i < 6; i++) {
        unsigned off = PCI_BAR0 + 4 * i;
        uint32_t orig = cfg_read32(d, f, off);
        cfg_write32(d, f, off, 0xffffffffu);
        uint32_t lo = cfg_read32(d, f, off);
        cfg_write32(d, f, off, orig);
        struct bar *b = &e->bars[i];
        if (lo == 0 || lo == 0xffffffffu) continue;
        if (lo & 1) { /* I/O BAR */
            b->io = 1;
            b->size = (uint32_t)(~(lo & ~3u) + 1) & 0xffff;
            continue;
        }
        b->is64 = ((lo >> 1) & 3) == 2;
        b->prefetch = !!(lo & 8);
        uint64_t mask = lo & ~0xfull;
        if (b->is64 && i < 5) {
            uint32_t orig_hi = cfg_read32(d, f, off + 4);
            cfg_write32(d, f, off + 4, 0xffffffffu);
            uint32_t hi = cfg_read32(d, f, off + 4);
            cfg_write32(d, f, off + 4, orig_hi);
            mask |= (uint64_t)hi << 32;
        } else {
            mask |= 0xffffffff00000000ull;
        }
        b->size = ~mask + 1;
        rt_printf("pt: 00:%02x.%u BAR%u %s%s size 0x%lx\n", d, f, i, b->is64 ? "mem64" : "mem32",
                  b->prefetch ? " prefetchable" : "", b->size);
        if (b->is64) i++; /* the upper half is not a BAR of its own */
    }
    cfg_set_command(d, f, cmd);
    struct bar *b0 = &e->bars[0];
    if (!b0->size || b0->io || b0->size < EDU_BUF + EDU_BUF_SIZE) return 0;
    for (unsigned i = 1; i < 6; i++)
        if (e->bars[i].size && !e->bars[i].io && !e->mem_bar) e->mem_bar = i;
    return e->mem_bar != 0 && e->bars[e->mem_bar].size >= 2 * MMAP_TEST_BYTES;
}

/* ---- step 4: programming ---- */
static void write_bar(struct edu *e, unsigned i, uint64_t addr) {
    cfg_write32(e->dev, e->fn, PCI_BAR0 + 4 * i, (uint32_t)addr);
    if (e->bars[i].is64) cfg_write32(e->dev, e->fn, PCI_BAR0 + 4 * i + 4, (uint32_t)(addr >> 32));
    e->bars[i].addr = addr;
}
static uint64_t read_bar(struct edu *e, unsigned i, cfg_rd rd) {
    uint64_t v = rd(0, e->dev, e->fn, PCI_BAR0 + 4 * i) & ~0xfull;
    if (e->bars[i].is64) v |= (uint64_t)rd(0, e->dev, e->fn, PCI_BAR0 + 4 * i + 4) << 32;
    return v;
}

static int program(struct edu *e) {
    cfg_set_command(e->dev, e->fn, 0);
    for (unsigned i = 0; i < 6; i++) {
        struct bar *b = &e->bars[i];
        if (!b->size || b->io) continue;
        uint64_t a = alloc_bar(b->size, b->is64);
        if (!a) return 0;
        write_bar(e, i, a);
        if (read_bar(e, i, ecam_rd_counted) != a || read_bar(e, i, pci_cf8_read32) != a) {
            rt_printf("pt: BAR%u wrote 0x%lx, ecam reads 0x%lx\n", i, a, read_bar(e, i, ecam_rd_counted));
            return 0;
        }
        rt_printf("pt: 00:%02x.%u BAR%u at 0x%lx\n", e->dev, e->fn, i, a);
    }
    e->regs = e->bars[0].addr;
    e->mem = e->bars[e->mem_bar].addr;
    cfg_set_command(e->dev, e->fn, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    uint16_t cmd = cfg_read16(e->dev, e->fn, PCI_COMMAND);
    return (cmd & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) == (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}

/* ---- steps 5..7 ---- */
static int check_ident(struct edu *e, uint32_t salt) {
    uint32_t id = tr_read32(e->regs + EDU_IDENT);
    if (id != EDU_IDENT_VALUE) {
        rt_printf("pt: ident 0x%08x at 0x%lx\n", id, e->regs);
        return 0;
    }
    uint32_t x = 0x5a5a0000u ^ salt;
    tr_write32(e->regs + EDU_LIVENESS, x);
    uint32_t l = tr_read32(e->regs + EDU_LIVENESS);
    if (l != ~x) {
        rt_printf("pt: liveness wrote 0x%08x read 0x%08x\n", x, l);
        return 0;
    }
    return 1;
}

static uint32_t pattern(uint64_t i, uint32_t seed) { return (uint32_t)(i * 0x9e3779b1u) ^ seed; }

/* Writes then reads `bytes` of pattern at `base` through the mmapped BAR; 1 if every word matched. */
static int mmap_rw(uint64_t base, uint32_t bytes, uint32_t seed) {
    for (uint32_t i = 0; i < bytes / 4; i++) mm_write32(base + 4 * i, pattern(i, seed));
    for (uint32_t i = 0; i < bytes / 4; i++) {
        uint32_t v = mm_read32(base + 4 * i);
        if (v != pattern(i, seed)) {
            rt_printf("pt: mmapped word %u at 0x%lx: 0x%08x, expected 0x%08x\n", i, base + 4 * i, v, pattern(i, seed));
            return 0;
        }
    }
    return 1;
}
static int mmap_check(uint64_t base, uint32_t bytes, uint32_t seed) {
    for (uint32_t i = 0; i < bytes / 4; i++) {
        uint32_t v = mm_read32(base + 4 * i);
        if (v != pattern(i, seed)) {
            rt_printf("pt: word %u at 0x%lx: 0x%08x, expected 0x%08x\n", i, base + 4 * i, v, pattern(i, seed));
            return 0;
        }
    }
    return 1;
}

static uint8_t dma_src[EDU_BUF_SIZE] __attribute__((aligned(4096)));
static uint8_t dma_dst[EDU_BUF_SIZE] __attribute__((aligned(4096)));

static void edu_dma(struct edu *e, uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd) {
    tr_write64(e->regs + EDU_DMA_SRC, src);
    tr_write64(e->regs + EDU_DMA_DST, dst);
    tr_write64(e->regs + EDU_DMA_COUNT, count);
    tr_write64(e->regs + EDU_DMA_CMD, EDU_DMA_START | cmd);
    /* The simulated edu completes on the write; real edu needs polling of the start bit. */
    uint64_t deadline = rt_deadline_ms(IRQ_TIMEOUT_MS);
    while (tr_read32(e->regs + EDU_DMA_CMD) & EDU_DMA_START)
        if (rt_expired(deadline)) break;
}

static int step_dma(struct edu *e) {
    uint32_t *s = (uint32_t *)dma_src, *d = (uint32_t *)dma_dst;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        s[i] = pattern(i, 0xd3a0d3a0u);
        d[i] = 0;
    }
    edu_dma(e, (uint64_t)dma_src, EDU_BUF, EDU_BUF_SIZE, 0);
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        uint32_t v = tr_read32(e->regs + EDU_BUF + 4 * i);
        if (v != s[i]) {
            rt_printf("pt: edu buffer word %u 0x%08x, expected 0x%08x\n", i, v, s[i]);
            return fail(ST_DMA_TO_DEV, "dma", "RAM -> edu buffer bytes differ");
        }
    }
    edu_dma(e, EDU_BUF, (uint64_t)dma_dst, EDU_BUF_SIZE, EDU_DMA_TO_RAM);
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        if (d[i] != s[i]) {
            rt_printf("pt: RAM word %u 0x%08x, expected 0x%08x\n", i, d[i], s[i]);
            return fail(ST_DMA_TO_RAM, "dma", "edu buffer -> RAM bytes differ");
        }
    }
    rt_printf("pt: dma ok: %u bytes RAM 0x%lx -> edu -> RAM 0x%lx verified\n", EDU_BUF_SIZE, (uint64_t)dma_src,
              (uint64_t)dma_dst);
    return 0;
}

/* ---- MSI-X (device A) ---- */
static unsigned msix_count;
static uint64_t msix_table(struct edu *e) {
    uint32_t t = cfg_read32(e->dev, e->fn, e->msix_cap + 4);
    return e->bars[t & 7].addr + (t & ~7u);
}
static void msix_entry(struct edu *e, unsigned i, uint32_t vector, int masked) {
    uint64_t ent = msix_table(e) + 16 * i;
    tr_write32(ent + 0, MSI_ADDRESS(0));
    tr_write32(ent + 4, 0);
    tr_write32(ent + 8, MSI_DATA(vector));
    tr_write32(ent + 12, masked ? 1 : 0);
}
static void msix_mask(struct edu *e, unsigned i, int masked) { tr_write32(msix_table(e) + 16 * i + 12, masked ? 1 : 0); }

static int fire_and_wait(struct edu *e, unsigned n, unsigned vector) {
    uint32_t before = irq_counts[vector];
    tr_write32(e->regs + EDU_FIRE_VECTOR, n);
    return wait_irq(vector, before + 1, IRQ_TIMEOUT_MS);
}

static int step_msix(struct edu *e) {
    if (!e->msix_cap) return fail(ST_MSIX_SETUP, "msix", "edu A has no MSI-X capability");
    uint16_t ctl = cfg_read16(e->dev, e->fn, e->msix_cap + 2);
    msix_count = (ctl & 0x7ff) + 1;
    if (msix_count > 16) msix_count = 16;
    for (unsigned i = 0; i < msix_count; i++) msix_entry(e, i, MSIX_VECTOR_BASE + i, 0);
    /* Enable with the function masked, then unmask: the order Linux uses. */
    cfg_write16(e->dev, e->fn, e->msix_cap + 2, 0xc000);
    cfg_write16(e->dev, e->fn, e->msix_cap + 2, 0x8000);
    if ((cfg_read16(e->dev, e->fn, e->msix_cap + 2) & 0xc000) != 0x8000)
        return fail(ST_MSIX_SETUP, "msix", "MSI-X enable bit did not stick");
    for (unsigned i = 0; i < msix_count; i++) {
        if (!fire_and_wait(e, i, MSIX_VECTOR_BASE + i)) {
            rt_printf("pt: msix vector %u (0x%x) did not arrive\n", i, MSIX_VECTOR_BASE + i);
            return fail(ST_MSIX_IRQ, "msix", "interrupt timeout");
        }
    }
    rt_printf("pt: msix ok: %u vectors fired, %u interrupts counted\n", msix_count,
              (unsigned)(total_irqs()));
    return 0;
}

static int step_msix_mask(struct edu *e) {
    const unsigned n = msix_count > 1 ? 1 : 0, vector = MSIX_VECTOR_BASE + n;
    uint32_t before = irq_counts[vector];
    msix_mask(e, n, 1);
    tr_write32(e->regs + EDU_FIRE_VECTOR, n);
    rt_delay_ms(QUIET_MS);
    if (irq_counts[vector] != before) return fail(ST_MSIX_MASKED, "msix-mask", "a masked vector was delivered");
    msix_mask(e, n, 0);
    if (!wait_irq(vector, before + 1, IRQ_TIMEOUT_MS))
        return fail(ST_MSIX_PENDING, "msix-mask", "the message pending while masked was not delivered on unmask");
    rt_delay_ms(20);
    if (irq_counts[vector] != before + 1) return fail(ST_MSIX_PENDING, "msix-mask", "pending message delivered more than once");
    rt_printf("pt: msix-mask ok: vector %u silent while masked, delivered once on unmask\n", n);
    return 0;
}

static int step_fact_irq(struct edu *e) {
    uint32_t before = irq_counts[MSIX_VECTOR_BASE];
    tr_write32(e->regs + EDU_STATUS, EDU_STATUS_IRQ_FACT);
    tr_write32(e->regs + EDU_FACT, 10);
    if (!wait_irq(MSIX_VECTOR_BASE, before + 1, IRQ_TIMEOUT_MS)) return fail(ST_FACT_IRQ, "fact-irq", "no interrupt");
    uint32_t f = tr_read32(e->regs + EDU_FACT);
    uint32_t st = tr_read32(e->regs + EDU_IRQ_STATUS);
    tr_write32(e->regs + EDU_IRQ_ACK, st);
    tr_write32(e->regs + EDU_STATUS, 0);
    if (f != 3628800u || !(st & 1)) {
        rt_printf("pt: fact(10) = %u, irq status 0x%x\n", f, st);
        return fail(ST_FACT_IRQ, "fact-irq", "wrong factorial or irq status");
    }
    rt_printf("pt: fact-irq ok: 10! = %u, irq status 0x%x, MSI-X vector 0\n", f, st);
    return 0;
}

static int step_dma_irq(struct edu *e) {
    uint32_t before = irq_counts[MSIX_VECTOR_BASE];
    edu_dma(e, EDU_BUF, (uint64_t)dma_dst, 64, EDU_DMA_TO_RAM | EDU_DMA_IRQ);
    if (!wait_irq(MSIX_VECTOR_BASE, before + 1, IRQ_TIMEOUT_MS)) return fail(ST_DMA_IRQ, "dma-irq", "no interrupt");
    uint32_t st = tr_read32(e->regs + EDU_IRQ_STATUS);
    tr_write32(e->regs + EDU_IRQ_ACK, st);
    if (!(st & EDU_DMA_IRQ_BIT)) return fail(ST_DMA_IRQ, "dma-irq", "irq status lacks the DMA bit 0x100");
    rt_printf("pt: dma-irq ok: irq status 0x%x\n", st);
    return 0;
}

/* ---- MSI (device B) ---- */
static int step_msi(struct edu *e) {
    if (!e->msi_cap) return fail(ST_MSI_SETUP, "msi", "edu B has no MSI capability");
    unsigned d = e->dev, f = e->fn, c = e->msi_cap;
    uint16_t ctl = cfg_read16(d, f, c + 2);
    int is64 = !!(ctl & 0x80), maskable = !!(ctl & 0x100);
    unsigned mmc = (ctl >> 1) & 7, mme = mmc > 2 ? 2 : mmc, count = 1u << mme;
    unsigned data_off = is64 ? 0xc : 0x8;
    cfg_write32(d, f, c + 4, MSI_ADDRESS(0));
    if (is64) cfg_write32(d, f, c + 8, 0);
    cfg_write32(d, f, c + data_off, MSI_DATA(MSI_VECTOR_BASE));
    if (maskable) cfg_write32(d, f, c + (is64 ? 0x10 : 0xc), 0);
    cfg_write16(d, f, c + 2, (uint16_t)((ctl & ~0x70u) | (mme << 4) | 1));
    if (!(cfg_read16(d, f, c + 2) & 1)) return fail(ST_MSI_SETUP, "msi", "MSI enable bit did not stick");
    for (unsigned i = 0; i < count; i++) {
        if (!fire_and_wait(e, i, MSI_VECTOR_BASE + i)) {
            rt_printf("pt: msi vector %u (0x%x) did not arrive\n", i, MSI_VECTOR_BASE + i);
            return fail(ST_MSI_IRQ, "msi", "interrupt timeout");
        }
    }
    uint32_t before = irq_counts[MSI_VECTOR_BASE];
    tr_write32(e->regs + EDU_IRQ_RAISE, 0x40);
    if (!wait_irq(MSI_VECTOR_BASE, before + 1, IRQ_TIMEOUT_MS)) return fail(ST_MSI_IRQ, "msi", "raise (0x60) gave no interrupt");
    tr_write32(e->regs + EDU_IRQ_ACK, 0x40);
    rt_printf("pt: msi ok: %u of %u vectors enabled (%s, %s), %u fired + 1 raise\n", count, 1u << mmc,
              is64 ? "64-bit" : "32-bit", maskable ? "per-vector mask" : "no mask", count);
    return 0;
}

/* ---- relocation (device A) ---- */
static int step_relocate(struct edu *e) {
    uint64_t old_regs = e->regs, old_mem = e->mem;
    unsigned mb = e->mem_bar;
    uint64_t new_regs = alloc_bar(e->bars[0].size, e->bars[0].is64);
    uint64_t new_mem = alloc_bar(e->bars[mb].size, e->bars[mb].is64);
    if (!new_regs || !new_mem) return fail(ST_RELOC_IDENT, "relocate", "no room in the BAR windows");
    cfg_set_command(e->dev, e->fn, PCI_COMMAND_MASTER); /* memory decode off */
    write_bar(e, 0, new_regs);
    write_bar(e, mb, new_mem);
    cfg_set_command(e->dev, e->fn, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    e->regs = new_regs;
    e->mem = new_mem;
    if (read_bar(e, 0, ecam_rd_counted) != new_regs || read_bar(e, mb, ecam_rd_counted) != new_mem)
        return fail(ST_RELOC_IDENT, "relocate", "BAR registers did not take the new addresses");
    if (!check_ident(e, 0x77)) return fail(ST_RELOC_IDENT, "relocate", "ident/liveness through the moved BAR0");
    /* Step 6 left its pattern in the first MMAP_TEST_BYTES: the same device memory, now elsewhere. */
    if (!mmap_check(new_mem, MMAP_TEST_BYTES, 0x6d6d6d6du))
        return fail(ST_RELOC_MEM, "relocate", "memory BAR contents not found at the new address");
    if (!mmap_rw(new_mem + MMAP_TEST_BYTES, MMAP_TEST_BYTES, 0x12345678u))
        return fail(ST_RELOC_MEM, "relocate", "read/write through the moved memory BAR");
    /* The old addresses must not reach the device any more (each of these exits to the VMM). */
    uint32_t old_id = tr_read32(old_regs + EDU_IDENT), old_word = tr_read32(old_mem);
    if (old_id == EDU_IDENT_VALUE || old_word == pattern(0, 0x6d6d6d6du)) {
        rt_printf("pt: old BAR0 0x%lx reads 0x%08x, old memory BAR 0x%lx reads 0x%08x\n", old_regs, old_id, old_mem, old_word);
        return fail(ST_RELOC_OLD, "relocate", "the old BAR address still reaches the device");
    }
    for (unsigned i = 0; i < msix_count; i++)
        if (!fire_and_wait(e, i, MSIX_VECTOR_BASE + i)) return fail(ST_RELOC_IRQ, "relocate", "MSI-X after moving the table's BAR");
    rt_printf("pt: relocate ok: BAR0 0x%lx -> 0x%lx, BAR%u 0x%lx -> 0x%lx, contents kept, MSI-X still delivered\n",
              old_regs, new_regs, mb, old_mem, new_mem);
    return 0;
}

/* ---- P2P ---- */
static int step_p2p(struct edu *a, struct edu *b) {
    /* Fill A's buffer from RAM, then A writes it into B's memory BAR (B's guest address = IOVA). */
    uint32_t *s = (uint32_t *)dma_src;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) s[i] = pattern(i, 0x0b0b2b2bu);
    edu_dma(a, (uint64_t)dma_src, EDU_BUF, EDU_BUF_SIZE, 0);
    const uint64_t at = b->mem + 0x2000;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) mm_write32(at + 4 * i, 0);
    edu_dma(a, EDU_BUF, at, EDU_BUF_SIZE, EDU_DMA_TO_RAM);
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        uint32_t v = mm_read32(at + 4 * i);
        if (v != s[i]) {
            rt_printf("pt: B's BAR word %u at 0x%lx: 0x%08x, expected 0x%08x\n", i, at + 4 * i, v, s[i]);
            return fail(ST_P2P_A_TO_B, "p2p", "A -> B's BAR bytes differ");
        }
    }
    /* The other way: B reads from A's (moved) memory BAR into its buffer, checked through B's BAR0. */
    const uint64_t from = a->mem + MMAP_TEST_BYTES; /* step 13 wrote pattern(.., 0x12345678) there */
    edu_dma(b, from, EDU_BUF, EDU_BUF_SIZE, 0);
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) {
        uint32_t v = tr_read32(b->regs + EDU_BUF + 4 * i);
        if (v != pattern(i, 0x12345678u)) {
            rt_printf("pt: B's buffer word %u: 0x%08x, expected 0x%08x\n", i, v, pattern(i, 0x12345678u));
            return fail(ST_P2P_B_TO_A, "p2p", "B reading A's moved BAR: bytes differ");
        }
    }
    rt_printf("pt: p2p ok: A wrote %u bytes into B's BAR at 0x%lx, B read %u bytes from A's moved BAR at 0x%lx\n",
              EDU_BUF_SIZE, at, EDU_BUF_SIZE, from);
    return 0;
}

/* ---- unmapped IOVA ---- */
static int step_iommu_fault(const struct conduit_boot_info *bi, struct edu *e) {
    /* 1: straddles the end of RAM: the first half is guest RAM, the second maps nothing. The
     * IOMMU translates page by page, so the RAM half is written and the transfer faults at the
     * first byte past RAM (pt_real_edu's "straddle" step saw the same on real VT-d). */
    uint64_t ram_end = bi->ram_high_size ? 0x100000000ull + bi->ram_high_size : bi->ram_low_size;
    uint64_t straddle = ram_end - EDU_BUF_SIZE / 2;
    volatile uint8_t *last = (volatile uint8_t *)(ram_end - EDU_BUF_SIZE); /* the last RAM page */
    for (unsigned i = 0; i < EDU_BUF_SIZE; i++) last[i] = 0xc5;
    /* Give the device buffer something other than 0xc5 to write. */
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) ((uint32_t *)dma_src)[i] = 0x3c3c3c3cu;
    edu_dma(e, (uint64_t)dma_src, EDU_BUF, EDU_BUF_SIZE, 0);
    edu_dma(e, EDU_BUF, straddle, EDU_BUF_SIZE, EDU_DMA_TO_RAM);
    unsigned written = 0;
    for (unsigned i = 0; i < EDU_BUF_SIZE; i++) {
        const uint8_t want = i < EDU_BUF_SIZE / 2 ? 0xc5 : 0x3c; /* below the DMA : its RAM half */
        if (last[i] != want) {
            rt_printf("pt: RAM byte 0x%lx is 0x%02x after the straddling DMA, expected 0x%02x\n",
                      ram_end - EDU_BUF_SIZE + i, last[i], want);
            return fail(ST_FAULT_TOUCHED, "iommu-fault", "the straddling DMA did not write exactly its RAM half");
        }
        written += i >= EDU_BUF_SIZE / 2;
    }
    rt_printf("pt: straddle wrote %u of %u RAM bytes (iova 0x%lx +0x%x)\n", written, EDU_BUF_SIZE / 2, straddle, EDU_BUF_SIZE);
    /* 2: wholly unmapped: the top MiB of the 32-bit MMIO window, where this payload put no BAR.
     * Guest RAM (the last page, refilled) stays untouched. */
    for (unsigned i = 0; i < EDU_BUF_SIZE; i++) last[i] = 0xc5;
    uint64_t hole = bi->mmio32_base + bi->mmio32_size - 0x100000;
    edu_dma(e, EDU_BUF, hole, 256, EDU_DMA_TO_RAM);
    for (unsigned i = 0; i < EDU_BUF_SIZE; i++) {
        if (last[i] != 0xc5) {
            rt_printf("pt: RAM byte 0x%lx is 0x%02x after a DMA to unmapped IOVA\n", ram_end - EDU_BUF_SIZE + i, last[i]);
            return fail(ST_FAULT_TOUCHED, "iommu-fault", "guest memory changed by a DMA that should have faulted");
        }
    }
    /* 3: the device still works: a normal DMA lands. */
    uint32_t *d = (uint32_t *)dma_dst;
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++) d[i] = 0;
    edu_dma(e, EDU_BUF, (uint64_t)dma_dst, EDU_BUF_SIZE, EDU_DMA_TO_RAM);
    for (unsigned i = 0; i < EDU_BUF_SIZE / 4; i++)
        if (d[i] != 0x3c3c3c3cu) return fail(ST_FAULT_AFTER, "iommu-fault", "a normal DMA after the faults did not land");
    rt_printf("pt: iommu-fault ok: DMA to iova 0x%lx (+0x%x, straddling the end of RAM) wrote exactly its RAM half; "
              "0x%lx left RAM untouched\n",
              straddle, EDU_BUF_SIZE, hole);
    return 0;
}

int main(const struct conduit_boot_info *bi, unsigned cpu) {
    if (cpu != 0) return 0;
    int r;
    rt_printf("pt: passthrough payload, %u vcpus, ram %lu MiB\n", bi->vcpu_count, (bi->ram_low_size + bi->ram_high_size) >> 20);
    next32 = bi->mmio32_base;
    end32 = bi->mmio32_base + bi->mmio32_size - 0x100000; /* the top MiB stays empty for step 15 */
    next64 = bi->mmio64_base;
    end64 = bi->mmio64_size && bi->mmio64_base + bi->mmio64_size <= bi->identity_map_end ? bi->mmio64_base + bi->mmio64_size : 0;

    for (unsigned v = 0; v < 16; v++) {
        rt_set_handler(MSIX_VECTOR_BASE + v, on_irq);
        rt_set_handler(MSI_VECTOR_BASE + v, on_irq);
    }
    pic_disable();
    lapic_enable();

    if ((r = step_enumerate(bi))) return r;

    for (unsigned k = 0; k < MAX_EDU; k++) {
        struct edu *e = &edus[k];
        if (!size_bars(e)) return fail(ST_SIZE, "size", "edu BARs: need BAR0 registers >= 0x41000 and a memory BAR");
        e->msi_cap = find_cap(e, PCI_CAP_MSI);
        e->msix_cap = find_cap(e, PCI_CAP_MSIX);
    }
    rt_printf("pt: size ok\n");
    for (unsigned k = 0; k < MAX_EDU; k++)
        if (!program(&edus[k])) return fail(ST_PROGRAM, "program", "BAR placement or COMMAND did not read back");
    rt_printf("pt: program ok: memory + bus master enabled\n");

    struct edu *a = &edus[0], *b = &edus[1];
    for (unsigned k = 0; k < MAX_EDU; k++)
        if (!check_ident(&edus[k], k)) return fail(ST_IDENT, "ident", "edu ident or liveness through BAR0");
    rt_printf("pt: ident ok: 0x%08x on both, liveness inverted\n", EDU_IDENT_VALUE);

    if (!mmap_rw(a->mem, MMAP_TEST_BYTES, 0x6d6d6d6du) || !mmap_rw(b->mem, MMAP_TEST_BYTES, 0x42424242u))
        return fail(ST_MMAP, "mmap", "memory BAR read/write");
    rt_printf("pt: mmap ok: %u bytes written and read back through each memory BAR\n", MMAP_TEST_BYTES);

    if ((r = step_dma(a))) return r;
    if ((r = step_msix(a))) return r;
    if ((r = step_msix_mask(a))) return r;
    if ((r = step_fact_irq(a))) return r;
    if ((r = step_dma_irq(a))) return r;
    if ((r = step_msi(b))) return r;
    if ((r = step_relocate(a))) return r;
    if ((r = step_p2p(a, b))) return r;
    if ((r = step_iommu_fault(bi, a))) return r;

    rt_printf("pt: trapped mmio accesses %lu\n", trapped_accesses);
    rt_printf("pt: mmapped accesses %lu\n", mmapped_accesses);
    rt_printf("pt: interrupts %lu\n", total_irqs());
    rt_printf("pt: all steps passed\n");
    return RT_EXIT_OK;
}
