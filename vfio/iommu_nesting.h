// IommuNesting: the iommufd nesting objects a virtual SMMUv3 needs, reached from any VfioOps through
// VfioOps::nesting() (type1 answers with an error: a VFIO container has no nesting). The object
// sequence, as Linux 7.3 wants it (../shared/smmunest/REPORT.md ran it on a real nested SMMU):
//
//   hwInfo(dev)                      IOMMU_GET_HW_INFO: the SMMUv3 IDR words to mirror, capabilities
//   allocNestParent(dev)             IOMMU_HWPT_ALLOC(NEST_PARENT) over the VM's IOAS: stage 2
//   allocViommu(dev, parent)         IOMMU_VIOMMU_ALLOC(ARM_SMMUV3)
//   allocVdevice(dev, viommu, vSID)  IOMMU_VDEVICE_ALLOC: the guest's StreamID for this device
//   allocVeventQueue(viommu, depth)  IOMMU_VEVENTQ_ALLOC(ARM_SMMUV3): an fd of event records
//   allocNestedHwpt(dev, viommu, vSTE)  IOMMU_HWPT_ALLOC on the vIOMMU with the STE's two dwords
//   attach(dev, hwpt) / attachIoas(dev) / detach(dev)   VFIO_DEVICE_(AT|DE)TACH_IOMMUFD_PT; an
//                                    attach of an attached device replaces its HWPT atomically
//   invalidate(viommu, commands)     IOMMU_HWPT_INVALIDATE on the vIOMMU
//
// Objects are shared_ptr handles and every child holds its parent (a nested HWPT, vDEVICE and
// vEVENTQ their vIOMMU, the vIOMMU its NEST_PARENT HWPT), so IOMMU_DESTROY always runs children
// first whatever order the caller drops them in. A device attached to a HWPT holds it too (the
// kernel refuses to destroy an attached HWPT with EBUSY); replacing or detaching releases it. A
// vDEVICE must go before its device (the kernel would otherwise leak its id until the iommufd
// closes): closing a device destroys the vDEVICEs still alive for it, and their handles go inert.
// The backend must outlive every object. Errors name the ioctl, the object ids and the errno.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "vfio/host_fd.h"
#include "vfio/smmuv3.h"

