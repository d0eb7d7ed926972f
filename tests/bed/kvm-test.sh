#!/usr/bin/env bash
# kvm-test.sh BUILD_DIR PLACE TEST_COMMAND... : how ctest runs a test that needs KVM (docs/testing.md,
# "The nested-KVM bed"). CMake puts it in front of every such test (CROSSCOMPILING_EMULATOR of the
# KVM test binaries, so gtest_discover_tests uses it too; tests/bed/CMakeLists.txt).
#
#   PLACE kvm  the test needs a KVM: it runs on this host's /dev/kvm when that can run a guest, else
#              inside the nested-KVM bed
#   PLACE bed  the test needs what only the bed has (real vfio-pci devices under an emulated IOMMU):
#              it always runs inside the bed
#   PLACE arm64  the test runs inside the arm64 bed (bed.sh --arch arm64 fixture, ctest's fixture
#              kvm_bed_arm64), whose results live under BUILD_DIR/bed-arm64; inside that L1 this
#              script runs under a static arm64 bash with busybox's tools
#   PLACE vsmmu  the same in the arm64 bed's nested-SMMUv3 flavour (bed.sh --arch arm64 --vsmmu,
#              fixture kvm_bed_vsmmu), results under BUILD_DIR/bed-vsmmu
#
# The bed runs as ctest's fixture `kvm_bed` (bed.sh fixture) before any of these tests: it boots L1
# once, runs every bed test there through this same script (CONDUIT_BED_INSIDE=1: run the test and
# file its output and status under BUILD_DIR/bed/results), and powers off. Here on the host, a bed
# test then only replays what was filed: its output, and its exit status as its own result, so ctest
# shows pass, fail and skip per test. A test that has no filed result fails and says why.
#
# Every test that passes through here is tallied under BUILD_DIR/bed/tally (where it ran, and whether
# it was skipped) for the line scripts/test.sh prints at the end. Tests run with
# CONDUIT_REQUIRE_KVM=1: a test that finds no KVM fails instead of skipping.
#
# CONDUIT_KVM=auto (default) | host | bed | skip. `bed` sends KVM tests to the bed even when the
# host has KVM; `skip` (local use only, never in CI) skips them, and scripts/test.sh says so.
set -uo pipefail
build=$1 place=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
bed=$build/bed
[ "$place" = arm64 ] && bed=$build/bed-arm64
[ "$place" = vsmmu ] && bed=$build/bed-vsmmu

for a in "$@"; do  # gtest_discover_tests lists a binary's tests through here at build time
    [ "$a" = --gtest_list_tests ] && exec "$@"
done

# One file name per test: the test's own command line, which is the same on the host and in L1.
key=$(printf '%s\0' "$@" | sha1sum | cut -c1-16)
export CONDUIT_REQUIRE_KVM=1

if [ "${CONDUIT_BED_INSIDE:-0}" = 1 ]; then  # inside L1, called by the bed's job script
    results=${CONDUIT_BED_RESULTS:?}
    limit=${CONDUIT_BED_TEST_TIMEOUT:-600}
    # The output goes to L1's own /tmp first and to the results folder (virtio-9p, one round trip
    # per write) in one piece at the end: a test that logs line by line would otherwise pay a
    # round trip per line.
    out=$(mktemp)
    t0=$(date +%s.%N)
    # The test in a process group of its own, so a time-out reaches whatever it started; a test
    # that times out gets every thread's stack of every process in the group written to its output
    # first (gdb), since a hang inside L1 cannot be looked at afterwards.
    setsid "$@" > "$out" 2>&1 < /dev/null &
    pid=$!
    sleep "$limit" & sleeper=$!
    wait -n "$pid" "$sleeper"
    if kill -0 "$pid" 2> /dev/null && ! kill -0 "$sleeper" 2> /dev/null; then
        {
            echo "[bed] timed out after ${limit} s inside L1 (the test's ctest TIMEOUT); the stacks of its processes:"
            for p in $(pgrep -g "$pid"); do
                echo "[bed] ---- process $p: $(tr '\0' ' ' < /proc/$p/cmdline 2> /dev/null | cut -c1-200)"
                timeout 60 gdb -p "$p" -batch -nx -ex 'set pagination off' -ex 'thread apply all bt' 2>&1 |
                    grep -E '^(Thread|#)' | head -200
            done
        } >> "$out"
        kill -KILL -- "-$pid" 2> /dev/null
    fi
    kill "$sleeper" 2> /dev/null
    wait "$pid" 2> /dev/null
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    echo "[bed] ran inside the nested-KVM bed's L1 in ${secs} s, exit status $rc" >> "$out"
    cp "$out" "$results/$key.out" && rm -f "$out"
    echo "$rc" > "$results/$key.rc"
    exit $rc
fi

mkdir -p "$bed/tally"
tally() { echo "$1 $2" > "$bed/tally/$key"; }
skipped() { grep -q '^\[  SKIPPED \]' "$1" && echo skip || echo run; }

where=bed
if [ "$place" = kvm ]; then
    case ${CONDUIT_KVM:-auto} in
        skip) echo "[  SKIPPED ] CONDUIT_KVM=skip: this test needs KVM and was not run"; tally skip skip; exit 0 ;;
        host) where=host ;;
        bed) where=bed ;;
        auto) where=$(cat "$bed/where" 2>/dev/null || "$here/bed.sh" where "$build") ;;
        *) echo "kvm-test.sh: CONDUIT_KVM=${CONDUIT_KVM} is not auto, host, bed or skip" >&2; exit 2 ;;
    esac
elif [ "${CONDUIT_KVM:-auto}" = skip ]; then
    echo "[  SKIPPED ] CONDUIT_KVM=skip: this test runs in the nested-KVM bed and was not run"; tally skip skip; exit 0
fi

if [ "$where" = host ]; then
    out=$(mktemp)
    trap 'rm -f "$out"' EXIT
    "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    tally host "$(skipped "$out")"
    exit "$rc"
fi

# Replay what the bed filed for this test.
if [ -f "$bed/results/$key.rc" ]; then
    cat "$bed/results/$key.out"
    tally bed "$(skipped "$bed/results/$key.out")"
    exit "$(cat "$bed/results/$key.rc")"
fi
tally bed run
echo "kvm-test.sh: this test did not run in the nested-KVM bed: $(cat "$bed/status" 2>/dev/null || echo 'the bed has not run (no kvm_bed fixture in this ctest run?)')"
echo "  command: $*"
exit 1
