#!/usr/bin/env bash
# linux-nvme.sh BUILD_DIR type1|iommufd|intx - a Linux guest drives a passed-through NVMe with its own
# nvme driver. Runs inside the nested-KVM bed's L1 (ctest linux.nvme.*, label linux, place `bed`):
# QEMU's emulated NVMe at 0000:00:06.0 is bound to vfio-pci there; Conduit boots Debian's cloud
# kernel (tests/integration/fetch-debian-kernel.sh) with a busybox initramfs, from
# configs/linux-nvme.json with the kernel, initrd and backend given on the command line.
#
#   type1, iommufd  MSI-X: the guest's nvme driver probes, writes a 4 KiB block and reads it back
#                   with O_DIRECT, counts its MSI-X interrupts; 2 vCPUs online; the device's
#                   extended config space is visible (config size 4096); a guest-initiated reset
#                   (FLR through sysfs) and the driver probing again with the data still there; the
#                   device presented as a root-complex integrated endpoint with no link registers;
#                   then the guest powers off with O_DIRECT reads in flight and Conduit exits 0
#                   leaving nothing open in L1, its --stats saying the NVMe ran MSI-X (peak); a second device with MSI-X and its own driver
#                   beside it (QEMU's vmxnet3, 0000:00:07.0: vmxnet3.ko probes, sends, counts
#                   its MSI-X interrupts); (no process holds /dev/vfio or /dev/iommu, and the
#                   device is bound to vfio-pci, unused, ready for the next run)
#   intx            the same I/O with MSI and MSI-X off in the guest (pci=nomsi): interrupts arrive as
#                   INTx through the IOAPIC and VFIO's resample path
# Each check prints "LX: PASS <check>: <detail>" or "LX: FAIL <check>: <why>"; exit 0 iff none failed.
set -uo pipefail
build=$(cd "$1" && pwd) mode=$2
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
conduit=$build/conduit
NVME=0000:00:06.0 NIC=0000:00:07.0
CHECK_TAG=LX
. "$here/checks.sh"

kdir=$("$src/tests/integration/fetch-debian-kernel.sh" --offline) || { echo "LX: FAIL kernel: none prepared"; exit 1; }

# The initramfs: a static busybox and this /init (scripts/busybox-initramfs.sh).
cat > "$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
g() { echo "GUEST: $*"; }
g "userspace at $(cut -d' ' -f1 /proc/uptime) s"
g "cpus online $(cat /sys/devices/system/cpu/online)"
waitdisk() { for i in $(seq 100); do [ -b /dev/nvme0n1 ] && return 0; sleep 0.1; done; return 1; }
waitdisk || { g "no /dev/nvme0n1"; dmesg | grep -i nvme | sed 's/^/GUEST-LOG: /'; poweroff -f; }
bdf=$(basename "$(readlink /sys/class/nvme/nvme0/device)")
dev=/sys/bus/pci/devices/$bdf
g "nvme $bdf driver $(basename "$(readlink $dev/driver)") config size $(stat -c %s $dev/config)"
g "legacy irq $(cat $dev/irq)"
# The PCIe capability's device/port type as the guest reads it from config space (9 = root-complex
# integrated endpoint, 0 = endpoint).
rd() { od -An -tu1 -j "$1" -N 1 $dev/config | tr -d ' '; }
p=$(rd 52); while [ -n "$p" ] && [ "$p" != 0 ] && [ "$(rd $p)" != 16 ]; do p=$(rd $((p + 1))); done
[ -n "$p" ] && [ "$p" != 0 ] && g "pcie type $(( ($(rd $((p + 2))) >> 4) & 15 )) link status $(( $(rd $((p + 18))) + 256 * $(rd $((p + 19))) ))"
g "msi mode $(cat $dev/msi_irqs/* 2>/dev/null | sort -u | tr '\n' ' ')"
dd if=/dev/urandom of=/tmp/pattern bs=4096 count=1 2>/dev/null
dd if=/tmp/pattern of=/dev/nvme0n1 bs=4096 count=1 seek=7 oflag=direct 2>/dev/null
dd if=/dev/nvme0n1 of=/tmp/back bs=4096 count=1 skip=7 iflag=direct 2>/dev/null
cmp -s /tmp/pattern /tmp/back && g "block io ok" || g "block io mismatch"
g "interrupts $(grep nvme /proc/interrupts | awk '{n=0; for (i=2; i<=3; i++) n+=$i; t+=n} END {print t+0}') on $(grep -c nvme /proc/interrupts) lines: $(grep nvme /proc/interrupts | awk '{print $4}' | sort -u | tr '\n' ' ')"
if [ -e /vmxnet3.ko ]; then
    # The second device: its driver from the initramfs, then traffic (ARP requests to nobody) for
    # transmit-completion interrupts.
    insmod /vmxnet3.ko && for i in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
    ndev=/sys/class/net/eth0/device
    g "net eth0 $(basename "$(readlink $ndev)" 2>/dev/null) driver $(basename "$(readlink $ndev/driver)" 2>/dev/null) msi mode $(cat $ndev/msi_irqs/* 2>/dev/null | sort -u | tr '\n' ' ')"
    ip link set eth0 up; ip addr add 10.9.9.1/24 dev eth0
    ping -c 3 -W 1 10.9.9.2 > /dev/null 2>&1
    g "net interrupts $(grep eth0 /proc/interrupts | awk '{t+=$2+$3} END {print t+0}') on $(grep -c eth0 /proc/interrupts) lines, tx packets $(cat /sys/class/net/eth0/statistics/tx_packets)"
