// The architecture seam: everything the Machine needs that differs between architectures, behind
// one interface per architecture (vmm/arch/<arch>/platform.cpp), in the spirit of crosvm's
// LinuxArch trait and kvmtool's per-arch kvm-arch.h. Generic code (Machine, Vm, Vcpu, VcpuRunner,
// passthrough, memory, irq routing) never names an architecture; it calls this in this order:
//
//   addressLayout()        the guest-physical map, as data (RAM, PCI windows, ECAM, platform and
//                          reserved IOVA ranges)
//   vmType()               KVM_CREATE_VM's machine type
//   setupVm()              before guest RAM and vCPUs: arch VM objects and the irqchip; leaves the
//                          Vm with its GSI routing table holding irqchipRoutes()
//   createDevices()        the platform's own devices (console UART, exit device, power controls)
//   viommuSlot()           where a virtual IOMMU goes (its MMIO, its wired interrupts), or why
//                          this platform cannot describe one to its guest
//   initVcpu()             per vCPU, right after KVM_CREATE_VCPU
//   finalizeIrqchip()      once every vCPU exists
//   boot()                 kernel or payload, firmware tables, each vCPU's entry state
//   exitHandler()          the exits the generic vCPU loop leaves to the architecture
//
// arch::hostPlatform() picks the architecture the binary is built for (exactly one
// vmm/arch/<arch>/ directory is compiled, by CMAKE_SYSTEM_PROCESSOR).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "memory/address_layout.h"
#include "memory/guest_memory.h"
#include "vmm/config.h"
#include "vmm/irq_routing.h"

namespace conduit::devices {
class Bus;
class Uart16550;
}  // namespace conduit::devices

namespace conduit::vmm {
class ExitStats;
class Kvm;
class Vcpu;
class VcpuExitHandler;
class Vm;
}  // namespace conduit::vmm

namespace conduit::vmm::arch {

// How the platform's devices and firmware reach the Machine, on vCPU threads.
struct MachineEvents {
    // The guest powered off (reset = false) or reset itself; `reason` is logged, e.g.
    // "guest powered off (ACPI S5)", "guest reset (keyboard controller)".
    std::function<void(std::string reason, bool reset)> power;
    // The exit device was written: `conduit run` ends with this value.
    std::function<void(uint32_t value)> exitDevice;
};

struct DeviceContext {
    Vm& vm;
    devices::Bus& pio;   // port I/O; an architecture without it leaves it empty
    devices::Bus& mmio;
    const memory::AddressLayout& layout;
    const VmConfig& config;
    UniqueFd serialOutput;  // the console UART's output (invalid: discarded)
    MachineEvents events;
};

// The platform's devices, on the buses while this object lives (its destructor removes them).
class PlatformDevices {
public:
    virtual ~PlatformDevices() = default;
    // The console UART (serial input goes here; `stats` reports its bytes).
    virtual devices::Uart16550& console() = 0;
};

// Where the platform puts a virtual IOMMU (config "viommu", docs/vsmmu.md).
struct ViommuSlot {
    memory::AddressRange mmio;  // its registers
    // KVM_IRQ_LINE numbers of its wired interrupts (edge-triggered), as the platform encodes them.
    uint32_t eventqLine = 0;
    uint32_t gerrorLine = 0;
    uint32_t cmdqSyncLine = 0;
    // The guest-physical address of the MSI doorbell every MSI of a device behind the vIOMMU is
    // routed to (the guest programs stage-1 IOVAs; vmm/doorbell_msi_router.h). nullopt: MSI
    // addresses are routed as the guest wrote them.
    std::optional<uint64_t> msiDoorbell;
};

// What the firmware tables say about the virtual IOMMU the Machine built in viommuSlot().
struct ViommuDescription {
    ViommuConfig::Type type = ViommuConfig::Type::SmmuV3;
    bool dmaCoherent = false;  // the host IOMMU's table walks are cache-coherent
    std::vector<uint32_t> requesterIds;  // the fronted functions on bus 0 (= their StreamIDs)
};

struct BootContext {
    const memory::GuestMemory& memory;
    const memory::AddressLayout& layout;
    const VmConfig& config;        // kernel or payload (exactly one), vCPU count
    std::span<Vcpu* const> vcpus;  // index 0 is the boot vCPU
    std::optional<ViommuDescription> viommu = std::nullopt;  // set when the Machine built one
};

class Platform {
public:
    virtual ~Platform() = default;
    // "x86_64", "arm64": for logs.
    virtual std::string_view name() const = 0;

    // ---- the address map ----
    virtual Result<memory::AddressLayout> addressLayout(uint64_t ramBytes) const = 0;

    // ---- the VM ----
    // KVM_CREATE_VM's argument (e.g. an IPA size); checks the platform's own KVM capabilities.
    virtual Result<unsigned long> vmType(const Kvm& kvm) = 0;
    // Before guest RAM is mapped and before any vCPU: the architecture's VM-wide objects and the
    // in-kernel irqchip, then Vm::enableIrqRouting(irqchipRoutes()).
    virtual Result<void> setupVm(const Kvm& kvm, Vm& vm) = 0;
    // The irqchip routes every KVM_SET_GSI_ROUTING push keeps, and where MSI GSIs start.
    virtual IrqchipRoutes irqchipRoutes() const = 0;
    // After every vCPU exists (an irqchip that needs its vCPUs initialises here).
    virtual Result<void> finalizeIrqchip(Vm& vm, std::span<Vcpu* const> vcpus) = 0;

    // ---- PCI ----
    // The irqchip GSI a device in `slot` of bus 0 raises INTx on, whichever of INTA..INTD it uses
    // (one level-triggered line per slot; the firmware tables the platform writes, ACPI _PRT or
    // an FDT interrupt-map, tell the guest the same).
    virtual uint32_t pciIntxGsi(uint8_t slot) const = 0;
    // The port-I/O window for PCI I/O BARs and the 0xCF8 config mechanism; nullopt: no port I/O
    // (ECAM only, I/O BARs are not placed).
    virtual std::optional<memory::AddressRange> pciIoPortWindow() const = 0;

    // ---- devices ----
    virtual Result<std::unique_ptr<PlatformDevices>> createDevices(DeviceContext context) = 0;
    // The place of a virtual IOMMU of `type`; boot() then describes it (BootContext::viommu). An
    // error says why this platform has none (no firmware table to describe it, say).
    virtual Result<ViommuSlot> viommuSlot(ViommuConfig::Type type) const {
        (void)type;
        return Error(std::string(name()) + ": this platform cannot give its guest a virtual IOMMU", EOPNOTSUPP);
    }

    // ---- vCPUs and boot ----
    // Right after KVM_CREATE_VCPU of vCPU `vcpu.index()` of `count`.
    virtual Result<void> initVcpu(Vcpu& vcpu, unsigned count) = 0;
    // Loads the kernel or payload and the firmware tables into guest memory and sets every vCPU's
    // entry state. Returns a one-line description for the log and `stats`.
    virtual Result<std::string> boot(const BootContext& context) = 0;

    // ---- exits ----
    // The exits the generic loop does not handle (e.g. port I/O to `pio`), and where a vCPU is
    // for messages. Lives as long as the VcpuRunner using it.
    virtual std::unique_ptr<VcpuExitHandler> exitHandler(devices::Bus& pio, ExitStats& stats) const = 0;
};

// The platform of the architecture this binary is built for.
std::unique_ptr<Platform> hostPlatform();

}  // namespace conduit::vmm::arch
