#!/usr/bin/env bash
# busybox-initramfs.sh [--arch amd64|arm64] OUT [INIT [FILE...]] - a minimal initramfs for a Linux
# guest: Debian's static busybox (package busybox-static: this machine's own for amd64, the default;
# busybox-static:arm64 unpacked into the cache by scripts/arm64-static.sh for arm64) and an /init
# script (INIT, or a default that mounts /proc, /sys and /dev, prints the CPUs and PCI devices the
# guest sees, and gives a shell on the console; `poweroff -f` ends the VM and `conduit run` with 0),
# and each FILE at the root (modules to insmod, say). Uncompressed newc cpio, which every kernel accepts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
busybox=/bin/busybox
if [ "${1:-}" = --arch ]; then
  case ${2:-} in
    amd64) ;;
    arm64) busybox=$("$here/arm64-static.sh" busybox) ;;
    *) echo "busybox-initramfs: --arch amd64|arm64" >&2; exit 2 ;;
  esac
  shift 2
fi
out=${1:?usage: busybox-initramfs.sh [--arch amd64|arm64] OUT [INIT [FILE...]]}
if [ "$busybox" = /bin/busybox ]; then
  [ -x /bin/busybox ] && /bin/busybox --help 2>&1 | head -1 | grep -q BusyBox ||
    { echo "busybox-initramfs: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cp "$busybox" "$work/bin/busybox"
if [ -n "${2:-}" ]; then
  cp "$2" "$work/init"
else
  cat > "$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
echo "initramfs: userspace at $(cut -d' ' -f1 /proc/uptime) s, cpus online $(cat /sys/devices/system/cpu/online)"
for d in /sys/bus/pci/devices/*; do
  echo "initramfs: pci $(basename $d) $(cat $d/vendor):$(cat $d/device) class $(cat $d/class) driver $(basename "$(readlink $d/driver 2>/dev/null)" 2>/dev/null)"
done
echo "initramfs: 'poweroff -f' ends the VM"
exec setsid cttyhack sh
INIT
fi
chmod +x "$work/init"
for f in "${@:3}"; do cp "$f" "$work/"; done
(cd "$work" && find . | cpio -o -H newc --quiet) > "$out"
echo "busybox-initramfs: wrote $out ($(stat -c %s "$out") bytes)"
