// A whole virtual machine assembled from a validated VmConfig, on the platform of the build's
// architecture (vmm/arch/platform.h says what it provides and when it is called):
//   platform's AddressLayout -> Kvm/Vm (platform VM set-up and irqchip) -> GuestMemory (memslots
//   through the listener) -> PIO and MMIO buses -> platform devices (console UART, exit device,
//   power controls) -> PCI and passthrough -> vCPUs (platform init) -> irqchip finalisation ->
//   boot (platform) -> vCPU threads in run().
// Teardown runs in the reverse order, spelled out in ~Machine.
#pragma once

#include <atomic>
#include <mutex>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/event_fd.h"
#include "base/result.h"
#include "devices/bus.h"
#include "memory/address_layout.h"
#include "memory/guest_memory.h"
#include "vmm/arch/platform.h"
#include "vmm/config.h"
#include "vmm/exit_stats.h"
#include "vmm/kvm.h"
#include "vmm/passthrough.h"
#include "vmm/virtual_iommu.h"
#include "vmm/vfio_host.h"
#include "vmm/vcpu.h"
#include "vmm/vcpu_runner.h"
#include "vmm/vm.h"

namespace conduit::vmm {

class Machine {
public:
    // `hosts` opens the VFIO host "vfio_host" names: the kernel's by default; binaries that carry
    // another (the simulated host of tests/hostsim) pass their own.
    static Result<std::unique_ptr<Machine>> create(const VmConfig& config,
                                                   VfioHostFactory hosts = kernelVfioHosts());
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // Runs the vCPUs until one of:
    //  - the exit device fires: returns the value written;
    //  - the guest powers off or resets through a platform device (ACPI S5, reset register,
    //    keyboard controller), a KVM system event (PSCI SYSTEM_OFF / SYSTEM_RESET) or a triple
    //    fault: logs which, returns 0 (a reset with "on_reboot": "error": an Error);
    //  - requestStop(), SIGINT or SIGTERM: returns an Error "stopped by request" / "interrupted by
    //    signal SIGINT" (errno EINTR);
    //  - a vCPU fails: returns an Error with its one-line reason, e.g.
    //    "vcpu0: KVM_EXIT_INTERNAL_ERROR (emulation failure) at rip 0x100004 insn bytes cc".
    // Can be called once. While it runs, SIGINT/SIGTERM are handled by the Machine.
    Result<int> run();
    // Thread-safe; before run() makes run() return at once.
    void requestStop();

    Vm& vm() { return *vm_; }
    const memory::GuestMemory& memory() const { return *memory_; }
    const memory::AddressLayout& layout() const { return layout_; }
    devices::Uart16550& uart() { return devices_->console(); }
    const arch::Platform& platform() const { return *platform_; }
    devices::Bus& pioBus() { return *pio_; }
    devices::Bus& mmioBus() { return *mmio_; }
    // PCI root and assigned devices (always present: the host bridge exists without devices).
    Passthrough& passthrough() { return *passthrough_; }
    size_t vcpuCount() const { return vcpus_.size(); }
    // Exit counts (per reason, per device, unclaimed), UART bytes, vCPUs and memory, as JSON.
    nlohmann::json stats() const;

private:
    Machine(const VmConfig& config, std::unique_ptr<arch::Platform> platform, memory::AddressLayout layout,
            EventFd wake, VfioHostFactory hosts);
    Result<void> build();
    Result<void> boot();
    void onExitDevice(uint32_t value);
    // The guest powered off or reset through a device (ACPI PM block, keyboard controller): on a
    // vCPU thread, inside the bus dispatch. The first reason is kept.
    void onGuestPowerEvent(std::string reason, bool reset);
    // How run() ends for a guest that powered off or reset: 0 and a log line, or, for a reset with
    // on_reboot "error", an Error naming the reason.
    Result<int> guestEnded(const std::string& reason, bool reset) const;
    void stopVcpus();
    void startSerialInput();
    void startSerialReader();  // throws std::system_error if the thread cannot be created
    void stopSerialInput();

    VmConfig config_;
    VfioHostFactory hosts_;
    std::unique_ptr<arch::Platform> platform_;
    memory::AddressLayout layout_;
    std::unique_ptr<memory::GuestMemory> memory_;
    std::unique_ptr<Kvm> kvm_;
    std::unique_ptr<Vm> vm_;
    bool memoryListening_ = false;
    std::unique_ptr<devices::Bus> pio_;
    std::unique_ptr<devices::Bus> mmio_;
    std::unique_ptr<arch::PlatformDevices> devices_;
    std::unique_ptr<Passthrough> passthrough_;
    std::unique_ptr<VirtualIommu> viommu_;  // config "viommu": after passthrough_, gone before it
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    ExitStats exitStats_;
    std::unique_ptr<VcpuExitHandler> exitHandler_;  // the platform's exits, for runner_
    std::unique_ptr<VcpuRunner> runner_;
    std::atomic<VcpuRunner*> activeRunner_{nullptr};  // runner_ as seen by requestStop()/onExitDevice()
    std::string bootDescription_;

    // run() state. wake_ is signalled by whatever should make run() look again (a vCPU loop
    // ended, the exit device fired, requestStop()).
    EventFd wake_;
    std::atomic<bool> ran_{false};
    std::atomic<bool> stopRequested_{false};
    std::atomic<bool> exitFired_{false};
    std::atomic<uint32_t> exitValue_{0};
    std::atomic<bool> powerEventFired_{false};
    std::mutex powerEventMutex_;
    std::string powerEventReason_;  // written once under powerEventMutex_, before powerEventFired_ is set
    bool powerEventIsReset_ = false;

    std::thread serialIn_;
    std::unique_ptr<EventFd> serialStop_;
};

}  // namespace conduit::vmm