namespace conduit::vfio {

class VfioDevice;

// What destroys an iommufd object id (the iommufd backend: IOMMU_DESTROY).
class IommuObjectOwner {
public:
    virtual Result<void> destroyObject(uint32_t id, const std::string& what) = 0;

protected:
    ~IommuObjectOwner() = default;
};

// An iommufd object id destroyed with IOMMU_DESTROY when dropped (a refusal is logged).
class IommuObject {
public:
    IommuObject() = default;
    IommuObject(IommuObjectOwner* owner, uint32_t id, std::string what) : owner_(owner), id_(id), what_(std::move(what)) {}
    IommuObject(IommuObject&& o) noexcept
        : owner_(std::exchange(o.owner_, nullptr)), id_(std::exchange(o.id_, 0)), what_(std::move(o.what_)) {}
    IommuObject& operator=(IommuObject&& o) noexcept {
        if (this != &o) {
            reset();
            owner_ = std::exchange(o.owner_, nullptr);
            id_ = std::exchange(o.id_, 0);
            what_ = std::move(o.what_);
        }
        return *this;
    }
    ~IommuObject() { reset(); }
    uint32_t id() const { return id_; }
    const std::string& what() const { return what_; }
    bool valid() const { return owner_ != nullptr; }
    void reset();
    // Forget the id without destroying it (the kernel already did).
    void abandon() { owner_ = nullptr; }

private:
    IommuObjectOwner* owner_ = nullptr;
    uint32_t id_ = 0;
    std::string what_;
};

// IOMMU_GET_HW_INFO's answer.
struct SmmuV3HwInfo {
    uint32_t flags = 0;  // IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_*
    std::array<uint32_t, 6> idr{};
    uint32_t iidr = 0;
    uint32_t aidr = 0;
};

struct HwInfo {
    uint32_t dataType = 0;       // IOMMU_HW_INFO_TYPE_*
    uint64_t capabilities = 0;   // IOMMU_HW_CAP_* (DIRTY_TRACKING, PCI_PASID_EXEC/PRIV, PCI_ATS_NOT_SUPPORTED)
    uint8_t maxPasidLog2 = 0;
    std::vector<uint8_t> data;   // type-specific (iommu_hw_info_vtd / iommu_hw_info_arm_smmuv3)
    std::optional<SmmuV3HwInfo> smmuv3;  // parsed when dataType is ARM_SMMUV3
};

// Base of the nesting handles: the parent reference is declared before the id so the id is
// destroyed first (members go in reverse order).
class NestingObject {
public:
    NestingObject(const NestingObject&) = delete;
    NestingObject& operator=(const NestingObject&) = delete;
    virtual ~NestingObject() = default;
    uint32_t id() const { return obj_.id(); }
    const std::string& what() const { return obj_.what(); }
    bool alive() const { return obj_.valid(); }

protected:
    NestingObject(std::shared_ptr<const void> parent, IommuObject obj) : parent_(std::move(parent)), obj_(std::move(obj)) {}

private:
    friend class IommufdBackend;
    std::shared_ptr<const void> parent_;
    IommuObject obj_;
};

// Something a device can be attached to.
class Hwpt : public NestingObject {
protected:
    using NestingObject::NestingObject;
};

// A kernel-managed stage-2 HWPT over the VM's IOAS, allocated with IOMMU_HWPT_ALLOC_NEST_PARENT.
class NestParentHwpt final : public Hwpt {
public:
    NestParentHwpt(IommuObject obj, uint32_t ioasId) : Hwpt(nullptr, std::move(obj)), ioasId_(ioasId) {}
    uint32_t ioasId() const { return ioasId_; }

private:
    uint32_t ioasId_;
};

class Viommu final : public NestingObject {
public:
    Viommu(std::shared_ptr<const NestParentHwpt> parent, IommuObject obj, uint32_t type)
        : NestingObject(parent, std::move(obj)), parentHwpt_(parent.get()), type_(type) {}
    const NestParentHwpt& parent() const { return *parentHwpt_; }
    uint32_t type() const { return type_; }  // IOMMU_VIOMMU_TYPE_*

private:
    const NestParentHwpt* parentHwpt_;
    uint32_t type_;
};

// A nested HWPT on a vIOMMU: the guest's STE as the kernel keeps it (no V: zeroes, an abort; EATS
// cleared). Issue 13's stage-1 walk starts here (config(), S1ContextPtr and S1CDMax of ste()).
class NestedHwpt final : public Hwpt {
public:
    NestedHwpt(std::shared_ptr<const Viommu> viommu, IommuObject obj, smmuv3::Ste ste)
        : Hwpt(viommu, std::move(obj)), viommu_(viommu.get()), ste_(ste) {}
    const Viommu& viommu() const { return *viommu_; }
    const smmuv3::Ste& ste() const { return ste_; }
    smmuv3::SteCfg config() const { return smmuv3::steConfig(ste_); }

private:
    const Viommu* viommu_;
    smmuv3::Ste ste_;
};

// A device's identity on a vIOMMU: virtId is the guest's StreamID (vSID) for the device.
class Vdevice final : public NestingObject {
public:
    Vdevice(std::shared_ptr<const Viommu> viommu, IommuObject obj, uint64_t virtId, std::string device)
        : NestingObject(viommu, std::move(obj)), virtId_(virtId), device_(std::move(device)) {}
    uint64_t virtId() const { return virtId_; }
    const std::string& device() const { return device_; }

private:
    uint64_t virtId_;
    std::string device_;
};

// One vEVENT as read from a vEVENTQ: the SMMUv3 event record with the StreamID already the vSID.
struct Vevent {
    uint32_t sequence = 0;
    smmuv3::Event record{};
    uint8_t eventId() const { return static_cast<uint8_t>(record[0] & smmuv3::kEvt0Id); }
    uint32_t streamId() const { return static_cast<uint32_t>(smmuv3::field(record[0], smmuv3::kEvt0Sid)); }
};

// What one read() drained. `lost` counts events the kernel dropped (queue full): from gaps in the
// sequence numbers and from a LOST_EVENTS header (which takes the last lost event's number).
struct VeventBatch {
    std::vector<Vevent> events;
    uint32_t lost = 0;
    bool lostHeader = false;  // an IOMMU_VEVENTQ_FLAG_LOST_EVENTS header was read
};

// A vEVENTQ: IOMMU_VEVENTQ_ALLOC's object and its fd (pollable: readable while events wait). The fd
// holds a reference on the object, so it is closed before IOMMU_DESTROY.
class VeventQueue final : public NestingObject {
public:
    VeventQueue(std::shared_ptr<const Viommu> viommu, IommuObject obj, HostFd fd, uint32_t depth)
        : NestingObject(viommu, std::move(obj)), fd_(std::move(fd)), depth_(depth) {}
    ~VeventQueue() override { fd_.reset(); }  // before ~NestingObject destroys the object
    int fd() const { return fd_.get(); }
    uint32_t depth() const { return depth_; }
    // Reads and parses what is queued (non-blocking: an empty queue reads nothing), up to `max`
    // records; the sequence is checked against the previous read's.
    Result<VeventBatch> read(size_t max = 64);

private:
    HostFd fd_;
    uint32_t depth_;
    std::optional<uint32_t> nextSequence_;
};

class IommuNesting {
public:
    virtual ~IommuNesting() = default;

