#!/bin/busybox sh
# /init of the arm64 bed's L2 guest (tests/realkernel/arm64-guest.sh packs it with an arm64 static
# busybox): Debian's arm64 cloud kernel with an NVMe passed through. It reports on the console, one
# "GUEST: ..." line each: its uptime when userspace starts, the CPUs online, the NVMe and its
# driver and interrupt mode, a 4 KiB O_DIRECT write and read-back on the NVMe, the NVMe's
# interrupts from /proc/interrupts (their sum over every CPU, the lines and their irq chips; each
# raw line as "GUEST-IRQ: ..."), then powers off (`poweroff -f`: PSCI SYSTEM_OFF). Keep the kernel
# `quiet`: each console character is an exit.
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
g() { echo "GUEST: $*"; }
g "userspace at $(cut -d' ' -f1 /proc/uptime) s"
g "cpus online $(cat /sys/devices/system/cpu/online)"
waitdisk() { for i in $(seq 100); do [ -b /dev/nvme0n1 ] && return 0; sleep 0.1; done; return 1; }
if waitdisk; then
    bdf=$(basename "$(readlink /sys/class/nvme/nvme0/device)")
    dev=/sys/bus/pci/devices/$bdf
    g "nvme $bdf driver $(basename "$(readlink $dev/driver)") msi mode $(cat $dev/msi_irqs/* 2>/dev/null | sort -u | tr '\n' ' ')"
    dd if=/dev/urandom of=/tmp/pattern bs=4096 count=1 2>/dev/null
    dd if=/tmp/pattern of=/dev/nvme0n1 bs=4096 count=1 seek=7 oflag=direct 2>/dev/null
    dd if=/dev/nvme0n1 of=/tmp/back bs=4096 count=1 skip=7 iflag=direct 2>/dev/null
    cmp -s /tmp/pattern /tmp/back && g "block io ok" || g "block io mismatch"
    # /proc/interrupts: "IRQ: <one count per CPU> <chip> <hwirq> <name>"; the header names the CPUs.
    ncpu=$(head -1 /proc/interrupts | wc -w)
    grep nvme /proc/interrupts | sed 's/^/GUEST-IRQ: /'
    g "interrupts $(grep nvme /proc/interrupts | awk -v n="$ncpu" '{for (i = 2; i <= n + 1; i++) t += $i} END {print t + 0}') on $(grep -c nvme /proc/interrupts) lines: $(grep nvme /proc/interrupts | awk -v n="$ncpu" '{print $(n + 2)}' | sort -u | tr '\n' ' ')"
else
    g "no /dev/nvme0n1"
    dmesg | grep -i nvme | sed 's/^/GUEST-LOG: /'
fi
g "powering off"
poweroff -f
