#!/usr/bin/env bash
# Runs the Conduit benchmarks (bench/README.md) against a build directory and prints each
# figure next to its baseline from the same run and its goal. Not a test: no pass/fail threshold;
# the exit status is non-zero only when a benchmark could not run.
#
#   bench/run.sh [BUILD_DIR]            (default: build; `make -C BUILD_DIR bench` builds and runs it)
#   RUNS=20          (a) measured runs per case
#   PIO_EXITS=2000   (b) timed port-I/O exits per segment
#   PIO_REPS=41      (b) interleaved repetitions (one segment of each path)
#   PIO_CPU=-1       (b) CPU to pin to (-1: the last CPU, -2: no pinning)
#   QEMU=path        (a) QEMU binary (default: qemu-system-x86_64 from PATH; QEMU= to skip)
#   MSIX_N=300       (d) interrupts per path (eventfd and KVM_SIGNAL_MSI, interleaved)
#   MSIX_BACKEND=iommufd  (d)/(e) VFIO backend of the passed-through edu (type1|iommufd)
#   MSIX_TABLE_ROUNDS=15  (f) rounds per case (median)
# Where this machine's /dev/kvm cannot run a guest, it all runs inside the nested-KVM bed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd) || { echo "bench: no build directory ${1:-$here/../build}" >&2; exit 2; }
out=$build/bench

need=("$build/conduit" "$out/bench_exec" "$out/bench_pio" "$out/bench_rss" "$out/hello16_conduit.bin"
      "$out/hello16_qemu.bin" "$build/tests/guest/hello.bin" "$build/tests/guest/uart_irq.bin"
      "$out/bench_msix" "$build/tests/guest/bench_msix.bin" "$out/bench_msix_table")
for f in "${need[@]}"; do
  [[ -e $f ]] || { echo "bench: missing $f (build with: make -C $build bench)" >&2; exit 2; }
done
# Without a KVM that can run a guest here, the whole bench runs inside the nested-KVM bed
# (tests/bed/bed.sh: an L1 Linux under QEMU TCG whose KVM is real), baselines included, so every
# ratio still compares two things measured in the same run on the same KVM.
if [[ -z ${CONDUIT_IN_BED:-} && $("$here/../tests/bed/bed.sh" where "$build") != host ]]; then
  echo "bench: no usable KVM here: running the bench inside the nested-KVM bed (every baseline is measured in the same L1 run)"
  knobs=()
  for v in RUNS PIO_EXITS PIO_REPS PIO_CPU QEMU MSIX_N MSIX_BACKEND MSIX_TABLE_ROUNDS; do [[ -n ${!v+x} ]] && knobs+=("$v=${!v}"); done
  exec "$here/../tests/bed/bed.sh" run -- env "${knobs[@]}" "$0" "$build"
fi

if [[ -z ${QEMU+x} ]]; then QEMU=$(command -v qemu-system-x86_64 || true); fi

echo "Conduit bench, $(date -u '+%Y-%m-%d %H:%M UTC')${CONDUIT_IN_BED:+, measured in the nested-KVM bed (L1 Linux under QEMU TCG, its own KVM)}"
echo "host: $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'),"\
     "load $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -n $QEMU ]] && echo "qemu: $("$QEMU" --version | head -1)"
echo

status=0
qemu_args=()
if [[ -n $QEMU ]]; then qemu_args=(--qemu "$QEMU" --qemu-bios "$out/hello16_qemu.bin"); fi
"$out/bench_exec" --conduit "$build/conduit" --hello-config "$out/bench_hello_1g.json" \
  --real16-config "$out/bench_hello16_1g.json" --memory-mib 1024 --runs "${RUNS:-20}" "${qemu_args[@]}" || status=1
echo
"$out/bench_pio" --exits "${PIO_EXITS:-2000}" --reps "${PIO_REPS:-41}" --cpu "${PIO_CPU:--1}" || status=1
echo
"$out/bench_rss" --conduit "$build/conduit" --config "$out/bench_uart_irq_1g.json" || status=1
echo
"$out/bench_msix" --payload "$build/tests/guest/bench_msix.bin" --samples "${MSIX_N:-300}" \
  --backend "${MSIX_BACKEND:-iommufd}" || status=1
echo
"$out/bench_msix_table" --rounds "${MSIX_TABLE_ROUNDS:-15}" || status=1
exit $status
