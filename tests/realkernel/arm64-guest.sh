#!/usr/bin/env bash
# arm64-guest.sh [--offline | --check] - the arm64 bed's L2 guest kit: what Conduit's arm64 build
# boots inside the arm64 bed (issue 12): Debian bookworm's arm64 cloud kernel (a plain arm64 Image,
# NVMe built in; tests/integration/fetch-debian-kernel.sh --arch arm64) and a busybox initramfs
# whose /init is arm64-guest-init.sh (uptime at userspace, CPUs online, the NVMe's O_DIRECT write and
# read-back and its /proc/interrupts, then power-off). Prints the kit's directory, which holds
#   Image        the kernel
#   initrd.cpio  the initramfs (uncompressed newc; scripts/busybox-initramfs.sh --arch arm64)
# Cached under ${CONDUIT_CACHE_DIR:-~/.cache/conduit}/arm64-guest by the init script and busybox;
# the link `current` names the last kit prepared.
#
#   --offline  print the last kit prepared, or fail: inside L1 there is no network and the cache is
#              read-only (ctest's fixture arm64_guest prepares it on the host first)
#   --check    prepare the kit and boot it here under QEMU TCG (virt, GICv3 with its ITS, QEMU's
#              SMMUv3 in front of the PCIe bus, 2 CPUs, an NVMe), checking each line /init reports,
#              the vSMMU steps' among them: the kit works before any VMM of ours runs it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cache=${CONDUIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conduit}/arm64-guest
if [ "${1:-}" = --offline ]; then
    dir=$(readlink -f "$cache/current" 2>/dev/null) || true
    [ -n "$dir" ] && [ -s "$dir/Image" ] && [ -s "$dir/initrd.cpio" ] ||
        { echo "arm64-guest: no kit prepared yet (run tests/realkernel/arm64-guest.sh on the host)" >&2; exit 1; }
    echo "$dir"; exit 0
fi
kdir=$("$src/tests/integration/fetch-debian-kernel.sh" --arch arm64)
busybox=$("$src/scripts/arm64-static.sh" busybox)
key=$(cat "$here/arm64-guest-init.sh" "$busybox" | sha256sum | cut -c1-12)
dir=$cache/$(basename "$kdir")-$key
if [ ! -s "$dir/initrd.cpio" ] || [ ! -s "$dir/Image" ]; then
    mkdir -p "$dir"
    "$src/scripts/busybox-initramfs.sh" --arch arm64 "$dir/initrd.cpio.tmp" "$here/arm64-guest-init.sh" > /dev/null
    mv "$dir/initrd.cpio.tmp" "$dir/initrd.cpio"
    ln -sfn "$kdir/Image" "$dir/Image"
fi
ln -sfn "$(basename "$dir")" "$cache/current"
[ "${1:-}" = --check ] || { echo "$dir"; exit 0; }

# --check: the kit under QEMU TCG with an NVMe of its own.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
truncate -s 16M "$work/nvme.img"
t0=$(date +%s.%N)
timeout 300 qemu-system-aarch64 -M virt,gic-version=3,iommu=smmuv3 -accel tcg,thread=multi -cpu max,pauth-impdef=on -smp 2 -m 512M \
    -nodefaults -nographic -serial stdio -no-reboot \
    -drive file="$work/nvme.img",if=none,id=nvm,format=raw -device nvme,serial=kit,drive=nvm \
    -kernel "$dir/Image" -initrd "$dir/initrd.cpio" -append "console=ttyAMA0 panic=-1 quiet" < /dev/null 2>&1 |
    tr -d '\r' > "$work/console.txt" || true
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
grep -E '^GUEST' "$work/console.txt" || tail -30 "$work/console.txt"
line() { sed -n "s/^GUEST: $1//p" "$work/console.txt" | head -1; }
failures=0
check() {  # check NAME DETAIL CONDITION...
    local name=$1 detail=$2; shift 2
    if "$@"; then echo "KIT: PASS $name: $detail"; else echo "KIT: FAIL $name: $detail"; failures=$((failures + 1)); fi
}
check userspace "uptime $(line 'userspace at ')" grep -q '^GUEST: userspace at' "$work/console.txt"
check cpus "online $(line 'cpus online ')" test "$(line 'cpus online ')" = 0-1
check nvme "$(line 'nvme ')" grep -q '^GUEST: nvme .* driver nvme msi mode msix' "$work/console.txt"
check block-io "4 KiB O_DIRECT write and read-back: $(line 'block io ')" test "$(line 'block io ')" = ok
irqs=$(line 'interrupts ' | cut -d' ' -f1)
check msi-x "$(line 'interrupts ')" sh -c "[ '${irqs:-0}' -gt 0 ] && echo '$(line 'interrupts ')' | grep -q ITS"
# The vSMMU steps (issue 13) against QEMU's own SMMUv3, the reference for linux.vsmmu.nvme: the
# guest's arm-smmu-v3 driver, the group, the translation fault reaching the event queue (StreamID 8,
# the NVMe at 00:01.0), the identity and DMA switches with their I/O.
check smmu "$(line 'smmu ')" sh -c "echo '$(line 'smmu ')' | grep -q '^arm-smmu-v3 .*features'"
check iommu-group "$(line 'iommu ')" sh -c "echo '$(line 'iommu ')' | grep -qE '^group [0-9]+ type DMA'"
check fault "$(line 'fault '); $(grep -m1 -A1 'event 0x10 received' "$work/console.txt" | tail -1 | sed 's/.*\t//')" \
    grep -q '^GUEST-SMMU: .*arm-smmu-v3.*event 0x10 received' "$work/console.txt"
check identity "$(line 'identity ')" test "$(line 'identity ')" = "type identity bound block io ok"
check dma "$(line 'dma ')" test "$(line 'dma ')" = "unbind unbound type DMA bound block io ok"
check power-off "QEMU ended ${secs} s after it started" grep -q '^GUEST: powering off' "$work/console.txt"
echo "KIT: $dir: TCG boot to power-off in ${secs} s"
exit $((failures > 0))
