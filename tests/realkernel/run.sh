#!/bin/bash
# run.sh - Conduit's passthrough tests against a real kernel's vfio-pci, iommufd and KVM, inside an
# L1 Linux guest under QEMU TCG (docs/testing.md). This machine has no VFIO; QEMU emulates a q35
# with an Intel IOMMU, two `edu` devices and an `igb`, and L1 runs genuine vfio-pci and (with -cpu
# max, whose svm+npt TCG emulates) KVM, so Conduit inside L1 assigns the real devices to an L2
# payload (tests/guest/payloads/pt_real_edu.c).
#
# Usage: tests/realkernel/run.sh [--build-dir DIR] [--kernel deb|src|both] [--shell]
#   --build-dir DIR  Conduit build with conduit and tests/guest/pt_real_edu.bin (default: build-rk)
#   --kernel deb     Debian's 6.12 cloud kernel from bookworm-backports: type1 only (no Debian
#                    kernel enables CONFIG_IOMMUFD)
#   --kernel src     a kernel built from Debian's linux-source-6.12 + iommufd.config: iommufd, type1
#   --kernel both    (default) deb for type1, then src for iommufd and type1
#   --shell          leave L1 at a shell on this terminal instead of powering off
# Env: CONDUIT_CACHE_DIR (downloads and kernel builds go to $CONDUIT_CACHE_DIR/realkernel, default
#      ~/.cache/conduit), RK_TIMEOUT (seconds per L1 boot, default 300), RK_APPEND (more L1
#      kernel arguments, e.g. rk.log=debug: Conduit's log level inside L1, whole log printed).
# Exit: 0 iff every check inside L1 printed "RK: PASS"; 77 (ctest's skip) when QEMU >= 10 is not
# available and cannot be installed; 1 otherwise, with the tail of the L1 console.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build-rk kernel=both shell=0
while [ $# -gt 0 ]; do
    case $1 in
        --build-dir) build=$(cd "$2" && pwd); shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --shell) shell=1; shift ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cache=${CONDUIT_CACHE_DIR:-$HOME/.cache/conduit}/realkernel
timeout_s=${RK_TIMEOUT:-300}
mkdir -p "$cache"/debs "$cache"/logs
t_start=$(date +%s.%N)
say() { awk -v t0="$t_start" -v t="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[rk %6.1fs] %s\n", t-t0, m}'; }
skip() { echo "run.sh: SKIP: $*"; exit 77; }
sudo_=; [ "$(id -u)" = 0 ] || sudo_=sudo
export DEBIAN_FRONTEND=noninteractive

# ---- packages (Debian only). QEMU 10 from bookworm-backports: bookworm's 7.2 hangs booting 6.12.
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p'; }
need=()
[ "$(qemu_major)" -ge 10 ] 2>/dev/null || need+=(qemu)
{ ldd /bin/busybox 2>&1 || true; } | grep -q 'not a dynamic' || need+=(busybox-static)  # the initramfs has no libc
command -v modinfo > /dev/null && command -v cpio > /dev/null || need+=(kmod cpio)
[ "$kernel" = deb ] || [ -f /usr/src/linux-source-6.12.tar.xz ] || need+=(linux-source-6.12)
backports() {  # the bookworm-backports source, added once (QEMU 10 and the 6.12 kernels live there)
    grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    echo 'deb http://deb.debian.org/debian bookworm-backports main' | $sudo_ tee /etc/apt/sources.list.d/bookworm-backports.list > /dev/null
    $sudo_ apt-get update -qq > "$cache/logs/apt.log" 2>&1 || skip "apt-get update failed (no network?): $cache/logs/apt.log"
}
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    backports
    $sudo_ apt-get update -qq > "$cache/logs/apt.log" 2>&1 || skip "apt-get update failed (no network?): $cache/logs/apt.log"
    $sudo_ apt-get install -y -qq --no-install-recommends busybox-static kmod cpio xz-utils \
        linux-source-6.12 make gcc flex bison bc libelf-dev libssl-dev >> "$cache/logs/apt.log" 2>&1 ||
        skip "apt-get install failed: $cache/logs/apt.log"
    $sudo_ apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >> "$cache/logs/apt.log" 2>&1 ||
        skip "QEMU from bookworm-backports could not be installed: $cache/logs/apt.log"
