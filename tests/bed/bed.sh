#!/usr/bin/env bash
# bed.sh - the nested-KVM bed (docs/testing.md): real KVM, vfio-pci and iommufd on a machine that
# has none. QEMU under software emulation (TCG) runs a q35 L1 Linux with an emulated Intel IOMMU,
# two QEMU `edu` devices behind PCIe root ports and an `igb` (handed to vfio-pci), a virtio-rng
# left on its driver, and `-cpu max`, whose emulated SVM with nested paging gives L1 a working KVM.
# L1 mounts this machine's whole file tree read-only over virtio-9p and runs jobs in a chroot of it
# (tests/bed/init.sh), so it runs the host's build, at the host's paths, on L1's KVM.
#
#   bed.sh where BUILD_DIR      "host" when this machine's /dev/kvm can run a guest (kvm_probe),
#                               else "bed"; CONDUIT_KVM=host|bed forces the answer
#   bed.sh fixture BUILD_DIR    ctest's fixture kvm_bed: boots L1 (two, side by side) and runs there every test
#                               of BUILD_DIR that goes through kvm-test.sh and belongs in the bed
#                               (all KVM tests when this machine has no usable KVM, and always the
#                               tests placed `bed`), filing each one's output and status for
#                               kvm-test.sh to replay as that test's result
#   bed.sh run [--] CMD ARGS... runs CMD inside L1 in the current directory, showing its output;
#                               exits with CMD's status (scripts/demo.sh, bench/run.sh)
#   bed.sh shell                L1 with a shell on this terminal (`chroot /host bash` for the tree)
#
# bed.sh --arch arm64 ... (or BED_ARCH=arm64): the same commands on the arm64 bed: an arm64 L1 under
# qemu-system-aarch64 (-M virt, virtualization=on for EL2 and KVM in VHE mode, GICv3 + ITS, an
# SMMUv3) with an emulated NVMe on vfio-pci and the host's directories at their own paths (no
# chroot: L1 runs arm64 programs, such as Conduit's static arm64 build, by path; init.sh). Its
# fixture runs the tests placed `arm64` (kvm-test.sh) and files them under BUILD_DIR/bed-arm64,
# with one L1 of two vCPUs unless BED_LANES says otherwise; BED_MEM defaults to 4G there.
# Everything comes from Debian's packages (QEMU 10 from bookworm-backports, busybox-static, the
# kernel's source from trixie-backports through a separate apt list) and is cached under
# ${CONDUIT_CACHE_DIR:-~/.cache/conduit}/bed: the kernel (built once, about 6 minutes on 2 cores)
# and the initramfs. Env: BED_TIMEOUT (seconds for one L1 run, default 3600), BED_MEM (L1 RAM,
# default 6G), BED_APPEND (more L1 kernel arguments), BED_KERNEL (an L1 bzImage to boot instead),
# BED_LANES (L1 machines of one vCPU that share the tests of a fixture run, default 2).
#
# bed.sh --arch arm64 --vsmmu ... (or BED_VSMMU=1): the arm64 bed's flavour for issue 13's virtual
# SMMUv3: the same L1 kernel and initramfs booted through UEFI (qemu-efi-aarch64) with acpi=force,
# QEMU's SMMUv3 with both stages (-global arm-smmuv3.stage=nested), and QEMU's own IORT with CANWBS
# set on the root complex handed in through the initrd's ACPI table upgrade (prepare_vsmmu), so
# L1's iommufd allocates vIOMMUs. Fixture results under BUILD_DIR/bed-vsmmu; it runs the tests
# placed vsmmu.
#
# A run that does not reach its end (L1 never boots, panics, or the time is up) prints which job
# was running and the tail of L1's console, and fails; QEMU never outlives this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
arch=${BED_ARCH:-x86_64}
vsmmu=${BED_VSMMU:-0}
while :; do
    case ${1:-} in
        --arch) arch=${2:-}; shift 2 || true ;;
        --vsmmu) vsmmu=1; shift ;;
        *) break ;;
    esac
done
# Per architecture: the QEMU, and where a build directory keeps the bed's last run.
case $arch in
    x86_64) qemu_bin=qemu-system-x86_64 bed_dir=bed ;;
    arm64) qemu_bin=qemu-system-aarch64 bed_dir=bed-arm64 ;;
    *) echo "bed.sh: no bed for architecture '$arch' (x86_64 or arm64)" >&2; exit 2 ;;
esac
if [ "$vsmmu" = 1 ]; then
    [ "$arch" = arm64 ] || { echo "bed.sh: --vsmmu is an arm64 bed (bed.sh --arch arm64 --vsmmu)" >&2; exit 2; }
    bed_dir=bed-vsmmu
fi
# The vsmmu bed's firmware (Debian's qemu-efi-aarch64).
EFI_FD=/usr/share/qemu-efi-aarch64/QEMU_EFI.fd
cache=${CONDUIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conduit}/bed
mkdir -p "$cache/logs"
t_start=$(date +%s.%N)
say() { awk -v t0="$t_start" -v t="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[bed %6.1fs] %s\n", t-t0, m}'; }
sudo_=; [ "$(id -u)" = 0 ] || sudo_=sudo
export DEBIAN_FRONTEND=noninteractive

