#!/usr/bin/env bash
# check.sh BUILD_DIR devices|type1|iommufd - Conduit against a real kernel's vfio-pci, iommufd and
# KVM. Runs inside the nested-KVM bed's L1 (ctest runs it there through tests/bed/kvm-test.sh, place
# `bed`; docs/testing.md): two QEMU edu devices (0000:01:00.0, 0000:02:00.0, each behind a PCIe root
# port) and an igb (0000:00:04.0) are bound to vfio-pci, a virtio-rng (0000:00:05.0) stays on its
# driver, and L1's KVM runs the L2 payload tests/guest/payloads/pt_real_edu.c.
#
#   devices   `conduit devices` lists both edu and the igb as assignable and the virtio-rng as not,
#             with the reason
#   BACKEND   `conduit run` of pt_real_edu through that VFIO backend passes every step, the
#             emulated VT-d reported the payload's DMA to unmapped IOVAs to L1 as a DMAR fault,
#             every device was reset at start, and P2P landed (type1) or, where it did not, Conduit
#             said why (iommufd without VFIO dma-buf)
# Each check prints "RK: PASS <check>" or "RK: FAIL <check>: <why>"; exit 0 iff none failed.
# RK_LOG=debug prints Conduit's whole debug log.
set -uo pipefail
build=$(cd "$1" && pwd) what=$2
here=$(cd "$(dirname "$0")" && pwd)
conduit=$build/conduit
EDU_A=0000:01:00.0 EDU_B=0000:02:00.0 NIC=0000:00:04.0 OTHER=0000:00:05.0
failures=0
pass() { echo "RK: PASS $1"; }
failed() { echo "RK: FAIL $1: $2"; failures=$((failures + 1)); }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "$what" = devices ]; then
    "$conduit" devices > "$work/devices.txt" 2>&1
    rc=$?
    cat "$work/devices.txt"
    if [ $rc = 0 ] && grep -q "^$EDU_A .* yes$" "$work/devices.txt" && grep -q "^$EDU_B .* yes$" "$work/devices.txt" &&
       grep -q "^$NIC .* yes$" "$work/devices.txt" &&
       grep "^$OTHER " "$work/devices.txt" | grep -q 'no: bound to virtio-pci, not vfio-pci$'; then
        pass devices
    else
        failed devices "exit $rc; expected both edu and the igb 'yes' and $OTHER 'no: bound to virtio-pci, not vfio-pci'"
    fi
    exit $((failures > 0))
fi

b=$what
sed "s|\"pt_real_edu.bin\"|\"$build/tests/guest/pt_real_edu.bin\"|" "$here/configs/$b.json" > "$work/$b.json"
dmesg -c > /dev/null
# L1's own count of the interrupts each device sent (vfio's handlers), sampled while Conduit runs.
(while :; do grep vfio /proc/interrupts > "$work/irq.new" && [ -s "$work/irq.new" ] && mv "$work/irq.new" "$work/irq.txt"; sleep 0.2; done) &
sampler=$!
t0=$(date +%s.%N)
"$conduit" --log-level "${RK_LOG:-info}" run --config "$work/$b.json" --stats "$work/stats.json" > "$work/out.txt" 2> "$work/err.txt"
rc=$?
kill $sampler
cat "$work/out.txt"
if [ -n "${RK_LOG:-}" ]; then cat "$work/err.txt"; else tail -20 "$work/err.txt"; fi
echo "RK: $b: conduit exit $rc after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
grep -E '"(host|backend|irq_mode|vectors|resets|memslots|p2p_mappings|trapped_ranges)"' "$work/stats.json" | tr -d ' \n'; echo
dmesg | grep -E 'DMAR|vfio|iommu' | tail -8
[ -f "$work/irq.txt" ] && tr -s ' ' < "$work/irq.txt" | sed 's/^/RK: L1 irq /'
if [ $rc = 0 ] && grep -q '^pt: all steps passed$' "$work/out.txt"; then pass "payload-$b"; else failed "payload-$b" "exit $rc"; fi
# A real IOMMU fault: the emulated VT-d reports the DMA to an unmapped IOVA to L1's DMAR driver.
if dmesg | grep -q 'DMAR: \[DMA Write'; then pass "fault-$b"; else failed "fault-$b" "no DMAR write fault in dmesg"; fi
# Reset: the root ports give edu a secondary bus reset, so VFIO offers VFIO_DEVICE_RESET and
# Conduit resets each device at start (the igb's guest-initiated FLR is a payload step).
n=$(grep -c '"resets": [1-9]' "$work/stats.json")
if [ "$n" = 3 ]; then pass "reset-$b"; else failed "reset-$b" "$n of 3 devices reset (see stats)"; fi
# P2P: type1 maps the mmapped BAR (MAP_DMA resolves the VMA's PFNs), so it must land. iommufd needs
# VFIO's dma-buf export of the BAR; where the kernel lacks it, P2P may not land, but then Conduit
# must have said so (no silent P2P hole).
p2p=$(grep '^pt: p2p' "$work/out.txt")
echo "RK: $b: $p2p"
case $b/$p2p in
    */"pt: p2p landed"*) pass "p2p-$b" ;;
    iommufd/*) if grep -q '00:02.0 .*BAR0 .* is not DMA-mapped, so peer-to-peer DMA to it will fault' "$work/err.txt"; then
                   pass "p2p-$b"; echo "RK: $b: P2P refused, and reported: $(grep -m1 -o 'dma-buf path.*' "$work/err.txt")"
               else failed "p2p-$b" "not landed and not reported by Conduit"; fi ;;
    *) failed "p2p-$b" "$p2p" ;;
esac
exit $((failures > 0))
