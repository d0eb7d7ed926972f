// The x86_64 platform (vmm/arch/platform.h): the PC-like machine Conduit has always built.
//
//   layout     vmm/arch/x86_64/layout.h (low/high RAM around the 3-4 GiB hole, MSI window reserved)
//   VM         identity map + TSS (Intel real mode), KVM_CREATE_IRQCHIP (PIC + IOAPIC + LAPICs)
//              with the kernel's default GSI routes, PIT2; no irqchip finalisation
//   PCI        INTx of slot S on IOAPIC pin 16 + S % 8 (pci_irq.h, also the ACPI _PRT); I/O BARs
//              in 0xC000-0xFFFF; the 0xCF8 config mechanism
//   devices    16550 at PIO 0x3f8 on GSI 4, the exit device at CONDUIT_EXIT_PORT, the ACPI PM
//              block (S5, reset register) and the 8042's reset command
//   vCPUs      CPUID from KVM_GET_SUPPORTED_CPUID per vCPU, LAPIC LINT0 ExtINT / LINT1 NMI
//   boot       Linux (bzImage / ELF, boot_params, e820, ACPI, MP table) or a flat payload; FPU
//              defaults, sregs/regs of the boot plan, APs RUNNABLE or waiting for INIT/SIPI
//   exits      port I/O to the PIO bus; "rip 0x..." in messages
#pragma once

#include <linux/kvm.h>

#include <vector>

#include "vmm/arch/platform.h"

namespace conduit::vmm::x86 {

class X86Platform final : public arch::Platform {
public:
    std::string_view name() const override { return "x86_64"; }
    Result<memory::AddressLayout> addressLayout(uint64_t ramBytes) const override;
    Result<unsigned long> vmType(const Kvm& kvm) override;
    Result<void> setupVm(const Kvm& kvm, Vm& vm) override;
    IrqchipRoutes irqchipRoutes() const override;
    Result<void> finalizeIrqchip(Vm& vm, std::span<Vcpu* const> vcpus) override;
    uint32_t pciIntxGsi(uint8_t slot) const override;
    std::optional<memory::AddressRange> pciIoPortWindow() const override;
    Result<arch::ViommuSlot> viommuSlot(ViommuConfig::Type type) const override;
    Result<std::unique_ptr<arch::PlatformDevices>> createDevices(arch::DeviceContext context) override;
    Result<void> initVcpu(Vcpu& vcpu, unsigned count) override;
    Result<std::string> boot(const arch::BootContext& context) override;
    std::unique_ptr<VcpuExitHandler> exitHandler(devices::Bus& pio, ExitStats& stats) const override;

private:
    std::vector<kvm_cpuid_entry2> supportedCpuid_;  // read by vmType()
};

}  // namespace conduit::vmm::x86
