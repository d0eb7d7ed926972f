#!/usr/bin/env bash
# README command 1: install dependencies, build, and run the bundled demo VM (configs/demo.json).
# On a machine whose /dev/kvm cannot run a guest (missing, or a kernel that is itself a guest without
# nested virtualisation, or kvm-pvm: tests/bed/kvm_probe.c) the same demo runs inside the nested-KVM
# bed (tests/bed/bed.sh: an L1 Linux under QEMU TCG whose KVM is real), with the guest's serial
# output shown here as it comes. CONDUIT_KVM=host|bed forces the choice.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
demo=(build/conduit run --config configs/demo.json)
if [ "${CONDUIT_KVM:-auto}" = host ] || { why=$(build/tests/bed/kvm_probe) && [ "${CONDUIT_KVM:-auto}" != bed ]; }; then
  exec "${demo[@]}"
fi
echo "demo: no usable KVM here (${why:-CONDUIT_KVM=bed}): running the demo in the nested-KVM bed (QEMU L1 with a real KVM; its first run installs QEMU and builds its kernel)"
exec tests/bed/bed.sh run -- "${demo[@]}"
