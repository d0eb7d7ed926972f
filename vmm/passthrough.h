// Passthrough: everything the Machine needs for PCI and assigned devices, assembled from the
// config in one place so machine.cpp only creates and destroys it.
//
//   host        what the VfioHostFactory given by the binary opens for "vfio_host"
//               (vmm/vfio_host.h): the kernel's VFIO in the product; test binaries and a `conduit`
//               built with CONDUIT_SIMULATED_HOST also know the simulated host (tests/hostsim)
//   PCI root    host bridge 00:00.0, ECAM at layout.pciEcam(), and 0xCF8-0xCFF on the PIO bus when
//               the platform has port I/O
//   backends    one VfioBackend per backend kind in use, each with a DmaMapper registered on guest
//               RAM after its first device is open (type1 sets the IOMMU with the first group;
//               iommufd narrows the IOVA ranges on attach)
//   devices     VfioPciDevice per "vfio-pci" entry on bus 0, BARs placed by BarAllocators (32-bit
//               window first, 64-bit window for large 64-bit BARs, I/O in the platform's port
//               window), never over a platform or reserved IOVA range; INTx on the platform's
//               GSI for the slot
//   KVM VFIO    the pseudo-device, fed group fds (type1) or device cdev fds (iommufd) on a real host,
//               each before its device is opened or bound (the backends call add())
//
// Teardown (destructor, in this order): KVM VFIO entries removed, devices off the bus and
// destroyed (IRQs off, memslots and bus ranges removed, P2P DMA unmapped, fds closed), DmaMappers
// unregistered (guest RAM unmapped), backends closed, PCI root off the buses, the host last.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "devices/bus.h"
#include "devices/pci/bar_allocator.h"
#include "devices/pci/pci_root.h"
#include "devices/vfio_pci/vfio_pci_device.h"
#include "memory/address_layout.h"
#include "memory/dma_mapper.h"
#include "memory/guest_memory.h"
#include "vfio/backend.h"
#include "vmm/arch/platform.h"
#include "vmm/config.h"
#include "vmm/kvm_pci_platform.h"
#include "vmm/doorbell_msi_router.h"
#include "vmm/kvm_vfio_device.h"
#include "vmm/vfio_host.h"
#include "vmm/vm.h"

namespace conduit::vmm {

class Passthrough final : private vfio::KvmFileRegistrar {
public:
    struct Env {
        Vm& vm;
        memory::GuestMemory& memory;
        devices::Bus& pio;
        devices::Bus& mmio;
        const memory::AddressLayout& layout;
        const arch::Platform& platform;  // INTx lines, the port-I/O window
    };

    // `hosts` opens the host config.vfioHost names.
    static Result<std::unique_ptr<Passthrough>> create(const VmConfig& config, Env env, const VfioHostFactory& hosts);
    ~Passthrough() override;
    Passthrough(const Passthrough&) = delete;
    Passthrough& operator=(const Passthrough&) = delete;

    devices::pci::PciRoot& root() { return *root_; }
    // Where the devices come from (tests reach the simulated host through it).
    VfioHost& host() { return *host_; }

    struct Assigned {
        std::shared_ptr<devices::vfio_pci::VfioPciDevice> device;
        uint8_t devfn = 0;
        std::string hostBdf;
        vfio::BackendKind backend = vfio::BackendKind::Auto;
        bool viommu = false;  // behind the virtual IOMMU (config "viommu")
    };
    const std::vector<Assigned>& devices() const { return devices_; }

    // The iommufd nesting objects of the backend the devices behind the virtual IOMMU use
    // (iommufd; an error naming why when it has none).
    Result<vfio::IommuNesting*> nesting(vfio::BackendKind kind);

    // {"host": "real"|"simulated", "devices": [...], "dma_faults": [...]} (docs/config.md).
    nlohmann::json stats() const;

private:
    explicit Passthrough(Env env);
    Result<void> build(const VmConfig& config, const VfioHostFactory& hosts);
    Result<std::string> resolveHost(const VfioPciConfig& d);
    Result<vfio::VfioBackend*> backendFor(vfio::BackendKind kind);
    Result<void> placeBars(devices::vfio_pci::VfioPciDevice& dev, vfio::VfioOps& ops);
    // vfio::KvmFileRegistrar: the backends call these before a device opens (real host only).
    Result<void> add(int fd, bool isGroup, const std::string& what) override;
    void remove(int fd, bool isGroup) override;

    struct Backend {
        std::unique_ptr<vfio::VfioBackend> backend;
        std::unique_ptr<memory::DmaMapper> dma;
        bool listening = false;
    };

    Env env_;
    std::unique_ptr<VfioHost> host_;
    KvmGuestMapper mapper_;
    KvmMsiRouter msiRouter_;
    // Devices behind the virtual IOMMU: their MSIs go to the platform's doorbell (config "viommu").
    std::optional<DoorbellMsiRouter> doorbellRouter_;
    KvmIntxRouter intxRouter_;
    std::unique_ptr<devices::pci::PciRoot> root_;
    bool portsOnBus_ = false, ecamOnBus_ = false;
    std::map<vfio::BackendKind, Backend> backends_;
    std::optional<KvmVfioDevice> kvmVfio_;
    std::vector<std::pair<bool, int>> kvmVfioEntries_;  // (isGroup, fd)
    std::vector<Assigned> devices_;
    devices::pci::BarAllocator mmio32_, mmio64_, io_;
};

}  // namespace conduit::vmm
