// A KVM virtual machine (KVM_CREATE_VM) and the VM-wide kernel objects hanging off it that every
// architecture has: memory slots, the GSI routing table, irqfds, ioeventfds, MSI injection, the
// KVM VFIO pseudo-device and vCPU creation. Architecture-specific VM set-up (irqchip creation,
// x86's TSS and PIT, arm64's vGIC) is the platform's (vmm/arch/<arch>/), through fd().
//
// The Vm is also a memory::GuestMemoryListener: registered with a GuestMemory, every RAM region
// becomes one memslot and follows hot add/remove. Held by unique_ptr (listeners and slots point
// back at it); everything it hands out must be dropped before it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "base/event_fd.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "memory/guest_memory.h"
#include "vmm/irq_routing.h"
#include "vmm/kvm.h"
#include "vmm/kvm_eventfds.h"
#include "vmm/kvm_vfio_device.h"
#include "vmm/memslot.h"
#include "vmm/vcpu.h"

namespace conduit::vmm {

class Vm : public memory::GuestMemoryListener {
public:
    // KVM_CREATE_VM with the platform's machine type (arch::Platform::vmType(); 0 is the default).
    static Result<std::unique_ptr<Vm>> create(const Kvm& kvm, unsigned long type = 0);
    ~Vm() override;
    Vm(const Vm&) = delete;
    Vm& operator=(const Vm&) = delete;

    int fd() const { return fd_.get(); }
    // KVM_CHECK_EXTENSION on the VM fd (some answers are per-VM).
    Result<int> checkExtension(unsigned cap) const;

    // ---- the irqchip (created by the platform, vmm/arch/) ----
    // Creates the GSI routing table over the irqchip the platform has just created, with the
    // routes KVM installed for it. Once.
    Result<void> enableIrqRouting(IrqchipRoutes irqchip);
    bool hasIrqchip() const { return routing_ != nullptr; }

    // ---- memory ----
    // Maps [gpa, gpa + size) to host memory at `host` in the lowest free slot.
    Result<MemorySlot> mapMemory(uint64_t gpa, uint64_t size, void* host, const std::string& name,
                                 uint32_t flags = 0);
    // GuestMemoryListener: one slot per region, kept until the region goes.
    Result<void> regionAdded(const memory::GuestRegion& region) override;
    void regionRemoved(const memory::GuestRegion& region) override;
    // Slots currently held for GuestMemory regions, by GPA.
    struct SlotInfo {
        uint32_t slot;
        uint64_t gpa;
        uint64_t size;
        std::string name;
    };
    std::vector<SlotInfo> regionSlots() const;
    size_t slotsInUse() const;

    // ---- interrupts ----
    // KVM_IRQ_LINE. `line` is the irq field as the architecture defines it (on x86 a GSI; the
    // platform creates the devices' lines, so generic code never encodes one).
    Result<void> irqLine(uint32_t line, bool level);
    // KVM_SIGNAL_MSI: returns >0 delivered, 0 blocked by the guest (e.g. LAPIC disabled).
    Result<int> signalMsi(const MsiMessage& msi);
    // The routing table (requires enableIrqRouting()).
    GsiRoutingTable& routing();
    Result<IrqFd> registerIrqfd(const EventFd& event, uint32_t gsi) { return IrqFd::assign(fd(), event.fd(), gsi); }
    Result<IrqFd> registerResampleIrqfd(const EventFd& event, uint32_t gsi, const EventFd& resample) {
        return IrqFd::assign(fd(), event.fd(), gsi, resample.fd());
    }
    Result<IoEventFd> registerIoeventfd(const EventFd& event, IoSpace space, uint64_t addr, uint32_t len,
                                        std::optional<uint64_t> datamatch = std::nullopt) {
        return IoEventFd::assign(fd(), event.fd(), space, addr, len, datamatch);
    }

    // ---- devices, vCPUs ----
    Result<KvmVfioDevice> createVfioDevice() { return KvmVfioDevice::create(fd()); }
    Result<std::unique_ptr<Vcpu>> createVcpu(unsigned index) { return Vcpu::create(fd(), index, vcpuMmapSize_); }

private:
    friend class MemorySlot;
    Vm(UniqueFd fd, size_t vcpuMmapSize, unsigned maxSlots, uint32_t maxGsis)
        : fd_(std::move(fd)), vcpuMmapSize_(vcpuMmapSize), slotUsed_(maxSlots, false), maxGsis_(maxGsis) {}
    void releaseSlot(const MemorySlot& slot);

    UniqueFd fd_;
    size_t vcpuMmapSize_;
    mutable std::mutex slotMutex_;
    std::vector<bool> slotUsed_;
    std::map<uint64_t, MemorySlot> regionSlots_;  // GuestMemory regions, by GPA (under slotMutex_ for reads)
    // Slots whose delete KVM refused: still mapped in KVM, their numbers never reused, deleted
    // again by the destructor so a VM torn down leaves none behind (slot, gpa, name).
    std::vector<std::tuple<uint32_t, uint64_t, std::string>> undeleted_;
    uint32_t maxGsis_;
    std::unique_ptr<GsiRoutingTable> routing_;
};

}  // namespace conduit::vmm
