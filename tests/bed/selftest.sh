#!/usr/bin/env bash
# selftest.sh BUILD_DIR - the nested-KVM bed's own test (ctest bed.selftest): the plumbing between ctest, the
# fixture, L1 and kvm-test.sh, on a small ctest project of its own (not the real suite), in bed mode:
#   1. a healthy L1: a passing, a failing (status 3), a skipping and a KVM-using job each come back
#      as their own result, with their output, and are tallied as run in the bed;
#   2. an L1 that never reaches userspace (init= a program that exits): the fixture fails, names the
#      failure and shows the console's tail, and a test then says it did not run in the bed;
#   3. L1s that end in the middle of a job, one lane: a job that wedges its L1's in-guest timeout
#      (it stops the kvm-test.sh watching it) and a job that powers L1 off each fail with the reason and
#      the console's tail (after a second attempt in a fresh L1 that ends the same way), and a
#      fresh L1 runs the job after each; a job that wedges L1 only the first time passes on its
#      second attempt, with the first one's story in its output; a job that stops every process in
#      L1 (the heartbeat too, as a wedged L1 would) is caught by the console's silence long before
#      its own timeout; the fixture itself passes. BED_ATTEMPTS=2 keeps the restarts within a lane's 8.
# Exit 0 iff every expectation held; each prints "selftest: ok ..." or "selftest: FAIL ...".
# BED_ARCH=arm64 runs the same on the arm64 bed (ctest bed.arm64.selftest): its jobs are placed arm64,
# run under L1's static bash and busybox, and are filed under bed-arm64/.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/conduit-bed-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
ok() { echo "selftest: ok $*"; }
bad() { echo "selftest: FAIL $*"; failures=$((failures + 1)); }
launch="$here/kvm-test.sh"
# The KVM job runs the build's kvm_probe in L1: it must find a KVM that runs a guest there.
probe=$(cd "$1" && pwd)/tests/bed/kvm_probe
place=kvm beddir=bed
if [ "${BED_ARCH:-x86_64}" = arm64 ]; then
    place=arm64 beddir=bed-arm64
    [ -x "$probe-arm64" ] && probe=$probe-arm64  # cross-built (tests/bed/CMakeLists.txt); an arm64 build has its own
fi
cat > "$work/CTestTestfile.cmake" <<EOF
add_test(pass "$launch" "$work" $place sh -c "echo selftest-output-pass")
add_test(fail "$launch" "$work" $place sh -c "echo selftest-output-fail; exit 3")
add_test(skip "$launch" "$work" $place sh -c "echo '[  SKIPPED ] selftest skip'")
add_test(kvm "$launch" "$work" $place "$probe")
EOF
export CONDUIT_KVM=bed

