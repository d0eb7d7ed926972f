#!/usr/bin/env bash
# arm64-vsmmu.sh BUILD_DIR [CONFIG] - Conduit's virtual SMMUv3 (issue 13) with a Linux guest: Debian
# trixie's arm64 cloud kernel 6.12 (its arm-smmu-v3 driver is built in; VS_KERNEL for another Image)
# with the arm64 guest kit's initramfs, on Conduit's arm64 build, with the vsmmu
# bed's NVMe passed through behind the vSMMU, whose stream table and stage-1 tables the guest owns
# and L1's SMMUv3 walks in nested mode (ctest linux.vsmmu.nvme, label vsmmu, place vsmmu: inside
# tests/bed/bed.sh --arch arm64 --vsmmu). CONFIG defaults to configs/arm64-vsmmu-nvme.json. The
# guest is the arm64 guest kit (arm64-guest.sh; its /init, arm64-guest-init.sh, runs the vSMMU
# steps when the NVMe has an IOMMU group), `quiet` console. Checks, from the guest's console,
# Conduit's log (--log-level debug) and its --stats file:
#   userspace      the guest's uptime when its userspace starts
#   smmu-probe     the guest's arm-smmu-v3 driver probed the vSMMU (its features line)
#   iommu-group    the NVMe is in an IOMMU group of its own whose default domain is DMA (stage 1)
#   nvme-probe     the guest's nvme driver bound the device with MSI-X
#   block-io       a 4 KiB O_DIRECT write and read-back through the guest's stage 1
#   msi-x          the nvme queues' ITS-MSI lines counted interrupts, an I/O queue's among them:
#                  the device's MSI writes went through stage 1 to the ITS doorbell
#   fault          the guest-provoked translation fault (the admin queues at an unmapped IOVA, the
#                  doorbell rung, nvme unbound) reached the guest's event queue: its kernel log has
#                  "arm-smmu-v3 ...: event 0x10 received" (F_TRANSLATION); Conduit delivered it
#                  (stats events_delivered, its log's vSMMU event line)
#   ste-bypass     the group switched to identity: nvme bound again and its I/O worked
#   ste-translate  back to DMA: nvme bound again and its I/O worked
#   ste-states     Conduit moved the stream through abort and stage 1 at the guest's probe, then
#                  bypass and stage 1 at the switches (its debug lines in that order; stats
#                  ste_changes counting as many)
#   invalidations  Conduit forwarded invalidation commands in IOMMU_HWPT_INVALIDATE calls (stats
#                  invalidation_commands_forwarded >= hwpt_invalidate_ioctls > 0), none refused
#   power-off      the guest powered off by PSCI SYSTEM_OFF and Conduit exited 0
#   nothing-left   no process holds /dev/vfio or /dev/iommu, the NVMe is still vfio-pci's
# Prints "VS: PASS|FAIL <check>: <detail>"; exits 0 iff none failed. Runs under L1's static bash with
# busybox's tools.
#
# What it expects of Conduit (issue 13's wiring): the config's top-level "viommu": {"type": "smmuv3"}
# and the device's "viommu": true; in the --stats file an object with the keys ste_changes {abort,
# bypass, s1}, invalidation_commands_forwarded, hwpt_invalidate_ioctls, hwpt_invalidate_errors,
# events_delivered, events_lost; debug log lines "vSMMU: StreamID 0x.. -> abort|bypass|S1" and
# "vSMMU: event F_TRANSLATION (0x10) StreamID ...".
set -uo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
config=${2:-$here/configs/arm64-vsmmu-nvme.json}
conduit=$build/conduit
NVME=0000:00:02.0
CHECK_TAG=VS
. "$here/checks.sh"

