// NestedSmmuBinding: the host side of the virtual SMMUv3 (devices/smmuv3/virtual_smmu.h), the
// devices::smmuv3::StreamBinding of the product. It drives the host's physical SMMUv3 in nested
// mode through vfio::IommuNesting only (no ioctl here): the guest's stage 1 (its STEs, CD tables
// and page tables, all in guest memory) over the stage 2 the VMM already keeps (the VM's IOAS).
//
// Objects, per physical SMMU the assigned devices sit behind (a "unit"), created in the order the
// kernel wants (Linux 7.3, ../shared/smmunest/REPORT.md):
//
//   IOMMU_GET_HW_INFO             the SMMUv3 ID registers the vSMMU mirrors (HostSmmuIds)
//   NEST_PARENT HWPT              over the VM's IOAS; each device of the unit is attached to it,
//                                 replacing the IOAS (stage 2 alone: DMA behaves as before)
//   IOMMU_VIOMMU_ALLOC            ARM_SMMUV3 (EOPNOTSUPP: the host has neither CANWBS nor S2FWB)
//   abort and bypass nested HWPTs allocated once, shared by every stream of the unit
//   IOMMU_VDEVICE_ALLOC           per device, virt_id = its guest StreamID, before any translating
//                                 HWPT is attached (the kernel's vmaster for event and CFGI_CD/
//                                 ATC_INV translation is taken at attach time)
//   IOMMU_VEVENTQ_ALLOC           one per vIOMMU, read by the event thread
//
// Units: devices are grouped by the kernel's own answer. A device joins the first unit whose
// vIOMMU takes its vDEVICE; iommufd refuses (EINVAL) a device behind another SMMU instance, and
// then the device starts a unit of its own. Every unit must report the same ID
// registers: the guest sees one SMMU. One unit is what a real host has in practice.
//
// setStream(sid, ste): abort / bypass -> the unit's shared HWPT; S1 -> a nested HWPT allocated for
// the STE, attached by replacement (one ioctl, no window without translation), then the previous
// S1 HWPT is freed. An STE equal to the one in force costs nothing.
// invalidate(commands): one IommuNesting::invalidate per unit that has work: CFGI_CD(_ALL) and
// ATC_INV go to the unit owning their StreamID (dropped, as handled, for a stream that is not an
// assigned device's: its STE is the guest's own business), TLBI_* to every unit (an ASID is the
// guest's, valid across its streams). `done` is the first command some unit failed at.
// Events: a thread polls every vEVENTQ fd and a stop eventfd, and hands the records (StreamIDs
// already guest StreamIDs) with the lost count to the sink, VirtualSmmu::deliverEvents.
//
// Guest StreamIDs are the devices' requester ids on the virtual bus 0 (the FDT's iommu-map is the
// identity): the guest cannot renumber bus 0, so they never change and the vDEVICEs stay. A guest
// FLR (VFIO_DEVICE_RESET or a hot reset) leaves iommufd objects and attachments alone: the vDEVICE
// and the nested HWPT survive it (docs/vsmmu.md, "Device reset").
//
// Teardown (destructor, explicit): the event thread stopped and joined, every device attached back
// to the IOAS (as Passthrough opened it), then the S1 HWPTs, the shared HWPTs, the vDEVICEs, the
// vEVENTQs, the vIOMMUs and the NEST_PARENT HWPTs dropped, children first (IommuNesting's handles
// also enforce it). Nothing is left in the iommufd. Must be destroyed before the devices and the
// backend.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/event_fd.h"
#include "base/result.h"
#include "devices/smmuv3/stream_binding.h"
#include "devices/smmuv3/virtual_smmu.h"
#include "vfio/iommu_nesting.h"

