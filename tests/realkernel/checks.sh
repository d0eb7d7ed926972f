# checks.sh - sourced by the real-kernel guest tests (linux-nvme.sh, arm64-nvme.sh, arm64-vsmmu.sh):
# one scratch directory, one way to run Conduit with a guest, to read the guest's report lines, to
# report a check and to tell that Conduit left nothing open. Set CHECK_TAG (e.g. LX) and conduit
# (the binary) first. Runs under bash with coreutils or busybox (the arm64 beds' L1 has only busybox).
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check() {  # check NAME DETAIL CONDITION...: prints "TAG: PASS|FAIL NAME: DETAIL", counts failures
    local name=$1 detail=$2; shift 2
    if "$@"; then echo "$CHECK_TAG: PASS $name: $detail"; else echo "$CHECK_TAG: FAIL $name: $detail"; failures=$((failures + 1)); fi
}
# guest_run SECONDS ARG...: runs "$conduit ARG..." with the guest's console in $work/out.txt (its CR
# LF made LF) and Conduit's log in $work/err.txt; sets rc (Conduit's exit status) and secs (its run
# time). A guest that hangs is stopped (SIGINT) after SECONDS, before ctest's timeout, so its
# console still gets shown.
guest_run() {
    local limit=$1 t0; shift
    t0=$(cut -d' ' -f1 /proc/uptime)
    timeout -s INT "$limit" "$conduit" "$@" > "$work/serial.txt" 2> "$work/err.txt"
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN{printf "%.1f", b-a}')
    tr -d '\r' < "$work/serial.txt" > "$work/out.txt"
}
# line KEY: the rest of the guest's first "GUEST: KEY..." line (its /init reports that way).
line() { sed -n "s/^GUEST: $1//p" "$work/out.txt" | head -1; }
# check_power_off PATTERN: Conduit exited 0 and its log's exit line matches PATTERN (grep).
check_power_off() {
    check power-off "exit $rc, $(grep -o 'exit: guest powered off[^"]*' "$work/err.txt" | head -1)" \
        sh -c "[ $rc = 0 ] && grep -q '$1' '$work/err.txt'"
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
# stats_line KEY...: "KEY": value pairs of Conduit's --stats file, on one line.
stats_line() {
    local keys; keys=$(echo "$@" | tr ' ' '|')
    grep -oE "\"($keys)\": *[^,}]*" "$work/stats.json" 2>/dev/null | tr '\n' ' '
}
# check_peak_irq MODE: Conduit's stats say the first passed-through device ran in MODE (its peak; at
# exit a guest that powered off has turned its interrupts off).
check_peak_irq() {
    local peak; peak=$(grep -oE '"peak_irq_mode": *"[a-z]+"' "$work/stats.json" 2>/dev/null | head -1 | grep -oE '[a-z]+"$' | tr -d '"')
    check stats-peak-irq "stats: peak_irq_mode ${peak:-none}, at exit $(grep -oE '"irq_mode": *"[a-z]+"' "$work/stats.json" 2>/dev/null | head -1)" \
        test "$peak" = "$1"
}
