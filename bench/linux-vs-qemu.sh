#!/usr/bin/env bash
# linux-vs-qemu.sh [BUILD_DIR] - a Linux guest with a passed-through NVMe, Conduit side by side with
# QEMU (-accel kvm) in the same run on the same KVM: the same kernel (Debian's cloud kernel,
# tests/integration/fetch-debian-kernel.sh), the same busybox initramfs, the same device
# (0000:00:06.0, bound to vfio-pci), 2 vCPUs and 512 MiB each. Not a test: it prints figures and
# ratios (Conduit / QEMU, lower is better), no threshold. Each VMM boots RUNS times (default 3),
# alternating, and the median is shown.
#   boot       wall time from starting the VMM to the guest's first userspace line on the console
#   read       a 32 MiB O_DIRECT read from the NVMe in the guest (1 MiB requests), as the guest times it:
#              the mean of 8 reads after a warm-up (/proc/uptime ticks are 10 ms)
#   total      start to the VMM's exit after the guest powers off
# On a machine without a KVM that can run a guest (or without the device) it re-runs itself inside
# the nested-KVM bed, where the NVMe exists; both VMMs are then L2 hypervisors' guests alike.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
NVME=${NVME:-0000:00:06.0}
RUNS=${RUNS:-3}
if [[ -z ${CONDUIT_IN_BED:-} && ( $("$src/tests/bed/bed.sh" where "$build") != host || ! -e /sys/bus/pci/devices/$NVME ) ]]; then
  echo "linux-vs-qemu: running inside the nested-KVM bed (both VMMs in the same L1 run)"
  exec "$src/tests/bed/bed.sh" run -- env RUNS="$RUNS" "$0" "$build"
fi
QEMU=${QEMU:-$(command -v qemu-system-x86_64)}
kdir=$("$src/tests/integration/fetch-debian-kernel.sh" --offline) || { echo "linux-vs-qemu: no kernel prepared" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
echo "GUEST: userspace at $(cut -d' ' -f1 /proc/uptime)"
for i in $(seq 200); do [ -b /dev/nvme0n1 ] && break; sleep 0.05; done
dd if=/dev/nvme0n1 of=/dev/null bs=1M count=32 iflag=direct 2>/dev/null  # warm-up
t0=$(cut -d' ' -f1 /proc/uptime)
for i in 1 2 3 4 5 6 7 8; do dd if=/dev/nvme0n1 of=/dev/null bs=1M count=32 iflag=direct 2>/dev/null; done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "GUEST: read32 $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.3f", (b-a)/8}')"
poweroff -f
INIT
"$src/scripts/busybox-initramfs.sh" "$work/initrd.cpio" "$work/init" > /dev/null || exit 2
cmdline="console=ttyS0 panic=-1 quiet"

# run NAME CMD...: prints "boot read total" in seconds, from the console stream as it arrives.
run() {
  local t0 line boot="" read="" 
  t0=$(date +%s.%N)
  while IFS= read -r line; do  # patterns match mid-line: QEMU's firmware leaves its last line open
    line=${line%$'\r'}
    case $line in
      *"GUEST: userspace at"*) [ -z "$boot" ] && boot=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.3f", b-a}') ;;
      *"GUEST: read32 "*) read=${line#*GUEST: read32 } ;;
    esac
  done < <("$@" 2>"$work/err.txt")
  echo "${boot:-nan} ${read:-nan} $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.3f", b-a}')"
}
sed "s|\"backend\": \"[a-z0-9]*\"|\"backend\": \"iommufd\"|" "$src/configs/linux-nvme.json" > "$work/vm.json"
conduit=("$build/conduit" run --config "$work/vm.json" --kernel "$kdir/vmlinuz" --initrd "$work/initrd.cpio" --cmdline "$cmdline")
# QEMU as a user would run it for the same guest: q35 with its firmware (SeaBIOS) and the device
# through its vfio-pci (type1 container), no other devices, serial on stdio.
qemu=("$QEMU" -M q35 -accel kvm -cpu host -smp 2 -m 512 -nodefaults -nographic -serial stdio -no-reboot
      -kernel "$kdir/vmlinuz" -initrd "$work/initrd.cpio" -append "$cmdline" -device vfio-pci,host=$NVME)
echo "Linux + NVMe passthrough, Conduit vs QEMU, $(date -u '+%Y-%m-%d %H:%M UTC')${CONDUIT_IN_BED:+, in the nested-KVM bed}"
echo "host: $(uname -r), $(nproc) CPUs; qemu: $("$QEMU" --version | head -1); kernel: $(basename "$kdir")"
: > "$work/c.txt"; : > "$work/q.txt"
for i in $(seq "$RUNS"); do
  run "${conduit[@]}" >> "$work/c.txt"; tail -1 "$work/c.txt" | sed 's/^/  conduit run: boot read total = /'
  run "${qemu[@]}" >> "$work/q.txt";    tail -1 "$work/q.txt" | sed 's/^/  qemu    run: boot read total = /'
done
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "\n%-42s %10s %10s %8s\n" "median of $RUNS runs (s)" conduit qemu ratio
for col in 1:boot 2:read 3:total; do
  n=${col%%:*} name=${col#*:}
  c=$(cut -d' ' -f"$n" "$work/c.txt" | median) q=$(cut -d' ' -f"$n" "$work/q.txt" | median)
  label=$name; case $name in boot) label="start to first userspace line";; read) label="32 MiB O_DIRECT read (guest, mean of 8)";; total) label="start to exit after power-off";; esac
  printf "%-42s %10s %10s %8s\n" "$label" "$c" "$q" "$(awk -v c="$c" -v q="$q" 'BEGIN{ if (q > 0) printf "%.2fx", c/q; else print "-"}')"
done
