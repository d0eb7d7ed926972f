#!/usr/bin/env bash
# vsmmu-nvme.sh [ARM64_BUILD_DIR] - what the virtual SMMUv3 (issue 13) costs a Linux guest's NVMe
# reads: Conduit's arm64 build boots the vsmmu guest (Debian trixie's arm64 cloud kernel 6.12 with
# the arm64 guest kit's initramfs, tests/realkernel/arm64-guest.sh) with the vsmmu bed's NVMe passed through, alternately without the
# vSMMU (tests/realkernel/configs/arm64-nvme-iommufd.json: the guest's DMA goes to guest physical
# addresses through the VMM's stage 2 only) and behind it (configs/arm64-vsmmu-nvme.json: the
# guest's own arm-smmu-v3 driver maps every request in its stage 1, strict invalidation, which
# Conduit forwards to L1's SMMU). Not a test: it prints the figures and their ratio (vSMMU / none;
# below 1 means the vSMMU reads slower), no threshold.
#   read   N MiB (BENCH_MIB, default 32) of O_DIRECT reads in 64 KiB requests in the guest after a
#          4 MiB warm-up, timed by the guest's /proc/uptime (10 ms ticks): MiB/s, median of RUNS
#          (default 3) boots per case, the cases alternating
# Also shown per vSMMU run, from Conduit's --stats: invalidation commands forwarded and
# IOMMU_HWPT_INVALIDATE ioctls over the whole run (boot included).
# Both cases run in the same L1 (the vsmmu bed, tests/bed/bed.sh --arch arm64 --vsmmu, which it
# re-runs itself in), on the same KVM and the same device: only the ratio carries over to real
# hardware, as everything runs under TCG.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build-arm64}" && pwd) || { echo "vsmmu-nvme: no build directory ${1:-$src/build-arm64}" >&2; exit 2; }
RUNS=${RUNS:-3}
BENCH_MIB=${BENCH_MIB:-32}
# The two configs (env, for checking the bench itself: the same config twice gives the noise).
NONE_CONFIG=${NONE_CONFIG:-$src/tests/realkernel/configs/arm64-nvme-iommufd.json}
VSMMU_CONFIG=${VSMMU_CONFIG:-$src/tests/realkernel/configs/arm64-vsmmu-nvme.json}
if [[ -z ${CONDUIT_IN_BED:-} ]]; then
    "$src/tests/realkernel/arm64-guest.sh" > /dev/null || { echo "vsmmu-nvme: preparing the arm64 guest kit failed" >&2; exit 2; }
    "$src/tests/integration/fetch-debian-kernel.sh" --arch arm64 --suite trixie > /dev/null ||
        { echo "vsmmu-nvme: fetching the guest kernel failed" >&2; exit 2; }
    echo "vsmmu-nvme: running inside the vsmmu bed (both cases in the same L1 run)"
    exec "$src/tests/bed/bed.sh" --arch arm64 --vsmmu run -- env RUNS="$RUNS" BENCH_MIB="$BENCH_MIB" BENCH_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
        NONE_CONFIG="$NONE_CONFIG" VSMMU_CONFIG="$VSMMU_CONFIG" "$0" "$build"
fi
kit=$("$src/tests/realkernel/arm64-guest.sh" --offline) || { echo "vsmmu-nvme: no arm64 guest kit" >&2; exit 2; }
# Both cases boot the vsmmu guest's kernel (Debian trixie's 6.12, tests/realkernel/arm64-vsmmu.sh says why).
kernel=${VS_KERNEL:-$("$src/tests/integration/fetch-debian-kernel.sh" --offline --arch arm64 --suite trixie)/Image}
[ -s "$kernel" ] || { echo "vsmmu-nvme: no guest kernel $kernel" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# L1 has no clock of its own (no RTC): the date comes from the host.
echo "vsmmu-nvme: ${BENCH_DATE:-$(date -u '+%Y-%m-%d %H:%M UTC')}, L1 $(uname -r) $(nproc) CPUs, $RUNS runs per case, $BENCH_MIB MiB each, 64 KiB O_DIRECT reads"

# run CASE CONFIG N: one boot; prints the guest's MiB/s (or nothing) and keeps the stats file.
run() {
    local out=$work/$1-$3
    timeout -s INT 600 "$build/conduit" run --config "$2" --kernel "$kernel" --initrd "$kit/initrd.cpio" \
        --cmdline "console=ttyS0 quiet panic=-1 guest.bench=$BENCH_MIB" --stats "$out.stats" > "$out.serial" 2> "$out.err"
    local rc=$?
    local line
    line=$(tr -d '\r' < "$out.serial" | sed -n 's/^GUEST: bench read //p' | head -1)
    [ $rc = 0 ] && [ -n "$line" ] || { echo "vsmmu-nvme: $1 run $3 failed (exit $rc): $(tr -d '\r' < "$out.serial" | tail -3 | tr '\n' ' ') $(tail -2 "$out.err" | tr '\n' ' ')" >&2; return 1; }
    echo "$line" | sed -n 's/.* = \([0-9.]*\) MiB\/s/\1/p'
}
jnum() { grep -oE "\"$1\": *[0-9]+" "$2" 2>/dev/null | head -1 | grep -oE '[0-9]+$'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

none=() vsmmu=()
for i in $(seq "$RUNS"); do
    # Alternating, the order flipped each round, so a drift in the machine's load hits both cases.
    order=(none vsmmu); [ $((i % 2)) = 0 ] && order=(vsmmu none)
    for c in "${order[@]}"; do
        if [ "$c" = none ]; then
            v=$(run none "$NONE_CONFIG" "$i") && none+=("$v")
        else
            v=$(run vsmmu "$VSMMU_CONFIG" "$i") && vsmmu+=("$v")
            s=$work/vsmmu-$i.stats
            echo "  vsmmu run $i: ${v:-failed} MiB/s; invalidation commands forwarded $(jnum invalidation_commands_forwarded "$s"), IOMMU_HWPT_INVALIDATE ioctls $(jnum hwpt_invalidate_ioctls "$s")"
        fi
        [ "$c" = none ] && echo "  none  run $i: ${v:-failed} MiB/s"
    done
done
m_none=$(echo "${none[*]}" | median) m_vsmmu=$(echo "${vsmmu[*]}" | median)
printf '%-34s %10s %10s\n' "NVMe O_DIRECT read, 64 KiB" "MiB/s" "ratio"
printf '%-34s %10s %10s\n' "without vSMMU (stage 2 only)" "${m_none:-n/a}" "1.00x"
ratio=n/a
[ -n "$m_none" ] && [ -n "$m_vsmmu" ] && ratio=$(awk -v a="$m_vsmmu" -v b="$m_none" 'BEGIN{if (b > 0) printf "%.2fx", a / b; else print "n/a"}')
printf '%-34s %10s %10s\n' "behind the vSMMU (nested stage 1)" "${m_vsmmu:-n/a}" "$ratio"
[ ${#none[@]} -gt 0 ] && [ ${#vsmmu[@]} -gt 0 ]
