#!/usr/bin/env bash
# README command 2 (and CI): install dependencies, build, and run the whole test suite with ctest.
# Unit tests, integration tests that boot guest payloads on /dev/kvm, and the Linux-boot test.
# Then the same suite once more built with AddressSanitizer + UndefinedBehaviorSanitizer
# (build-asan, -DCONDUIT_SANITIZE=ON), and each libFuzzer target briefly (build-fuzz, clang,
# -DCONDUIT_FUZZ=ON): docs/reliability.md.
#
# The sanitizer pass leaves out the ctest labels "linux" (the Debian-kernel boots, ~100 s each:
# their host side is the same code the payload-boot tests run, and the guest kernel itself is not
# instrumented, so they would cost minutes and find nothing new) and "realkernel" (Conduit inside a
# QEMU guest, minutes of emulation; the normal pass runs it). Benchmarks are not built there.
# CONDUIT_SKIP_SANITIZE=1 / CONDUIT_SKIP_FUZZ=1 skip a pass (local use; CI runs all three).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 600 -j2

if [ "${CONDUIT_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== ASan+UBSan build (build-asan) and suite, label linux excluded =="
  BUILD_DIR=build-asan scripts/build.sh -DCONDUIT_SANITIZE=ON -DCONDUIT_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 900 -j2 -LE 'linux|fuzz|realkernel'
fi

if [ "${CONDUIT_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== libFuzzer targets (build-fuzz), each for a bounded number of executions =="
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONDUIT_FUZZ=ON -DCONDUIT_BENCH=OFF \
        -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
  cmake --build build-fuzz --target fuzz -j"$(nproc)"
  ctest --test-dir build-fuzz --output-on-failure -L fuzz  # tests/fuzz/CMakeLists.txt: 20000 runs or 30 s each
fi
