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
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /usr/bin /usr/sbin /host
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
arg() { for a in $(cat /proc/cmdline); do case $a in "$1"=*) echo "${a#*=}" ;; esac; done; }
die() { echo "BED: failed: $*"; poweroff -f; }

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
mount -t devtmpfs devtmpfs /host/dev
# What udev would add: /dev/fd (bash's process substitution) and the standard streams.
ln -sf /proc/self/fd /host/dev/fd
for n in 0:stdin 1:stdout 2:stderr; do ln -sf /proc/self/fd/${n%%:*} /host/dev/${n#*:}; done
mkdir -p /host/dev/shm /host/dev/pts /host/dev/hugepages 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t hugetlbfs hugetlbfs /host/dev/hugepages
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
# L1 gets a fresh, writable /tmp, /run and /var/tmp; the host directories the jobs need that live
# under them (bed.keep=: a clone, build or cache in /tmp) are bound back at their own paths.
keep=$(arg bed.keep | tr , ' ')
i=0; for p in $keep; do mkdir -p /keep/$i; mount --bind "/host$p" /keep/$i || die "bed.keep: $p"; i=$((i + 1)); done
for t in tmp run var/tmp; do mount -t tmpfs -o mode=1777 tmpfs /host/$t; done
i=0; for p in $keep; do mkdir -p "/host$p"; mount --bind /keep/$i "/host$p"; i=$((i + 1)); done
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
# Last, so a results folder under /tmp is not hidden by L1's own /tmp; the job script lives in it.
results=$(arg bed.results)
mkdir -p "/host$results" 2>/dev/null  # exists on the host; under /tmp only in L1's tmpfs so far
mount -t 9p -o "$p9" results "/host$results" || die "mounting the results folder $results (9p results)"

echo "BED: ready at $(cut -d' ' -f1 /proc/uptime)s: $(uname -r), $(nproc) CPUs, $(ls /dev/kvm 2>/dev/null)," \
     "vfio groups: $(ls /dev/vfio | grep -v vfio | tr '\n' ' ')"
if [ "$(arg bed.shell)" = 1 ]; then
    echo "BED: shell: the host's tree is the root of 'chroot /host bash'"
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
chroot /host /bin/bash "$job"
echo "BED: done $?"
poweroff -f
