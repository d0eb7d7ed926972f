#!/usr/bin/env bash
# arm64-nvme.sh BUILD_DIR type1|iommufd|intx - Conduit's arm64 build boots Debian's arm64 cloud kernel
# with the arm64 bed's NVMe passed through (ctest linux.arm64.nvme.*, label arm64, place arm64: run
# inside the arm64 bed's L1, tests/bed/bed.sh --arch arm64). The NVMe (0000:00:02.0, QEMU's default
# layout: its MSI-X table shares BAR0 with the registers) is on vfio-pci behind L1's SMMUv3. The
# guest is the arm64 guest kit (arm64-guest.sh --offline; its /init is arm64-guest-init.sh), booted
# from configs/arm64-nvme-BACKEND.json with 2 vCPUs and a `quiet` console. Checks, from the guest's
# console and Conduit's log:
#   userspace     the guest's uptime when its userspace starts
#   cpus          CPUs online 0-1
#   nvme-probe    the guest's nvme driver bound the device, its vectors MSI-X
#   block-io      a 4 KiB O_DIRECT write and its read-back match
#   msi-x         the nvme queues' lines in the guest's /proc/interrupts are ITS-MSI and counted
#                 interrupts, an I/O queue's among them (MSI-X through the ITS)
#   intx          (mode intx: iommufd with the guest's pci=nomsi, instead of msi-x and its-devid) the
#                 nvme queues' interrupts counted on one level-triggered GICv3 line, SPI 17 (INTID
#                 49, slot 1's INTx): a GIC SPI through VFIO's resample path
#   its-devid     Conduit's log: the GSI routes carry device ids (KVM_CAP_MSI_DEVID, asked once the
#                 ITS exists), each MSI route to the ITS doorbell (GITS_TRANSLATER, 0x8000040) with
#                 the function's requester id 0x8 (00:01.0) as device id, as the guest's msi-map says
#   power-off     the guest powered off by PSCI SYSTEM_OFF and Conduit exited 0
#   stats-peak-irq  Conduit's --stats: the NVMe's peak interrupt mode msix (intx in mode intx)
#   nothing-left  no process holds /dev/vfio or /dev/iommu, the NVMe is still vfio-pci's
# Prints "A64: PASS|FAIL <check>: <detail>"; exits 0 iff none failed.
# Runs under L1's static bash with busybox's tools.
set -uo pipefail
build=$(cd "$1" && pwd) mode=$2
backend=$mode cmdline="console=ttyS0 quiet panic=-1"
[ "$mode" = intx ] && backend=iommufd cmdline="$cmdline pci=nomsi"
here=$(cd "$(dirname "$0")" && pwd)
conduit=$build/conduit
NVME=0000:00:02.0
CHECK_TAG=A64
. "$here/checks.sh"

kit=$("$here/arm64-guest.sh" --offline) || { echo "A64: FAIL kit: no arm64 guest kit prepared"; exit 1; }
[ -x "$conduit" ] || { echo "A64: FAIL conduit: no $conduit (ARCH=arm64 scripts/build.sh)"; exit 1; }
guest_run "${A64_TIMEOUT:-240}" --log-level debug run --config "$here/configs/arm64-nvme-$backend.json" \
    --kernel "$kit/Image" --initrd "$kit/initrd.cpio" --cmdline "$cmdline" --stats "$work/stats.json"
if [ $rc = 0 ]; then grep -E '^GUEST' "$work/out.txt"; else tail -40 "$work/out.txt"; fi
grep -vE '\] \[debug\] ' "$work/err.txt" | tail -8
echo "A64: $mode: conduit exit $rc after ${secs}s"

check userspace "guest uptime $(line 'userspace at ')" grep -q '^GUEST: userspace at [0-9.]* s$' "$work/out.txt"
check cpus "cpus online $(line 'cpus online ')" test "$(line 'cpus online ')" = 0-1
vectors="msix "; [ "$mode" = intx ] && vectors=""
check nvme-probe "$(line 'nvme ')" grep -q "^GUEST: nvme .* driver nvme msi mode $vectors\$" "$work/out.txt"
check block-io "4 KiB written and read back with O_DIRECT: $(line 'block io ')" test "$(line 'block io ')" = ok
# The raw lines: "GUEST-IRQ: IRQ: <count per CPU> ITS-MSI <hwirq> Edge nvme0qN". The I/O queues
# (nvme0q1 and up) must have counted: the O_DIRECT write and read completed by their MSI-X vectors.
irqs=$(line 'interrupts ' | cut -d' ' -f1)
ioq=$(grep '^GUEST-IRQ: .* nvme0q[1-9][0-9]*$' "$work/out.txt" | awk '{for (i = 3; i <= 4; i++) t += $i} END {print t + 0}')
if [ "$mode" = intx ]; then
    # "GUEST-IRQ: N: <count per CPU> GICv3 49 Level nvme0q0, nvme0q1": admin and I/O queue share the line.
    check intx "$(line 'interrupts '); $(grep -c '^GUEST-IRQ: .* GICv3 *49 *Level *nvme0q0, nvme0q1$' "$work/out.txt") GICv3 49 Level line(s) for nvme0q0, nvme0q1" \
        sh -c "[ '${irqs:-0}' -gt 0 ] && [ '$(line 'interrupts ' | sed 's/.*lines: //')' = 'GICv3 ' ] && grep -q '^GUEST-IRQ: .* GICv3 *49 *Level *nvme0q0, nvme0q1\$' '$work/out.txt'"
else
check msi-x "$(line 'interrupts '); on the I/O queues $ioq" \
    sh -c "[ '${irqs:-0}' -gt 0 ] && [ '${ioq:-0}' -gt 0 ] && [ '$(line 'interrupts ' | sed 's/.*lines: //')' = 'ITS-MSI ' ]"
routes=$(grep -cE '\[debug\] GSI [0-9]+ -> MSI address 0x8000040 data 0x[0-9a-f]+ device 0x8$' "$work/err.txt")
check its-devid "$(grep -o 'GSI routing: MSI routes .*' "$work/err.txt" | head -1); $routes MSI routes to 0x8000040 with device 0x8" \
    sh -c "grep -q 'GSI routing: MSI routes carry device ids' '$work/err.txt' && [ $routes -gt 0 ]"
fi
grep '^GUEST-IRQ: ' "$work/out.txt" | sed "s/^GUEST-IRQ: */A64: $mode: guest irq /" | tr -s ' '
check_power_off 'exit: guest powered off: .*(shutdown, PSCI SYSTEM_OFF)'
if [ "$mode" = intx ]; then check_peak_irq intx; else check_peak_irq msix; fi
check_nothing_left "$NVME"
echo "A64: $mode: $(stats_line backend irq_mode vectors peak_irq_mode peak_vectors resets memslots trapped_ranges)"
exit $((failures > 0))
