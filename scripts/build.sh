#!/usr/bin/env bash
# Configures and builds Conduit (binary: $BUILD_DIR/conduit, default build/conduit). Arguments go to
# cmake's configure step, e.g. BUILD_DIR=build-asan scripts/build.sh -DCONDUIT_SANITIZE=ON.
# ARCH=arm64 cross-compiles for aarch64 into build-arm64/ (cmake/aarch64-linux-gnu.cmake: Debian's
# cross toolchain, the :arm64 libraries, static executables, tests run by qemu-user; docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${ARCH:-native}" in
  native|"$(uname -m)") builddir="${BUILD_DIR:-build}"; cross=() ;;
  arm64|aarch64)
    builddir="${BUILD_DIR:-build-arm64}"
    # No benchmarks: they drive an x86 VMM and assemble x86 images.
    cross=(-DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" -DCONDUIT_BENCH=OFF) ;;
  *) echo "build.sh: unknown ARCH=$ARCH (native or arm64)" >&2; exit 2 ;;
esac
# Line tables only (-g1): backtraces, sanitizer reports and gdb stacks keep file:line, and a cold
# build takes a third less time than with full debug info (-DCMAKE_BUILD_TYPE=Debug for that).
cmake -S . -B "$builddir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
      -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" "${cross[@]}" "$@" >/dev/null
cmake --build "$builddir" -j"$(nproc)"
