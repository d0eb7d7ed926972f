// VirtualIommu: the config's "viommu" as the Machine holds it, assembled in one place: the
// platform's slot for it (arch::Platform::viommuSlot: MMIO range, wired interrupt lines), the host
// side (NestedSmmuBinding over the iommufd backend's nesting objects, vmm/viommu.h), the device
// model (devices::smmuv3::VirtualSmmu) on the MMIO bus with its three KvmInterruptLines, the
// binding's event thread feeding the model, and a PASID capability on each fronted device whose
// host SMMU offers PASIDs.
//
// Machine order: after Passthrough (its devices are open, on the IOAS, with their requester ids
// placed) and before boot (the FDT describes it through BootContext::viommu). Teardown
// (destructor, in this order): the event thread stopped, the model off the bus and destroyed,
// the binding torn down (devices back on the IOAS, every nesting object destroyed), the lines.
// Must go before Passthrough, after the vCPUs stopped.
#pragma once

#include <memory>

#include <nlohmann/json.hpp>

#include "devices/bus.h"
#include "devices/smmuv3/virtual_smmu.h"
#include "memory/guest_memory.h"
#include "vmm/arch/platform.h"
#include "vmm/config.h"
#include "vmm/kvm_interrupt_line.h"
#include "vmm/passthrough.h"
#include "vmm/viommu.h"

namespace conduit::vmm {

class Vm;

// The PCIe PASID capability the guest's arm-smmu-v3 driver looks for, on a device the vSMMU fronts
// over `binding`: Max PASID Width the binding's max_pasid_log2 (what host SMMU and function both
// do), EXEC/PRIV as IOMMU_GET_HW_INFO reports them. false: the host offers no PASID, nothing added.
Result<bool> addVsmmuPasidCapability(const NestedSmmuBinding& binding, devices::vfio_pci::VfioPciDevice& device);

class VirtualIommu {
public:
    struct Env {
        Vm& vm;
        const memory::GuestMemory& memory;
        devices::Bus& mmio;
        const arch::Platform& platform;
        Passthrough& passthrough;
    };

    static Result<std::unique_ptr<VirtualIommu>> create(const ViommuConfig& config, Env env);
    ~VirtualIommu();
    VirtualIommu(const VirtualIommu&) = delete;
    VirtualIommu& operator=(const VirtualIommu&) = delete;

    // What boot() writes into the firmware tables.
    arch::ViommuDescription description() const;
    // The "viommu" object of `conduit stats`: the binding's counters (STE changes, invalidations,
    // ioctls, events, vDEVICEs) and the model's ("guest": CMDQ, CMD_SYNC, errors, EVTQ).
    nlohmann::json stats() const;
    devices::smmuv3::VirtualSmmu& device() { return *smmu_; }
    NestedSmmuBinding& binding() { return *binding_; }

private:
    explicit VirtualIommu(Env env) : env_(env) {}
    Result<void> build(const ViommuConfig& config);

    Env env_;
    ViommuConfig config_;
    arch::ViommuSlot slot_;
    std::unique_ptr<NestedSmmuBinding> binding_;
    std::unique_ptr<KvmInterruptLine> eventq_, gerror_, cmdqSync_;
    std::shared_ptr<devices::smmuv3::VirtualSmmu> smmu_;
    bool onBus_ = false;
};

}  // namespace conduit::vmm
