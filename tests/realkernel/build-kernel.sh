#!/bin/bash
# build-kernel.sh CACHE_DIR - prints the path of a bzImage with IOMMUFD and VFIO_DEVICE_CDEV,
# built from Debian's linux-source-6.12 over tinyconfig + iommufd.config (next to this script).
# Cached under CACHE_DIR by source version and fragment hash: only the first run builds
# (about 5 minutes on 2 cores; the log is kept in CACHE_DIR/kernel-<key>.log).
set -euo pipefail
cache=$1
here=$(cd "$(dirname "$0")" && pwd)
tarball=$(ls /usr/src/linux-source-6.12.tar.xz)
srcver=$(dpkg-query -W -f '${Version}' linux-source-6.12)
key="6.12-${srcver//[^0-9A-Za-z.]/_}-$(sha256sum "$here/iommufd.config" | cut -c1-12)"
out=$cache/kernel-$key
if [ -f "$out/arch/x86/boot/bzImage" ]; then echo "$out/arch/x86/boot/bzImage"; exit 0; fi

src=$cache/linux-source-6.12
if [ ! -f "$src/.extracted" ]; then
    rm -rf "$src"
    tar -C "$cache" -xJf "$tarball"
    touch "$src/.extracted"
fi
rm -rf "$out" && mkdir -p "$out"
log=$cache/kernel-$key.log
{
    make -C "$src" O="$out" tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "$here/iommufd.config"
    make -C "$src" O="$out" olddefconfig
} > "$log" 2>&1
# olddefconfig silently drops options whose dependencies are unmet: check the ones that matter.
for o in IOMMUFD VFIO_DEVICE_CDEV VFIO_CONTAINER VFIO_PCI INTEL_IOMMU IRQ_REMAP KVM_AMD EVENTFD VIRTIO_PCI; do
    grep -q "^CONFIG_$o=y" "$out/.config" || { echo "build-kernel.sh: CONFIG_$o lost by olddefconfig" >&2; exit 1; }
done
if ! make -C "$src" O="$out" -j"$(nproc)" bzImage >> "$log" 2>&1; then
    tail -30 "$log" >&2
    rm -f "$out/arch/x86/boot/bzImage"
    exit 1
fi
echo "$out/arch/x86/boot/bzImage"
