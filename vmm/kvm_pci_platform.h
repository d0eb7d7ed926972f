// The PCI device services (devices/pci/platform.h) over KVM:
//   KvmGuestMapper  a memslot per mapping (Vm::mapMemory), removed with the handle
//   KvmMsiRouter    a GSI MSI route (GsiRoutingTable) + an irqfd per vector. Masking unbinds the
//                   irqfd from the GSI (KVM_IRQFD deassign) so the eventfd keeps counting: that
//                   count is the pending bit, and re-binding at unmask makes KVM inject it at once
//                   (kvm_irqfd_assign() polls the eventfd). No VFIO call on mask or unmask.
//                   Batches defer the routing table's pushes (an irqfd may be bound to a GSI KVM
//                   learns of at the batch's end: KVM re-resolves irqfds whenever the table changes).
//   KvmIntxRouter   an irqfd with KVM_IRQFD_FLAG_RESAMPLE on an irqchip GSI: KVM de-asserts the
//                   line and signals the resample eventfd on EOI, VFIO unmasks the device there.
// The Vm must outlive everything these hand out.
#pragma once

#include "devices/pci/platform.h"
#include "vmm/vm.h"

namespace conduit::vmm {

class KvmGuestMapper final : public devices::pci::GuestMapper {
public:
    explicit KvmGuestMapper(Vm& vm) : vm_(vm) {}
    Result<std::unique_ptr<devices::pci::GuestMapping>> map(uint64_t gpa, uint64_t size, void* host, const std::string& name) override;

private:
    Vm& vm_;
};

class KvmMsiRouter final : public devices::pci::MsiRouter {
public:
    explicit KvmMsiRouter(Vm& vm) : vm_(vm) {}
    Result<std::unique_ptr<devices::pci::MsiRoute>> createRoute(const devices::pci::MsiMessage& message, bool masked,
                                                                const std::string& name) override;
    // One KVM_SET_GSI_ROUTING for everything changed while it lives (GsiRoutingTable::Deferral).
    std::unique_ptr<devices::pci::MsiRouteBatch> batch() override;

private:
    Vm& vm_;
};

class KvmIntxRouter final : public devices::pci::IntxRouter {
public:
    explicit KvmIntxRouter(Vm& vm) : vm_(vm) {}
    Result<std::unique_ptr<devices::pci::IntxRoute>> createRoute(uint32_t gsi, const std::string& name) override;

private:
    Vm& vm_;
};

}  // namespace conduit::vmm
