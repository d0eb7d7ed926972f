#!/usr/bin/env bash
# fetch-debian-kernel.sh [--offline] [--arch amd64|arm64]
# Fetches Debian's cloud kernel (the package linux-image-cloud-<arch> points at) with apt-get
# download, and prepares the forms the Linux-boot tests boot. amd64 (the default):
#   <cache>/<package>/vmlinuz   the bzImage as shipped
#   <cache>/<package>/vmlinux   the ELF vmlinux, unpacked from the bzImage's compressed payload
#   <cache>/<package>/modules/  the few modules the Linux-guest tests load (vmxnet3.ko)
# arm64 (the arm64 bed's L2 guest; `dpkg --add-architecture arm64` and apt-get update first):
#   <cache>/<package>/Image     the arm64 Image (bookworm ships vmlinuz as a plain Image; a
#                               gzip-compressed one would be unpacked), its header checked
# Prints the cache directory of the kernel on stdout. Cached: a second run makes no download.
# Cache root: $CONDUIT_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/conduit.
#
# --offline: print the kernel the last run prepared (the link <cache>/current, or current-arm64)
# without asking apt, or fail. The Linux-boot tests use it first: ctest's fixture debian_kernel runs
# this script in full before them (tests/bed/CMakeLists.txt), and inside the nested-KVM bed there is
# no network and apt's caches are slow to read.
set -euo pipefail

offline=0 arch=amd64 suite=
while [ $# -gt 0 ]; do
  case $1 in
    --offline) offline=1 ;;
    --arch) arch=${2:?--arch needs amd64 or arm64}; shift ;;
    --suite) suite=${2:?--suite needs a Debian suite}; shift ;;
    *) echo "usage: fetch-debian-kernel.sh [--offline] [--arch amd64|arm64] [--suite SUITE]" >&2; exit 2 ;;
  esac
  shift
done
case $arch in
  amd64) current=current ;;
  arm64) current="current-arm64" ;;
  *) echo "fetch-debian-kernel: no cloud kernel for '$arch' (amd64 or arm64)" >&2; exit 2 ;;
esac
cache_root="${CONDUIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conduit}/debian-kernel"
# --suite SUITE (arm64 only; the vsmmu guest, tests/realkernel/arm64-vsmmu.sh): that suite's cloud
# kernel instead of the one the machine's apt sources give, through apt lists of our own under the
# cache (as tests/bed/kernel.sh fetches its source), the machine's sources untouched. trixie's 6.12
# honours reserved-memory iommu-addresses (Linux >= 6.3), which bookworm's 6.1 ignores.
apt_=(apt-get) aptc_=(apt-cache)
if [ -n "$suite" ]; then
  [ "$arch" = arm64 ] || { echo "fetch-debian-kernel: --suite is for --arch arm64" >&2; exit 2; }
  current="current-arm64-$suite"
  lists="$cache_root/apt-$suite"
  aptx=(-o Dir::Etc::SourceList="$lists/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$lists/lists" -o Dir::Cache="$lists/cache"
        -o APT::Architectures::=arm64 -o APT::Architecture=arm64 -o Debug::NoLocking=1)
  apt_=(apt-get "${aptx[@]}") aptc_=(apt-cache "${aptx[@]}")
fi
# What a prepared kernel of this architecture has.
complete() {
  if [ "$arch" = arm64 ]; then [ -s "$1/Image" ]; return; fi
  [ -s "$1/vmlinuz" ] && [ -s "$1/vmlinux" ] && [ -d "$1/modules" ] && for m in "${modules[@]}"; do [ -s "$1/modules/$(basename "$m")" ] || return 1; done
}
# Modules the amd64 Linux-guest tests load from their initramfs (the cloud kernel builds in nvme, not these).
modules=(drivers/net/vmxnet3/vmxnet3.ko)
if [ $offline = 1 ]; then
  dir=$(readlink -f "$cache_root/$current" 2>/dev/null) || true
  [ -n "$dir" ] && complete "$dir" || { echo "fetch-debian-kernel: no $arch kernel prepared yet" >&2; exit 1; }
  echo "$dir"; exit 0
fi
mkdir -p "$cache_root"
if [ -n "$suite" ]; then
  mkdir -p "$lists/lists/partial" "$lists/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" > "$lists/sources.list"
fi

meta=linux-image-cloud-$arch
resolve() { "${aptc_[@]}" depends "$meta:$arch" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {sub(/:.*/, "", $2); print $2; exit}'; }
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  # The package lists may be missing on a fresh machine.
  "${apt_[@]}" update -qq >&2 || true
  pkg=$(resolve || true)
fi
if [ -z "$pkg" ]; then
  [ "$arch" = arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64 &&
    echo "fetch-debian-kernel: arm64 is not a foreign architecture of dpkg: dpkg --add-architecture arm64 && apt-get update" >&2
  echo "fetch-debian-kernel: cannot resolve $meta" >&2; exit 1
fi

dir="$cache_root/$pkg"
if complete "$dir"; then ln -sfn "$pkg" "$cache_root/$current"; echo "$dir"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && "${apt_[@]}" download -q "$pkg:$arch" >&2 2>/dev/null || "${apt_[@]}" download "$pkg:$arch" >&2)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
if [ "$arch" = arm64 ]; then
  img=$(ls "$work"/root/boot/vmlinuz-* | head -1)
  [ "$(od -An -t x1 -N 2 "$img" | tr -d ' ')" = 1f8b ] && { gzip -dc < "$img" > "$work/Image"; img=$work/Image; }
  # The arm64 Image header (Documentation/arch/arm64/booting.rst): magic "ARM\x64" at offset 56.
  if [ "$(od -An -t x1 -j 56 -N 4 "$img" | tr -d ' ')" != 41524d64 ]; then
    echo "fetch-debian-kernel: $img is not an arm64 Image (no ARM\\x64 magic at offset 56)" >&2; exit 1
  fi
  mkdir -p "$dir"
  cp "$img" "$dir/Image.tmp" && mv "$dir/Image.tmp" "$dir/Image"
  cp "$work"/root/boot/config-* "$dir/config" 2>/dev/null || true
  ln -sfn "$pkg" "$cache_root/$current"
  echo "$dir"
  exit 0
fi
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
