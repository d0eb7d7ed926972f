#!/usr/bin/env bash
# arm64-static.sh busybox|bash - prints the path of a static arm64 program from Debian's packages
# (busybox-static:arm64's /bin/busybox, bash-static:arm64's /bin/bash-static) for the arm64
# initramfs images: the arm64 bed's L1 (tests/bed/bed.sh --arch arm64: busybox, and bash for the
# bed's job scripts and tests/bed/kvm-test.sh) and its L2 guests (scripts/busybox-initramfs.sh
# --arch arm64).
#
# The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the cache, never
# installed: busybox-static:arm64 would replace the machine's own busybox-static (amd64), which the
# x86 bed and the x86 guests use. Needs arm64 as a foreign architecture of dpkg
# (`dpkg --add-architecture arm64 && apt-get update`; scripts/install-deps.sh does it).
# Cached under ${CONDUIT_CACHE_DIR:-~/.cache/conduit}/arm64-debs: a second run makes no download.
set -euo pipefail
case ${1:-} in
    busybox) pkg=busybox-static file=bin/busybox ;;
    bash) pkg=bash-static file=bin/bash-static ;;
    *) echo "usage: arm64-static.sh busybox|bash" >&2; exit 2 ;;
esac
cache=${CONDUIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conduit}/arm64-debs
mkdir -p "$cache"
deb=$(ls "$cache"/${pkg}_*_arm64.deb 2>/dev/null | tail -1 || true)
if [ -z "$deb" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "arm64-static: arm64 is not a foreign architecture of dpkg (dpkg --add-architecture arm64 && apt-get update)" >&2
        exit 1
    fi
    (cd "$cache" && { apt-get download -q "$pkg:arm64" >&2 2>/dev/null || apt-get download "$pkg:arm64" >&2; })
    deb=$(ls "$cache"/${pkg}_*_arm64.deb | tail -1)
fi
ver=$(dpkg-deb -f "$deb" Version)
out=$cache/$pkg-${ver//[^0-9A-Za-z.+-]/_}
if [ ! -x "$out/$file" ]; then
    rm -rf "$out.tmp" && dpkg-deb -x "$deb" "$out.tmp"
    # An aarch64 ELF: the magic, and e_machine 183 (EM_AARCH64) at offset 18.
    [ "$(od -An -t x1 -N 4 "$out.tmp/$file" | tr -d ' ')" = 7f454c46 ] &&
        [ "$(od -An -t u2 -j 18 -N 2 "$out.tmp/$file" | tr -d ' ')" = 183 ] ||
        { echo "arm64-static: $deb holds no aarch64 /$file" >&2; exit 1; }
    rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "$out/$file"
