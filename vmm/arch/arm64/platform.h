// The arm64 platform (vmm/arch/platform.h): a virt-like machine for KVM on arm64.
//
//   layout     vmm/arch/arm64/layout.h (GICv3 + ITS below 0x0810_0000 with the ITS translater
//              frame on the host's MSI doorbell IOVA, UART and exit device on MMIO, PCI windows,
//              ECAM, RAM from 1 GiB)
//   VM         KVM_CREATE_VM with the IPA size the map needs; the vGICv3 with its ITS
//              (kvm_gic.h), the SPI routes KVM installs by default (GSI n -> SPI n)
//   PCI        INTx of slot S on SPI 16 + S % 16 for all four pins (the FDT interrupt-map);
//              no port I/O; MSIs to the ITS with the requester id as device id
//   devices    16550 on MMIO 0x0900_0000 (SPI 1, KVM_IRQ_LINE), the exit device on MMIO; the
//              virtual SMMUv3's slot at 0x0905_0000 with SPIs 40-42, in the device tree when built
//   vCPUs      KVM_ARM_VCPU_INIT with PSCI 0.2, secondaries powered off until PSCI CPU_ON
//   boot       the arm64 Image (header honoured), initrd, the device tree (libfdt), X0 = DTB;
//              or a flat payload in RAM entered with X0 = DTB
//   exits      MMIO only (the generic loop); PSCI SYSTEM_OFF/RESET arrive as system events;
//              "pc 0x..." in messages
#pragma once

#include <linux/kvm.h>

#include <optional>

#include "vmm/arch/arm64/kvm_gic.h"
#include "vmm/arch/platform.h"

namespace conduit::vmm::arm64 {

class Arm64Platform final : public arch::Platform {
public:
    std::string_view name() const override { return "arm64"; }
    Result<memory::AddressLayout> addressLayout(uint64_t ramBytes) const override;
    Result<unsigned long> vmType(const Kvm& kvm) override;
    Result<void> setupVm(const Kvm& kvm, Vm& vm) override;
    IrqchipRoutes irqchipRoutes() const override;
    Result<void> finalizeIrqchip(Vm& vm, std::span<Vcpu* const> vcpus) override;
    uint32_t pciIntxGsi(uint8_t slot) const override;
    std::optional<memory::AddressRange> pciIoPortWindow() const override { return std::nullopt; }
    Result<std::unique_ptr<arch::PlatformDevices>> createDevices(arch::DeviceContext context) override;
    Result<arch::ViommuSlot> viommuSlot(ViommuConfig::Type type) const override;
    Result<void> initVcpu(Vcpu& vcpu, unsigned count) override;
    Result<std::string> boot(const arch::BootContext& context) override;
    std::unique_ptr<VcpuExitHandler> exitHandler(devices::Bus& pio, ExitStats& stats) const override;

private:
    mutable uint64_t layoutEnd_ = 0;       // from addressLayout(): what the IPA size must cover
    std::optional<KvmGic> gic_;            // setupVm()
    std::optional<kvm_vcpu_init> target_;  // setupVm(): KVM_ARM_PREFERRED_TARGET
};

}  // namespace conduit::vmm::arm64
