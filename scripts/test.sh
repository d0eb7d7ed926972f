#!/usr/bin/env bash
# README command 2 (and CI): install dependencies, build, and run the whole test suite with ctest.
# Unit tests; tests that need KVM (payload boots, passthrough, guest isolation, fault injection,
# Linux boots, the KVM unit tests) on this machine's /dev/kvm when it can run a guest, else inside
# the nested-KVM bed (tests/bed: an L1 Linux under QEMU TCG whose KVM is real); the real-kernel
# checks, which always run in the bed; the tests of label arm64 in the arm64 bed (an arm64 L1 under
# qemu-system-aarch64 with KVM at EL2 and an NVMe on vfio-pci: bed.sh --arch arm64). Then the same suite once more built with AddressSanitizer +
# UndefinedBehaviorSanitizer (build-asan, -DCONDUIT_SANITIZE=ON), and each libFuzzer target briefly
# (build-fuzz, clang, -DCONDUIT_FUZZ=ON): docs/reliability.md, docs/testing.md.
#
# The sanitizer pass leaves out bed.selftest (the bed harness's own test: shell scripts and L1
# boots, nothing instrumented; the normal pass runs it) and the ctest labels "linux" (the Debian-kernel boots: their host side is
# the same code the payload-boot tests run, and the guest kernel itself is not instrumented, so they
# would cost minutes and find nothing new), "realkernel", "arm64" and "vsmmu" (the normal pass runs them; the
# arm64 bed runs arm64 programs, which this x86 build does not instrument).
# Benchmarks are not built there.
#
# The arm64 build (build-arm64: ARCH=arm64 scripts/build.sh, cross-compiled with Debian's aarch64
# toolchain and :arm64 libraries, cmake/aarch64-linux-gnu.cmake) is made right after the x86 one:
# the suite's arm64 bed tests run its static `conduit` in the arm64 L1. Its unit tests run last, by
# qemu-user (label unit: the generic rooms' tests; KVM tests cannot run under qemu-user).
#
# The run ends with "KVM tests: N on host KVM, M in the nested bed, K skipped"; a KVM test that was
# skipped fails the run. Local use only, never in CI: CONDUIT_KVM=skip skips the KVM tests (and the
# run says so), CONDUIT_SKIP_SANITIZE=1 / CONDUIT_SKIP_FUZZ=1 / CONDUIT_SKIP_ARM64=1 skip a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
t_phase=$t_start
phase_done() {  # one line per pass, so a slow CI run shows where its time went
  local now; now=$(date +%s)
  echo "test.sh: phase $1: $((now - t_phase)) s"
  t_phase=$now
}
failed=()  # a pass that fails does not stop the others: the run reports everything, then fails
scripts/install-deps.sh
scripts/build.sh
phase_done "install + x86 build"
arm64_built=0
if [ "${CONDUIT_SKIP_ARM64:-0}" != 1 ]; then
  echo "== arm64 cross build (build-arm64): the arm64 bed's tests run its conduit =="
  if ARCH=arm64 scripts/build.sh; then arm64_built=1; else failed+=(arm64-build); fi
  phase_done "arm64 build"
fi
ctest --test-dir build --output-on-failure --timeout 600 -j2 || failed+=(suite)
phase_done "suite"

if [ "${CONDUIT_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== ASan+UBSan build (build-asan) and suite, labels linux, realkernel and arm64 excluded =="
  BUILD_DIR=build-asan scripts/build.sh -DCONDUIT_SANITIZE=ON -DCONDUIT_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 900 -j2 -LE 'linux|fuzz|realkernel|arm64|vsmmu' -E '^bed\.selftest$' || failed+=(asan)
  phase_done "ASan build + suite"
fi

if [ "${CONDUIT_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== libFuzzer targets (build-fuzz), each for a bounded number of executions =="
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONDUIT_FUZZ=ON -DCONDUIT_BENCH=OFF \
        -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
  cmake --build build-fuzz --target fuzz -j"$(nproc)"
  ctest --test-dir build-fuzz --output-on-failure -L fuzz || failed+=(fuzz)  # tests/fuzz/CMakeLists.txt: 20000 runs or 30 s each
  phase_done "fuzz"
fi

if [ "${CONDUIT_SKIP_ARM64:-0}" != 1 ]; then
  echo "== the arm64 build's unit tests (build-arm64) under qemu-user =="
  [ $arm64_built = 1 ] && ctest --test-dir build-arm64 --output-on-failure --timeout 300 -j2 -L unit || failed+=(arm64)
  phase_done "arm64 unit tests under qemu-user"
fi

# Where the KVM tests ran (tests/bed/kvm-test.sh files one line per test: host|bed|skip, run|skip).
shopt -s nullglob
tally=(build/bed/tally/* build/bed-arm64/tally/* build/bed-vsmmu/tally/* build-asan/bed/tally/*)
host=0 bed=0 skipped=0
for f in "${tally[@]}"; do
  read -r where outcome < "$f"
  if [ "$where" = skip ] || [ "$outcome" = skip ]; then skipped=$((skipped + 1))
  elif [ "$where" = host ]; then host=$((host + 1))
  else bed=$((bed + 1)); fi
done
if [ "$skipped" != 0 ]; then
  if [ "${CONDUIT_KVM:-auto}" = skip ]; then
    echo "test.sh: CONDUIT_KVM=skip: $skipped KVM tests were not run (local use only)"
  else
    echo "test.sh: $skipped KVM tests were skipped; every KVM test must run (on host KVM or in the bed)"
    failed+=(kvm-skipped)
  fi
fi
echo "test.sh: $(( $(date +%s) - t_start )) s in all${failed[*]:+; FAILED: ${failed[*]}}"
echo "KVM tests: $host on host KVM, $bed in the nested bed, $skipped skipped"
[ ${#failed[@]} = 0 ]
