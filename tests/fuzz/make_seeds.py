#!/usr/bin/env python3
"""Writes the binary seed corpora of the bus and PCI fuzz targets (tests/fuzz/corpus/<target>/).
The encodings follow the decoders in fuzz_bus.cpp, fuzz_pci_config.cpp, fuzz_msix.cpp and
fuzz_bar_reloc.cpp (little-endian integers, one opcode byte per step). Re-run after changing one."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack('<B', v & 0xff)
def u16(v): return struct.pack('<H', v & 0xffff)
def u32(v): return struct.pack('<I', v & 0xffffffff)
def u64(v): return struct.pack('<Q', v & 0xffffffffffffffff)


def write(target, name, data):
    d = os.path.join(here, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# ---- bus: op%5 in {0,4} insert(addr, len), 1 remove(addr), 2 read, 3 write; addr = sel u8, u16 [, u64]
def addr(sel, low, full=0):
    return u8(sel) + u16(low) + (u64(full) if sel & 3 == 3 else b'')

write('bus', 'insert_read_write', u8(0) + addr(0, 0x3f8) + u8(8) + u8(2) + addr(0, 0x3f9) + u8(3 | 0x40) + addr(0, 0x3fa))
write('bus', 'overlap_refused', u8(0) + addr(0, 0x100) + u8(0x10) + u8(0) + addr(0, 0x108) + u8(0x10) + u8(0x41) + addr(0, 0x100))
write('bus', 'wrap_and_top', u8(0) + addr(1, 0) + u8(1) + u8(0) + addr(1, 0x10) + u8(0x20) + u8(2 | 0x18) + addr(1, 0))
write('bus', 'self_remove', u8(0x80) + addr(0, 0x200) + u8(4) + u8(3) + addr(0, 0x200) + u8(0x42) + addr(0, 0x200))
write('bus', 'big_ranges', u8(0) + addr(3, 0, 0xfee00000) + u8(0x80 | 20) + u8(0x82) + addr(0, 5) + u64(77) + u8(0x40 | 1) + addr(3, 0, 0xfee00000))

# ---- PCI targets: byte 0 = host variant (bit0 iommufd, bit1 sparse+PCIe caps)
PCI_COMMAND, BAR0, BAR2, BAR3, ROM = 0x04, 0x10, 0x18, 0x1c, 0x30
MSI, MSIX = 0x40, 0x60

def cfgw(off, val, size=4):  # pci_config: op&7 in 0..2 write; (op>>3)&3 size sel {1,2,4,4}
    sel = {1: 0, 2: 1, 4: 2}[size]
    return u8(0 | (sel << 3)) + u16(off) + u32(val)

def cfgr(off, size=4):
    sel = {1: 0, 2: 1, 4: 2}[size]
    return u8(3 | (sel << 3)) + u16(off)

for v in range(4):
    write('pci_config', f'enable_v{v}', u8(v) + u8(1) + cfgr(0) + cfgr(0x08) + cfgr(0x34, 1) + cfgr(MSIX) + cfgr(0x100))
    write('pci_config', f'msi_enable_v{v}', u8(v) + u8(1) + cfgw(MSI + 4, 0xfee00000) + cfgw(MSI + 12, 0x41, 2)
          + cfgw(MSI + 2, 0x0021, 2) + u8(7) + cfgr(MSI + 2, 2) + u8(6))
    write('pci_config', f'sizing_v{v}', u8(v) + u8(0) + cfgw(BAR0, 0xffffffff) + cfgr(BAR0) + cfgw(BAR2, 0xffffffff)
          + cfgw(BAR3, 0xffffffff) + cfgr(BAR2) + cfgr(BAR3) + cfgw(ROM, 0xfffff800) + cfgr(ROM))
    write('pci_config', f'mmio_v{v}', u8(v) + u8(1) + u8(5 | 0x40 | (2 << 4)) + u32(0x8) + u64(5)
          + u8(5 | (2 << 4)) + u32(0x8) + u64(0) + u8(5 | (2 << 3)) + u32(0xfe000) + u64(0))

def mtab(off, val, write=True, size=4):  # msix table op: op&7 in 0..2; size sel (op>>3)&3 {1,2,4,8}
    sel = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    return u8(0 | (sel << 3) | (0x80 if write else 0)) + u16(off + 0x40) + u64(val)

for v in range(4):
    entry0 = mtab(0, 0xfee00000) + mtab(4, 0) + mtab(8, 0x4021) + mtab(12, 0)
    entry1 = mtab(16, 0xfee01000, size=8) + mtab(24, 0x4022, size=8)
    write('msix', f'program_unmask_v{v}', u8(v) + u8(1) + entry0 + entry1 + mtab(0, 0, write=False) + u8(3 | (2 << 3)) + u16(0) + u64(0))
    write('msix', f'maskall_pending_v{v}', u8(v) + u8(3) + entry0 + u8(6) + u8(3 | (2 << 3)) + u16(0) + u64(0)
          + u8(4) + u16(0x8000) + u8(3 | (2 << 3)) + u16(0) + u64(0))
    write('msix', f'msi_then_msix_v{v}', u8(v) + u8(0) + u8(5 | (1 << 3)) + u8(2) + u32(0x0001) + u8(4) + u16(0x8000)
          + entry0 + u8(0x87) + u8(4) + u16(0))

def barw(index, sel):  # bar_reloc: op&7 in 0..2, (op>>3)%6 = BAR index; candidate sel < 224 -> table
    return u8(0 | (index << 3)) + u8(sel)

CMD = lambda k: u8(4 | (k << 3))  # 0 off, 1 mem, 2 io, 3 mem|master, 4 all
for v in range(4):
    write('bar_reloc', f'move_v{v}', u8(v) + barw(0, 2) + barw(2, 3) + u8(3) + u8(0) + CMD(3)
          + u8(6 | (2 << 3)) + u32(0xfe000) + u64(0) + barw(2, 4) + barw(2, 7) + CMD(0) + CMD(1))
    write('bar_reloc', f'overlap_v{v}', u8(v) + barw(0, 2) + barw(2, 2) + u8(3) + u8(0) + CMD(1) + barw(2, 3) + CMD(0))
    write('bar_reloc', f'sizing_while_on_v{v}', u8(v) + barw(0, 2) + barw(2, 3) + CMD(1) + barw(0, 1) + barw(2, 1)
          + u8(3) + u8(200) + u32(0xffffffff) + u8(7 | (1 << 3)) + barw(0, 2) + u8(3) + u8(0))
    write('bar_reloc', f'msi_window_above4g_v{v}', u8(v) + barw(2, 6) + u8(3) + u8(0) + CMD(1) + u8(3) + u8(1)
          + u8(5 | 0x80) + u8(7) + u8(7))

# ---- vsmmu: byte 0 = variant (bits 1:0 StreamID set, 3:2 how many, 5:4 refusals, 6 invalidate
# fails at bit 7's index, 7 CD2L + PASIDs); then one opcode byte per step, op % 13 = kind, bit 7 a flag.
def vop(kind, flag=False):
    return u8(next(b for b in range(256) if b % 13 == kind and bool(b & 0x80) == flag))

def vgpa(off):  # Harness::gpa(): sel = the offset into guest RAM (low nibble 0)
    return u16(off & 0x7ff0)

def vprobe(f, strtab=0x0000, cmdq=0x2000, evtq=0x3000):  # f: 1 2-level, 2 SPLIT 6, 4 CMDQ 256, 8 EVTQ 256
    return vop(10) + u8(f) + vgpa(strtab) + vgpa(cmdq) + vgpa(evtq)

def vste(l2, ctx, extra0=0, extra1=0, which=0):  # a plausible stage-1 STE of bound stream `which`
    return vop(5) + u8(which) + vgpa(l2) + u8(0x05) + u64(extra0) + u64(extra1) + vgpa(ctx)

def vcmd(k, d0=0, d1=0, n=0):  # k: kOps index | flags (0x40 bound sid, 0x10 copies, 8 + CMD_SYNC)
    return vop(3) + u8(k) + u64(d0) + u64(d1) + (u8(n) if k & 0x10 else b'') + (u32(0) if k & 4 else b'')

def kops(index, flags):
    return next(k for k in range(128) if k % 18 == index and (k & flags) == flags)

CFGI_STE, TLBI_VA = 0, 3
write('vsmmu', 'probe_2lvl_ste_cfgi', u8(0x04) + vprobe(0x0d) + vste(0x4000, 0x6000, 3 << 59, 0xd4)
      + vcmd(kops(CFGI_STE, 0x48)) + vop(7) + u8(3) + b''.join(u16(0x10) + u64(i) + u64(0) for i in range(3)))
write('vsmmu', 'tlbi_batch_host_fails', u8(0xc0) + vprobe(0x0d) + vcmd(kops(TLBI_VA, 0x18), 7 << 48, 0x1000, 3)
      + vop(9, True) + vcmd(kops(TLBI_VA, 0x08)))
write('vsmmu', 'linear_small_evtq_overflow', u8(0x08) + vprobe(0x44, 0x4000) + vste(0, 0x6000)
      + vcmd(kops(CFGI_STE, 0x48)) + vop(7) + u8(10) + b'\0' * 180 + vop(8, True) + vop(7, True) + u8(2) + b'\0' * 36 + u8(9))
write('vsmmu', 'illegal_then_recover', u8(0x00) + vprobe(0x05) + vop(3) + u8(0x80 | 8) + u8(0x20) + u64(0) + u64(0)
      + vop(9, True) + vcmd(kops(1, 0x60), 0, 31))
write('vsmmu', 'renumber_and_gbpa', u8(0x2c) + vprobe(0x0f) + vste(0x4000, 0x6000, which=1) + vop(12) + u8(3) + u8(0x10) + u8(0x11) + u8(0x12)
      + vop(0) + u8(3) + u32(0x80100000) + vop(0) + u8(0) + u32(0x8) + vop(0) + u8(0) + u32(0xd))
