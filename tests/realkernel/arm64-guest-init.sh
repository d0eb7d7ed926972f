#!/bin/busybox sh
# /init of the arm64 bed's L2 guest (tests/realkernel/arm64-guest.sh packs it with an arm64 static
# busybox): Debian's arm64 cloud kernel with an NVMe passed through. It reports on the console, one
# "GUEST: ..." line each: its uptime when userspace starts, the CPUs online, the NVMe and its
# driver and interrupt mode, a 4 KiB O_DIRECT write and read-back on the NVMe, the NVMe's
# interrupts from /proc/interrupts (their sum over every CPU, the lines and their irq chips; each
# raw line as "GUEST-IRQ: ..."), then powers off (`poweroff -f`: PSCI SYSTEM_OFF). Keep the kernel
# `quiet`: each console character is an exit.
#
# When the NVMe sits behind an IOMMU (Conduit's virtual SMMUv3, issue 13: tests/realkernel/
# arm64-vsmmu.sh) it also reports that IOMMU and walks the device's stream table entry through every
# state the guest's arm-smmu-v3 driver gives it, with a line per step:
#   iommu         the group, its domain type, and the driver's probe line ("GUEST-SMMU: ..." lines:
#                 every arm-smmu-v3 line of the kernel log, at the end)
#   fault         with nvme unbound (the DMA domain stays, now with nothing mapped): bus mastering on
#                 in config space, the admin queues pointed at an IOVA nothing maps, CC.EN=1 and
#                 the admin SQ doorbell rung, through /dev/mem on BAR0: the controller's fetch of
#                 the command takes a stage-1 translation fault, which the driver logs as
#                 "event 0x10 received" when it reaches the guest's event queue
#   identity      the group's type set to identity (STE: abort, then bypass), nvme bound again, a
#                 4 KiB O_DIRECT write and read-back
#   dma           unbound, type DMA again (STE: abort, then stage-1 translate), bound, the same I/O
# guest.bench=N (kernel argument): instead of the vSMMU steps, N MiB of O_DIRECT reads in 64 KiB
# blocks from the NVMe after 4 MiB of warm-up, timed by /proc/uptime ("GUEST: bench read ...";
# bench/vsmmu-nvme.sh).
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
g() { echo "GUEST: $*"; }
g "userspace at $(cut -d' ' -f1 /proc/uptime) s"
g "cpus online $(cat /sys/devices/system/cpu/online)"
waitdisk() { for i in $(seq 100); do [ -b /dev/nvme0n1 ] && return 0; sleep 0.1; done; return 1; }
blockio() {  # blockio SEEK: a fresh 4 KiB pattern written with O_DIRECT at block SEEK and read back
    dd if=/dev/urandom of=/tmp/pattern bs=4096 count=1 2>/dev/null
    dd if=/tmp/pattern of=/dev/nvme0n1 bs=4096 count=1 seek="$1" oflag=direct 2>/dev/null
    dd if=/dev/nvme0n1 of=/tmp/back bs=4096 count=1 skip="$1" iflag=direct 2>/dev/null
    cmp -s /tmp/pattern /tmp/back && echo ok || echo mismatch
}
# The vSMMU steps (see the head of this file); bdf, dev and grp are set.
setgtype() {  # setgtype TYPE: the group's default domain type, with the device unbound
    echo "$1" > "/sys/kernel/iommu_groups/$grp/type" 2>/dev/null
    echo "$(cat "/sys/kernel/iommu_groups/$grp/type")"
}
bind() { echo "$bdf" > /sys/bus/pci/drivers/nvme/bind; waitdisk && echo bound || echo "not bound"; }
unbind() { echo "$bdf" > /sys/bus/pci/drivers/nvme/unbind; [ -e "$dev/driver" ] && echo "still bound" || echo unbound; }
reg() { devmem $((bar0 + $1)) "${3:-32}" ${2:+"$2"}; }  # reg OFFSET [VALUE [WIDTH]]: an NVMe register
vsmmu_steps() {
    g "smmu $(dmesg | grep -m1 -o 'arm-smmu-v3 .*: .*features.*' || echo 'no probe line')"
    g "unbind $(unbind)"
    # The fault. Command register (config 0x04): memory space (bit 1) and bus master (bit 2).
    bar0=$(( $(head -1 "$dev/resource" | cut -d' ' -f1) ))
    cmd=$(od -An -tu2 -j4 -N2 "$dev/config" | tr -d ' ')
    printf "$(printf '\\%03o\\%03o' $(( (cmd | 6) & 255 )) $(( (cmd | 6) >> 8 )))" |
        dd of="$dev/config" bs=2 seek=2 count=1 conv=notrunc 2>/dev/null
    reg 0x14 0                                   # CC: disabled
    for i in $(seq 50); do [ $(( $(reg 0x1c) & 1 )) = 0 ] && break; sleep 0.1; done
    reg 0x24 0x000f000f                          # AQA: 16-entry admin SQ and CQ
    reg 0x28 0xdead0000; reg 0x2c 0              # ASQ: an IOVA nothing maps
    reg 0x30 0xdeae0000; reg 0x34 0              # ACQ: likewise
    reg 0x14 0x00460001                          # CC: IOCQES 16 B, IOSQES 64 B, EN
    for i in $(seq 50); do [ $(( $(reg 0x1c) & 1 )) = 1 ] && break; sleep 0.1; done
    rdy=$(reg 0x1c)
    reg 0x1000 1                                 # admin SQ tail doorbell: fetch command 0
    for i in $(seq 50); do dmesg | grep -q 'arm-smmu-v3.*event 0x10 received' && break; sleep 0.1; done
    g "fault csts before $rdy after $(reg 0x1c) event $(dmesg | grep -c 'arm-smmu-v3.*event 0x10 received') x 0x10"
    reg 0x14 0
    for i in $(seq 50); do [ $(( $(reg 0x1c) & 1 )) = 0 ] && break; sleep 0.1; done
    g "identity type $(setgtype identity) $(bind) block io $(blockio 9)"
    g "dma unbind $(unbind) type $(setgtype DMA) $(bind) block io $(blockio 11)"
}
if waitdisk; then
    bdf=$(basename "$(readlink /sys/class/nvme/nvme0/device)")
    dev=/sys/bus/pci/devices/$bdf
    g "nvme $bdf driver $(basename "$(readlink $dev/driver)") msi mode $(cat $dev/msi_irqs/* 2>/dev/null | sort -u | tr '\n' ' ')"
    if [ -e "$dev/iommu_group" ]; then
        grp=$(basename "$(readlink "$dev/iommu_group")")
        g "iommu group $grp type $(cat /sys/kernel/iommu_groups/$grp/type) devices $(ls /sys/kernel/iommu_groups/$grp/devices | tr '\n' ' ')"
        # The group's reserved regions: "msi" is the driver's own software MSI window (IOVA
        # 0x8000000, never mapped in a DMA domain); "direct" ones are identity-mapped at stage 1
        # (the MSI doorbell's way through a nested stage 1, docs/vsmmu.md).
        sed 's/^/GUEST-IOMMU-REGION: /' "/sys/kernel/iommu_groups/$grp/reserved_regions"
        echo "GUEST-IOMMU-REGION: device-tree node $(readlink "$dev/of_node" 2>/dev/null | sed 's|.*/firmware/devicetree/base||' || true)"
    else
        g "iommu none"
    fi
    g "block io $(blockio 7)"
    # /proc/interrupts: "IRQ: <one count per CPU> <chip> <hwirq> <name>"; the header names the CPUs.
    ncpu=$(head -1 /proc/interrupts | wc -w)
    grep nvme /proc/interrupts | sed 's/^/GUEST-IRQ: /'
    g "interrupts $(grep nvme /proc/interrupts | awk -v n="$ncpu" '{for (i = 2; i <= n + 1; i++) t += $i} END {print t + 0}') on $(grep -c nvme /proc/interrupts) lines: $(grep nvme /proc/interrupts | awk -v n="$ncpu" '{print $(n + 2)}' | sort -u | tr '\n' ' ')"
    bench=$(sed -n 's/.*guest\.bench=\([0-9]*\).*/\1/p' /proc/cmdline)
    [ -n "${grp:-}" ] && [ -z "$bench" ] && vsmmu_steps
    if [ -n "$bench" ]; then
        dd if=/dev/nvme0n1 of=/dev/null bs=65536 count=64 iflag=direct 2>/dev/null  # warm-up: 4 MiB
        t0=$(cut -d' ' -f1 /proc/uptime)
        dd if=/dev/nvme0n1 of=/dev/null bs=65536 count=$((bench * 16)) iflag=direct 2>/dev/null
        t1=$(cut -d' ' -f1 /proc/uptime)
        g "bench read $bench MiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f s = %.1f MiB/s", b - a, (b > a) ? '"$bench"' / (b - a) : 0}')"
    fi
else
    g "no /dev/nvme0n1"
    dmesg | grep -i nvme | sed 's/^/GUEST-LOG: /'
fi
# The SMMU driver's and the IOMMU core's lines, with the raw words of only the first event record
# (its StreamID and address; the next records repeat them).
dmesg | grep -E 'arm-smmu-v3|iommu' | awk '/\t0x/ {if (++raw > 4) next} {print}' | head -24 | sed 's/^/GUEST-SMMU: /'
g "powering off"
poweroff -f
