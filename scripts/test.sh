#!/usr/bin/env bash
# README command 2 (and CI): install dependencies, build, and run the whole test suite with ctest.
# Unit tests, integration tests that boot guest payloads on /dev/kvm, and the Linux-boot test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 600 -j2