namespace conduit::vmm {

struct ViommuStats {
    uint64_t steAbort = 0, steBypass = 0, steS1 = 0;  // setStream() that changed the HWPT, by config
    uint64_t steUnchanged = 0;                        // setStream() with the STE already in force
    uint64_t steErrors = 0;                           // setStream() refused (the vSMMU reports C_BAD_STE)
    uint64_t commandsForwarded = 0;                   // commands handed to IOMMU_HWPT_INVALIDATE (per unit)
    uint64_t commandsDropped = 0;                     // CFGI_CD/ATC_INV for a stream of no assigned device
    uint64_t invalidateCalls = 0;                     // IommuNesting::invalidate calls (IOMMU_HWPT_INVALIDATE)
    uint64_t invalidateErrors = 0;                    // of which refused
    uint64_t eventsDelivered = 0;                     // vEVENTQ records handed to the vSMMU
    uint64_t eventsLost = 0;                          // lost by the host (sequence gaps, LOST_EVENTS)
    uint64_t eventReadErrors = 0;
    size_t vdevices = 0, viommus = 0;
};

class NestedSmmuBinding final : public devices::smmuv3::StreamBinding {
public:
    struct Device {
        vfio::VfioDevice* device = nullptr;  // outlives the binding
        uint32_t streamId = 0;               // the guest StreamID: the requester id on the virtual bus
    };
    using EventSink = std::function<void(std::span<const devices::smmuv3::Event>, uint32_t lost)>;

    static constexpr uint32_t kEventQueueDepth = 128;

    // Builds every unit's objects; an error names the step and why (and undoes what was done).
    static Result<std::unique_ptr<NestedSmmuBinding>> create(vfio::IommuNesting& nesting, std::vector<Device> devices);
    ~NestedSmmuBinding() override;
    NestedSmmuBinding(const NestedSmmuBinding&) = delete;
    NestedSmmuBinding& operator=(const NestedSmmuBinding&) = delete;

    // The host SMMU's identity for the vSMMU (maxPasidLog2: the smallest of the devices').
    const devices::smmuv3::HostSmmuIds& hostIds() const { return hostIds_; }
    // IOMMU_GET_HW_INFO of the first device (capabilities: PASID EXEC/PRIV, ATS).
    const vfio::HwInfo& hwInfo() const { return hwInfo_; }
    // Whether the host SMMU walks tables coherently (IDR0.COHACC): the FDT's dma-coherent.
    bool coherent() const;

    // Starts the event thread delivering to `sink` (which must outlive the binding or stopEvents()).
    Result<void> startEvents(EventSink sink);
    void stopEvents();

    // devices::smmuv3::StreamBinding
    std::vector<uint32_t> streams() const override;
    Result<void> setStream(uint32_t sid, const devices::smmuv3::Ste& ste) override;
    Result<void> invalidate(std::span<const devices::smmuv3::Command> commands, uint32_t* done) override;

    ViommuStats stats() const;
    // The "viommu" object of `conduit stats` (docs/config.md).
    nlohmann::json statsJson() const;

private:
    struct Unit;
    struct Stream;
    explicit NestedSmmuBinding(vfio::IommuNesting& nesting);
    Result<void> build(std::vector<Device> devices);
    // The unit `dev` belongs to (created if none takes it), the device attached to its stage 2
    // and its vDEVICE (virt id `sid`) allocated: before any translating HWPT, since the kernel
    // names the vmaster (for events and CFGI_CD/ATC_INV) at attach time.
    Result<Unit*> unitFor(vfio::VfioDevice& dev, uint32_t sid, std::shared_ptr<vfio::Vdevice>* vdevice);
    Stream* find(uint32_t sid);
    void eventLoop();
    void teardown();

    vfio::IommuNesting& nesting_;
    vfio::HwInfo hwInfo_;
    devices::smmuv3::HostSmmuIds hostIds_;
    std::vector<std::unique_ptr<Unit>> units_;
    std::vector<std::unique_ptr<Stream>> streams_;
    // setStream()/invalidate() come on vCPU threads; one at a time keeps each stream's HWPT and
    // the counters consistent (the kernel serialises the attach anyway).
    mutable std::mutex mutex_;
    ViommuStats stats_;
    EventSink sink_;
    std::optional<EventFd> stop_;
    std::thread events_;
};

}  // namespace conduit::vmm
