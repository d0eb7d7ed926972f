// VirtualSmmu: an Arm SMMUv3 (spec IHI 0070) presented to an arm64 guest whose stream table and
// context-descriptor (PASID) tables stay in guest memory, owned by the guest. Stage 1 is walked by
// the physical SMMU in nested mode; this model only mirrors what the guest's arm-smmu-v3 driver
// programs and forwards it through a StreamBinding:
//
//   registers   page 0 (IDR0-5, IIDR, AIDR, CR0/CR0ACK, CR1, CR2, GBPA, IRQ_CTRL/ACK, GERROR/
//               GERRORN, STRTAB_BASE(_CFG), CMDQ_BASE/PROD/CONS, EVTQ_BASE, the IRQ_CFG registers)
//               and page 1 (EVTQ_PROD/CONS). The IDRs are derived from the host SMMU's (what
//               IOMMU_GET_HW_INFO reports) within what nesting allows: stage 1 only, the host's
//               OAS, granules, ASID16, RIL, SSIDSIZE, no MSI, no ATS/PRI/stall.
//   CMDQ        consumed synchronously on each CMDQ_PROD write: CFGI_STE/STE_RANGE/ALL re-read the
//               guest's STEs (linear or 2-level table) and call setStream(); invalidations are
//               collected and sent with one invalidate() per CMD_SYNC; CMD_SYNC completes at once.
//   EVTQ        deliverEvents() writes host event records into the guest's queue and raises the
//               eventq interrupt; what did not fit or was lost sets the overflow flag.
//   GBPA        while SMMUEN is clear every bound stream is abort or bypass as GBPA.ABORT says.
//
// Interrupts are wired (edge-triggered SPIs): eventq, gerror, cmdq-sync. Thread-safe: MMIO comes on
// vCPU threads, events on the binding's event thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/result.h"
#include "devices/bus_device.h"
#include "devices/interrupt_line.h"
#include "devices/smmuv3/stream_binding.h"
#include "memory/guest_memory.h"

namespace conduit::devices::smmuv3 {

// The host SMMU's identity registers (vfio::SmmuV3HwInfo's words) and PASID support.
struct HostSmmuIds {
    std::array<uint32_t, 6> idr{};
    uint32_t iidr = 0;
    uint32_t aidr = 0;
    uint8_t maxPasidLog2 = 0;  // IOMMU_GET_HW_INFO's out_max_pasid_log2 for the device
};

struct VirtualSmmuIrqs {
    InterruptLine* eventq = nullptr;
    InterruptLine* gerror = nullptr;
    InterruptLine* cmdqSync = nullptr;
};

struct VirtualSmmuStats {
    uint64_t commands = 0;             // CMDQ entries consumed
    uint64_t syncs = 0;                // CMD_SYNCs
    uint64_t steConfigs = 0;           // setStream() calls
    uint64_t invalidationsForwarded = 0;  // commands passed to invalidate()
    uint64_t invalidateCalls = 0;      // invalidate() calls (one IOMMU_HWPT_INVALIDATE batch each)
    uint64_t commandErrors = 0;        // CONS.ERR reports
    uint64_t eventsDelivered = 0;      // records written to the guest's EVTQ
    uint64_t eventsLost = 0;           // dropped (queue full, disabled, or lost by the host)
};

class VirtualSmmu final : public BusDevice {
public:
    static constexpr uint64_t kMmioSize = 0x20000;  // page 0 and page 1, 64 KiB each

    static Result<std::unique_ptr<VirtualSmmu>> create(std::string name, const HostSmmuIds& host,
                                                       const memory::GuestMemory& memory,
                                                       StreamBinding& binding, VirtualSmmuIrqs irqs);
    ~VirtualSmmu() override;

    std::string name() const override;
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host event records (StreamIDs already guest StreamIDs) into the guest's EVTQ; `lost` more
    // were dropped before they reached us. Safe from any thread.
    void deliverEvents(std::span<const Event> events, uint32_t lost);

    // The binding's streams() changed (a device was assigned or removed, the guest renumbered its
    // bus): forget the configuration of streams no longer bound and set every bound stream from
    // the guest's stream table (or GBPA while SMMUEN is clear), as SMMUEN 0->1 does. Call it on
    // a thread that may call the binding (not with the binding's own locks held).
    void rebindStreams();

    // The IDR words the guest sees.
    std::array<uint32_t, 6> idrs() const;
    VirtualSmmuStats stats() const;

private:
    struct State;
    explicit VirtualSmmu(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace conduit::devices::smmuv3
