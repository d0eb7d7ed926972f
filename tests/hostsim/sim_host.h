// SimHost: a simulated host kernel behind vfio::HostInterface, for machines without VFIO.
//
// It implements the VFIO type1 container/group API, the VFIO device API (group fds and cdevs) and
// iommufd with the kernel's rules (argsz/size minimums and capability chains, flag checks, group
// viability, IOVA overlap/alignment/reserved-range errors, dma_avail exhaustion, iommufd object ids
// and EBUSY while referenced, eventfd triggers, INTx automask + resample, reset). Each rule cites
// the kernel function it follows in sim_host.cpp.
//
// File descriptors: every handle it gives out (container, group, device, iommufd, dma-buf, fault
// and vEVENTQ queues) is a real fd (a /dev/null open, or an eventfd for queues) so numbers never
// collide with the process's other fds; the simulation keeps the meaning. Interrupt triggers are
// the caller's real eventfds (dup()ed, as the kernel takes a reference), so KVM irqfds can consume
// them. Memory BARs are memfds, so their mmap() can back a KVM memslot.
//
// The simulated IOMMU translates every device DMA through the device's current domain (type1
// container, or the HWPT/IOAS it is attached to) page by page, as the hardware does: the pages
// before the first unmapped, non-readable or non-writable one are transferred, then the transfer
// stops and a DmaFault records the first failing IOVA. Every fault is recorded; real VT-d keeps
// one fault per recording register and may drop a fault raised while another is still pending
// (QEMU's VT-d records nothing new until the guest clears the previous one).
//
// Device model: QEMU's documented `edu` (docs/specs/edu.rst) with additions (MSI-X, a memory BAR).
// Register processing is synchronous on the write (factorial, DMA), so "busy" is never observed.
// INTx resample eventfds are polled at the start of every HostInterface call and by pump().
//
// VFIO dma-bufs are revoked as the kernel does (vfio_pci_dma_buf_move()): created revoked when
// memory decode is off, revoked when a COMMAND write clears MEMORY and un-revoked when one sets it,
// revoked around VFIO_DEVICE_RESET and a hot reset (each function of the bus; un-revoked after when
// memory is enabled), and for good at the device's last close. IOMMU_IOAS_MAP_FILE of a revoked
// buf is ENODEV; a mapped area whose buf is revoked faults like an unmapped IOVA but stays in the
// IOAS (EEXIST over it, IOAS_UNMAP frees it), and an un-revoke does not bring it back.
//
// Single-threaded: a test or the VMM's vCPU thread calls it; it has no locking.
#pragma once

#include <array>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/hostsim/sim_smmu_walk.h"
#include "vfio/device.h"
#include "vfio/host_interface.h"
#include "vfio/smmuv3.h"
#include "vfio/uapi_compat.h"
#include "vfio/vfio_ops.h"

