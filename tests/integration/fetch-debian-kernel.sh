#!/usr/bin/env bash
# Fetches Debian's cloud kernel (the package linux-image-cloud-amd64 points at) with apt-get download,
# and prepares both forms the Linux-boot test boots:
#   <cache>/<package>/vmlinuz   the bzImage as shipped
#   <cache>/<package>/vmlinux   the ELF vmlinux, unpacked from the bzImage's compressed payload
#   <cache>/<package>/modules/  the few modules the Linux-guest tests load (vmxnet3.ko)
# Prints the cache directory of the kernel on stdout. Cached: a second run makes no download.
# Cache root: $CONDUIT_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/conduit.
#
# --offline: print the kernel the last run prepared (the link <cache>/current) without asking apt,
# or fail. The Linux-boot tests use it first: ctest's fixture debian_kernel runs this script in full
# before them (tests/bed/CMakeLists.txt), and inside the nested-KVM bed there is no network and apt's
# caches are slow to read.
set -euo pipefail

cache_root="${CONDUIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conduit}/debian-kernel"
if [ "${1:-}" = --offline ]; then
  dir=$(readlink -f "$cache_root/current" 2>/dev/null) || true
  [ -n "$dir" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/vmlinux" ] && [ -d "$dir/modules" ] || { echo "fetch-debian-kernel: no kernel prepared yet" >&2; exit 1; }
  echo "$dir"; exit 0
fi
mkdir -p "$cache_root"

pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  # The package lists may be missing on a fresh machine.
  apt-get update -qq >&2 || true
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "fetch-debian-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }

dir="$cache_root/$pkg"
# Modules the Linux-guest tests load from their initramfs (the cloud kernel builds in nvme, not these).
modules=(drivers/net/vmxnet3/vmxnet3.ko)
complete() { [ -s "$dir/vmlinuz" ] && [ -s "$dir/vmlinux" ] && for m in "${modules[@]}"; do [ -s "$dir/modules/$(basename "$m")" ] || return 1; done; }
if complete; then ln -sfn "$pkg" "$cache_root/current"; echo "$dir"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg" >&2 2>/dev/null || apt-get download "$pkg" >&2)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
bz=$(ls "$work"/root/boot/vmlinuz-* | head -1)

# bzImage setup header (Documentation/arch/x86/boot.rst): setup_sects at 0x1f1; payload_offset and
# payload_length at 0x248/0x24c, relative to the protected-mode code at (setup_sects + 1) * 512.
rd() { od -An -t u"$2" -j "$1" -N "$2" "$bz" | tr -d ' '; }
setup_sects=$(rd $((0x1f1)) 1)
payload_offset=$(rd $((0x248)) 4)
payload_length=$(rd $((0x24c)) 4)
start=$(( (setup_sects + 1) * 512 + payload_offset ))
dd if="$bz" of="$work/payload" iflag=skip_bytes,count_bytes skip="$start" count="$payload_length" status=none

magic=$(od -An -t x1 -N 4 "$work/payload" | tr -d ' ')
case "$magic" in
  02214c18) decomp=(lz4 -dc) ;;          # legacy LZ4 frame
  1f8b*)    decomp=(gzip -dc) ;;
  fd377a58) decomp=(xz -dc) ;;
  28b52ffd) decomp=(zstd -dc) ;;
  *) echo "fetch-debian-kernel: unknown payload compression (magic $magic)" >&2; exit 1 ;;
esac
# The kernel appends the uncompressed size after the stream; decompressors then report trailing
# garbage and exit non-zero although the output is complete, so judge the output, not the status.
"${decomp[@]}" "$work/payload" > "$work/vmlinux" 2>/dev/null || true
if [ "$(od -An -t x1 -N 4 "$work/vmlinux" | tr -d ' ')" != "7f454c46" ]; then
  echo "fetch-debian-kernel: unpacking the payload of $bz did not give an ELF file" >&2; exit 1
fi

mkdir -p "$dir/modules"
for m in "${modules[@]}"; do cp "$work"/root/lib/modules/*/kernel/"$m" "$dir/modules/"; done
cp "$bz" "$dir/vmlinuz"
cp "$work/vmlinux" "$dir/vmlinux"
cp "$work"/root/boot/config-* "$dir/config" 2>/dev/null || true
ln -sfn "$pkg" "$cache_root/current"
echo "$dir"
