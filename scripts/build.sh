#!/usr/bin/env bash
# Configures and builds Conduit (binary: $BUILD_DIR/conduit, default build/conduit). Arguments go to
# cmake's configure step, e.g. BUILD_DIR=build-asan scripts/build.sh -DCONDUIT_SANITIZE=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir="${BUILD_DIR:-build}"
# Line tables only (-g1): backtraces, sanitizer reports and gdb stacks keep file:line, and a cold
# build takes a third less time than with full debug info (-DCMAKE_BUILD_TYPE=Debug for that).
cmake -S . -B "$builddir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
      -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" "$@" >/dev/null
cmake --build "$builddir" -j"$(nproc)"
