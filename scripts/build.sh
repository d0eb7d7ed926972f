#!/usr/bin/env bash
# Configures and builds Conduit (binary: $BUILD_DIR/conduit, default build/conduit). Arguments go to
# cmake's configure step, e.g. BUILD_DIR=build-asan scripts/build.sh -DCONDUIT_SANITIZE=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir="${BUILD_DIR:-build}"
cmake -S . -B "$builddir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$builddir" -j"$(nproc)"