    virtual Result<HwInfo> hwInfo(const VfioDevice& dev) = 0;
    virtual Result<std::shared_ptr<NestParentHwpt>> allocNestParent(const VfioDevice& dev) = 0;
    // type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3 (the only one a plain SMMUv3 offers).
    virtual Result<std::shared_ptr<Viommu>> allocViommu(const VfioDevice& dev, std::shared_ptr<const NestParentHwpt> parent,
                                                        uint32_t type) = 0;
    virtual Result<std::shared_ptr<Vdevice>> allocVdevice(const VfioDevice& dev, std::shared_ptr<const Viommu> viommu,
                                                          uint64_t virtId) = 0;
    // The vSTE's two dwords (IOMMU_HWPT_DATA_ARM_SMMUV3). A translating (S1) vSTE can be attached
    // only once the device has a vDEVICE on that vIOMMU; abort and bypass need none.
    virtual Result<std::shared_ptr<NestedHwpt>> allocNestedHwpt(const VfioDevice& dev,
                                                                std::shared_ptr<const Viommu> viommu,
                                                                const smmuv3::Ste& ste) = 0;
    virtual Result<std::unique_ptr<VeventQueue>> allocVeventQueue(std::shared_ptr<const Viommu> viommu,
                                                                  uint32_t depth) = 0;

    // Attaches the device to `hwpt`, replacing its current HWPT (or the IOAS) in one step.
    virtual Result<void> attach(const VfioDevice& dev, std::shared_ptr<const Hwpt> hwpt) = 0;
    // Back to the VM's IOAS (the kernel's automatic paging domain), as at open.
    virtual Result<void> attachIoas(const VfioDevice& dev) = 0;
    // No HWPT at all: the device's DMA is blocked.
    virtual Result<void> detach(const VfioDevice& dev) = 0;
    // The id of the HWPT the device is attached to (the kernel's answer to the last attach), 0 when
    // detached.
    virtual uint32_t attachedHwpt(const VfioDevice& dev) const = 0;

    // IOMMU_HWPT_INVALIDATE on the vIOMMU with SMMUv3 commands (TLBI_NH_*, TLBI_NSNH_ALL,
    // CFGI_CD(_ALL), ATC_INV; StreamIDs are vSIDs). `done` is how many commands the kernel handled;
    // a refusal is an error naming the failing command's index (== done), opcode and dwords. When
    // Linux 7.3 refuses a command it reports the ones before it handled although those of its
    // batch were never issued; this call issues those again (invalidation is idempotent) so that
    // `done` commands have really reached the SMMU.
    virtual Result<void> invalidate(const Viommu& viommu, std::span<const smmuv3::Command> commands,
                                    uint32_t* done = nullptr) = 0;
};

}  // namespace conduit::vfio
