#include "vmm/virtual_iommu.h"

#include <fmt/format.h>

#include "base/log.h"
#include "devices/msi_message.h"
#include "vfio/uapi_compat.h"

namespace conduit::vmm {

Result<std::unique_ptr<VirtualIommu>> VirtualIommu::create(const ViommuConfig& config, Env env) {
    std::unique_ptr<VirtualIommu> v(new VirtualIommu(env));
    TRY_CTX(v->build(config), "virtual IOMMU");
    return v;
}

Result<void> VirtualIommu::build(const ViommuConfig& config) {
    config_ = config;
    // The platform first: one that cannot describe a vIOMMU refuses before any host object exists.
    slot_ = TRY(env_.platform.viommuSlot(config.type));
    if (slot_.mmio.size < devices::smmuv3::VirtualSmmu::kMmioSize)
        return Error(fmt::format("the platform's slot {} is smaller than the SMMUv3's {:#x} bytes", slot_.mmio.toString(),
                                 devices::smmuv3::VirtualSmmu::kMmioSize));

    // The fronted devices, with their guest StreamIDs: requester ids on bus 0, as the FDT's
    // identity iommu-map tells the guest.
    std::vector<NestedSmmuBinding::Device> fronted;
    std::optional<vfio::BackendKind> kind;
    for (const auto& a : env_.passthrough.devices()) {
        if (!a.viommu) continue;
        if (a.backend != vfio::BackendKind::Iommufd)
            return Error(fmt::format("{} uses the {} backend; a device behind the vSMMU needs iommufd", a.device->name(),
                                     vfio::backendKindName(a.backend)),
                         EINVAL);
        kind = a.backend;
        fronted.push_back({&a.device->vfioDevice(), devices::pciRequesterId(0, a.devfn)});
    }
    if (fronted.empty()) return Error("no assigned device is behind it", EINVAL);
    auto* nesting = TRY(env_.passthrough.nesting(*kind));
    binding_ = TRY(NestedSmmuBinding::create(*nesting, std::move(fronted)));

    eventq_ = std::make_unique<KvmInterruptLine>(env_.vm, slot_.eventqLine);
    gerror_ = std::make_unique<KvmInterruptLine>(env_.vm, slot_.gerrorLine);
    cmdqSync_ = std::make_unique<KvmInterruptLine>(env_.vm, slot_.cmdqSyncLine);
    smmu_ = TRY(devices::smmuv3::VirtualSmmu::create(fmt::format("smmuv3@{:#x}", slot_.mmio.base), binding_->hostIds(),
                                                     env_.memory, *binding_,
                                                     {eventq_.get(), gerror_.get(), cmdqSync_.get()}));
    TRY_CTX(env_.mmio.insert(smmu_, slot_.mmio.base, devices::smmuv3::VirtualSmmu::kMmioSize), "its registers");
    onBus_ = true;
    // The model outlives the thread: ~VirtualIommu stops it first.
    auto* model = smmu_.get();
    TRY(binding_->startEvents(
        [model](std::span<const devices::smmuv3::Event> events, uint32_t lost) { model->deliverEvents(events, lost); }));

    // PASID: the guest's CD tables with S1CDMax > 0 are walked by the host SMMU, so a device whose
    // host SMMU and function do PASID gets the capability the guest's driver looks for.
    const uint8_t pasidBits = binding_->hostIds().maxPasidLog2;
    for (const auto& a : env_.passthrough.devices()) {
        if (!a.viommu) continue;
        // Without it the device still works behind the vSMMU, on PASID 0 only: say so, go on.
        if (auto r = addVsmmuPasidCapability(*binding_, *a.device); !r)
            log::get("vmm").warn("vSMMU: no PASID for the guest: {}", r.error().describe());
    }
    auto idrs = smmu_->idrs();
    log::get("vmm").info("vSMMU: {} at {} (IDR0 {:#x} IDR1 {:#x} to the guest), {} stream(s), PASID bits {}",
                         smmu_->name(), slot_.mmio.toString(), idrs[0], idrs[1], binding_->streams().size(), pasidBits);
    return success();
}

Result<bool> addVsmmuPasidCapability(const NestedSmmuBinding& binding, devices::vfio_pci::VfioPciDevice& device) {
    const uint8_t pasidBits = binding.hostIds().maxPasidLog2;
    if (pasidBits == 0) return false;
    const auto& hw = binding.hwInfo();
    TRY(device.addPasidCapability(pasidBits, hw.capabilities & IOMMU_HW_CAP_PCI_PASID_EXEC,
                                  hw.capabilities & IOMMU_HW_CAP_PCI_PASID_PRIV));
    return true;
}

arch::ViommuDescription VirtualIommu::description() const {
    arch::ViommuDescription d{config_.type, binding_ && binding_->coherent(), {}};
    if (binding_) d.requesterIds = binding_->streams();
    return d;
}

nlohmann::json VirtualIommu::stats() const {
    nlohmann::json j = binding_ ? binding_->statsJson() : nlohmann::json::object();
    if (smmu_) {
        auto s = smmu_->stats();
        j["guest"] = {{"commands", s.commands},
                      {"cmd_syncs", s.syncs},
                      {"ste_configs", s.steConfigs},
                      {"invalidations", s.invalidationsForwarded},
                      {"invalidate_batches", s.invalidateCalls},
                      {"command_errors", s.commandErrors},
                      {"events_written", s.eventsDelivered},
                      {"events_lost", s.eventsLost}};
    }
    return j;
}

VirtualIommu::~VirtualIommu() {
    if (binding_) binding_->stopEvents();
    if (onBus_) (void)env_.mmio.remove(slot_.mmio.base);
    smmu_.reset();
    binding_.reset();
    eventq_.reset();
    gerror_.reset();
    cmdqSync_.reset();
}

}  // namespace conduit::vmm
