#include "vmm/arch/x86_64/platform.h"

#include <cstring>

#include <fmt/format.h>

#include "devices/acpi_pm.h"
#include "devices/bus.h"
#include "devices/exit_device.h"
#include "devices/uart16550.h"
#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/exits.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/arch/x86_64/layout.h"
#include "vmm/arch/x86_64/payload_abi.h"
#include "vmm/arch/x86_64/pci_irq.h"
#include "vmm/kvm_interrupt_line.h"

namespace conduit::vmm {

namespace arch {
std::unique_ptr<Platform> hostPlatform() { return std::make_unique<x86::X86Platform>(); }
}  // namespace arch

namespace x86 {

namespace {

// The PC devices on the PIO bus, removed from it when destroyed.
class X86Devices final : public arch::PlatformDevices {
public:
    explicit X86Devices(devices::Bus& pio) : pio_(pio) {}
    ~X86Devices() override {
        for (uint64_t port : ports_) (void)pio_.remove(port);
    }
    devices::Uart16550& console() override { return *uart_; }

    Result<void> insert(std::shared_ptr<devices::BusDevice> device, uint64_t port, uint64_t size) {
        TRY(pio_.insert(std::move(device), port, size));
        ports_.push_back(port);
        return success();
    }

    std::shared_ptr<devices::Uart16550> uart_;
    std::shared_ptr<devices::ExitDevice> exit_;
    std::shared_ptr<devices::AcpiPm> acpiPm_;
    std::shared_ptr<devices::KeyboardControllerReset> kbdReset_;

private:
    devices::Bus& pio_;
    std::vector<uint64_t> ports_;
};

// LAPIC LINT0 = ExtINT (the PIC's output, for virtual-wire mode) and LINT1 = NMI, as a PC
// firmware leaves them; Linux expects this before it switches to the IOAPIC.
Result<void> setupLint(Vcpu& vcpu) {
    auto lapic = TRY(getLapic(vcpu));
    auto patch = [&](size_t offset, uint32_t mode) {
        uint32_t v;
        std::memcpy(&v, lapic.regs + offset, 4);
        v = (v & ~0x700u) | (mode << 8);
        std::memcpy(lapic.regs + offset, &v, 4);
    };
    patch(0x350, 7);  // LVT LINT0: ExtINT
    patch(0x360, 4);  // LVT LINT1: NMI
    return setLapic(vcpu, lapic);
}

}  // namespace

Result<memory::AddressLayout> X86Platform::addressLayout(uint64_t ramBytes) const { return x86::addressLayout(ramBytes); }

Result<unsigned long> X86Platform::vmType(const Kvm& kvm) {
    for (unsigned cap : requiredCapabilities()) TRY(kvm.requireExtension(cap));
    supportedCpuid_ = TRY(supportedCpuid(kvm));
    return 0;  // the default VM (no SEV/TDX)
}

Result<void> X86Platform::setupVm(const Kvm&, Vm& vm) {
    // The order matters: PIT2 needs the irqchip, and the irqchip must exist before any vCPU.
    TRY(setIdentityMapAddr(vm));
    TRY(setTssAddr(vm));
    TRY(createIrqchip(vm));
    TRY(createPit2(vm));
    return success();
}

IrqchipRoutes X86Platform::irqchipRoutes() const { return x86::irqchipRoutes(); }

Result<void> X86Platform::finalizeIrqchip(Vm&, std::span<Vcpu* const>) {
    return success();  // KVM_CREATE_IRQCHIP made the LAPICs with the vCPUs
}

uint32_t X86Platform::pciIntxGsi(uint8_t slot) const { return x86::pciIntxGsi(slot); }

std::optional<memory::AddressRange> X86Platform::pciIoPortWindow() const {
    return memory::AddressRange{kPciIoWindowBase, kPciIoWindowSize};
}

Result<std::unique_ptr<arch::PlatformDevices>> X86Platform::createDevices(arch::DeviceContext c) {
    auto d = std::make_unique<X86Devices>(c.pio);
    // The UART's line: KVM_IRQ_LINE's irq field is a GSI on x86 (IOAPIC pin and ISA IRQ 4).
    d->uart_ = std::make_shared<devices::Uart16550>(std::make_shared<KvmInterruptLine>(c.vm, CONDUIT_UART_IRQ),
                                                    std::move(c.serialOutput));
    TRY(d->insert(d->uart_, CONDUIT_UART_PORT, devices::Uart16550::kPortCount));
    if (c.config.exitDevice.enabled) {
        d->exit_ = std::make_shared<devices::ExitDevice>(c.events.exitDevice);
        TRY(d->insert(d->exit_, CONDUIT_EXIT_PORT, CONDUIT_EXIT_PORT_SIZE));
    }
    // Power-off and reset for guests that use ACPI (the FADT points here) or the keyboard controller.
    auto power = c.events.power;
    d->acpiPm_ = std::make_shared<devices::AcpiPm>(devices::AcpiPm::Callbacks{
        [power] { power("guest powered off (ACPI S5)", false); },
        [power](const std::string& how) { power("guest reset (" + how + ")", true); }});
    TRY(d->insert(d->acpiPm_, devices::AcpiPm::kBase, devices::AcpiPm::kSize));
    d->kbdReset_ = std::make_shared<devices::KeyboardControllerReset>(
        [power](const std::string& how) { power("guest reset (" + how + ")", true); });
    TRY(d->insert(d->kbdReset_, devices::KeyboardControllerReset::kCommandPort, 1));
    return std::unique_ptr<arch::PlatformDevices>(std::move(d));
}

Result<void> X86Platform::initVcpu(Vcpu& vcpu, unsigned count) {
    TRY(setCpuid(vcpu, buildCpuid(supportedCpuid_, vcpu.index(), count)));
    TRY(setupLint(vcpu));
    return success();
}

Result<arch::ViommuSlot> X86Platform::viommuSlot(ViommuConfig::Type) const {
    // The guest learns of an IOMMU from a firmware table (an IORT for an SMMUv3 on ACPI, a DMAR or
    // IVRS for Intel's or AMD's); Conduit writes none of them for x86 guests, and the only virtual
    // IOMMU it has, the SMMUv3, is an arm64 device.
    return Error("x86_64: no virtual IOMMU: the vSMMU (\"viommu\": {\"type\": \"smmuv3\"}) is an arm64 device, and "
                 "Conduit writes no IORT/DMAR/IVRS table that would describe one to an x86 guest",
                 EOPNOTSUPP);
}

Result<std::string> X86Platform::boot(const arch::BootContext& c) {
    const unsigned n = static_cast<unsigned>(c.vcpus.size());
    BootPlan plan = c.config.kernel ? TRY(loadLinux(c.memory, c.layout, *c.config.kernel, n))
                                    : TRY(loadPayload(c.memory, c.layout, *c.config.payload, n));
    if (plan.vcpus.size() != n)
        return Error(fmt::format("the boot plan has {} vCPU states for {} vCPUs", plan.vcpus.size(), n));
    for (unsigned i = 0; i < n; ++i) {
        Vcpu& vcpu = *c.vcpus[i];
        const auto& state = plan.vcpus[i];
        if (i > 0 && !state.runnable) continue;  // waits for the guest's INIT/SIPI
        kvm_fpu fpu{};
        fpu.fcw = 0x37f;     // x87 default control word (FNINIT)
        fpu.mxcsr = 0x1f80;  // SSE default: all exceptions masked
        TRY(setFpu(vcpu, fpu));
        TRY(setSregs(vcpu, state.sregs));
        TRY(setRegs(vcpu, state.regs));
        // With the in-kernel irqchip an AP starts UNINITIALIZED; KVM_RUN would block forever.
        if (i > 0) TRY(vcpu.setMpState(KVM_MP_STATE_RUNNABLE));
    }
    return plan.description;
}

std::unique_ptr<VcpuExitHandler> X86Platform::exitHandler(devices::Bus& pio, ExitStats& stats) const {
    return std::make_unique<X86Exits>(pio, stats);
}

}  // namespace x86
}  // namespace conduit::vmm
