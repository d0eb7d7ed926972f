#!/usr/bin/env bash
# README command 1: install dependencies, build, and run the bundled demo VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/conduit run --config configs/demo.json