fi
[ "$(qemu_major)" -ge 10 ] 2>/dev/null || skip "qemu-system-x86_64 >= 10 needed, have: $(qemu-system-x86_64 --version | head -1)"
say "$(qemu-system-x86_64 --version | head -1)"

# ---- Conduit and the payload
conduit=$build/conduit payload=$build/tests/guest/pt_real_edu.bin
if [ ! -x "$conduit" ] || [ ! -f "$payload" ]; then
    [ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DCONDUIT_BENCH=OFF > /dev/null
    make -C "$build" -j2 conduit guest_pt_real_edu > "$cache/logs/build.log" 2>&1 || { tail -30 "$cache/logs/build.log"; exit 1; }
fi

# ---- kernels
deb_kernel() {  # the newest 6.12 cloud kernel in bookworm-backports, unpacked once
    local pkg dir
    backports
    pkg=$(apt-cache depends -t bookworm-backports linux-image-cloud-amd64 2>/dev/null | awk '/Depends:/{print $2; exit}')
    [ -n "$pkg" ] || { echo "run.sh: linux-image-cloud-amd64 not found in bookworm-backports" >&2; return 1; }
    dir=$cache/$pkg
    if [ ! -d "$dir/boot" ]; then
        (cd "$cache/debs" && apt-get download "$pkg" > /dev/null 2>&1)
        mkdir -p "$dir.tmp" && dpkg-deb -x "$cache/debs/${pkg}"_*.deb "$dir.tmp" && mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}

# ---- initramfs: busybox, /init, conduit with its shared libraries (Debian ships spdlog and fmt
# as shared libraries only, so no static link), the payload, the configs, and for Debian's kernel
# the modules vfio-pci, vfio_iommu_type1 and kvm-amd need, in load order (modinfo's depends, depth first).
pack() {  # pack OUT [KERNEL_TREE]
    local out=$1 ktree=${2:-} stage lib m
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    mkdir -p "$stage"/{bin,rk,lib/modules}
    cp /bin/busybox "$stage/bin/busybox"
    cp "$here/init.sh" "$stage/init"
    cp "$conduit" "$stage/bin/conduit"
    strip "$stage/bin/conduit" 2> /dev/null || true
    for lib in $(ldd "$conduit" | grep -o '/[^ ]*'); do
        mkdir -p "$stage$(dirname "$lib")" && cp -L "$lib" "$stage$lib"
    done
    cp "$payload" "$here"/configs/*.json "$stage/rk/"
    if [ -n "$ktree" ]; then
        local mdir loaded=" "
        mdir=$(ls -d "$ktree"/lib/modules/*/)
        add_module() {
            local name=$1 f dep
            case "$loaded" in *" $name "*) return ;; esac
            f=$(find "$mdir" -name "$name.ko*" -o -name "$(echo "$name" | tr _ -).ko*" | head -1)
            [ -n "$f" ] || return 0  # built in
            for dep in $(modinfo -F depends "$f" | tr , ' '); do add_module "$dep"; done
            case $f in *.xz) xz -dc "$f" ;; *.zst) zstd -dc "$f" ;; *) cat "$f" ;; esac > "$stage/lib/modules/$name.ko"
            echo "$name" >> "$stage/lib/modules/order"
            loaded="$loaded$name "
        }
        # vfio_iommu_type1 is no dependency of vfio-pci: the kernel would request_module() it.
        for m in vfio_pci vfio_iommu_type1 kvm_amd; do add_module "$m"; done
    fi
    (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 > "$out")
    rm -rf "$stage"
}