namespace conduit::hostsim {

enum class BarKind { None, Registers, Memory };

struct BarConfig {
    BarKind kind = BarKind::None;
    uint64_t size = 0;
    bool is64 = false;
    bool prefetchable = false;
    // Memory BARs only; Registers BARs follow SimDeviceConfig::registerBarMmap. A Memory BAR
    // smaller than a page that is mmappable models vfio_pci_probe_mmaps()'s sub-page case (the host
    // BAR page-aligned, the rest of its page reserved by a dummy resource): mmap() may then cover
    // the whole page; false models a host BAR that is not page-aligned (not mmappable).
    bool mmappable = true;
    // Sparse mmap areas (offsets within the BAR). Non-empty: a SPARSE_MMAP capability is reported
    // and mmap() outside these areas fails with EINVAL.
    std::vector<vfio::SparseArea> sparseAreas;
};

struct ReservedRange {
    uint64_t start, last;
    std::string type;  // "msi", "reserved", "direct", "direct-relaxable"
};

struct SimDeviceConfig {
    std::string bdf = "0000:00:03.0";
    unsigned group = 7;
    std::string driver = "vfio-pci";
    uint16_t vendor = 0x1234, device = 0x11e8;  // QEMU edu
    uint32_t classCode = 0x00ff00;
    uint8_t revision = 0x10;
    std::array<BarConfig, 6> bars{
        BarConfig{BarKind::Registers, 1 << 20, false, false, false, {}},  // BAR0: edu registers, trapped
        BarConfig{},
        BarConfig{BarKind::Memory, 1 << 20, true, true, true, {}},       // BAR2+3: memfd memory BAR
        BarConfig{}, BarConfig{}, BarConfig{}};
    unsigned msiVectors = 1;           // 1, 2, 4, 8, 16 or 32
    unsigned msixVectors = 8;          // 0: no MSI-X capability
    unsigned msixBar = 2;              // table and PBA live in this (Memory) BAR
    uint64_t msixTableOffset = 0xfe000;
    uint64_t msixPbaOffset = 0xff000;
    bool msixMappable = true;          // report MSIX_MAPPABLE; else sparse areas avoid table+PBA
    // false: the device has no reset method (edu on q35's root bus): VFIO_DEVICE_FLAGS_RESET is
    // clear and VFIO_DEVICE_RESET fails with EINVAL (vfio_pci_ioctl_reset(): !reset_works).
    bool resetSupported = true;
    // true: the Registers BAR is reported VFIO_REGION_INFO_FLAG_MMAP and can be mmapped, as
    // vfio-pci does for the real edu's page-aligned BAR0 (JSON: "register_bar_mmap"). Its mmap is
    // a memfd: accesses through the mapping reach plain memory, not the register model (which
    // pread/pwrite on the device fd still reach). Off by default so pt_edu's BAR0 stays trapped.
    bool registerBarMmap = false;
    uint64_t dmaMask = ~0ull;          // QEMU's edu uses 28 bits; the sim defaults to 64 for P2P
    // Sim addition: after MSI-X, a bridge subsystem-vendor capability (0x0d, at 0xb0, which a VMM
    // should hide) and then a PCIe endpoint capability (at 0x70, FLR capable). Off by default.
    bool pcieCaps = false;
    // PCIe extended capabilities, chained in this order from the first one (which must sit at
    // 0x100). Non-empty: the config space is 4 KiB (vfio-pci reports pdev->cfg_size, 4096 for a
    // PCIe function); needs pcieCaps. The body follows the 4-byte header and is read-only. Use IDs
    // vfio-pci passes through (vfio_ecap_init() itself hides those with no length in its table,
    // e.g. PASID; the sim does not model that hiding).
    struct ExtCap {
        uint16_t id = 0;
        uint8_t version = 1;
        uint16_t offset = 0;
        std::vector<uint8_t> body;
    };
    std::vector<ExtCap> extCaps;
    // Expansion ROM: its contents and the ROM BAR's size (a power of two of at least 2 KiB, not
    // smaller than the contents). The ROM region reports romBarSize, READ only, when the contents
    // start with a valid image (55 AA and a "PCIR" structure, as pci_map_rom() ->
    // pci_get_rom_size() checks); otherwise its size is 0, as vfio_pci_ioctl_get_region_info()
    // reports when pci_map_rom() fails. Reads past the images read 0xff.
    std::vector<uint8_t> rom;
    uint64_t romBarSize = 0;
    // Host interrupt vectors pci_alloc_irq_vectors() can give this device (unset: as many as
    // asked). Enabling MSI or MSI-X with more vectors than that enables nothing and the ioctl
    // returns this count (vfio_msi_enable() passes the smaller count back to userspace); 0 makes
    // the ioctl fail with ENOSPC.
    std::optional<unsigned> hostIrqVectors;
    // A PCI power-management capability (PCI_CAP_ID_PM, at 0xc0, first in the capability list;
    // D0 and D3hot only, No_Soft_Reset clear). Its PMCSR power-state field is writable, and a write
    // to it does what vfio-pci's vfio_pm_config_write() -> vfio_lock_and_set_power_state() does:
    // D3hot revokes the device's dma-bufs, and memory decode is off while in D3hot
    // (__vfio_pci_memory_enabled()); D0 un-revokes them when COMMAND has MEMORY. Off by default.
    bool pmCap = false;
    // Which physical IOMMU (SMMU instance) the device sits behind. A vIOMMU, its nested HWPTs and
    // vDEVICEs belong to one instance: another instance's device is EINVAL (arm_vsmmu_init(),
    // iommufd_vdevice_alloc_ioctl(), arm_smmu_attach_dev_nested()).
    unsigned iommu = 0;
    // StreamIDs of the device (master->num_streams): IOMMU_VDEVICE_ALLOC wants exactly one
    // (arm_vsmmu_vdevice_init(): EOPNOTSUPP). The first is its physical StreamID.
    std::vector<uint32_t> streamIds{0x8};
};

// Which host kernel's VFIO/iommufd the simulation follows.
// On every kernel IOMMU_IOAS_MAP of a BAR mmap (a VM_PFNMAP vma, which pin_user_pages() refuses)
// is EFAULT; type1 maps it through its PFNMAP path.
enum class HostKernel {
    Newer,      // VFIO dma-buf export (VFIO_DEVICE_FEATURE_DMA_BUF) and IOMMU_IOAS_MAP_FILE exist
    Linux6_12,  // no VFIO_DEVICE_FEATURE_DMA_BUF (ENOTTY), no IOMMU_IOAS_MAP_FILE (6.13; ENOTTY)
};

struct SimHostConfig {
    bool type1v2 = true;        // container offers VFIO_TYPE1v2_IOMMU
    bool iommufd = true;        // /dev/iommu exists
    bool cdev = true;           // /dev/vfio/devices/vfioN exist
    uint64_t apertureLast = (1ull << 48) - 1;  // IOMMU input address width (48-bit)
    // Reserved regions of every group (sysfs reserved_regions), unless overridden per group.
    std::vector<ReservedRange> reserved{{0xfee00000, 0xfeefffff, "msi"}};
    std::map<unsigned, std::vector<ReservedRange>> reservedPerGroup;
    uint32_t dmaEntryLimit = 65535;             // vfio_iommu_type1 dma_entry_limit
    uint64_t pageSizes = 0x1000 | 0x200000 | 0x40000000;
    bool nesting = true;                        // NEST_PARENT HWPTs and nested HWPTs/vIOMMUs work
    uint32_t hwInfoType = IOMMU_HW_INFO_TYPE_INTEL_VTD;
    HostKernel kernel = HostKernel::Newer;
    // pci_msix_can_alloc_dyn(): the host's MSI domain can add MSI-X vectors while MSI-X is on (x86
    // since 6.5). Then VFIO_IRQ_INFO_NORESIZE is clear for MSI-X (vfio_pci_ioctl_get_irq_info())
    // and SET_IRQS may add vectors to an enabled MSI-X index; without it (and always for MSI)
    // NORESIZE is set and a vector beyond those allocated at enable is EINVAL.
    bool dynamicMsix = true;
    // With hwInfoType ARM_SMMUV3: the ID registers IOMMU_GET_HW_INFO reports and the features the
    // nesting checks derive from them (ASID16, RIL, ATS, SSIDSIZE, FWB). Defaults: QEMU 10.0's
    // arm-smmuv3 with stage=nested, as Linux 7.3 read it (../shared/smmunest/REPORT.md).
    std::array<uint32_t, 6> smmuIdr{0x0d44101b, 0x02730010, 0, 0x00001414, 0, 0x00000074};
    uint32_t smmuIidr = 0, smmuAidr = 0x1;
    // IOMMU_FWSPEC_PCI_RC_CANWBS (ACPI IORT): without it, and without IDR3.FWB, IOMMU_VIOMMU_ALLOC
    // is EOPNOTSUPP (arm_smmu_get_viommu_size()): the device-tree case.
    bool canwbs = true;
    // A device attached to a vIOMMU's nested HWPT whose vSTE translates (Config S1) has its DMA
    // translated by the guest's stage 1 (sim_smmu_walk.h: CD table and page tables read from guest
    // memory through stage 2), then stage 2; faults become SMMU events (raiseSmmuEvent()). false:
    // the stage-1 identity of earlier versions (the DMA address is the IPA).
    bool stage1Walk = true;
    // The walk's SMMU keeps CDs and translations until the matching CFGI_CD* / TLBI_NH_* reaches
    // it through IOMMU_HWPT_INVALIDATE (or an attach rewrites the STE), as hardware and QEMU's
    // model do: a VMM that drops a guest's invalidation leaves the device on the stale mapping.
    bool smmuCaches = true;
    // On an SMMUv3 host the device's MSI write goes to the host's SW_MSI doorbell IOVA (the first
    // "msi" reserved range + 0x40, where ../shared/smmunest/REPORT.md saw it: 0x08000040) and so,
    // under a translating nested STE, through the guest's stage 1: the guest must map that VA to the
    // same IPA (its identity map of the window), else the interrupt is lost and the SMMU raises
    // F_TRANSLATION at the doorbell address (REPORT step 10). false: MSIs bypass the walk.
    bool smmuMsiThroughStage1 = true;
};

// Why the simulated IOMMU blocked a DMA.
enum class DmaFaultKind {
    NotPresent,         // no mapping at the IOVA
    WriteToReadOnly,    // a write to a mapping without write permission
    ReadFromWriteOnly,  // a read of a mapping without read permission
    NoDomain,           // the device is attached to no domain (DMA blocked)
    BusMasterDisabled,  // PCI_COMMAND_MASTER clear: the device did not issue the DMA
    // The nested SMMU terminated it before stage 2: the guest's stage 1 (translation, access flag,
    // permission, address size) or its configuration (C_BAD_CD, C_BAD_SUBSTREAMID, C_BAD_STE,
    // F_STREAM_DISABLED). DmaFault::smmuEvent holds the record the SMMU wrote (if CD.R asked).
    Stage1Fault,
};

struct DmaFault {
    std::string bdf;
    uint64_t iova = 0;
    uint64_t size = 0;
    bool write = false;
    std::string reason;
    DmaFaultKind kind = DmaFaultKind::NotPresent;
    // The VT-d fault reason the hardware would report for an IOMMU-blocked transfer (0: none, the
    // IOMMU saw nothing). Second-level PTEs have no present bit, so a write to an unmapped IOVA is
    // reason 5 ("PTE Write access is not set") just like a write to a read-only one, and a read is
    // reason 6 ("PTE Read access is not set"); `kind` keeps the distinction VT-d does not report.
    uint8_t vtdReason = 0;
    // Nested SMMU translation: the transaction's PASID (SubstreamID), the IPA stage 1 produced
    // (a stage-2 fault after a successful walk), and the event record the SMMU raised, physical
    // StreamID (what became of it: SimHost::smmuEvents()).
    std::optional<uint32_t> pasid;
    std::optional<uint64_t> ipa;
    std::optional<vfio::smmuv3::Event> smmuEvent;
};

struct InjectedFault {
    unsigned long request;
    std::string name;  // ioctl name as the fd type interprets the number
};

class SimDevice;
struct SimIoas;

// A command the simulated SMMU's command queue executed for a vIOMMU, after the host's conversion
// (VMID forced into TLBIs, NSNH_ALL turned into NH_ALL, vSID turned into the physical StreamID).
struct SmmuCommandIssued {
    uint32_t viommu = 0;
    vfio::smmuv3::Command cmd{};
};

// What became of an SMMU event the simulated hardware raised for a device.
enum class SmmuEventFate {
    Forwarded,     // queued on the vIOMMU's vEVENTQ with the vSID
    Lost,          // the vEVENTQ was full: counted by the LOST_EVENTS header / sequence gap
    HostOnly,      // no vmaster (no vDEVICE at the last nested attach) or a stage-2 fault: host log
    NoQueue,       // the vIOMMU has no ARM_SMMUV3 vEVENTQ (iommufd_viommu_report_event(): EOPNOTSUPP)
};

// An SMMU event the simulated hardware raised, in the host's own log (the kernel's dmesg line for
// the ones it does not forward), with what became of it.
struct SmmuEventRaised {
    std::string bdf;
    vfio::smmuv3::Event record{};  // physical StreamID
    bool stage2 = false;
    SmmuEventFate fate = SmmuEventFate::HostOnly;
};

// The nested domain a device is attached to: the hook for issue 13's stage-1 walk.
struct SimNestedDomain {
    uint32_t hwpt = 0, viommu = 0, parent = 0;
    vfio::smmuv3::Ste ste{};             // as the kernel keeps it (no V: zeroes; EATS cleared)
    std::optional<uint64_t> vsid;        // the vmaster's vSID, when a vDEVICE existed at attach
};

class SimHost final : public vfio::HostInterface {
public:
    explicit SimHost(SimHostConfig config = {});
    ~SimHost() override;
    SimHost(const SimHost&) = delete;
    SimHost& operator=(const SimHost&) = delete;

