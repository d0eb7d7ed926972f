#include "vmm/arch/arm64/platform.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <bit>

#include <fmt/format.h>

#include "devices/bus.h"
#include "devices/exit_device.h"
#include "devices/uart16550.h"
#include "vmm/arch/arm64/board.h"
#include "vmm/arch/arm64/boot.h"
#include "vmm/arch/arm64/image.h"
#include "vmm/arch/arm64/interrupts.h"
#include "vmm/arch/arm64/kvm_vcpu.h"
#include "vmm/arch/arm64/layout.h"
#include "vmm/arch/arm64/psci.h"
#include "vmm/arch/arm64/vsmmu_fdt.h"
#include "vmm/image_file.h"
#include "vmm/kvm.h"
#include "vmm/kvm_interrupt_line.h"
#include "vmm/vcpu.h"
#include "vmm/vcpu_runner.h"
#include "vmm/vm.h"

namespace conduit::vmm {

namespace arch {
std::unique_ptr<Platform> hostPlatform() { return std::make_unique<arm64::Arm64Platform>(); }
}  // namespace arch

namespace arm64 {

namespace {

constexpr unsigned kDefaultIpaBits = 40;  // KVM_CREATE_VM type 0

// The platform's devices on the MMIO bus, removed from it when destroyed.
class Arm64Devices final : public arch::PlatformDevices {
public:
    explicit Arm64Devices(devices::Bus& mmio) : mmio_(mmio) {}
    ~Arm64Devices() override {
        for (uint64_t base : bases_) (void)mmio_.remove(base);
    }
    devices::Uart16550& console() override { return *uart_; }

    Result<void> insert(std::shared_ptr<devices::BusDevice> device, uint64_t base, uint64_t size) {
        TRY(mmio_.insert(std::move(device), base, size));
        bases_.push_back(base);
        return success();
    }

