#!/usr/bin/env bash
# Runs Conduit's libFuzzer targets for a fixed number of executions each, one after the other.
#   tests/fuzz/run.sh [--build DIR] [--runs N] [--max-time S] [TARGET...]
#   (defaults: build-fuzz, 20000 executions, no time cap, every target; --max-time stops a target
#   after S seconds even if N executions are not reached: CI's bound)
# Build first:  cmake -S . -B build-fuzz -DCONDUIT_FUZZ=ON -DCMAKE_C_COMPILER=clang \
#                 -DCMAKE_CXX_COMPILER=clang++ -DCONDUIT_BENCH=OFF && make -C build-fuzz -j2 fuzz
# New inputs go to DIR/fuzz-corpus/<target>/ (the seed corpus in tests/fuzz/corpus/<target>/ is read,
# never written); a crash leaves DIR/fuzz-artifacts/<target>/crash-* and a non-zero exit. Each run's
# libFuzzer log is DIR/fuzz-logs/<target>.log; a summary line per target is printed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/../../build-fuzz"
runs=20000
maxtime=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --max-time) maxtime="$2"; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(config bus pci_config msix bar_reloc vsmmu)
build="$(cd "$build" && pwd)"
status=0
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "run.sh: $bin not built (make -C $build fuzz)" >&2; exit 2; }
  mkdir -p "$build/fuzz-corpus/$t" "$build/fuzz-artifacts/$t" "$build/fuzz-logs"
  log="$build/fuzz-logs/$t.log"
  start=$(date +%s)
  rc=0
  "$bin" -runs="$runs" -max_total_time="$maxtime" -max_len=4096 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t/" \
    "$build/fuzz-corpus/$t" "$here/corpus/$t" >"$log" 2>&1 || rc=$?
  secs=$(( $(date +%s) - start ))
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 || true)
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' || true)
  echo "fuzz_$t: rc=$rc runs=${execs:-?} time=${secs}s ${cov:-cov: ?} ${ft:-ft: ?}"
  if [ $rc -ne 0 ]; then
    tail -40 "$log" >&2
    status=1
  fi
done
exit $status