    // Adds a VFIO-capable (edu) device; sysfs is updated.
    SimDevice& addDevice(SimDeviceConfig config);
    // Adds a non-VFIO member of an IOMMU group (e.g. a device still bound to its host driver).
    void addGroupPeer(const std::string& bdf, unsigned group, const std::string& driver);
    SimDevice* device(const std::string& bdf);
    vfio::HostPaths paths() const { return {root_ / "sys", root_ / "dev"}; }
    const SimHostConfig& config() const { return config_; }

    // Fault injection. failIoctl: calls with this request number fail with `err` (nth == 0: every
    // call; else only the nth call of that number, 1-based). failNthIoctl: the nth ioctl of any
    // kind fails. Injected failures have no side effect, like a kernel refusing the call up front.
    void failIoctl(unsigned long request, int err, unsigned nth = 0);
    void failNthIoctl(unsigned n, int err);
    void clearInjectedFaults();
    const std::vector<InjectedFault>& injected() const { return injected_; }
    size_t ioctlCount() const { return ioctlCount_; }
    // Name of an ioctl number as an fd of the given handle would interpret it ("?" if unknown).
    std::string ioctlNameFor(int fd, unsigned long request) const;

    // Leak accounting.
    size_t openFdCount() const { return fds_.size(); }
    size_t mmapCount() const { return mmaps_.size(); }
    size_t dmaMappingCount() const;
    size_t iommufdObjectCount() const;
    // The live iommufd objects by kind, in id order: "ioas", "device", "hwpt" (paging),
    // "nest-parent", "nested-abort" / "nested-bypass" / "nested-s1" (by the vSTE's Config),
    // "viommu", "vdevice", "veventq", "fault"; for tests of the order objects go in.
    std::vector<std::string> iommufdObjectKinds() const;

