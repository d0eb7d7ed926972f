#!/usr/bin/env bash
# arm64-smoke.sh PROBE [NVME_BDF] - the arm64 bed's own check (ctest bed.arm64.smoke, label arm64),
# run inside its L1 (bed.sh --arch arm64): what Conduit's arm64 tests will need is there.
#   kvm        /dev/kvm exists and PROBE (tests/bed/kvm_probe.c cross-built for arm64) runs a guest
#              on it: KVM_ARM_PREFERRED_TARGET, KVM_ARM_VCPU_INIT, a store that exits as KVM_EXIT_MMIO
#   vhe        L1's KVM runs at EL2 in VHE mode (its kernel log)
#   vfio-pci   the NVMe (NVME_BDF, default 0000:00:02.0) is bound to vfio-pci
#   group      it has an IOMMU group of its own (the SMMUv3's) with its /dev/vfio/<group>
#   cdev       it has a VFIO cdev, /dev/vfio/devices/vfioN, matching its sysfs vfio-dev entry
#   iommufd    /dev/iommu exists
#   msix-bar0  its MSI-X table is in BAR0 beside the registers (QEMU's default layout, which a VMM
#              must trap page by page; ../shared/arm64bed/REPORT.md)
# Prints "ARM64: PASS <check>: <detail>" or "ARM64: FAIL <check>: <why>"; exits 0 iff none failed.
# Runs under L1's static bash with busybox's tools.
set -uo pipefail
probe=${1:?usage: arm64-smoke.sh PROBE [NVME_BDF]}
bdf=${2:-0000:00:02.0}
dev=/sys/bus/pci/devices/$bdf
failures=0
check() {  # check NAME DETAIL CONDITION...
    local name=$1 detail=$2; shift 2
    if "$@"; then echo "ARM64: PASS $name: $detail"; else echo "ARM64: FAIL $name: $detail"; failures=$((failures + 1)); fi
}
echo "ARM64: L1 $(uname -r) $(uname -m), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime) s"

probe_out=$("$probe" 2>&1); probe_rc=$?
check kvm "/dev/kvm $( [ -c /dev/kvm ] && echo present || echo missing); probe exit $probe_rc: $probe_out" \
    sh -c "[ -c /dev/kvm ] && [ $probe_rc = 0 ]"
vhe=$(dmesg | grep -m1 -o 'VHE mode initialized.*')
[ -n "$vhe" ] || vhe_why="no \"VHE mode initialized\" in the kernel log of L1"
check vhe "${vhe:-$vhe_why}" test -n "$vhe"

driver=$(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)
check vfio-pci "$bdf driver ${driver:-none}" test "$driver" = vfio-pci
group=$(basename "$(readlink "$dev/iommu_group" 2>/dev/null)" 2>/dev/null)
members=$(ls "/sys/kernel/iommu_groups/$group/devices" 2>/dev/null | tr '\n' ' ')
check group "IOMMU group ${group:-none} holds ${members:-nothing}; /dev/vfio/$group $( [ -c "/dev/vfio/$group" ] && echo present || echo missing)" \
    sh -c "[ -n '$group' ] && [ '$members' = '$bdf ' ] && [ -c '/dev/vfio/$group' ]"
cdev=$(ls "$dev/vfio-dev" 2>/dev/null | head -1)
check cdev "sysfs vfio-dev ${cdev:-none}; /dev/vfio/devices/${cdev:-?} $( [ -n "$cdev" ] && [ -c "/dev/vfio/devices/$cdev" ] && echo present || echo missing)" \
    sh -c "[ -n '$cdev' ] && [ -c '/dev/vfio/devices/$cdev' ]"
check iommufd "/dev/iommu $( [ -c /dev/iommu ] && echo present || echo missing)" test -c /dev/iommu

# The MSI-X capability (id 0x11) in config space: its table offset/BIR dword at +4, BIR in bits 0-2.
rd() { od -An -tu1 -j "$1" -N 1 "$dev/config" 2>/dev/null | tr -d ' '; }
p=$(rd 52); n=0
while [ -n "$p" ] && [ "$p" != 0 ] && [ "$(rd "$p")" != 17 ] && [ $n -lt 48 ]; do p=$(rd $((p + 1))); n=$((n + 1)); done
bir=; [ -n "$p" ] && [ "$p" != 0 ] && bir=$(( $(rd $((p + 4))) & 7 ))
check msix-bar0 "MSI-X capability at ${p:-?}, table in BAR${bir:-?}" test "$bir" = 0
exit $((failures > 0))