usage() { sed -n '/^#   bed.sh/,/^#$/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---- where KVM tests run
probe_bin() {  # the probe from the build, else built here (it is one C file with no dependencies)
    local b=${1:-}
    if [ -n "$b" ] && [ -x "$b/tests/bed/kvm_probe" ]; then echo "$b/tests/bed/kvm_probe"; return; fi
    if [ ! -x "$cache/kvm_probe" ] || [ "$here/kvm_probe.c" -nt "$cache/kvm_probe" ]; then
        gcc -O2 -o "$cache/kvm_probe" "$here/kvm_probe.c"
    fi
    echo "$cache/kvm_probe"
}
where() {  # where BUILD_DIR: prints host|bed; the probe's reason goes to $cache/logs/probe.txt
    case ${CONDUIT_KVM:-auto} in host|bed) echo "$CONDUIT_KVM"; return ;; esac
    if "$(probe_bin "${1:-}")" > "$cache/logs/probe.txt" 2>&1; then echo host; else echo bed; fi
}

# ---- what L1 needs: QEMU >= 10 (bookworm's 7.2 hangs booting recent kernels), a static busybox,
# the kernel's build tools; then the kernel and the initramfs
qemu_major() { $qemu_bin --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p'; }
install_packages() {
    [ "$arch" = arm64 ] && { install_packages_arm64; return; }
    local need=() p
    [ "$(qemu_major)" -ge 10 ] 2>/dev/null || need+=(qemu)
    for p in busybox-static cpio flex bison bc libelf-dev libssl-dev make gcc xz-utils; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    say "installing ${need[*]} (Debian packages; QEMU from bookworm-backports)"
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo 'deb http://deb.debian.org/debian bookworm-backports main' |
            $sudo_ tee /etc/apt/sources.list.d/bookworm-backports.list > /dev/null
    fi
    {
        $sudo_ apt-get update -qq &&
        $sudo_ apt-get install -y -qq --no-install-recommends busybox-static cpio flex bison bc \
            libelf-dev libssl-dev make gcc xz-utils &&
        $sudo_ apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
    } > "$cache/logs/apt.log" 2>&1 || { tail -20 "$cache/logs/apt.log"; echo "bed.sh: installing packages failed" >&2; exit 1; }
    [ "$(qemu_major)" -ge 10 ] 2>/dev/null || { echo "bed.sh: need qemu-system-x86_64 >= 10, have $(qemu-system-x86_64 --version | head -1)" >&2; exit 1; }
}
# The arm64 bed: QEMU's aarch64 system emulator (qemu-system-arm, from bookworm-backports like the
# x86 one), the cross compiler for its kernel and probe, and arm64 as a foreign architecture of dpkg
# for the static arm64 busybox and bash (scripts/arm64-static.sh downloads them, never installs).
install_packages_arm64() {
    local need=() p
    [ "$(qemu_major)" -ge 10 ] 2>/dev/null || need+=(qemu-system-arm)
    for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross cpio flex bison bc libelf-dev libssl-dev make gcc xz-utils; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    dpkg --print-foreign-architectures | grep -qx arm64 || need+=(arch:arm64)
    local efi=()
    [ "$vsmmu" = 1 ] && efi=(qemu-efi-aarch64)
    [ ${#efi[@]} -gt 0 ] && [ ! -f "$EFI_FD" ] && need+=("${efi[@]}")
    [ ${#need[@]} -eq 0 ] && return 0
    say "installing ${need[*]} (Debian packages; QEMU from bookworm-backports)"
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo 'deb http://deb.debian.org/debian bookworm-backports main' |
            $sudo_ tee /etc/apt/sources.list.d/bookworm-backports.list > /dev/null
    fi
    {
        $sudo_ dpkg --add-architecture arm64 &&
        $sudo_ apt-get update -qq &&
        $sudo_ apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
            cpio flex bison bc libelf-dev libssl-dev make gcc xz-utils "${efi[@]}" &&
        $sudo_ apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-arm
    } > "$cache/logs/apt.log" 2>&1 || { tail -20 "$cache/logs/apt.log"; echo "bed.sh: installing packages failed" >&2; exit 1; }
    [ "$(qemu_major)" -ge 10 ] 2>/dev/null || { echo "bed.sh: need $qemu_bin >= 10, have $($qemu_bin --version | head -1)" >&2; exit 1; }
}
kernel=
initrd=
prepare() {
    install_packages
    if [ "$arch" = arm64 ]; then prepare_arm64; return; fi
    kernel=${BED_KERNEL:-$("$here/kernel.sh" "$cache")}
    local key
    key=$(cat "$here/init.sh" /bin/busybox | sha256sum | cut -c1-12)
    initrd=$cache/initrd-$key.gz
    if [ ! -f "$initrd" ]; then
        local stage
        stage=$(mktemp -d "$cache/stage.XXXXXX")
        mkdir -p "$stage/bin"
        cp /bin/busybox "$stage/bin/busybox"
        cp "$here/init.sh" "$stage/init"
        chmod +x "$stage/init"
        (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 > "$initrd.tmp") && mv "$initrd.tmp" "$initrd"
        rm -rf "$stage"
    fi
}

# The arm64 L1: the cross-built Image, and an initramfs of init.sh with arm64 static busybox and bash
# (bash runs the job scripts and kvm-test.sh, as the host's bash does in the x86 bed's chroot).
prepare_arm64() {
    kernel=${BED_KERNEL:-$(KERNEL_NICE=${KERNEL_NICE:-0} "$here/kernel.sh" "$cache" arm64)}
    local busybox bash key
    busybox=$("$root/scripts/arm64-static.sh" busybox)
    bash=$("$root/scripts/arm64-static.sh" bash)
    key=$(cat "$here/init.sh" "$busybox" "$bash" | sha256sum | cut -c1-12)
    initrd=$cache/initrd-arm64-$key.gz
    if [ ! -f "$initrd" ]; then
        local stage
        stage=$(mktemp -d "$cache/stage.XXXXXX")
        mkdir -p "$stage/bin"
        cp "$busybox" "$stage/bin/busybox"
        cp "$bash" "$stage/bin/bash"
        cp "$here/init.sh" "$stage/init"
        chmod +x "$stage/init"
        (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 > "$initrd.tmp") && mv "$initrd.tmp" "$initrd"
        rm -rf "$stage"
    fi
    [ "$vsmmu" = 1 ] && prepare_vsmmu
    return 0
}

# The vsmmu bed's L1 (issue 13): the same Image and initramfs, booted through UEFI with ACPI, and
# QEMU's own IORT with CANWBS set on the root complex (tests/bed/iort_canwbs.c says why) handed in
# through the kernel's initrd ACPI table upgrade: an uncompressed cpio holding
# kernel/firmware/acpi/IORT.aml in front of the gzip'd initramfs. QEMU's IORT is dumped once, by a
# first ACPI boot of L1 (init.sh's bed.acpidump=IORT copies /sys/firmware/acpi/tables/IORT to the
# results folder and powers off, about 7 s), and cached beside the kernel, keyed by QEMU's
# version, the firmware and the machine's arguments (all that shapes the table); so is the patched
# table and the initrd that carries it.
iort_tool() {  # the host build of iort_canwbs.c (one C file, no dependencies), cached like kvm_probe
    if [ ! -x "$cache/iort_canwbs" ] || [ "$here/iort_canwbs.c" -nt "$cache/iort_canwbs" ]; then
        gcc -O2 -Wall -o "$cache/iort_canwbs" "$here/iort_canwbs.c"
    fi
    echo "$cache/iort_canwbs"
}
prepare_vsmmu() {
    local dir key iort log a skip=0 shape=()
    dir=$(mktemp -d "$cache/iort.XXXXXX")
    machine_arm64 "$dir" "bed.acpidump=IORT"
    # The machine's shape: its arguments without the run's own paths, kernel, initrd, command line, RAM and CPUs.
    for a in "${qemu_cmd[@]}"; do
        [ $skip = 1 ] && { skip=0; continue; }
        case $a in -kernel|-initrd|-append|-m|-smp) skip=1; continue ;; esac
        shape+=("$(echo "$a" | sed 's/\(file\|path\)=[^,]*/\1=/g')")
    done
    key=$({ $qemu_bin --version | head -1; sha256sum < "$EFI_FD"; printf '%s\n' "${shape[@]}"; } | sha256sum | cut -c1-12)
    iort=$cache/iort-canwbs-$key.aml
    if [ ! -s "$iort" ]; then
        log=$cache/logs/iort-dump.log
        say "dumping QEMU's IORT: a first ACPI boot of L1 (console: $log)"
        BED_TIMEOUT=${BED_IORT_TIMEOUT:-300} start "$log"
        finish "$log" "$started_pid" || true
        if [ ! -s "$dir/IORT" ]; then
            broken "$log" "the IORT dump boot (bed.acpidump=IORT) left no IORT" >&2
            rm -rf "$dir"; exit 1
        fi
        "$(iort_tool)" "$dir/IORT" "$iort.tmp" > "$cache/logs/iort-canwbs-$key.txt" ||
            { cat "$cache/logs/iort-canwbs-$key.txt" >&2; rm -rf "$dir"; exit 1; }
        mv "$iort.tmp" "$iort"
        say "IORT with CANWBS cached as $iort ($(grep -c 'CANWBS' "$cache/logs/iort-canwbs-$key.txt") root complex, L1 boot $(sed -n 's/^BED: acpidump .* at \([0-9.]*\)s.*/\1/p' "$log") s)"
    fi
    rm -rf "$dir"
    local vinitrd
    vinitrd=$cache/initrd-vsmmu-$(cat "$iort" "$initrd" | sha256sum | cut -c1-12).img
    if [ ! -f "$vinitrd" ]; then
        local stage
        stage=$(mktemp -d "$cache/stage.XXXXXX")
        mkdir -p "$stage/kernel/firmware/acpi"
        cp "$iort" "$stage/kernel/firmware/acpi/IORT.aml"
        # The table upgrade reads only an uncompressed cpio at the very start of the initrd.
        { (cd "$stage" && find kernel | cpio -o -H newc --quiet) && cat "$initrd"; } > "$vinitrd.tmp" &&
            mv "$vinitrd.tmp" "$vinitrd"
        rm -rf "$stage"
    fi
    initrd=$vinitrd
}

# ---- one L1 run
# The machine. Device addresses are fixed so the VFIO devices' addresses in L1 are too: root ports
# at 00:10.0 and 00:11.0 give the edu devices buses 1 and 2. Each edu sits behind a root port so a
# secondary bus reset gives vfio-pci a reset method (edu has none on the root bus), with a 32-bit
# DMA mask (its default of 28 bits would silently truncate IOVAs). caching-mode=on lets VFIO's
# mappings reach QEMU's emulated IOMMU; its scalable mode mis-translates with iommu=pt.
# no_timer_check: on a loaded host TCG is slow enough for Linux to doubt the IO-APIC timer.
# The NVMe at 00:06.0 (MSI-X, FLR, a 64 MiB disk of its own per lane) is what the Linux guests'
# own nvme driver drives (tests/realkernel/linux-nvme.sh).
# The vmxnet3 at 00:07.0 (MSI-X) is their second device with a driver of its own.
VFIO_DEVICES=0000:01:00.0,0000:02:00.0,0000:00:04.0,0000:00:06.0,0000:00:07.0
qemu_cmd=()
# Host directories L1 needs that sit where L1 mounts its own empty tmpfs (/tmp, /run, /var/tmp):
# the tree, the current directory, the cache, and the build being tested (BED_KEEP_DIR); init.sh
# binds them back. Comma-separated, for bed.keep=.
kept_paths() {
    local p out=()
    for p in "$root" "$PWD" "${cache%/bed}" ${BED_KEEP_DIR:-}; do
        case $p in /tmp/*|/run/*|/var/tmp/*) out+=("$p") ;; esac
    done
    local IFS=,; echo "${out[*]}"
}
machine() {  # machine RESULTS_DIR KERNEL_ARGS [VCPUS]
    [ "$arch" = arm64 ] && { machine_arm64 "$@"; return; }
    local lane disk
    lane=$(echo "$2" | sed -n 's/.*bed\.lane=\([0-9]*\).*/\1/p')
    disk=$cache/nvme-lane${lane:-0}.img
    [ -f "$disk" ] || truncate -s 64M "$disk"
    qemu_cmd=(qemu-system-x86_64 -M q35 -accel tcg,thread=multi -cpu max -smp "${3:-2}" -m "${BED_MEM:-6G}"
        -nodefaults -nographic -serial stdio -no-reboot
        -device intel-iommu,caching-mode=on,intremap=on
        -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=10.0 -device edu,bus=rp1,dma_mask=0xffffffff
        -device pcie-root-port,id=rp2,chassis=2,slot=2,addr=11.0 -device edu,bus=rp2,dma_mask=0xffffffff
        -device igb,addr=04.0 -device virtio-rng-pci,addr=05.0
        -drive file="$disk",if=none,id=nvm,format=raw,file.locking=off -device nvme,serial=conduit-bed,drive=nvm,addr=06.0
        -device vmxnet3,addr=07.0,romfile=
        -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
        -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,addr=08.0
        -fsdev local,id=results,path="$1",security_model=none,multidevs=remap
        -device virtio-9p-pci,fsdev=results,mount_tag=results,addr=09.0
        -kernel "$kernel" -initrd "$initrd"
        -append "console=ttyS0 intel_iommu=on iommu=pt no_timer_check panic=-1 quiet bed.vfio=$VFIO_DEVICES bed.results=$1 bed.keep=$(kept_paths) $2 ${BED_APPEND:-}")
}

# The arm64 machine: QEMU's virt board with EL2 (KVM in L1 runs at EL2 in VHE mode), GICv3 (its ITS
# carries the NVMe's MSI-X) and an SMMUv3 in front of the PCIe root bus; `pauth-impdef=on` only
# makes TCG faster. The NVMe at 00:02.0 keeps QEMU's default layout, its MSI-X table and PBA in
# BAR0 beside the registers (msix-exclusive-bar=off), which a VMM must trap page by page
# (../shared/arm64bed/REPORT.md); vfio-pci takes it at boot (bed.vfio). iommu.passthrough=1 keeps the
# virtio-9p devices out of SMMU translation (as iommu=pt on x86); vfio's domains still translate.
ARM64_NVME=0000:00:02.0
machine_arm64() {  # machine_arm64 RESULTS_DIR KERNEL_ARGS [VCPUS]
    local lane disk
    lane=$(echo "$2" | sed -n 's/.*bed\.lane=\([0-9]*\).*/\1/p')
    disk=$cache/nvme-arm64-lane${lane:-0}.img
    [ -f "$disk" ] || truncate -s 64M "$disk"
    qemu_cmd=(qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,iommu=smmuv3
        -accel tcg,thread=multi -cpu max,pauth-impdef=on -smp "${3:-2}" -m "${BED_MEM:-4G}"
        -nodefaults -nographic -serial stdio -no-reboot
        -drive file="$disk",if=none,id=nvm,format=raw,file.locking=off -device nvme,serial=conduit-bed,drive=nvm,addr=02.0
        -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
        -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,addr=03.0
        -fsdev local,id=results,path="$1",security_model=none,multidevs=remap
        -device virtio-9p-pci,fsdev=results,mount_tag=results,addr=04.0
        -kernel "$kernel" -initrd "$initrd"
        -append "console=ttyAMA0 iommu.passthrough=1 panic=-1 quiet bed.tree=paths bed.vfio=$ARM64_NVME bed.results=$1 bed.keep=$(kept_paths) $2 ${BED_APPEND:-}")
    # The vsmmu bed: the SMMUv3 with both stages (FEAT_NESTING: nest-parent HWPTs, vIOMMUs), booted
    # through UEFI (EDK2 loads the kernel's EFI stub from -kernel through fw_cfg) with ACPI forced,
    # so the IORT, whose CANWBS only ACPI can express, describes the SMMU and the root complex.
    if [ "$vsmmu" = 1 ]; then
        qemu_cmd=("${qemu_cmd[@]:0:1}" -global arm-smmuv3.stage=nested -bios "$EFI_FD" "${qemu_cmd[@]:1}")
        qemu_cmd[-1]="acpi=force ${qemu_cmd[-1]}"
    fi
}

# The job script's head: the caller's environment that tests read, then `job` (one test through
# kvm-test.sh, see jobs.cmake) and the markers bed.sh reads from the console.
job_head() {  # job_head RESULTS_DIR
    echo "# generated by tests/bed/bed.sh; runs inside L1's chroot of the host's tree (arm64: L1's own root)"
    echo "set -u"
    local v
    for v in $(compgen -e); do
        # The arm64 L1 keeps its own PATH: the host's directories hold x86 programs.
        [ "$arch" = arm64 ] && [ "$v" = PATH ] && continue
        case $v in HOME|PATH|LANG|USER|LOGNAME|ASAN_*|UBSAN_*|LSAN_*|GTEST_*|CONDUIT_*|XDG_*|RK_*) declare -p "$v" ;; esac
    done
    echo "export CONDUIT_BED_RESULTS=$(printf %q "$1") CONDUIT_IN_BED=1 TERM=dumb"
    cat <<'EOF'
n=0
# One test, unless another L1 of this run has claimed it (mkdir is atomic on the host's folder).
job() {  # job TIMEOUT NAME DIR env VAR=... COMMAND...
    local limit=$1 name=$2 dir=$3 rc t0
    shift 3
    n=$((n + 1))
    mkdir "$CONDUIT_BED_RESULTS/claims/$n" 2> /dev/null || return 0
    echo "BED: start $n $name"
    t0=$(date +%s.%N)
    (cd "$dir" && CONDUIT_BED_INSIDE=1 CONDUIT_BED_TEST_TIMEOUT=$limit "$@") < /dev/null > /dev/null 2>&1
    rc=$?
    echo "BED: end $n $rc $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') $name"
}
EOF
}

# Every QEMU of this script runs under `timeout` in a process group of its own; on any exit they
# get TERM (passed on to QEMU), then KILL: nothing of a run outlives the script.
qemu_groups=()
cleanup() {
    [ ${#qemu_groups[@]} -gt 0 ] || return 0
    local g
    local alive=()
    for g in "${qemu_groups[@]}"; do kill -TERM -- "-$g" 2> /dev/null && alive+=("$g"); done
    if [ ${#alive[@]} -gt 0 ]; then
        sleep 1
        for g in "${alive[@]}"; do kill -KILL -- "-$g" 2> /dev/null || true; done
    fi
    qemu_groups=()
}
trap cleanup EXIT
trap 'cleanup; exit 143' TERM INT

start() {  # start LOG : starts qemu_cmd with L1's console in LOG.raw; sets started_pid
    : > "$1.raw"  # before `tail -f` looks for it
    setsid timeout -k 10 "${BED_TIMEOUT:-3600}" "${qemu_cmd[@]}" < /dev/null > "$1.raw" 2>&1 &
    started_pid=$!
    qemu_groups+=("$started_pid")
}
finish() {  # finish LOG PID : waits for that QEMU; LOG gets the console without carriage returns
    local rc=0
    wait "$2" || rc=$?
    tr -d '\r' < "$1.raw" > "$1" && rm -f "$1.raw"
    return $rc
}
describe_boot() {
    local how=""
    [ "$vsmmu" = 1 ] && how="UEFI + ACPI with the CANWBS IORT, nested SMMUv3, "
    say "booting $1 ($how$(basename "$(dirname "$kernel")"), $($qemu_bin --version | head -1 | cut -d'(' -f1), time limit ${BED_TIMEOUT:-3600}s)"
}

# A run that did not end as it should: which job was running, and L1's console tail.
broken() {  # broken LOG WHY
    local log=$1 running
    running=$(awk '$1=="BED:" && $2=="start" {s[$3]=substr($0, index($0, $4))} $1=="BED:" && $2=="end" {delete s[$3]}
                   END {for (k in s) printf "%s%s", (n++ ? "; " : ""), s[k]}' "$log")
    echo "bed.sh: FAILED: $2${running:+, while running $running}"
    echo "---- the last 60 lines of L1's console ($log)"
    console_tail 60 "$log"
}

cmd_fixture() {
    local build
    build=$(cd "$1" && pwd)
    export BED_KEEP_DIR=$build
    local dir=$build/$bed_dir
    rm -rf "$dir/results" "$dir/tally" "$dir/status" "$dir/status.long" "$dir/retried" "$dir"/console-*.log*
    mkdir -p "$dir/results" "$dir/tally"
    local w places
    if [ "$vsmmu" = 1 ]; then w=vsmmu; elif [ "$arch" = arm64 ]; then w=arm64; else w=$(where "$build"); fi
    echo "$w" > "$dir/where"
    if [ "$w" = vsmmu ]; then
        places=vsmmu
        say "the vsmmu bed (arm64, UEFI + ACPI, nested SMMUv3) runs the tests placed vsmmu"
    elif [ "$w" = arm64 ]; then
        places=arm64
        say "the arm64 bed runs the tests placed arm64"
    elif [ "$w" = host ]; then
        places=bed
        say "this machine's KVM runs the KVM tests; the bed runs only the tests that need its devices"
    else
        places="kvm;bed"
        local why=CONDUIT_KVM=bed
        [ "${CONDUIT_KVM:-auto}" = bed ] || why=$(cat "$cache/logs/probe.txt" 2>/dev/null)
        say "no usable KVM here ($why): every KVM test runs in the bed"
    fi
    # The tests of this ctest run: ctest gives its fixture no list, so its own selection options
    # (-R, -E, -L, -LE) are read off its command line and asked back of it.
    local select=() args=() i=0
    if [ "$(basename "$(readlink -f /proc/$PPID/exe 2>/dev/null)")" = ctest ]; then
        mapfile -d '' args < /proc/$PPID/cmdline
        while [ $i -lt ${#args[@]} ]; do
            case ${args[$i]} in
                -R|--tests-regex|-E|--exclude-regex|-L|--label-regex|-LE|--label-exclude)
                    select+=("${args[$i]}" "${args[$((i + 1))]:-}"); i=$((i + 1)) ;;
            esac
            i=$((i + 1))
        done
    fi
    ctest --test-dir "$build" --show-only=json-v1 "${select[@]}" > "$dir/tests.json"
    cmake -DTESTS_JSON="$dir/tests.json" -DLAUNCHER="$here/kvm-test.sh" -DPLACES="$places" \
          -DOUT="$dir/jobs.list" -P "$here/jobs.cmake"
    local njobs
    njobs=$(wc -l < "$dir/jobs.list")
    if [ "$njobs" = 0 ]; then
        echo "no test of this build runs in the bed" > "$dir/status"
        say "no test to run in the bed"; return 0
    fi
    { job_head "$dir/results"; cat "$dir/jobs.list"; } > "$dir/results/jobs.sh"
    mkdir -p "$dir/results/claims"
    echo "the bed was being prepared (kernel, QEMU) when it stopped" > "$dir/status"
    prepare
    # Lanes: L1 machines of one vCPU each, side by side, taking tests from the one list in turn.
    # One L2 at a time per L1: two Conduit guests at once inside one two-vCPU L1 triple-faulted
    # now and then (about 1 run in 15; never with one guest at a time, never with two one-vCPU
    # L1s: docs/testing.md), so the two host cores are used by two L1s instead.
    # The arm64 bed: one L1 of two vCPUs by default (its guests run two vCPUs; the triple faults of
    # two guests at once were x86's nested SVM under TCG, docs/testing.md).
    local lanes=${BED_LANES:-2} l t0 rc=0 logs=()
    [ "$arch" = arm64 ] && lanes=${BED_LANES:-1}
    [ "$njobs" -lt "$lanes" ] && lanes=$njobs
    describe_boot "$lanes $arch L1 machine(s) of $([ "$arch" = arm64 ] && echo 2 || echo 1) vCPU for $njobs tests; consoles: $dir/console-<n>.log"
    echo "L1 did not finish its run: see $dir/console-*.log" > "$dir/status"
    t0=$(date +%s)
    # Each lane is one L1 at a time. A lane whose L1 ended before its jobs did (it stopped
    # responding: a job ran BED_STALL_MARGIN past its own timeout without L1's in-guest timeout
    # ending it; or L1 panicked or reset) files the job it was running as failed, with the reason
    # and the console's tail, and a fresh L1 takes the tests not yet claimed (up to 8 per lane). The
    # job it was running gets one more go in that fresh L1 before it is filed as failed.
    # The fixture itself fails only when an L1 never reached userspace: then nothing can run.
    local -A pid_of log_of restarts
    local broke=() why active=() running never=0 nlost=0 nretried=0
    local ordinal=(first second third fourth fifth sixth seventh eighth ninth)
    for l in $(seq 1 "$lanes"); do start_lane "$l" "$dir" 0; active+=("$l"); done
    while [ ${#active[@]} -gt 0 ]; do
        sleep 2
        local still=()
        for l in "${active[@]}"; do
            if kill -0 "${pid_of[$l]}" 2> /dev/null; then still+=("$l"); continue; fi
            rc=0
            finish "${log_of[$l]}" "${pid_of[$l]}" || rc=$?
            logs+=("${log_of[$l]}")
            grep -q '^BED: done' "${log_of[$l]}" && continue
            if ! grep -q '^BED: ready' "${log_of[$l]}"; then
                never=1
                broke+=("${log_of[$l]}:L1 never reached userspace")
                continue
            fi
            if grep -q silent "${log_of[$l]}.stalled" 2> /dev/null; then
                why="L1 stopped responding: its console had no heartbeat for ${BED_SILENCE:-90} s"
            elif [ -f "${log_of[$l]}.stalled" ]; then
                why="L1 stopped responding: a test had no end ${BED_STALL_MARGIN:-120} s past its timeout, which L1's own watchdog did not enforce"
            elif [ $rc = 124 ]; then
                why="L1 reached its time limit (BED_TIMEOUT=${BED_TIMEOUT:-3600}s)"
            else
                why="L1 ended before its jobs did (it panicked, reset or powered off; QEMU exit status $rc)"
            fi
            running=$(running_jobs "${log_of[$l]}")
            for n in $running; do
                # A job whose L1 ended under it runs again in a fresh L1, up to BED_ATTEMPTS (3) times
                # in all (the wedge seen now and then is L1's, not the test's verdict); what each
                # attempt saw stays in its output.
                local tries=0
                [ -e "$dir/retried/$n" ] && tries=$(grep -c '^\[bed\] ---- the ' "$dir/retried/$n")
                if [ $rc != 124 ] && [ "${restarts[$l]:-0}" -lt 8 ] && [ $((tries + 1)) -lt "${BED_ATTEMPTS:-3}" ]; then
                    mkdir -p "$dir/retried"
                    {
                        echo "[bed] ${ordinal[$tries]} attempt: $why, while this test ran; it ran again in a fresh L1."
                        console_story "${log_of[$l]}"
                        echo "[bed] ---- the ${ordinal[$((tries + 1))]} attempt:"
                    } >> "$dir/retried/$n"
                    rmdir "$dir/results/claims/$n"
                    nretried=$((nretried + 1))
                else
                    file_failed "$dir" "$n" "$why" "${log_of[$l]}"; nlost=$((nlost + 1))
                fi
            done
            broke+=("${log_of[$l]}:$why")
            if [ $rc != 124 ] && [ "${restarts[$l]:-0}" -lt 8 ] &&
               [ "$(ls "$dir/results/claims" | wc -l)" -lt "$njobs" ]; then
                restarts[$l]=$(( ${restarts[$l]:-0} + 1 ))
                say "lane $l: $why, while running $(job_names "$dir" $running); a fresh L1 takes the remaining tests"
                start_lane "$l" "$dir" "${restarts[$l]}"; still+=("$l")
            fi
        done
        active=("${still[@]}")
    done
    # Retried jobs: their earlier attempts go in front of what the last one filed (or, if the last
    # never ran, the job fails with the earlier attempts' story).
    local f key
    for f in "$dir"/retried/*; do
        [ -e "$f" ] || continue
        n=$(basename "$f")
        key=$(job_key "$dir" "$n")
        if [ -f "$dir/results/$key.rc" ]; then
            cat "$f" "$dir/results/$key.out" > "$dir/results/$key.out.tmp" 2>/dev/null
            mv "$dir/results/$key.out.tmp" "$dir/results/$key.out"
        else
            cp "$f" "$dir/results/$key.out"; echo "[bed] the last attempt did not run" >> "$dir/results/$key.out"
            echo 1 > "$dir/results/$key.rc"
        fi
    done
    cat "${logs[@]}" > "$dir/console.log"
    local npass nfail
    npass=$(grep -c '^BED: end [0-9]* 0 ' "$dir/console.log" || true)
    nfail=$(grep -E '^BED: end [0-9]+ [0-9]+ ' "$dir/console.log" | grep -vc '^BED: end [0-9]* 0 ' || true)
    grep -hE '^BED: (ready|end)' "${logs[@]}" |
        awk '$2=="end"{printf "  %-4s %7ss  %s\n", ($4=="0"?"ok":"FAIL"), $5, substr($0, index($0,$6))} $2=="ready"{print "  " $0}' || true
    local lost=""
    [ "$nlost" = 0 ] || lost=", and $nlost failed when their L1 ended"
    [ "$nretried" = 0 ] || lost="$lost; $nretried ran again in a fresh L1 after theirs ended"
    say "L1 ran $((npass + nfail)) of $njobs tests ($nfail failed)$lost in $(($(date +%s) - t0)) s"
    echo "L1 ran its jobs but filed no result for this test (see $dir/console.log)" > "$dir/status"
    if [ ${#broke[@]} -gt 0 ]; then
        : > "$dir/status.long"
        for b in "${broke[@]}"; do broken "${b%%:*}" "${b#*:}" | tee -a "$dir/status.long"; done
        echo "${broke[0]#*:}; the fixture kvm_bed printed L1's console tail (${broke[0]%%:*})" > "$dir/status"
    fi
    return $never
}

# The numbers of the jobs LOG shows started and not ended.
running_jobs() {
    awk '$1=="BED:" && $2=="start" {s[$3]=1} $1=="BED:" && $2=="end" {delete s[$3]} END {for (k in s) print k}' "$1"
}
job_names() {  # job_names DIR N... : those jobs' test names, for messages
    local dir=$1 n out=()
    shift
    for n in "$@"; do out+=("$(awk -v n="$n" '$1=="job" {if (++i == n) {print $3; exit}}' "$dir/jobs.list" | tr -d "'")"); done
    [ ${#out[@]} -gt 0 ] || { echo "no test"; return; }
    local IFS=,; echo "${out[*]}"
}

# start_lane LANE DIR RESTART: one L1 of the lane, and its watchdog.
start_lane() {
    local l=$1 dir=$2 r=$3 log
    log=$dir/console-$l.log
    [ "$r" = 0 ] || log=$dir/console-$l.$r.log
    rm -f "$log.stalled"
    local vcpus=1
    [ "$arch" = arm64 ] && vcpus=2
    machine "$dir/results" "bed.job=$dir/results/jobs.sh bed.lane=$l" $vcpus
    start "$log"
    pid_of[$l]=$started_pid log_of[$l]=$log
    watch_lane "$log" "$started_pid" "$dir/jobs.list" > /dev/null 2>&1 &
}
# watch_lane LOG PID JOBS: stops an L1 that stopped responding, leaving the job's number and why in
# LOG.stalled: its console, which has a heartbeat every 10 s from when L1 is ready (init.sh), was silent for
# BED_SILENCE (default 90) s; or its current job ran BED_STALL_MARGIN (default 120) s past its own
# timeout (kvm-test.sh in L1 stops a test at its timeout, so only a wedged L1 gets here). It runs
# in the background beside the lane: no errexit here, where a poll that finds no line yet is normal.
watch_lane() {
    set +e +o pipefail
    local log=$1 pid=$2 jobs=$3 cur="" since=0 last n limit size lastsize=-1 heard
    heard=$(date +%s)
    stop_l1() { echo "$1" > "$log.stalled"; kill -TERM -- "-$pid" 2> /dev/null; sleep 2; kill -KILL -- "-$pid" 2> /dev/null; }
    while kill -0 "$pid" 2> /dev/null; do
        sleep 5
        size=$(stat -c %s "$log.raw" 2> /dev/null)
        [ "$size" = "$lastsize" ] || { lastsize=$size; heard=$(date +%s); }
        if [ $(( $(date +%s) - heard )) -gt "${BED_SILENCE:-90}" ] && grep -q '^BED: ready' "$log.raw"; then
            stop_l1 "$cur silent"
            return 0
        fi
        last=$(tr -d '\r' < "$log.raw" 2> /dev/null | grep -E '^BED: (start|end) ' | tail -1)
        case $last in
            "BED: start "*)
                n=$(echo "$last" | cut -d' ' -f3)
                [ "$n" = "$cur" ] || { cur=$n; since=$(date +%s); }
                limit=$(awk -v n="$n" '$1=="job" {if (++i == n) {print $2; exit}}' "$jobs")
                if [ $(( $(date +%s) - since )) -gt $(( ${limit:-600} + ${BED_STALL_MARGIN:-120} )) ]; then
                    stop_l1 "$n"
                    return 0
                fi ;;
            *) cur="" ;;
        esac
    done
}
# console_tail N LOG: LOG's last N lines, L1's heartbeats left out.
console_tail() {
    grep -v '^BED: beat ' "$2" | tail -"$1"
}
# console_story LOG: what a test's output shows of the L1 that ended under it.
console_story() {
    echo "[bed] The last 30 lines of that L1's console ($1):"
    console_tail 30 "$1"
}
# job_key DIR N: the key kvm-test.sh files job N's result under: the sha1 of the test's command
# (its arguments after BUILD_DIR and PLACE).
job_key() {
    local line
    line=$(awk -v n="$2" '$1=="job" {if (++i == n) {print; exit}}' "$1/jobs.list")
    (job() { shift 3; while [ $# -gt 0 ] && [ "$1" != "$here/kvm-test.sh" ]; do shift; done; shift 3
             printf '%s\0' "$@" | sha1sum | cut -c1-16; }; eval "$line")
}
# file_failed DIR N WHY LOG: job N's result, failed, saying what happened, as kvm-test.sh replays it.
file_failed() {
    local dir=$1 n=$2 why=$3 log=$4 key
    key=$(job_key "$dir" "$n")
    {
        echo "[bed] $why, while this test ran."
        console_story "$log"
    } > "$dir/results/$key.out"
    echo 1 > "$dir/results/$key.rc"
}

cmd_run() {
    [ $# -gt 0 ] || usage
    local dir
    dir=$(mktemp -d "$cache/run.XXXXXX")
    {
        job_head "$dir"
        printf 'cd %q || exit 1\necho "BED: begin"\n' "$PWD"
        printf '%q ' "$@"; echo
        echo 'echo "BED: exit $?"'
    } > "$dir/job.sh"
    prepare
    machine "$dir" "bed.job=$dir/job.sh"
    local log=$cache/logs/run.log rc=0
    [ "$arch" = arm64 ] && log=$cache/logs/run-arm64.log
    [ "$vsmmu" = 1 ] && log=$cache/logs/run-vsmmu.log
    describe_boot "L1 (console: $log)"
    start "$log"
    local pid=$started_pid
    { tail -f --pid="$pid" "$log.raw" | tr -d '\r' | show_between_markers; } &
    finish "$log" "$pid" || rc=$?
    wait || true
    local status
    status=$(sed -n 's/^BED: exit \([0-9]*\)$/\1/p' "$log" | tail -1)
    rm -rf "$dir"
    if [ -z "$status" ]; then
        broken "$log" "L1 did not run the command to its end (qemu exit $rc)" >&2
        return 1
    fi
    return "$status"
}
# The command's own lines as they come: everything between the two markers.
show_between_markers() { awk '/^BED: exit /{exit} s{print; fflush()} /^BED: begin/{s=1}'; }

cmd_shell() {
    prepare
    local dir
    dir=$(mktemp -d "$cache/run.XXXXXX")
    machine "$dir" "bed.shell=1"
    "${qemu_cmd[@]}"
    rm -rf "$dir"
}

[ $# -gt 0 ] || usage
sub=$1; shift
case $sub in
    where) where "${1:-}" ;;
    fixture) [ $# = 1 ] || usage; cmd_fixture "$1" ;;
    run) [ "${1:-}" = -- ] && shift; cmd_run "$@" ;;
    shell) cmd_shell ;;
    *) usage ;;
esac
