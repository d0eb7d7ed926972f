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
#             every device was reset at start, and P2P landed where it must and faulted where it
#             must (below), or, on a kernel without VFIO dma-buf, Conduit said why (iommufd)
#   p2poff    the iommufd run with "p2p": false on edu B: A's DMA to B's BAR faults in the IOMMU
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
err=$work/err.txt
"$conduit" --log-level "${RK_LOG:-info}" run --config "$work/$b.json" --stats "$work/stats.json" > "$work/out.txt" 2> "$err"
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
# P2P (docs/passthrough.md). type1 maps the BAR's mmap (MAP_DMA resolves the VMA's PFNMAP pages,
# faulting them in itself); iommufd maps a dma-buf of the BAR (VFIO_DEVICE_FEATURE_DMA_BUF +
# IOMMU_IOAS_MAP_FILE, Linux 6.19 and later). Each must land: at B's BAR, after B's BAR moved, and
# in the igb after its FLR (the kernel revokes a dma-buf on reset); A's DMA to B's old address and
# to B's BAR with its decode off must fault in the IOMMU (L1's DMAR log names the page), which
# shows no stale mapping was left. With "p2p": false on B (config p2poff) the first DMA faults.
# On a kernel without VFIO dma-buf, iommufd P2P cannot land, and Conduit must say so.
kernel=$(uname -r)
echo "RK: $b: L1 kernel $kernel"
faulted() {  # faulted IOVA: L1's DMAR log has a DMA write fault on IOVA's page
    local page
    page=$(printf '%x' $(( $1 & ~0xfff )))
    dmesg | grep 'DMAR: \[DMA Write' -A1 | grep -qi "fault addr 0x0*$page\b"
}
p2p_line() { grep -m1 "^pt: p2p$1 " "$work/out.txt"; }
p2p_iova() { p2p_line "$1" | grep -o 'iova 0x[0-9a-f]*' | cut -d' ' -f2; }
expect_landed() {  # expect_landed WHAT
    local l; l=$(p2p_line "$1")
    echo "RK: $b: $l"
    case $l in *" landed: "*) pass "p2p$1-$b" ;; *) failed "p2p$1-$b" "${l:-no pt: p2p$1 line}" ;; esac
}
expect_fault() {  # expect_fault WHAT
    local l iova; l=$(p2p_line "$1"); iova=$(p2p_iova "$1")
    echo "RK: $b: $l"
    if [[ $l == *" not landed: "* ]] && [ -n "$iova" ] && faulted "$iova"; then
        pass "p2p$1-$b"; echo "RK: $b: the IOMMU faulted it: $(dmesg | grep 'DMAR: \[DMA Write' -A1 | grep -m1 -io "fault addr 0x0*$(printf '%x' $(( iova & ~0xfff )))[^]]*")"
    else
        failed "p2p$1-$b" "${l:-no pt: p2p$1 line}; expected not landed with a DMAR write fault on its page"
    fi
}
dmabuf=no
case $kernel in 6.19*|[7-9].*|[1-9][0-9].*) dmabuf=yes ;; esac
if [ "$b" = p2poff ]; then
    expect_fault ""
    if grep -q '00:02.0 .*p2p off: its BARs stay out of the IOMMU' "$err"; then pass "p2p-off-logged-$b"
    else failed "p2p-off-logged-$b" "Conduit did not say that P2P is off for 0000:02:00.0"; fi
elif [ "$b" = iommufd ] && [ $dmabuf = no ]; then
    if grep -q '00:02.0 .*BAR0 .* is not DMA-mapped, so peer-to-peer DMA to it will fault' "$err"; then
        pass "p2p-$b"; echo "RK: $b: P2P refused, and reported: $(grep -m1 -o 'dma-buf path.*' "$err")"
    else failed "p2p-$b" "not landed and not reported by Conduit"; fi
else
    expect_landed ""
    expect_landed -moved
    expect_fault -old
    expect_fault -off
    expect_landed -reset
    how="through its mmap's address"; [ "$b" = iommufd ] && how="through a dma-buf of the area"
    n=$(grep -c "00:02.0 .*BAR0 .* DMA-mapped at .* $how" "$err")
    if [ "$n" -ge 2 ]; then pass "p2p-path-$b"; echo "RK: $b: B's BAR0 DMA-mapped $how, $n times (placed, moved, decode on again)"
    else failed "p2p-path-$b" "B's BAR0 mapped $how $n times, expected 2 or more"; fi
fi
exit $((failures > 0))
