#!/usr/bin/env bash
# vsmmu-smoke.sh KVM_PROBE VIOMMU_PROBE [NVME_BDF] - the vsmmu bed's own check (ctest bed.vsmmu.smoke,
# label vsmmu), run inside its L1 (bed.sh --arch arm64 --vsmmu: UEFI + ACPI, QEMU's SMMUv3 with both
# stages, the IORT with CANWBS through the initrd). First everything the arm64 bed checks
# (arm64-smoke.sh: KVM runs a guest at EL2 in VHE mode, the NVMe on vfio-pci in a group of its own
# with its cdev, /dev/iommu), then what nesting needs:
#   boot          L1 booted through UEFI with ACPI (/sys/firmware/efi, /sys/firmware/acpi), and
#                 how long to userspace (init's start time)
#   iort-upgrade  the kernel log's "ACPI: Table Upgrade: override [IORT-..." (the initrd's table)
#   canwbs        the IORT the kernel uses has CANWBS (bit 2) in its root-complex node's memory flags
#   smmu          arm-smmu-v3 probed through ACPI, its features line
#   viommu        VIOMMU_PROBE on the NVMe's cdev: GET_HW_INFO (S1P, S2P), a NEST_PARENT HWPT,
#                 IOMMU_VIOMMU_ALLOC(ARM_SMMUV3), a vDEVICE, a vEVENTQ, nested bypass and abort
#                 HWPTs attached by replacement, teardown (tests/bed/viommu_probe.cpp)
# Prints "VSMMU: PASS|FAIL <check>: <detail>" (the probe: "VIOMMU: ..."); exits 0 iff none failed.
# Runs under L1's static bash with busybox's tools.
set -uo pipefail
kvm_probe=${1:?usage: vsmmu-smoke.sh KVM_PROBE VIOMMU_PROBE [NVME_BDF]}
viommu_probe=${2:?usage: vsmmu-smoke.sh KVM_PROBE VIOMMU_PROBE [NVME_BDF]}
bdf=${3:-0000:00:02.0}
here=$(cd "$(dirname "$0")" && pwd)
failures=0
check() {  # check NAME DETAIL CONDITION...
    local name=$1 detail=$2; shift 2
    if "$@"; then echo "VSMMU: PASS $name: $detail"; else echo "VSMMU: FAIL $name: $detail"; failures=$((failures + 1)); fi
}

"$here/arm64-smoke.sh" "$kvm_probe" "$bdf" || failures=$((failures + 1))

# The kernel's own line when it starts /init (its timestamp: seconds since the kernel started; the
# firmware's time before that shows only in bed.sh's wall clock).
init_at=$(dmesg | sed -n 's/^\[ *\([0-9.]*\)\] Run \/init as init process.*/\1/p' | head -1)
check boot "UEFI $( [ -d /sys/firmware/efi ] && echo yes || echo no), ACPI $( [ -d /sys/firmware/acpi/tables ] && echo yes || echo no); /init started at ${init_at:-?} s of kernel uptime" \
    sh -c '[ -d /sys/firmware/efi ] && [ -d /sys/firmware/acpi/tables ]'
upgrade=$(dmesg | grep -m1 -o 'Table Upgrade: override \[IORT[^]]*\]')
check iort-upgrade "${upgrade:-no \"Table Upgrade: override [IORT\" in the kernel log}" test -n "$upgrade"

# The IORT in use: node count at 36, node array offset at 40; a node's type at +0, length at +1
# (16 bits); a root complex (type 2) has its memory access flags at +23 (iort_canwbs.c).
iort=/sys/firmware/acpi/tables/IORT
u8() { od -An -tu1 -j "$1" -N 1 "$iort" 2>/dev/null | tr -d ' '; }
u16() { od -An -tu2 -j "$1" -N 2 "$iort" 2>/dev/null | tr -d ' '; }
u32() { od -An -tu4 -j "$1" -N 4 "$iort" 2>/dev/null | tr -d ' '; }
flags=
if [ -r "$iort" ]; then
    nodes=$(u32 36) off=$(u32 40) i=0
    while [ "$i" -lt "${nodes:-0}" ]; do
        [ "$(u8 "$off")" = 2 ] && flags=$(u8 $((off + 23)))
        len=$(u16 $((off + 1))); [ "${len:-0}" -gt 0 ] || break
        off=$((off + len)) i=$((i + 1))
    done
fi
check canwbs "root complex memory access flags $(printf '0x%02x' "${flags:-0}") (CANWBS is bit 2; OEM revision $(u32 24))" \
    sh -c "[ -n '$flags' ] && [ \$(( $flags & 4 )) = 4 ]"
smmu=$(dmesg | grep -m1 -o 'arm-smmu-v3 [^ ]*: oas .*')
check smmu "${smmu:-no arm-smmu-v3 features line in the kernel log}" test -n "$smmu"

cdev=$(ls "/sys/bus/pci/devices/$bdf/vfio-dev" 2>/dev/null | head -1)
"$viommu_probe" "/dev/vfio/devices/${cdev:-none}"
rc=$?
check viommu "viommu_probe on /dev/vfio/devices/${cdev:-none}: exit $rc" test $rc = 0
holders=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -cE '/dev/vfio/|/dev/iommu')
check nothing-left "fds on /dev/vfio or /dev/iommu after the probe: $holders" test "$holders" = 0
exit $((failures > 0))