kit=$("$here/arm64-guest.sh" --offline) || { echo "VS: FAIL kit: no arm64 guest kit prepared"; exit 1; }
# The guest's kernel: Debian trixie's arm64 cloud kernel (6.12; ctest's fixture vsmmu_guest_kernel
# fetches it), which honours reserved-memory iommu-addresses; the kit's bookworm 6.1 does not, and
# without the MSI doorbell's identity map at stage 1 its NVMe's MSI writes fault (2026-12-03).
if [ -z "${VS_KERNEL:-}" ]; then
    kdir=$("$here/../integration/fetch-debian-kernel.sh" --offline --arch arm64 --suite trixie) ||
        { echo "VS: FAIL kernel: no trixie arm64 cloud kernel (tests/integration/fetch-debian-kernel.sh --arch arm64 --suite trixie)"; exit 1; }
    VS_KERNEL=$kdir/Image
fi
[ -x "$conduit" ] || { echo "VS: FAIL conduit: no $conduit (ARCH=arm64 scripts/build.sh)"; exit 1; }
# VS_KERNEL: another arm64 Image for the guest (the kit's initramfs stays).
guest_run "${VS_TIMEOUT:-300}" --log-level debug run --config "$config" \
    --kernel "$VS_KERNEL" --initrd "$kit/initrd.cpio" --cmdline "console=ttyS0 quiet panic=-1" \
    --stats "$work/stats.json"
if [ $rc = 0 ]; then grep -E '^GUEST' "$work/out.txt"; else tail -60 "$work/out.txt"; fi
grep -vE '\] \[debug\] ' "$work/err.txt" | tail -8
grep -E 'vSMMU' "$work/err.txt" | tail -30
echo "VS: conduit exit $rc after ${secs}s (guest kernel $VS_KERNEL)"
# A number from the stats file (the first "KEY": N in it); stats keys are unique but for the
# ste_changes ones, which are asked for inside that object.
touch "$work/stats.json"  # none when Conduit failed early: every number below is then empty
jnum() { grep -oE "\"$1\": *[0-9]+" "$work/stats.json" | head -1 | grep -oE '[0-9]+$'; }
ste() { tr -d '\n ' < "$work/stats.json" | grep -oE '"ste_changes":\{[^}]*\}' | grep -oE "\"$1\":[0-9]+" | grep -oE '[0-9]+$'; }

check userspace "guest uptime $(line 'userspace at ')" grep -q '^GUEST: userspace at [0-9.]* s$' "$work/out.txt"
check smmu-probe "$(line 'smmu ')" sh -c "echo '$(line 'smmu ')' | grep -q '^arm-smmu-v3 .*features'"
grouptype=$(line 'iommu group ' | awk '{print $3}')
check iommu-group "$(line 'iommu ')" sh -c "echo '$(line 'iommu ')' | grep -qE '^group [0-9]+ type DMA(-FQ)? devices 0000:00:01.0 \$'"
check nvme-probe "$(line 'nvme ')" grep -q '^GUEST: nvme .* driver nvme msi mode msix $' "$work/out.txt"
check block-io "4 KiB written and read back with O_DIRECT through stage 1 (group type ${grouptype:-?}): $(line 'block io ')" \
    test "$(line 'block io ')" = ok
irqs=$(line 'interrupts ' | cut -d' ' -f1)
ioq=$(grep '^GUEST-IRQ: .* nvme0q[1-9][0-9]*$' "$work/out.txt" | awk '{for (i = 3; i <= 4; i++) t += $i} END {print t + 0}')
# The irq chip: "ITS-MSI" (Linux 6.1), "ITS-PCI-MSIX-<bdf>" (6.12's per-device MSI domains).
check msi-x "$(line 'interrupts '); on the I/O queues $ioq" \
    sh -c "[ '${irqs:-0}' -gt 0 ] && [ '${ioq:-0}' -gt 0 ] && echo '$(line 'interrupts ' | sed 's/.*lines: //')' | grep -qE '^(ITS-MSI|ITS-PCI-MSIX-[0-9a-f:.]+) \$'"
