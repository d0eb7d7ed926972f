// buildCpuid: the CPUID table a vCPU gets (KVM_SET_CPUID2), from what KVM supports.
//
// Topology: one package, one core per vCPU, one thread per core; the APIC id (xAPIC and x2APIC)
// of vCPU i is i, matching the MP table (mptable.h) and the payload ABI (rsi = index).
// Features: KVM_GET_SUPPORTED_CPUID already lists only what KVM can virtualise; on top of that we
// remove what Conduit itself does not provide:
//   - leaf 6 (thermal/power management) and leaf 0xa (architectural PMU): no power management
//     MSRs and no PMU are exposed (the host's KVM has none to give anyway, leaf 0xa is 0 here);
//   - leaf 1 ECX TSC_DEADLINE: KVM offers it only together with an in-kernel LAPIC, and this code
//     cannot know how the Machine sets up the irqchip; the LAPIC one-shot timer is always there
//     and Linux falls back to it, so leaving it off is the simple, always-correct choice;
//   - leaf 1 ECX VMX and 0x80000001 ECX SVM: no nested virtualisation;
//   - leaf 1 ECX MONITOR: mwait would halt a vCPU in ways the VMM does not track.
// And we add the hypervisor bit (leaf 1 ECX[31]) so guests know they are virtualised. The KVM
// signature leaves (0x40000000..) are kept as KVM reports them: Linux uses them for kvmclock and
// the PV features.
#include <algorithm>

#include "vmm/arch/x86_64/boot.h"

namespace conduit::vmm::x86 {

namespace {

constexpr uint32_t kLeaf1EcxMonitor = 1u << 3;
constexpr uint32_t kLeaf1EcxVmx = 1u << 5;
constexpr uint32_t kLeaf1EcxTscDeadline = 1u << 24;
constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kExt1EcxSvm = 1u << 2;

// Bits of APIC id needed to number `count` cores: ceil(log2(count)).
uint32_t idBits(unsigned count) {
    uint32_t bits = 0;
    while ((1u << bits) < count)
        ++bits;
    return bits;
}

// Leaf 0xB / 0x1F: level 0 SMT (1 thread per core), level 1 core (`count` cores), then the
// terminating invalid level. EDX is the x2APIC id at every sub-leaf.
void addTopologyLeaf(std::vector<kvm_cpuid_entry2>& out, uint32_t function, unsigned index, unsigned count) {
    for (uint32_t sub = 0; sub < 3; ++sub) {
        kvm_cpuid_entry2 e{};
        e.function = function;
        e.index = sub;
        e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        e.edx = index;
        if (sub == 0) {
            e.eax = 0;              // shift to the next level's id: 0 bits of thread id
            e.ebx = 1;              // logical processors at this level
            e.ecx = (1u << 8) | 0;  // type SMT, level number 0
        } else if (sub == 1) {
            e.eax = idBits(count);
            e.ebx = count;
            e.ecx = (2u << 8) | 1;  // type Core, level number 1
        } else {
            e.ecx = sub;  // type 0: invalid, ends the enumeration
        }
        out.push_back(e);
    }
}

}  // namespace

std::vector<kvm_cpuid_entry2> buildCpuid(const std::vector<kvm_cpuid_entry2>& supported, unsigned index,
                                         unsigned count) {
    count = std::max(count, 1u);
    const uint32_t coreBits = idBits(count);
    std::vector<kvm_cpuid_entry2> out;
    bool have0xb = false, have0x1f = false;
    for (kvm_cpuid_entry2 e : supported) {
        switch (e.function) {
            case 0x1: {
                // EBX[31:24] initial APIC id, EBX[23:16] addressable logical processor ids in the
                // package (a power of two covering `count`).
                uint32_t logical = std::min(1u << coreBits, 255u);
                e.ebx = (e.ebx & 0x0000ffff) | (logical << 16) | ((index & 0xff) << 24);
                if (count > 1)
                    e.edx |= kLeaf1EdxHtt;  // "EBX[23:16] is valid"
                else
                    e.edx &= ~kLeaf1EdxHtt;
                e.ecx &= ~(kLeaf1EcxTscDeadline | kLeaf1EcxVmx | kLeaf1EcxMonitor);
                e.ecx |= kLeaf1EcxHypervisor;
                break;
            }
            case 0x4:
                // Deterministic cache parameters: EAX[31:26] cores per package - 1; EAX[25:14]
                // threads sharing this cache - 1 (a shared L3 for all vCPUs, private L1/L2).
                if ((e.eax & 0x1f) != 0) {
                    uint32_t level = (e.eax >> 5) & 0x7;
                    uint32_t sharing = level >= 3 ? std::min(count - 1, 0xfffu) : 0;
                    e.eax = (e.eax & 0x3fff) | (sharing << 14) | (std::min(count - 1, 63u) << 26);
                }
                break;
            case 0x6:
            case 0xa:
                e.eax = e.ebx = e.ecx = e.edx = 0;
                break;
            case 0xb:
                if (!have0xb)
                    addTopologyLeaf(out, 0xb, index, count);
                have0xb = true;
                continue;  // replaced, every sub-leaf
            case 0x1f:
                if (!have0x1f)
                    addTopologyLeaf(out, 0x1f, index, count);
                have0x1f = true;
                continue;
            case 0x80000001:
                e.ecx &= ~kExt1EcxSvm;
                break;
            case 0x80000008:
                // AMD: ECX[7:0] cores - 1, ECX[15:12] APIC id bits for the core id.
                e.ecx = (e.ecx & ~0xf0ffu) | (std::min(count - 1, 255u)) | (coreBits << 12);
                break;
            case 0x8000001e:
                // AMD extended APIC id: EAX the APIC id, EBX core id (1 thread per core), ECX node 0.
                e.eax = index;
                e.ebx = (e.ebx & ~0xffffu) | (index & 0xff);
                e.ecx &= ~0x7ffu;
                break;
            default:
                break;
        }
        out.push_back(e);
    }
    return out;
}

}  // namespace conduit::vmm::x86
