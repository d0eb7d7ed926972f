#!/usr/bin/env bash
# kernel.sh CACHE_DIR - prints the path of the nested-KVM bed's L1 kernel (x86_64 bzImage), built
# once from Debian's linux-source-7.3 over `make tinyconfig` + l1-x86_64.config (next to this file).
#
# Why 7.3 and why built: no Debian kernel enables CONFIG_IOMMUFD or virtio-9p in one image, and 7.3
# is the oldest Debian source with VFIO's dma-buf export of BARs (VFIO_PCI_DMABUF) that iommufd P2P
# needs. linux-source-7.3 lives in trixie-backports; it is an architecture-independent package,
# fetched with `apt-get download` through apt lists of our own under CACHE_DIR, so the machine's
# apt sources are not touched.
#
# Cached under CACHE_DIR by source version, fragment and compiler: only the first run builds (about
# 6 minutes on 2 idle cores; the log is kept as CACHE_DIR/kernel-<key>.log).
set -euo pipefail
cache=$1
here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/l1-x86_64.config
kver=7.3
mkdir -p "$cache/debs" "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial"

# -- the source package, through a separate sources list (trixie-backports)
deb=$(ls "$cache"/debs/linux-source-${kver}_*_all.deb 2>/dev/null | tail -1 || true)
if [ -z "$deb" ]; then
    cat > "$cache/apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
EOF
    aptx=(-o Dir::Etc::SourceList="$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$cache/apt/lists" -o Dir::Cache="$cache/apt/cache"
          -o APT::Architectures::=amd64 -o Debug::NoLocking=1)
    apt-get "${aptx[@]}" update -qq >&2
    (cd "$cache/debs" && apt-get "${aptx[@]}" download "linux-source-$kver" >&2 2>/dev/null)
    deb=$(ls "$cache"/debs/linux-source-${kver}_*_all.deb | tail -1)
fi
srcver=$(dpkg-deb -f "$deb" Version)
gccver=$(gcc -dumpfullversion)
key="${srcver//[^0-9A-Za-z.]/_}-gcc$gccver-$(sha256sum "$fragment" | cut -c1-12)"
out=$cache/kernel-x86_64-$key
if [ -f "$out/bzImage" ]; then echo "$out/bzImage"; exit 0; fi

src=$cache/linux-source-$kver
if [ ! -f "$src/.extracted-$srcver" ]; then
    rm -rf "$src" "$cache/pkg"
    dpkg-deb -x "$deb" "$cache/pkg"
    tar -C "$cache" -xJf "$cache/pkg/usr/src/linux-source-$kver.tar.xz"
    rm -rf "$cache/pkg"
    touch "$src/.extracted-$srcver"
fi
obj=$cache/obj-x86_64
rm -rf "$obj" "$out" && mkdir -p "$obj"
log=$cache/kernel-x86_64-$key.log
echo "kernel.sh: building Linux $srcver for the bed's L1 (log: $log)" >&2
{
    make -C "$src" O="$obj" tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment"
    make -C "$src" O="$obj" olddefconfig
} > "$log" 2>&1
# olddefconfig silently drops options whose dependencies are unmet: every =y of the fragment must stay.
lost=()
for o in $(grep -oE '^CONFIG_[A-Z0-9_]+=y' "$fragment" | cut -d= -f1) CONFIG_VFIO_PCI_DMABUF; do
    grep -q "^$o=y" "$obj/.config" || lost+=("$o")
done
if [ ${#lost[@]} -gt 0 ]; then echo "kernel.sh: olddefconfig dropped ${lost[*]} (see $log)" >&2; exit 1; fi
if ! make -C "$src" O="$obj" -j"$(nproc)" bzImage >> "$log" 2>&1; then
    tail -30 "$log" >&2
    exit 1
fi
mkdir -p "$out"
cp "$obj/arch/x86/boot/bzImage" "$obj/.config" "$out/"
rm -rf "$obj"
echo "$out/bzImage"