    // Device-side DMA through the simulated IOMMU (the edu DMA engine uses these too). `pasid`: the
    // transaction carries a PCIe PASID prefix (the SMMU's SubstreamID); only a nested SMMU domain
    // with a CD table translates it, every other domain blocks it (it has no PASID attachments).
    bool dmaRead(SimDevice& dev, uint64_t iova, void* out, size_t size, std::optional<uint32_t> pasid = std::nullopt);
    bool dmaWrite(SimDevice& dev, uint64_t iova, const void* in, size_t size,
                  std::optional<uint32_t> pasid = std::nullopt);
    // Every fault is recorded, in order (see the class comment for what real VT-d may drop).
    const std::vector<DmaFault>& dmaFaults() const { return dmaFaults_; }
    void clearDmaFaults() { dmaFaults_.clear(); }

    // Every IOMMU mapping now present (type1 containers and iommufd IOAS), for isolation checks. The
    // area of a revoked dma-buf is left out: it is still in its IOAS but no longer in the domain.
    struct DmaMappingView {
        uint64_t iova = 0, size = 0;
        const uint8_t* host = nullptr;
        bool read = false, write = false;
        bool operator==(const DmaMappingView&) const = default;
    };
    std::vector<DmaMappingView> dmaMappings() const;
    // Called for every page-sized piece of device DMA the simulated IOMMU let through, with the
    // host memory it touched: a test can check it lies in guest RAM or a mapped BAR.
    struct DmaAccess {
        std::string bdf;
        uint64_t iova = 0;
        const uint8_t* host = nullptr;
        size_t size = 0;
        bool write = false;
    };
    void setDmaAudit(std::function<void(const DmaAccess&)> audit) { dmaAudit_ = std::move(audit); }
    // The BAR mmaps handed to Conduit (address -> length).
    const std::map<void*, size_t>& barMmaps() const { return mmaps_; }

