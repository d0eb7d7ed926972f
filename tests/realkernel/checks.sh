# checks.sh - sourced by the real-kernel guest tests (linux-nvme.sh, arm64-nvme.sh): one way to
# report a check and one way to tell that Conduit left nothing open. Set CHECK_TAG (e.g. LX) first.
# Runs under bash with coreutils or busybox (the arm64 bed's L1 has only busybox).
failures=0
check() {  # check NAME DETAIL CONDITION...: prints "TAG: PASS|FAIL NAME: DETAIL", counts failures
    local name=$1 detail=$2; shift 2
    if "$@"; then echo "$CHECK_TAG: PASS $name: $detail"; else echo "$CHECK_TAG: FAIL $name: $detail"; failures=$((failures + 1)); fi
}
# check_nothing_left BDF: after Conduit exited, no process holds VFIO or iommufd, and BDF is still
# vfio-pci's (a leaked fd or mapping would keep it busy), ready for the next run.
check_nothing_left() {
    local bdf=$1 holders driver
    holders=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -cE '/dev/vfio/|/dev/iommu')
    driver=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")
    check nothing-left "fds on /dev/vfio or /dev/iommu after exit: $holders; $bdf driver $driver" \
        test "$holders" = 0 -a "$driver" = vfio-pci
}
