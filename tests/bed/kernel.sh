#!/usr/bin/env bash
# kernel.sh CACHE_DIR [ARCH] - prints the path of the nested-KVM bed's L1 kernel, built once from
# Debian's linux-source-7.3 over `make tinyconfig` + l1-ARCH.config (next to this file). ARCH is
# x86_64 (default: a bzImage built with the machine's gcc) or arm64 (an Image cross-built with
# gcc-aarch64-linux-gnu; one image for both arm64 beds, see l1-arm64.config).
#
# Why 7.3 and why built: no Debian kernel enables CONFIG_IOMMUFD or virtio-9p in one image, and 7.3
# is the oldest Debian source with VFIO's dma-buf export of BARs (VFIO_PCI_DMABUF) that iommufd P2P
# needs. linux-source-7.3 lives in trixie-backports; it is an architecture-independent package,
# fetched with `apt-get download` through apt lists of our own under CACHE_DIR, so the machine's
# apt sources are not touched.
#
# Cached under CACHE_DIR by architecture, source version, fragment and compiler: only the first run
# builds (about 6 minutes on 2 idle cores for x86_64, 8 for arm64; the log is kept as
# CACHE_DIR/kernel-<arch>-<key>.log). KERNEL_NICE (default 0) runs the build under `nice`.
set -euo pipefail
cache=$1
arch=${2:-x86_64}
here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/l1-$arch.config
# Per architecture: make's ARCH and CROSS_COMPILE, the image, and options that the fragment does not
# name but that must come out of it (olddefconfig derives them).
case $arch in
    x86_64) kmake=(); cc=gcc; image=arch/x86/boot/bzImage; derived=(CONFIG_VFIO_PCI_DMABUF) ;;
    arm64) kmake=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-); cc=aarch64-linux-gnu-gcc
           image=arch/arm64/boot/Image; derived=(CONFIG_VFIO_PCI_DMABUF CONFIG_ACPI_IORT CONFIG_ARM_PSCI_FW) ;;
    *) echo "kernel.sh: no L1 kernel for architecture '$arch' (x86_64 or arm64)" >&2; exit 2 ;;
esac
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
gccver=$("$cc" -dumpfullversion)
key="${srcver//[^0-9A-Za-z.]/_}-gcc$gccver-$(sha256sum "$fragment" | cut -c1-12)"
out=$cache/kernel-$arch-$key
name=$(basename "$image")
if [ -f "$out/$name" ]; then echo "$out/$name"; exit 0; fi

src=$cache/linux-source-$kver
if [ ! -f "$src/.extracted-$srcver" ]; then
    rm -rf "$src" "$cache/pkg"
    dpkg-deb -x "$deb" "$cache/pkg"
    tar -C "$cache" -xJf "$cache/pkg/usr/src/linux-source-$kver.tar.xz"
    rm -rf "$cache/pkg"
    touch "$src/.extracted-$srcver"
fi
obj=$cache/obj-$arch
rm -rf "$obj" "$out" && mkdir -p "$obj"
log=$cache/kernel-$arch-$key.log
echo "kernel.sh: building Linux $srcver for the bed's $arch L1 (log: $log)" >&2
t0=$(date +%s)
{
    make -C "$src" O="$obj" "${kmake[@]}" tinyconfig
    # merge_config.sh reads ARCH and CROSS_COMPILE from the environment, not from make's arguments
    env "${kmake[@]}" "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment"
    make -C "$src" O="$obj" "${kmake[@]}" olddefconfig
} > "$log" 2>&1
# olddefconfig silently drops options whose dependencies are unmet: every =y of the fragment must stay.
lost=()
for o in $(grep -oE '^CONFIG_[A-Z0-9_]+=y' "$fragment" | cut -d= -f1) "${derived[@]}"; do
    grep -q "^$o=y" "$obj/.config" || lost+=("$o")
done
if [ ${#lost[@]} -gt 0 ]; then echo "kernel.sh: olddefconfig dropped ${lost[*]} (see $log)" >&2; exit 1; fi
if ! nice -n "${KERNEL_NICE:-0}" make -C "$src" O="$obj" "${kmake[@]}" -j"$(nproc)" "$name" >> "$log" 2>&1; then
    tail -30 "$log" >&2
    exit 1
fi
mkdir -p "$out"
cp "$obj/$image" "$obj/.config" "$out/"
rm -rf "$obj"
echo "kernel.sh: built in $(( $(date +%s) - t0 )) s" | tee -a "$log" >&2
echo "$out/$name"