    // Processes pending INTx resample (unmask) eventfds.
    void pump();

    // Nesting (hwInfoType ARM_SMMUV3). Commands every vIOMMU's invalidations put on the simulated
    // SMMU, in order; and an event the SMMU raises for the device (record with its physical SID),
    // delivered as arm_smmu_handle_evt() -> arm_vmaster_report_event() would.
    const std::vector<SmmuCommandIssued>& smmuCommandsIssued() const { return smmuCommands_; }
    SmmuEventFate raiseSmmuEvent(SimDevice& dev, const vfio::smmuv3::Event& record, bool stage2 = false);
    std::optional<SimNestedDomain> nestedDomainOf(const SimDevice& dev) const;
    // Every event raised (by the walk or raiseSmmuEvent()), in order: the host's own log.
    const std::vector<SmmuEventRaised>& smmuEvents() const { return smmuEvents_; }
    // The walk's SMMU caches (SimHostConfig::smmuCaches): CDs and translations held.
    const smmuwalk::Caches& smmuCaches() const { return smmuCaches_; }
    // Whether the device's MSI write reaches the doorbell (SimHostConfig::smmuMsiThroughStage1);
    // a fault raises its event. Called by the device for every MSI/MSI-X message.
    bool msiWriteReaches(SimDevice& dev);
    // What the nested SMMU does with one transaction of `dev` right now (no data moves, no event
    // is raised, the caches are neither read nor filled; a CD with HA may still get an AF set):
    // for tests that want the walk's answer itself. nullopt: the device is not behind a vIOMMU's
    // bypass or translating nested HWPT (or stage1Walk is off).
    std::optional<smmuwalk::Result> smmuTranslate(const SimDevice& dev, uint64_t iova, bool write,
                                                  std::optional<uint32_t> pasid = std::nullopt);