grep '^GUEST-SMMU: .*arm-smmu-v3.*0x' "$work/out.txt" | head -8 | sed 's/^GUEST-SMMU: */VS: guest smmu /'
# The provoked fault, not another one (an MSI write that stage 1 does not map faults too): the
# controller fetches the admin command at 0xdead0000 (QEMU's NVMe reads it 4 bytes at a time).
events=$(grep -c '^GUEST-SMMU: .*arm-smmu-v3.*event 0x10 received' "$work/out.txt")
guestaddr=$(grep -c '^GUEST-SMMU: .*arm-smmu-v3.*0x00000000dead00[0-3][0-9a-f]$' "$work/out.txt")
hostev=$(grep -cE '\[debug\] vSMMU: event [A-Z_]+ \(0x10\) StreamID 0x8 addr 0xdead00[0-3][0-9a-f]$' "$work/err.txt")
otherev=$(grep -E '\[debug\] vSMMU: event ' "$work/err.txt" | grep -vcE 'addr 0xdead00[0-3][0-9a-f]$')
check fault "$(line 'fault '); guest log: $events \"event 0x10 received\", $guestaddr record word(s) 0xdead00xx; Conduit: events_delivered $(jnum events_delivered), events_lost $(jnum events_lost), $hostev F_TRANSLATION line(s) for StreamID 0x8 at 0xdead00xx ($otherev other event line(s))" \
    sh -c "[ $events -gt 0 ] && [ $guestaddr -gt 0 ] && [ '$(jnum events_delivered)' -gt 0 ] 2>/dev/null && [ $hostev -gt 0 ]"
check ste-bypass "$(line 'identity ')" sh -c "echo '$(line 'identity ')' | grep -q '^type identity bound block io ok\$'"
check ste-translate "$(line 'dma ')" sh -c "echo '$(line 'dma ')' | grep -qE '^unbind unbound type DMA(-FQ)? bound block io ok\$'"
logged() { grep -cE "\[debug\] vSMMU: StreamID 0x8 -> $1 " "$work/err.txt"; }
# The stream's configurations in order (Conduit's debug lines). Linux 6.12, 2026-12-03: the probe
# gives bypass, abort, S1; the identity switch bypass; the DMA switch S1; power-off bypass (SMMUEN
# cleared, GBPA). 6.1 detaches to abort before each switch. Either way: an abort, a stage 1 after
# it, then a bypass and a stage 1 again, and the stats counting as many.
seq=$(grep -oE '\[debug\] vSMMU: StreamID 0x8 -> (abort|bypass|S1) ' "$work/err.txt" | awk '{print $NF}' | tr '\n' ' ')
check ste-states "StreamID 0x8 went: ${seq:-nowhere}; stats ste_changes abort $(ste abort) bypass $(ste bypass) s1 $(ste s1)" \
    sh -c "echo '$seq' | grep -qE 'abort .*S1 .*bypass .*S1 ' && [ '$(ste abort)' -ge 1 ] && [ '$(ste bypass)' -ge 1 ] && [ '$(ste s1)' -ge 2 ] && [ '$(ste abort)' = $(logged abort) ] && [ '$(ste bypass)' = $(logged bypass) ] && [ '$(ste s1)' = $(logged S1) ]" 2>/dev/null
fwd=$(jnum invalidation_commands_forwarded) calls=$(jnum hwpt_invalidate_ioctls) ierr=$(jnum hwpt_invalidate_errors)
check invalidations "commands forwarded ${fwd:-?} in ${calls:-?} IOMMU_HWPT_INVALIDATE ioctl(s), ${ierr:-?} refused" \
    sh -c "[ '${calls:-0}' -gt 0 ] && [ '${fwd:-0}' -ge '${calls:-0}' ] && [ '${ierr:-x}' = 0 ]" 2>/dev/null
check_power_off 'exit: guest powered off: .*(shutdown, PSCI SYSTEM_OFF)'
check_nothing_left "$NVME"
echo "VS: stats: $(tr -d '\n' < "$work/stats.json" | tr -s ' ' | cut -c1-1500)"
exit $((failures > 0))