fi
if [ "$(cat /proc/cmdline | grep -c nomsi)" = 0 ]; then
    echo "$bdf" > /sys/bus/pci/drivers/nvme/unbind
    if echo 1 > $dev/reset; then g "reset ok method $(cat $dev/reset_method 2>/dev/null)"; else g "reset failed"; fi
    echo "$bdf" > /sys/bus/pci/drivers/nvme/bind
    waitdisk && dd if=/dev/nvme0n1 of=/tmp/back2 bs=4096 count=1 skip=7 iflag=direct 2>/dev/null
    cmp -s /tmp/pattern /tmp/back2 && g "after reset io ok" || g "after reset io failed"
    # Power off while the device is busy: O_DIRECT reads in flight.
    dd if=/dev/nvme0n1 of=/dev/null bs=64k count=100000 iflag=direct 2>/dev/null &
    sleep 0.3
    g "powering off with dma in flight"
fi
poweroff -f
INIT
extra=()
[ "$mode" != intx ] && extra=("$kdir/modules/vmxnet3.ko")
"$src/scripts/busybox-initramfs.sh" "$work/initrd.cpio" "$work/init" "${extra[@]}" > /dev/null || exit 1

backend=$mode cmdline="console=ttyS0 panic=-1 quiet"
[ "$mode" = intx ] && backend=iommufd cmdline="$cmdline pci=nomsi"
sed "s|\"backend\": \"[a-z0-9]*\"|\"backend\": \"$backend\"|" "$src/configs/linux-nvme.json" > "$work/vm.json"
if [ "$mode" != intx ]; then  # the second device, on the same backend
    sed -i "s|^\(    {\"type\": \"vfio-pci\", \"host\": \"$NVME\".*}\)$|\1,\n    {\"type\": \"vfio-pci\", \"host\": \"$NIC\", \"backend\": \"$backend\"}|" "$work/vm.json"
fi
guest_run "${LX_TIMEOUT:-200}" run --config "$work/vm.json" --kernel "$kdir/vmlinuz" --initrd "$work/initrd.cpio" \
    --cmdline "$cmdline" --stats "$work/stats.json"
if [ $rc = 0 ]; then grep -E '^GUEST' "$work/out.txt"; else tail -40 "$work/out.txt"; fi
tail -5 "$work/err.txt"
echo "LX: $mode: conduit exit $rc after ${secs}s"

check userspace "guest uptime $(line 'userspace at ')" grep -q '^GUEST: userspace at' "$work/out.txt"
check cpus "cpus online $(line 'cpus online ')" test "$(line 'cpus online ')" = 0-1
check nvme-probe "$(line 'nvme ')" grep -q "^GUEST: nvme .* driver nvme" "$work/out.txt"
check block-io "4 KiB written and read back with O_DIRECT: $(line 'block io ')" test "$(line 'block io ')" = ok
irqs=$(line 'interrupts ' | cut -d' ' -f1)
if [ "$mode" = intx ]; then
    check intx "$(line 'interrupts ') (legacy irq $(line 'legacy irq '))" sh -c "[ '${irqs:-0}' -gt 1 ] && echo '$(line 'interrupts ')' | grep -q 'lines: IO-APIC \$'"
else
    check msi-x "$(line 'interrupts '), vectors of mode $(line 'msi mode ')" sh -c "[ '${irqs:-0}' -gt 0 ] && [ '$(line 'msi mode ')' = 'msix ' ]"
    check second-device "$(line 'net eth0 ')" grep -q "^GUEST: net eth0 0000:00:02.0 driver vmxnet3 msi mode msix" "$work/out.txt"
    nirq=$(line 'net interrupts ' | cut -d' ' -f1)
    check second-device-msix "$(line 'net interrupts ')" test "${nirq:-0}" -gt 0
    check rciep "pcie $(line 'pcie type ')" test "$(line 'pcie type ')" = "9 link status 0"
    check extended-config "$(line 'nvme ')" grep -q "^GUEST: nvme .* config size 4096" "$work/out.txt"
    check guest-reset "$(line 'reset ')" grep -q '^GUEST: reset ok' "$work/out.txt"
    check after-reset "$(line 'after reset io ')" test "$(line 'after reset io ')" = ok
    check shutdown-in-flight "$(line 'powering off ')" grep -q '^GUEST: powering off with dma in flight' "$work/out.txt"
fi
check_power_off 'exit: guest powered off (ACPI S5)'
if [ "$mode" = intx ]; then check_peak_irq intx; else check_peak_irq msix; fi
check_nothing_left "$NVME"
echo "LX: $mode: $(stats_line backend irq_mode vectors peak_irq_mode peak_vectors resets memslots)"
exit $((failures > 0))