    // HostInterface.
    Result<int> open(const std::string& path, int flags) override;
    void close(int fd) override;
    Result<int> ioctl(int fd, unsigned long request, uintptr_t arg) override;
    Result<void*> mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) override;
    void munmap(void* addr, size_t length) override;
    Result<size_t> pread(int fd, void* buf, size_t count, off_t offset) override;
    Result<size_t> pwrite(int fd, const void* buf, size_t count, off_t offset) override;
    Result<size_t> read(int fd, void* buf, size_t count) override;
    Result<int> eventfd(unsigned initval, int flags) override;
    Result<std::string> readFile(const std::filesystem::path& path) override;
    Result<std::filesystem::path> readLink(const std::filesystem::path& path) override;
    Result<std::vector<std::string>> listDirectory(const std::filesystem::path& path) override;
    bool exists(const std::filesystem::path& path) override;

    struct Impl;  // the kernel-side state (sim_host.cpp)

private:
    bool dmaTransfer(SimDevice& dev, uint64_t iova, uint8_t* buf, size_t size, bool write,
                     std::optional<uint32_t> pasid = std::nullopt);
    // dmaTransfer() through a vIOMMU's nested HWPT with stage 1 in use.
    bool nestedTransfer(SimDevice& dev, uint64_t iova, uint8_t* buf, size_t size, bool write,
                        std::optional<uint32_t> pasid);
    void recordSmmuFault(SimDevice& dev, const smmuwalk::Result& r, uint64_t at, uint64_t left, bool write,
                         std::optional<uint32_t> pasid);
    // Asks the process-wide HostCallObserver (host_call_observer.h) whether `call` should fail.
    static int observe(const std::string& call);
    // Whether [va, va + len) overlaps an mmap of a device BAR handed out by mmap().
    bool overlapsBarMmap(uint64_t va, uint64_t len) const;
    void writeSysfs(const SimDevice& dev);
    void writeGroupSysfs(unsigned group);
    std::vector<ReservedRange> reservedFor(unsigned group) const;
    bool groupViable(unsigned group) const;