# ---- boot L1 and judge it. Two edu devices, each behind a PCIe root port (so a secondary bus
# reset gives vfio-pci a reset method; on the root bus edu has none), with a 32-bit DMA mask (edu's
# default is 28 bits) so its DMA reaches Conduit's 32-bit BAR window; an igb (no network
# peer) for MSI-X and FLR, which edu lacks; a virtio-rng function stays on its host driver for
# `conduit devices`. caching-mode=on lets VFIO's mappings reach QEMU's
# emulated IOMMU; intel-iommu's scalable mode mis-translates with iommu=pt. no_timer_check: on a
# loaded host TCG is slow enough that 6.12 panics "timer doesn't work through Interrupt-remapped
# IO-APIC".
failures=0
boot() {  # boot NAME VMLINUZ INITRD TESTS
    local name=$1 log=$cache/logs/l1-$1.log t0 rc=0 npass nfail
    local qemu=(qemu-system-x86_64 -M q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2G
        -nodefaults -nographic -serial stdio -no-reboot
        -device intel-iommu,caching-mode=on,intremap=on
        -device pcie-root-port,id=rp1,chassis=1,slot=1 -device edu,bus=rp1,dma_mask=0xffffffff
        -device pcie-root-port,id=rp2,chassis=2,slot=2 -device edu,bus=rp2,dma_mask=0xffffffff
        -device igb,addr=04.0 -device virtio-rng-pci,addr=05.0
        -kernel "$2" -initrd "$3"
        -append "console=ttyS0 intel_iommu=on iommu=pt no_timer_check panic=-1 quiet rk.tests=$4 rk.shell=$shell ${RK_APPEND:-}")
    say "booting L1 '$name' ($(basename "$2"), tests $4)"
    if [ $shell = 1 ]; then "${qemu[@]}"; return; fi
    t0=$(date +%s)
    timeout "$timeout_s" "${qemu[@]}" < /dev/null > "$log" 2>&1 || rc=$?
    tr -d '\r' < "$log" > "$log.tmp" && mv "$log.tmp" "$log"
    grep -E '^(RK:|pt: |conduit: )' "$log" | sed 's/^/    /' || true
    npass=$(grep -c '^RK: PASS' "$log" || true)
    nfail=$(grep -c '^RK: FAIL' "$log" || true)
    say "L1 '$name': ${npass} passed, ${nfail} failed in $(($(date +%s) - t0))s (qemu exit $rc, log $log)"
    if [ "$nfail" != 0 ] || [ "$npass" = 0 ] || ! grep -q '^RK: done' "$log"; then
        echo "---- L1 console tail ($log)"
        tail -60 "$log"
        failures=$((failures + 1))
    fi
}

if [ "$kernel" = deb ] || [ "$kernel" = both ]; then
    kdir=$(deb_kernel)
    pack "$cache/initrd-deb.gz" "$kdir"
    boot deb "$(ls "$kdir"/boot/vmlinuz-*)" "$cache/initrd-deb.gz" type1
fi
if [ "$kernel" = src ] || [ "$kernel" = both ]; then
    say "iommufd kernel (built once, ~5 min on 2 cores; log in $cache)"
    bz=$("$here/build-kernel.sh" "$cache")
    pack "$cache/initrd-src.gz"
    # One backend per L1 boot: QEMU's emulated VT-d stops recording faults ("New fault is not
    # recorded due to compression of faults") once one is pending, so a second backend's fault
    # check in the same boot could see nothing. type1 already ran on the Debian kernel above.
    boot src "$bz" "$cache/initrd-src.gz" iommufd
    if [ "$kernel" = src ]; then boot src "$bz" "$cache/initrd-src.gz" type1; fi
fi
say "total $(awk -v t0="$t_start" -v t="$(date +%s.%N)" 'BEGIN{printf "%.0f", t-t0}')s"
[ $failures = 0 ]
