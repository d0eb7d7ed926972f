#!/bin/busybox sh
# /init of the nested-KVM bed's L1 (bed.sh packs it with a static busybox into the initramfs).
#
# L1 boots, hands the devices named by bed.vfio= to vfio-pci, mounts the host's whole file tree
# read-only over virtio-9p and the bed's results folder writable at the same host path, then runs
# the job script bed.job= (a host path inside the results folder) in a chroot of the host's tree with L1's own /dev (KVM, VFIO,
# iommufd), /proc, /sys and a fresh /tmp. So the jobs run the host's own build with the host's own
# libraries at the host's paths: nothing is packed or copied. Console protocol (bed.sh reads it):
#   BED: ready ...       L1 reached userspace and mounted everything
#   BED: <job's own lines>
#   BED: done <status>   the job script ended with <status>
# then L1 powers off. bed.shell=1 leaves a shell on the console instead (bed.sh shell).
#
# bed.tree=paths (the arm64 bed, bed.sh --arch arm64): L1 cannot run the x86 host's programs, so
# there is no chroot. L1 keeps its own root (busybox, and a static bash for the job scripts and
# kvm-test.sh, both arm64) and the host's directories appear at their own paths: every top-level
# directory of the host but the system ones (/bin, /sbin, /lib*, /usr, /dev, /proc, /sys, /tmp, /run)
# is bound from /host, so the jobs' paths (the build, the source tree, ~/.cache) resolve as on the
# host and arm64 programs built there run by path: statically linked ones anywhere, dynamically
# linked ones through the host's multiarch arm64 libraries (libc6:arm64), which /lib and
# /usr/lib/aarch64-linux-gnu point at.
# A line of its own first: UEFI firmware (the vsmmu bed) leaves terminal escapes on the console
# with no newline after them, and bed.sh looks for "BED: ..." at the start of a line.
/bin/busybox echo
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /usr/bin /usr/sbin /host
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The last value of a kernel argument wins, so BED_APPEND can override one (bed.vfio= binds nothing).
arg() { local v=; for a in $(cat /proc/cmdline); do case $a in "$1"=*) v=${a#*=} ;; esac; done; echo "$v"; }
die() { echo "BED: failed: $*"; poweroff -f; }

# bed.acpidump=TABLE (the vsmmu bed's first boot, bed.sh prepare_vsmmu): copy that ACPI table as
# the firmware gave it into the results folder, and power off.
t=$(arg bed.acpidump)
if [ -n "$t" ]; then
    mkdir -p /results
    mount -t 9p -o trans=virtio,version=9p2000.L results /results || die "mounting the results folder (9p results)"
    cp "/sys/firmware/acpi/tables/$t" "/results/$t" || die "no ACPI table $t (booted without ACPI?)"
    umount /results
    echo "BED: acpidump $t at $(cut -d' ' -f1 /proc/uptime)s"
    poweroff -f
fi

for d in $(arg bed.vfio | tr , ' '); do
    [ -e /sys/bus/pci/devices/$d ] || die "no PCI device $d in L1 (bed.vfio)"
    echo vfio-pci > /sys/bus/pci/devices/$d/driver_override
    echo $d > /sys/bus/pci/drivers_probe
    [ -e /sys/bus/pci/devices/$d/iommu_group ] || die "$d has no IOMMU group"
done

# The host's tree: read-only, page cache kept (nothing changes it while L1 runs). The results
# folder: writable, no cache, so every byte is on the host when L1 powers off.
p9="trans=virtio,version=9p2000.L,msize=524288"
mount -t 9p -o "$p9,ro,cache=loose" hostroot /host || die "mounting the host's tree (9p hostroot)"
# R: the root the jobs see: the host's tree (chroot), or L1's own root with the host's paths in it.
tree=$(arg bed.tree)
if [ "$tree" = paths ]; then
    R=
    for d in /host/*; do
        n=${d#/host/}
        case $n in bin|sbin|lib|lib32|lib64|libx32|usr|dev|proc|sys|tmp|run|host|keep|init|lost+found) continue ;; esac
        [ -d "$d" ] && [ ! -L "$d" ] || continue
        mkdir -p "/$n" && mount --bind "$d" "/$n" || die "binding the host's /$n"
    done
    mkdir -p /lib /usr/lib /tmp /run
    for l in /lib/ld-linux-aarch64.so.1 /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do
        [ -e "/host$l" ] && ln -sfn "/host$(readlink -f "/host$l" | sed 's|^/host||')" "$l"
    done
else
    R=/host
    mount -t devtmpfs devtmpfs /host/dev
    mount -t proc proc /host/proc
    mount -t sysfs sysfs /host/sys
fi
# What udev would add: /dev/fd (bash's process substitution) and the standard streams.
ln -sf /proc/self/fd $R/dev/fd
for n in 0:stdin 1:stdout 2:stderr; do ln -sf /proc/self/fd/${n%%:*} $R/dev/${n#*:}; done
mkdir -p $R/dev/shm $R/dev/pts $R/dev/hugepages 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t hugetlbfs hugetlbfs $R/dev/hugepages
# L1 gets a fresh, writable /tmp, /run and /var/tmp; the host directories the jobs need that live
# under them (bed.keep=: a clone, build or cache in /tmp) are bound back at their own paths.
keep=$(arg bed.keep | tr , ' ')
i=0; for p in $keep; do mkdir -p /keep/$i; mount --bind "/host$p" /keep/$i || die "bed.keep: $p"; i=$((i + 1)); done
for t in tmp run var/tmp; do [ -d "$R/$t" ] && mount -t tmpfs -o mode=1777 tmpfs $R/$t; done
i=0; for p in $keep; do mkdir -p "$R$p"; mount --bind /keep/$i "$R$p"; i=$((i + 1)); done
if [ "$tree" = paths ]; then
    # THP for anonymous memory and for memfd (shmem) mappings that ask (MADV_HUGEPAGE): THP took the
    # arm64 L2 boot from a median 4.9 s to 3.4 s (../shared/arm64bed/REPORT.md).
    echo always > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
    echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null
else
    echo madvise > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
fi
# Last, so a results folder under /tmp is not hidden by L1's own /tmp; the job script lives in it.
results=$(arg bed.results)
mkdir -p "$R$results" 2>/dev/null  # exists on the host; under /tmp only in L1's tmpfs so far
mount -t 9p -o "$p9" results "$R$results" || die "mounting the results folder $results (9p results)"

# The vsmmu bed's IORT came in through the initrd (ACPI table upgrade): say so on the ready line.
acpi=
[ -d /sys/firmware/acpi/tables ] && acpi=" ACPI$(dmesg | grep -q 'Table Upgrade: override \[IORT' && echo ', IORT upgraded')"
if [ "$tree" = paths ]; then
    echo "BED: ready at $(cut -d' ' -f1 /proc/uptime)s: $(uname -r) $(uname -m), $(nproc) CPUs, $(ls /dev/kvm 2>/dev/null)," \
         "vfio groups: $(ls /dev/vfio | grep -v vfio | grep -v devices | tr '\n' ' ')cdevs: $(ls /dev/vfio/devices 2>/dev/null | tr '\n' ' ')$(ls /dev/iommu 2>/dev/null)$acpi"
else
    echo "BED: ready at $(cut -d' ' -f1 /proc/uptime)s: $(uname -r), $(nproc) CPUs, $(ls /dev/kvm 2>/dev/null)," \
         "vfio groups: $(ls /dev/vfio | grep -v vfio | tr '\n' ' ')"
fi
if [ "$(arg bed.shell)" = 1 ]; then
    if [ "$tree" = paths ]; then
        echo "BED: shell: the host's directories are at their own paths (arm64 programs only)"
    else
        echo "BED: shell: the host's tree is the root of 'chroot /host bash'"
    fi
    setsid cttyhack sh
    poweroff -f
fi
job=$(arg bed.job)
# A test lane's heartbeat on the console, so the host's watchdog tells a wedged L1 (no beat for
# BED_SILENCE s) from a slow test within two minutes rather than at the end of the test's own
# timeout. Not for `bed.sh run`, whose console is the command's own output.
if [ -n "$(arg bed.lane)" ]; then
    ( while :; do echo "BED: beat $(cut -d' ' -f1 /proc/uptime)"; sleep 10; done ) &
fi
if [ "$tree" = paths ]; then
    PATH=/bin:/sbin:/usr/bin:/usr/sbin /bin/bash "$job"
else
    chroot /host /bin/bash "$job"
fi
echo "BED: done $?"
poweroff -f