    SimHostConfig config_;
    std::filesystem::path root_;
    std::vector<std::unique_ptr<SimDevice>> devices_;
    std::vector<std::tuple<std::string, unsigned, std::string>> peers_;
    std::unique_ptr<Impl> impl_;
    std::map<int, int> fds_;                // handle fd -> kind (Impl keeps the objects)
    std::map<void*, size_t> mmaps_;
    std::vector<DmaFault> dmaFaults_;
    // fault injection
    struct Rule {
        unsigned long request;
        int err;
        unsigned nth;
        unsigned seen = 0;
    };
    std::vector<Rule> rules_;
    unsigned failNth_ = 0;
    int failNthErr_ = 0;
    size_t ioctlCount_ = 0;
    std::vector<InjectedFault> injected_;
    size_t dmaDroppedByClose_ = 0;  // see SimHostLeftovers
    std::function<void(const DmaAccess&)> dmaAudit_;
    std::vector<SmmuCommandIssued> smmuCommands_;
    std::vector<SmmuEventRaised> smmuEvents_;
    smmuwalk::Caches smmuCaches_;

    friend class SimDevice;
    friend struct Impl;
};

// The simulated PCI device: QEMU's edu plus MSI-X and a memory BAR.
class SimDevice {
public:
    SimDevice(SimHost& host, SimDeviceConfig config, unsigned cdevIndex);
    ~SimDevice();

    const SimDeviceConfig& config() const { return config_; }
    const std::string& bdf() const { return config_.bdf; }
    unsigned group() const { return config_.group; }
    unsigned cdevIndex() const { return cdevIndex_; }
    void setDriver(const std::string& driver);

    // Memory BAR backing (memfd) and a host view of it.
    int barMemfd(unsigned bar) const { return barMem_[bar].fd; }
    uint8_t* barMemory(unsigned bar) const { return barMem_[bar].ptr; }

    // State observable by tests.
    unsigned resetCount() const { return resetCount_; }
    // The device's own config byte at `offset` (what a guest write reached), for tests.
    uint8_t configByte(uint32_t offset) const { return offset < cfg_.size() ? cfg_[offset] : 0; }
    uint32_t irqStatus() const { return irqStatus_; }
    bool intxMasked() const { return intx_.masked; }
    bool intxAsserted() const { return intx_.level; }
    uint64_t interruptsDelivered() const { return delivered_; }
    uint32_t activeIrqIndex() const { return activeIndex_; }  // VFIO_PCI_NUM_IRQS when none
    // Host vectors allocated for the active MSI/MSI-X index (pci_alloc_irq_vectors()'s count).
    unsigned allocatedVectors() const { return static_cast<unsigned>(allocated_.size()); }
    uint32_t configSize() const { return config_.extCaps.empty() ? 256 : 4096; }
    uint16_t command() const;
    // PMCSR's power-state field (0 = D0 ... 3 = D3hot); 0 without the PM capability.
    unsigned powerState() const;