    std::shared_ptr<devices::Uart16550> uart_;
    std::shared_ptr<devices::ExitDevice> exit_;

private:
    devices::Bus& mmio_;
    std::vector<uint64_t> bases_;
};

class Arm64Exits final : public VcpuExitHandler {
public:
    bool handle(Vcpu&) override { return false; }  // MMIO and system events are generic
    std::string where(const Vcpu& vcpu) const override {
        auto pc = readPc(vcpu.fd());
        return pc ? fmt::format("pc {:#x}", *pc) : std::string();
    }
    std::string systemEvent(const Vcpu& vcpu) const override { return decodeSystemEvent(*vcpu.run()).call; }
};

// The arm64 Layout as the generic map: the MSI window is also reserved IOVA (never DMA-mapped).
Result<memory::AddressLayout> toAddressLayout(const Layout& l) {
    memory::AddressLayout::Spec spec;
    spec.ramBytes = l.ramBytes();
    for (auto& r : l.ramRanges()) spec.ram.push_back({"ram", memory::RangeKind::Ram, r});
    spec.mmio32.range = l.mmio32Window();
    spec.mmio64.range = l.mmio64Window();
    spec.ecam.range = l.pciEcam();
    spec.platform = l.platformRanges();
    spec.reservedIova = {{"msi-doorbell", memory::RangeKind::ReservedIova, l.msiWindow()}};
    return memory::AddressLayout::create(std::move(spec));
}

}  // namespace

Result<memory::AddressLayout> Arm64Platform::addressLayout(uint64_t ramBytes) const {
    TRY(memory::AddressLayout::checkRamSize(ramBytes));
    // The redistributor area is reserved whole, so the map does not depend on the vCPU count;
    // the count is checked against it in initVcpu().
    auto layout = TRY(Layout::create(ramBytes, 1));
    layoutEnd_ = layout.end();
    return toAddressLayout(layout);
}

Result<unsigned long> Arm64Platform::vmType(const Kvm& kvm) {
    // (KVM_CAP_MSI_DEVID is a per-VM answer, true once the ITS exists.)
    for (unsigned cap : {KVM_CAP_ARM_PSCI_0_2, KVM_CAP_IRQ_ROUTING, KVM_CAP_ONE_REG, KVM_CAP_DEVICE_CTRL, KVM_CAP_IRQFD})
        TRY(kvm.requireExtension(cap));
    // Enough IPA bits for the whole map (64-bit window included). 40 is the default; more must
    // be asked for, and KVM_CAP_ARM_VM_IPA_SIZE says how many this host allows.
    unsigned need = std::max<unsigned>(kDefaultIpaBits, static_cast<unsigned>(std::bit_width(layoutEnd_ - 1)));
    if (need == kDefaultIpaBits) return 0;
    int max = TRY(kvm.checkExtension(KVM_CAP_ARM_VM_IPA_SIZE));
    if (max < static_cast<int>(need))
        return Error(fmt::format("arm64: the address map ends at {:#x} ({} IPA bits); this host's KVM allows {}",
                                 layoutEnd_, need, max > 0 ? max : static_cast<int>(kDefaultIpaBits)));
    return KVM_VM_TYPE_ARM_IPA_SIZE(need);
}

Result<void> Arm64Platform::setupVm(const Kvm&, Vm& vm) {
    target_ = TRY(preferredTarget(vm.fd()));
    gic_ = TRY(KvmGic::create(vm.fd(), {{Layout::kGicDistBase, Layout::kGicDistSize}, Layout::kGicRedistBase,
                                        Layout::kGicItsBase, Layout::kSpiCount}));
    return vm.enableIrqRouting(irqchipRoutes());
}

IrqchipRoutes Arm64Platform::irqchipRoutes() const { return {defaultSpiRoutes(Layout::kSpiCount), Layout::kSpiCount}; }

Result<void> Arm64Platform::finalizeIrqchip(Vm&, std::span<Vcpu* const>) {
    if (!gic_) return Error("arm64: finalizeIrqchip before setupVm");
    return gic_->finalize();
}

uint32_t Arm64Platform::pciIntxGsi(uint8_t slot) const { return Layout::intxSpi(slot); }

Result<std::unique_ptr<arch::PlatformDevices>> Arm64Platform::createDevices(arch::DeviceContext c) {
    auto d = std::make_unique<Arm64Devices>(c.mmio);
    // KVM_IRQ_LINE's irq on arm64 encodes the SPI (interrupts.h); the UART's level goes straight in.
    d->uart_ = std::make_shared<devices::Uart16550>(
        std::make_shared<KvmInterruptLine>(c.vm, irqLineSpi(Layout::kUartSpi)), std::move(c.serialOutput));
    TRY(d->insert(d->uart_, Layout::kUartBase, devices::Uart16550::kPortCount));
    if (c.config.exitDevice.enabled) {
        d->exit_ = std::make_shared<devices::ExitDevice>(c.events.exitDevice,
                                                         fmt::format("exit@{:#x}", Layout::kExitDeviceBase));
        TRY(d->insert(d->exit_, Layout::kExitDeviceBase, 4));
    }
    return std::unique_ptr<arch::PlatformDevices>(std::move(d));
}

Result<arch::ViommuSlot> Arm64Platform::viommuSlot(ViommuConfig::Type) const {
    // GITS_TRANSLATER (offset 0x40 of the ITS's translater frame): the one MSI controller.
    constexpr uint64_t kGitsTranslater = Layout::kItsTranslaterFrame + 0x40;
    return arch::ViommuSlot{{Layout::kVsmmuBase, Layout::kVsmmuSize}, irqLineSpi(Layout::kVsmmuEventqSpi),
                            irqLineSpi(Layout::kVsmmuGerrorSpi), irqLineSpi(Layout::kVsmmuCmdqSyncSpi), kGitsTranslater};
}

Result<void> Arm64Platform::initVcpu(Vcpu& vcpu, unsigned count) {
    if (count > Layout::kMaxVcpus)
        return Error(fmt::format("arm64: {} vCPUs; the redistributor area holds {}", count, Layout::kMaxVcpus));
    if (!target_) return Error("arm64: initVcpu before setupVm");
    return arm64::initVcpu(vcpu.fd(), vcpu.index(), *target_, vcpu.index() == 0);
}

Result<std::string> Arm64Platform::boot(const arch::BootContext& c) {
    const unsigned n = static_cast<unsigned>(c.vcpus.size());
    auto layout = TRY(Layout::create(c.layout.ramBytes(), n));
    std::vector<uint64_t> mpidrs;
    for (Vcpu* v : c.vcpus) mpidrs.push_back(TRY(readMpidr(v->fd(), v->index())));
    // The virtual SMMUv3 the Machine built in viommuSlot(): its node and the bridge's iommu-map.
    std::optional<VsmmuFdt> vsmmu;
    std::vector<const FdtExtension*> extensions;
    if (c.viommu) {
        // The MSI window identity-mapped at stage 1 for the fronted functions (docs/vsmmu.md).
        vsmmu.emplace(VsmmuFdtParams{layout.vsmmu(), Layout::kVsmmuEventqSpi, Layout::kVsmmuGerrorSpi,
                                     Layout::kVsmmuCmdqSyncSpi, c.viommu->dmaCoherent, layout.msiWindow(),
                                     c.viommu->requesterIds});
        extensions.push_back(&*vsmmu);
    }

    if (c.config.kernel) {
        const auto& k = *c.config.kernel;
        auto image = TRY(readImageFile(k.path, "kernel"));
        std::vector<uint8_t> initrd;
        if (k.initrd) initrd = TRY(readImageFile(*k.initrd, "initrd"));
        auto plan = TRY(loadLinux(c.memory, layout, {image, initrd, k.cmdline, mpidrs, true, extensions}));
        TRY(setBootRegisters(c.vcpus[0]->fd(), 0, plan.entry, plan.fdt));
        return plan.description;
    }
    // A flat payload: copied to its load address in RAM and entered there with X0 = the DTB.
    const auto& p = *c.config.payload;
    auto bytes = TRY(readImageFile(p.path, "payload"));
    if (!layout.isRam(p.loadAddress, std::max<uint64_t>(bytes.size(), 1)))
        return Error(fmt::format("arm64 payload: {} bytes at {:#x} are not in RAM ({})", bytes.size(), p.loadAddress,
                                 layout.ramRanges().front().toString()));
    TRY(c.memory.write(p.loadAddress, bytes));
    FdtDescription desc = describeBoard(layout, {mpidrs, "", std::nullopt, true});
    desc.extensions = extensions;
    auto fdt = TRY(buildFdt(desc));
    uint64_t fdtAt = memory::alignDown(layout.ramRanges().front().end() - kFdtMaxSize, 2 * MiB);
    if (fdtAt < p.loadAddress + bytes.size()) return Error("arm64 payload: no room for the device tree above it");
    TRY(c.memory.write(fdtAt, fdt));
    uint64_t entry = p.entry.value_or(p.loadAddress);
    TRY(setBootRegisters(c.vcpus[0]->fd(), 0, entry, fdtAt));
    return fmt::format("arm64 payload {} ({} bytes) at {:#x}, entry {:#x}; device tree at {:#x}", p.path.string(),
                       bytes.size(), p.loadAddress, entry, fdtAt);
}

std::unique_ptr<VcpuExitHandler> Arm64Platform::exitHandler(devices::Bus&, ExitStats&) const {
    return std::make_unique<Arm64Exits>();
}

}  // namespace arm64
}  // namespace conduit::vmm