# 1. a healthy L1
out=$("$here/bed.sh" fixture "$work" 2>&1); rc=$?
[ $rc = 0 ] && ok "fixture ran 4 jobs" || { bad "fixture exit $rc"; echo "$out"; }
run() { "$launch" "$work" $place "$@" 2>&1; }
o=$(run sh -c "echo selftest-output-pass"); r=$?
[ $r = 0 ] && grep -q selftest-output-pass <<< "$o" && ok "passing job: status 0 and its output" || bad "passing job: status $r: $o"
o=$(run sh -c "echo selftest-output-fail; exit 3"); r=$?
[ $r = 3 ] && grep -q selftest-output-fail <<< "$o" && ok "failing job: status 3 and its output" || bad "failing job: status $r: $o"
o=$(run sh -c "echo '[  SKIPPED ] selftest skip'"); r=$?
[ $r = 0 ] && grep -q 'SKIPPED' <<< "$o" && ok "skipping job: its skip line" || bad "skipping job: status $r: $o"
o=$(run "$probe"); r=$?
[ $r = 0 ] && grep -q 'exit status 0' <<< "$o" && ok "KVM job: L1's KVM ran a guest" || bad "KVM job: status $r: $o"
tally=$(cat "$work/$beddir"/tally/* | sort | uniq -c | tr -s ' ' | tr '\n' ',')
[ "$tally" = " 3 bed run, 1 bed skip," ] && ok "tally: 3 run and 1 skipped in the bed" || bad "tally: $tally"

# 2. an L1 that never reaches userspace
out=$(BED_APPEND="rdinit=/bin/false" BED_TIMEOUT=300 "$here/bed.sh" fixture "$work" 2>&1); rc=$?
if [ $rc != 0 ] && grep -q 'FAILED: L1 never reached userspace' <<< "$out" && grep -q "last 60 lines of L1's console" <<< "$out" &&
   grep -q 'Kernel panic' <<< "$out"; then
    ok "broken L1: the fixture fails, says so and shows the console tail with the panic"
else
    bad "broken L1: fixture exit $rc:"; echo "$out" | tail -20
fi
o=$(run sh -c "echo selftest-output-pass"); r=$?
[ $r = 1 ] && grep -q 'did not run in the nested-KVM bed: L1 never reached userspace' <<< "$o" &&
    ok "broken L1: a test says it did not run and why" || bad "broken L1: test status $r: $o"

# 3. L1s that end in the middle of a job
stall='echo selftest-stall; kill -STOP $PPID; sleep 600'
poweroff='echo selftest-poweroff; busybox poweroff -f'
once='f=$CONDUIT_BED_RESULTS/wedged-once; if [ -e $f ]; then echo selftest-second-attempt; else touch $f; kill -STOP $PPID; sleep 600; fi'
silent='echo selftest-silent; kill -STOP -1; sleep 600'
cat > "$work/CTestTestfile.cmake" <<EOF
add_test(stall "$launch" "$work" $place sh -c "$stall")
set_tests_properties(stall PROPERTIES TIMEOUT 5)
add_test(after-stall "$launch" "$work" $place sh -c "echo selftest-after-stall")
add_test(poweroff "$launch" "$work" $place sh -c "$poweroff")
add_test(after-poweroff "$launch" "$work" $place sh -c "echo selftest-after-poweroff")
add_test(once "$launch" "$work" $place sh -c "$once")
set_tests_properties(once PROPERTIES TIMEOUT 5)
add_test(silent "$launch" "$work" $place sh -c "$silent")
set_tests_properties(silent PROPERTIES TIMEOUT 1000)
add_test(after-silent "$launch" "$work" $place sh -c "echo selftest-after-silent")
EOF
out=$(BED_LANES=1 BED_ATTEMPTS=2 BED_STALL_MARGIN=10 BED_SILENCE=25 BED_TIMEOUT=600 "$here/bed.sh" fixture "$work" 2>&1); rc=$?
if [ $rc = 0 ] && grep -q 'L1 stopped responding' <<< "$out" && grep -q 'L1 ended before its jobs did' <<< "$out"; then
    ok "L1s that ended mid-job: the fixture passes and says what happened"
else
    bad "L1s that ended mid-job: fixture exit $rc:"; echo "$out" | tail -30
fi
o=$(run sh -c "$stall"); r=$?
[ $r = 1 ] && grep -q 'L1 stopped responding: a test had no end 10 s past its timeout' <<< "$o" &&
    ok "stalled L1: its test fails and says why, with the console's tail" || bad "stalled L1: test status $r: $o"
o=$(run sh -c "$poweroff"); r=$?
[ $r = 1 ] && grep -q 'L1 ended before its jobs did' <<< "$o" && grep -q 'BED: start 3 poweroff' <<< "$o" &&
    ok "L1 powered off by its job: the test fails and says why, with the console's tail" || bad "powered-off L1: test status $r: $o"
o=$(run sh -c "$once"); r=$?
[ $r = 0 ] && grep -q '^\[bed\] first attempt: L1 stopped responding' <<< "$o" && grep -q selftest-second-attempt <<< "$o" &&
    ok "L1 wedged once: the test passes on its second attempt, the first one told in its output" || bad "wedged once: status $r: $o"
o=$(run sh -c "$silent"); r=$?
[ $r = 1 ] && grep -q 'L1 stopped responding: its console had no heartbeat for 25 s' <<< "$o" &&
    grep -q '^\[bed\] ---- the second attempt:' <<< "$o" && ! grep -q 'BED: beat' <<< "$o" &&
    ok "silent L1: caught by its console's silence, not its 1000 s timeout; both attempts told, heartbeats left out" ||
    bad "silent L1: test status $r: $o"
for t in stall poweroff silent; do
    o=$(run sh -c "echo selftest-after-$t"); r=$?
    [ $r = 0 ] && grep -q "selftest-after-$t" <<< "$o" && ok "the test after the $t ran in a fresh L1" || bad "after $t: status $r: $o"
done
exit $((failures > 0))
