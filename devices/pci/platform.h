// The narrow services a PCI device model needs from the VMM, so that devices never call ioctl:
//   GuestMapper  put host memory (an mmapped BAR area) into guest-physical space (a KVM memslot)
//   MsiRouter    an MSI message as an interrupt route (KVM GSI + irqfd) whose eventfd a device
//                (or VFIO on its behalf) signals; masking edits the route, not the device
//   IntxRouter   an irqchip pin fed by an eventfd, with a resample eventfd signalled on EOI
// vmm/kvm_pci_platform.* implements them over Vm / GsiRoutingTable / IrqFd; unit tests use fakes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"
#include "devices/msi_message.h"

namespace conduit::devices::pci {

// A mapping of host memory into guest-physical space; dropping it removes it.
class GuestMapping {
public:
    virtual ~GuestMapping() = default;
};

class GuestMapper {
public:
    virtual ~GuestMapper() = default;
    // Maps [gpa, gpa + size) (page aligned) to `host`, which must stay mapped while the handle lives.
    virtual Result<std::unique_ptr<GuestMapping>> map(uint64_t gpa, uint64_t size, void* host, const std::string& name) = 0;
};

using devices::MsiMessage;

// One MSI/MSI-X vector: an eventfd that raises `message` in the guest while unmasked. While
// masked, signals are held (pending) and delivered at unmask.
class MsiRoute {
public:
    virtual ~MsiRoute() = default;
    virtual int eventFd() const = 0;
    virtual Result<void> setMessage(const MsiMessage& message) = 0;
    virtual Result<void> setMasked(bool masked) = 0;
    virtual bool masked() const = 0;
    // Masked and signalled since (what the PBA shows).
    virtual bool pending() const = 0;
};

// Route changes made while a batch lives reach the hypervisor together when it finishes: a device
// that enables or re-targets many vectors at once asks for one. A router that pushes nothing per
// change (a test fake) needs no batching, hence the plain default.
class MsiRouteBatch {
public:
    virtual ~MsiRouteBatch() = default;
    // Pushes what changed; the destructor does it too, logging a failure.
    virtual Result<void> finish() { return success(); }
};

class MsiRouter {
public:
    virtual ~MsiRouter() = default;
    virtual Result<std::unique_ptr<MsiRoute>> createRoute(const MsiMessage& message, bool masked, const std::string& name) = 0;
    virtual std::unique_ptr<MsiRouteBatch> batch() { return std::make_unique<MsiRouteBatch>(); }
};

// A level-triggered line into an irqchip pin: trigger asserts it; the resample fd is signalled when
// the guest EOIs the interrupt (so the source can re-check and unmask) without a VMM exit.
class IntxRoute {
public:
    virtual ~IntxRoute() = default;
    virtual int triggerFd() const = 0;
    virtual int resampleFd() const = 0;
    virtual uint32_t gsi() const = 0;
};

class IntxRouter {
public:
    virtual ~IntxRouter() = default;
    virtual Result<std::unique_ptr<IntxRoute>> createRoute(uint32_t gsi, const std::string& name) = 0;
};

}  // namespace conduit::devices::pci
