// The arm64 KVM pieces against a real KVM (aarch64 only; in the arm64 bed): a VM with two vCPUs,
// the GICv3 with redistributors per vCPU and an ITS, PSCI 0.2 with the secondary powered off,
// the boot registers, MPIDRs, SPI lines, routes with device ids, and PSCI SYSTEM_OFF coming back
// as a system event. Raw fds, no Machine: this is what the arm64 platform is built from.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "base/unique_fd.h"
#include "vmm/arch/arm64/interrupts.h"
#include "vmm/arch/arm64/kvm_gic.h"
#include "vmm/arch/arm64/kvm_vcpu.h"
#include "vmm/arch/arm64/layout.h"
#include "vmm/arch/arm64/psci.h"
#include "vmm/irq_routing.h"
#include "vmm/kvm_uapi.h"

namespace conduit::vmm::arm64 {
namespace {

constexpr uint64_t kRam = Layout::kRamBase;
constexpr size_t kRamSize = 2 * MiB;
constexpr uint64_t kStoreAt = kRam + 0x1000;
constexpr uint64_t kDtbMarker = kRam + 0x10'0000;

// movz/movk/str/strb/hvc/b encodings (A64), for a payload of a few instructions.
constexpr uint32_t movz(unsigned rd, uint16_t imm, unsigned shift = 0) { return 0xd2800000 | (shift / 16) << 21 | imm << 5 | rd; }
constexpr uint32_t movk(unsigned rd, uint16_t imm, unsigned shift) { return 0xf2800000 | (shift / 16) << 21 | imm << 5 | rd; }
constexpr uint32_t movzW(unsigned rd, uint16_t imm) { return 0x52800000 | imm << 5 | rd; }
constexpr uint32_t strX(unsigned rt, unsigned rn) { return 0xf9000000 | rn << 5 | rt; }
constexpr uint32_t strbW(unsigned rt, unsigned rn) { return 0x39000000 | rn << 5 | rt; }
constexpr uint32_t kHvc0 = 0xd4000002;
constexpr uint32_t kBranchSelf = 0x14000000;

struct Vm {
    UniqueFd kvm, vm;
    void* ram = MAP_FAILED;
    ~Vm() {
        if (ram != MAP_FAILED) ::munmap(ram, kRamSize);
    }
};

TEST(Arm64Kvm, GicPsciBootRegistersAndSystemOff) {
    Vm v;
    v.kvm = UniqueFd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(v.kvm) << "open /dev/kvm: " << strerror(errno);
    v.vm = UniqueFd(::ioctl(v.kvm.get(), KVM_CREATE_VM, 0));
    ASSERT_TRUE(v.vm) << "KVM_CREATE_VM: " << strerror(errno);
    int mmapSize = ::ioctl(v.kvm.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    ASSERT_GT(mmapSize, 0);

    v.ram = ::mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(v.ram, MAP_FAILED);
    kvm_userspace_memory_region region{0, 0, kRam, kRamSize, reinterpret_cast<uint64_t>(v.ram)};
    ASSERT_EQ(::ioctl(v.vm.get(), KVM_SET_USER_MEMORY_REGION, &region), 0) << strerror(errno);

    // The boot vCPU stores X0, writes 'A' to the UART's MMIO page, then calls PSCI SYSTEM_OFF.
    const uint32_t code[] = {
        movz(2, kStoreAt & 0xffff), movk(2, kStoreAt >> 16 & 0xffff, 16), strX(0, 2),
        movz(3, 0), movk(3, Layout::kUartBase >> 16, 16), movzW(4, 'A'), strbW(4, 3),
        movz(0, 0x0008), movk(0, 0x8400, 16), kHvc0,  // x0 = 0x8400_0008: PSCI SYSTEM_OFF
        kBranchSelf,
    };
    std::memcpy(v.ram, code, sizeof code);

    auto target = preferredTarget(v.vm.get());
    ASSERT_TRUE(target) << target.error().describe();
    std::vector<UniqueFd> vcpus;
    std::vector<kvm_run*> runs;
    for (unsigned i = 0; i < 2; ++i) {
        vcpus.emplace_back(::ioctl(v.vm.get(), KVM_CREATE_VCPU, i));
        ASSERT_TRUE(vcpus.back()) << "KVM_CREATE_VCPU: " << strerror(errno);
        void* run = ::mmap(nullptr, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpus.back().get(), 0);
        ASSERT_NE(run, MAP_FAILED);
        runs.push_back(static_cast<kvm_run*>(run));
        auto init = initVcpu(vcpus.back().get(), i, *target, i == 0);
        ASSERT_TRUE(init) << init.error().describe();
    }

    auto layout = Layout::create(kRamSize, 2);
    ASSERT_TRUE(layout);
    auto gic = KvmGic::create(v.vm.get(), {layout->gicDist(), layout->gicRedist().base, layout->gicIts().base,
                                           Layout::kSpiCount});
    ASSERT_TRUE(gic) << gic.error().describe();
    auto fin = gic->finalize();
    ASSERT_TRUE(fin) << fin.error().describe();
    EXPECT_TRUE(gic->hasIts());

    // MPIDRs: Aff0 = vCPU index, as the device tree's cpu nodes will say.
    for (unsigned i = 0; i < 2; ++i) {
        auto mpidr = readMpidr(vcpus[i].get(), i);
        ASSERT_TRUE(mpidr) << mpidr.error().describe();
        EXPECT_EQ(*mpidr & 0xff'00ff'ffffull, i);
    }
    // The secondary waits powered off for CPU_ON.
    kvm_mp_state mp{};
    ASSERT_EQ(::ioctl(vcpus[1].get(), KVM_GET_MP_STATE, &mp), 0) << strerror(errno);
    EXPECT_EQ(mp.mp_state, static_cast<uint32_t>(KVM_MP_STATE_STOPPED));

    // An SPI line up and down, and a routing table of the default SPI routes plus an MSI route
    // with a device id.
    kvm_irq_level line{};
    line.irq = irqLineSpi(Layout::kUartSpi);
    line.level = 1;
    EXPECT_EQ(::ioctl(v.vm.get(), KVM_IRQ_LINE, &line), 0) << strerror(errno);
    line.level = 0;
    EXPECT_EQ(::ioctl(v.vm.get(), KVM_IRQ_LINE, &line), 0) << strerror(errno);
    auto entries = defaultSpiRoutes(Layout::kSpiCount);
    entries.push_back(vmm::msiRoutingEntry(Layout::kSpiCount, {layout->gicIts().base + 0x1'0040, 0, pciDeviceId(0, 1, 0)}, true));
    auto buf = uapi::flexBuffer(static_cast<uint32_t>(entries.size()), entries.data(), entries.size());
    EXPECT_EQ(::ioctl(v.vm.get(), uapi::kSetGsiRouting, buf.data()), 0) << strerror(errno);

    auto regs = setBootRegisters(vcpus[0].get(), 0, kRam, kDtbMarker);
    ASSERT_TRUE(regs) << regs.error().describe();

    ASSERT_EQ(::ioctl(vcpus[0].get(), KVM_RUN, 0), 0) << strerror(errno);
    ASSERT_EQ(runs[0]->exit_reason, static_cast<uint32_t>(KVM_EXIT_MMIO));
    EXPECT_EQ(runs[0]->mmio.phys_addr, Layout::kUartBase);
    EXPECT_TRUE(runs[0]->mmio.is_write);
    EXPECT_EQ(runs[0]->mmio.len, 1u);
    EXPECT_EQ(runs[0]->mmio.data[0], 'A');

    ASSERT_EQ(::ioctl(vcpus[0].get(), KVM_RUN, 0), 0) << strerror(errno);
    ASSERT_EQ(runs[0]->exit_reason, static_cast<uint32_t>(KVM_EXIT_SYSTEM_EVENT));
    auto event = decodeSystemEvent(*runs[0]);
    EXPECT_EQ(event.kind, SystemEventKind::PowerOff) << event.reason;

    uint64_t stored;
    std::memcpy(&stored, static_cast<uint8_t*>(v.ram) + (kStoreAt - kRam), 8);
    EXPECT_EQ(stored, kDtbMarker);  // X0 at entry
    auto pc = readPc(vcpus[0].get());
    ASSERT_TRUE(pc);
    EXPECT_EQ(*pc, kRam + 10 * 4);  // after the hvc

    for (auto* r : runs) ::munmap(r, mmapSize);
}

}  // namespace
}  // namespace conduit::vmm::arm64