    // Sim extension of edu: BAR0 offset 0xa0 (4 bytes) holds the PASID the DMA engine's
    // transactions carry: bit 31 set sends a PASID prefix with the PASID in bits 19:0 (a device
    // with PASID support; see SimHost::dmaRead()). Reset clears it.
    static constexpr uint64_t kRegDmaPasid = 0xa0;
    static constexpr uint32_t kDmaPasidEnable = 1u << 31;

    // Register-level access to the trapped BAR (what pread/pwrite on the device fd reach).
    uint64_t regRead(uint64_t offset, unsigned size);
    void regWrite(uint64_t offset, uint64_t value, unsigned size);
    void raise(uint32_t bits);

private:
    friend class SimHost;
    friend struct SimHost::Impl;
    struct Irq {
        std::vector<int> triggers;  // dup()ed eventfds, -1 when unassigned
        bool masked = false;        // INTx only
        bool level = false;         // INTx line asserted
        int unmaskFd = -1;          // INTx resample
    };
    struct BarMem {
        int fd = -1;
        uint8_t* ptr = nullptr;
        uint64_t size = 0;
    };

    void buildConfigSpace();
    uint32_t cfgRead(uint64_t offset, unsigned size);
    void cfgWrite(uint64_t offset, uint32_t value, unsigned size);
    void signal(int fd);
    void deliver(uint32_t index, uint32_t vector);
    void intxAssert();
    void intxUnmask();
    void disableIrqs();
    // The kernel's side of the first open and the last close (vfio_pci_core_enable() / _disable()).
    void enable();
    void disable();
    // A reset as the kernel does it for a user: the config state saved before, restored after.
    void resetRestoringConfig();
    void resetState();
    // vfio_pci_set_power_state(vdev, PCI_D0), which the kernel does at open, at close and before
    // every reset it offers a user.
    void setD0();
    void runDma();
    uint32_t irqCount(uint32_t index) const;
    // pci_get_rom_size(): the bytes of the ROM's images (0 when the first header is invalid).
    uint64_t romImageSize() const;

    SimHost& host_;
    SimDeviceConfig config_;
    unsigned cdevIndex_;
    std::array<uint8_t, 4096> cfg_{};  // configSize() of it is the device's
    std::array<uint8_t, 4096> cfgWritable_{};
    std::array<BarMem, 6> barMem_{};
    std::array<Irq, VFIO_PCI_NUM_IRQS> irqs_{};
    Irq& intx_ = irqs_[VFIO_PCI_INTX_IRQ_INDEX];
    uint32_t activeIndex_ = VFIO_PCI_NUM_IRQS;
    std::set<uint32_t> allocated_;  // vectors of the active MSI/MSI-X index with a host interrupt
    // edu registers
    uint32_t liveness_ = 0, fact_ = 0, status_ = 0, irqStatus_ = 0;
    uint64_t dmaSrc_ = 0, dmaDst_ = 0, dmaCount_ = 0, dmaCmd_ = 0;
    uint32_t dmaPasid_ = 0;  // sim extension at 0xa0 (sim_device.cpp)
    std::array<uint8_t, 4096> dmaBuf_{};
    unsigned resetCount_ = 0;
    uint64_t delivered_ = 0;
    // binding state (owned by SimHost::Impl logic)
    int openCount_ = 0;  // group device fds and bound cdevs (vfio_df_open() ... vfio_df_close())
    decltype(cfg_) savedAtOpen_{};  // pci_save_state() in vfio_pci_core_enable()
    bool needsReset_ = false;       // closed without a function reset (vfio_pci_core_device::needs_reset)
};

}  // namespace conduit::hostsim
