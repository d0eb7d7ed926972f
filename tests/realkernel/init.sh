#!/bin/busybox sh
# /init of the L1 guest (tests/realkernel/run.sh packs it with busybox, conduit, its libraries,
# pt_real_edu.bin and configs/ into the initramfs). Kernel command line: rk.tests=type1,iommufd
# and rk.shell=1 (stay in a shell), rk.log=LEVEL (Conduit's log level; the whole log is printed). Prints "RK: PASS <check>" / "RK: FAIL <check>: <why>";
# run.sh turns those into its exit status, so every check here must print exactly one of them.
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
echo "RK: userspace at $(up)s, kernel $(uname -r)"
arg() { for a in $(cat /proc/cmdline); do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }
pass() { echo "RK: PASS $1"; }
failed() { echo "RK: FAIL $1: $2"; }

# Debian's kernel: vfio, vfio-pci and kvm-amd are modules (run.sh lists them in load order).
[ -f /lib/modules/order ] && for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko || echo "RK: insmod $m failed"
done

EDU_A=0000:01:00.0 EDU_B=0000:02:00.0 NIC=0000:00:04.0
for d in $EDU_A $EDU_B $NIC; do
    echo vfio-pci > /sys/bus/pci/devices/$d/driver_override
    echo $d > /sys/bus/pci/drivers_probe
done
echo "RK: ready at $(up)s; /dev/vfio: $(ls /dev/vfio | tr '\n' ' ') /dev/iommu: $(ls /dev/iommu 2>/dev/null) /dev/kvm: $(ls /dev/kvm 2>/dev/null)"

# conduit devices: both edu and the igb assignable, the virtio-rng function (left on virtio-pci) not, with the reason.
conduit devices > /tmp/devices.txt 2>&1; rc=$?
cat /tmp/devices.txt
OTHER=$(grep -m1 ' 1af4:' /tmp/devices.txt)
if [ $rc = 0 ] && grep -q "^$EDU_A .* yes$" /tmp/devices.txt && grep -q "^$EDU_B .* yes$" /tmp/devices.txt &&
   grep -q "^$NIC .* yes$" /tmp/devices.txt &&
   echo "$OTHER" | grep -q 'no: bound to virtio-pci, not vfio-pci$'; then
    pass devices
else
    failed devices "exit $rc; expected both edu and the igb 'yes' and the virtio function 'no: bound to virtio-pci, not vfio-pci'"
fi

# The passthrough payload through Conduit, per backend.
loglevel=$(arg rk.log)
for b in $(arg rk.tests | tr ',' ' '); do
    echo "RK: ---- $b at $(up)s"
    dmesg -c > /dev/null
    t0=$(up)
    # L1's own count of the interrupts each device sent (vfio's handlers), sampled while Conduit runs.
    (while :; do grep vfio /proc/interrupts > /tmp/irq.new && [ -s /tmp/irq.new ] && mv /tmp/irq.new /tmp/irq-$b.txt; sleep 0.2; done) &
    sampler=$!
    conduit --log-level ${loglevel:-info} run --config /rk/$b.json --stats /tmp/stats-$b.json > /tmp/out-$b.txt 2> /tmp/err-$b.txt
    rc=$?
    kill $sampler
    cat /tmp/out-$b.txt
    if [ -n "$loglevel" ]; then cat /tmp/err-$b.txt; else tail -20 /tmp/err-$b.txt; fi
    echo "RK: $b: conduit exit $rc after $(awk -v a=$t0 -v b=$(up) 'BEGIN{print b-a}')s"
    grep -E '"(host|backend|irq_mode|vectors|resets|memslots|p2p_mappings|trapped_ranges)"' /tmp/stats-$b.json | tr -d ' \n'; echo
    dmesg | grep -E 'DMAR|vfio|iommu' | tail -8
    tr -s ' ' < /tmp/irq-$b.txt | sed 's/^/RK: L1 irq /'
    if [ $rc = 0 ] && grep -q '^pt: all steps passed$' /tmp/out-$b.txt; then pass "payload-$b"; else failed "payload-$b" "exit $rc"; fi
    # A real IOMMU fault: the emulated VT-d reports the DMA to an unmapped IOVA to L1's DMAR driver.
    if dmesg | grep -q 'DMAR: \[DMA Write'; then pass "fault-$b"; else failed "fault-$b" "no DMAR write fault in dmesg"; fi
    # Reset: the root ports give edu a secondary bus reset, so VFIO offers VFIO_DEVICE_RESET and
    # Conduit resets each device at start (the igb's guest-initiated FLR is a payload step).
    n=$(grep -c '"resets": [1-9]' /tmp/stats-$b.json)
    if [ "$n" = 3 ]; then pass "reset-$b"; else failed "reset-$b" "$n of 3 devices reset (see stats)"; fi
    # P2P: type1 maps the mmapped BAR (MAP_DMA resolves the VMA's PFNs), so it must land. iommufd on
    # 6.12 has neither VFIO's dma-buf feature nor IOAS_MAP of a PFNMAP vma: it may not land, but
    # then Conduit must have said so (no silent P2P hole).
    p2p=$(grep '^pt: p2p' /tmp/out-$b.txt)
    echo "RK: $b: $p2p"
    case $b/$p2p in
        */"pt: p2p landed"*) pass p2p-$b ;;
        iommufd/*) if grep -q '00:02.0 .*BAR0 .* is not DMA-mapped, so peer-to-peer DMA to it will fault' /tmp/err-$b.txt; then
                       pass p2p-$b; echo "RK: $b: P2P refused, and reported: $(grep -m1 -o 'dma-buf path.*' /tmp/err-$b.txt)"
                   else failed p2p-$b "not landed and not reported by Conduit"; fi ;;
        *) failed p2p-$b "$p2p" ;;
    esac
done
echo "RK: done at $(up)s"
[ "$(arg rk.shell)" = 1 ] && exec setsid cttyhack sh
poweroff -f
