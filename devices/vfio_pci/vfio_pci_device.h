// VfioPciDevice: a host PCI function assigned to the guest through VFIO.
//
// Config space: a shadow (devices/pci/config_space.h) over the device's VFIO config region. The
// BARs, ROM BAR, capability pointer, interrupt line/pin and the MSI and MSI-X capabilities are
// emulated; the capability and extended-capability chains are filtered to what Conduit supports
// (SR-IOV, resizable BAR, ATS/PRI/PASID, ... are unlinked); everything else reads from and writes
// to the device. A write of PCIe DEVCTL "initiate FLR" resets the device through VFIO.
//
// Reset: at creation decode and bus mastering go off in the device's COMMAND (the kernel enabled
// decode when it opened the device) and the device is reset: VFIO_DEVICE_RESET, or a PCI hot
// reset when it has no function reset and this VM owns every function the hot reset reaches. A
// guest FLR does the same, refused with nothing changed when it cannot be done or would reset
// another function this VM drives; when the reset itself fails, the guest-visible state (COMMAND,
// decoded BARs, armed interrupts) is put back as it was.
//
// BARs: each mmappable area (sparse mmap areas, else the whole BAR; the MSI-X table and PBA pages
// always excluded) is mmapped once at creation and, while the guest has the BAR enabled, is a
// guest memslot at BAR address + offset (no exits) and, with P2P, an IOMMU mapping at the same
// address (dma-buf + mapFile where offered, else the mmap's vaddr). The rest of the BAR is trapped
// on the MMIO (or PIO) bus and forwarded with pread/pwrite; the MSI-X table and PBA are emulated
// there. Moving or disabling a BAR moves or drops all three. A BAR smaller than a page that VFIO
// lets us mmap (vfio-pci reserves the rest of its host page) is one mmapped page: a memslot of
// that page where the guest places the BAR page-aligned and nothing else is decoded in the rest of
// the guest page (which is then claimed on the bus), trapped anywhere else (KVM maps whole pages).
//
// Interrupts: INTx (when an IntxRouter and a GSI are given) is on from the start and whenever
// MSI/MSI-X are off: VFIO triggers an eventfd bound to the IOAPIC pin, KVM's resample eventfd
// unmasks the device on EOI. Enabling MSI or MSI-X disables the active index first (the kernel
// refuses two at once), creates one MsiRoute per vector and hands every route's eventfd to VFIO
// in one SET_IRQS. Vector masking (MSI-X entry mask, function mask, MSI mask bits) only edits the
// routes: no SET_IRQS per mask; a vector that fires while masked shows in the emulated PBA /
// pending bits and is delivered at unmask. The MSI-X table, PBA and Enable / Function Mask state
// are a pci::MsixTable (devices/pci/msix_table.h); this device is its MsixVectors, owning the
// routes and host vectors. MSI and MSI-X messages carry the requester id the root placed the
// function at (PciDevice::placed()) as their device id. A host short of interrupt vectors enables none and
// says how many it has (VFIO_DEVICE_SET_IRQS returns the count): the device then runs with that
// many (a warning names both counts; the vectors beyond never fire), or, if that fails too, the
// error is logged and INTx is back on.
//
// Teardown (destructor, explicit): decode and bus mastering off, IRQs off, routes dropped, bus
// ranges and memslots removed, DMA unmapped, a hot reset for a function without a function reset
// (when no other function of this VM shares it), BAR mmaps unmapped, the device fd closed.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/bus.h"
#include "devices/pci/config_space.h"
#include "devices/pci/msix_table.h"
#include "devices/pci/pci_device.h"
#include "devices/pci/platform.h"
#include "vfio/device.h"
#include "vfio/vfio_ops.h"

namespace conduit::devices::vfio_pci {

struct VfioPciPlatform {
    Bus* mmio = nullptr;
    Bus* pio = nullptr;
    pci::GuestMapper* mapper = nullptr;
    pci::MsiRouter* msi = nullptr;
    pci::IntxRouter* intx = nullptr;       // null: no INTx (pin reads 0)
    std::optional<uint32_t> intxGsi;       // IOAPIC pin for INTx
    vfio::VfioOps* dma = nullptr;          // null: no P2P mappings of BARs
    bool resetOnStart = true;
};

enum class IrqMode { None, Intx, Msi, Msix };
const char* irqModeName(IrqMode mode);

struct BarArea {
    uint64_t offset = 0;
    uint64_t size = 0;
};

struct VfioPciStats {
    uint64_t configReads = 0, configWrites = 0;
    std::array<uint64_t, 7> trappedReads{}, trappedWrites{};  // per BAR, [6] = ROM
    uint64_t msixTableReads = 0, msixTableWrites = 0, pbaReads = 0;
    uint64_t routeMessageUpdates = 0, routeMaskChanges = 0;
    uint64_t setIrqsCalls = 0;  // VFIO_DEVICE_SET_IRQS issued by this device (enable/disable only)
    uint64_t resets = 0;
    uint64_t relocations = 0;   // BAR activations at an address other than the previous one
    size_t memslots = 0, p2pMappings = 0, trappedRanges = 0;
    IrqMode irqMode = IrqMode::None;  // now: a guest that shut down has turned its interrupts off
    unsigned vectors = 0;
    // The most the guest ever used (modes ranked none < INTx < MSI < MSI-X), so stats written at
    // exit still say how the device ran.
    IrqMode peakIrqMode = IrqMode::None;
    unsigned peakVectors = 0;
};

class VfioPciDevice final : public pci::PciDevice,
                            public std::enable_shared_from_this<VfioPciDevice>,
                            private pci::MsixVectors {
public:
    // `name` is the guest location and host device, e.g. "00:01.0 (0000:01:00.0)".
    static Result<std::shared_ptr<VfioPciDevice>> create(std::unique_ptr<vfio::VfioDevice> device,
                                                         VfioPciPlatform platform, std::string name);
    ~VfioPciDevice() override;
    VfioPciDevice(const VfioPciDevice&) = delete;
    VfioPciDevice& operator=(const VfioPciDevice&) = delete;

    std::string name() const override { return name_; }
    uint32_t configSize() const override { return config_.size(); }
    void configRead(uint32_t offset, std::span<uint8_t> data) override;
    void configWrite(uint32_t offset, std::span<const uint8_t> data) override;
    void placed(uint8_t bus, uint8_t devfn) override;

    const pci::BarInfo& bar(unsigned index) const { return bars_->info(index); }
    uint64_t romSize() const { return bars_->romSize(); }
    // Firmware's role before the guest runs: programs a BAR address (decoding stays as COMMAND says).
    void programBar(unsigned index, uint64_t address);
    std::optional<uint64_t> activeBar(unsigned index) const;
    uint64_t programmedBar(unsigned index) const;
    std::vector<BarArea> mmapAreas(unsigned index) const;
    std::vector<BarArea> trappedAreas(unsigned index) const;

    // What a guest FLR does (also reachable through PCIe DEVCTL): a function reset, else a hot
    // reset that reaches no other function this VM drives. Refused with nothing changed when
    // neither can be done; when the reset itself fails, the guest-visible state is put back.
    Result<void> functionLevelReset();

    // A PCIe PASID extended capability (0x1b) in the guest's view, for a device fronted by the
    // virtual SMMUv3 whose host SMMU does PASID (issue 13): Max PASID Width `maxPasidLog2`, the
    // Execute / Privileged Mode Supported bits as given (each also limited to what the function's
    // own PASID capability says, when it has one). It takes the function's own capability's place
    // when there is one (vfio-pci hides PASID control from user space), else the last 8 bytes of
    // the extended config space. The guest's control writes (Enable, and Exec/Priv when supported)
    // are kept here: the host enables PASID on the function itself when its SMMU driver attaches.
    // Refused (EOPNOTSUPP) for a function without extended config space; once only.
    Result<void> addPasidCapability(uint8_t maxPasidLog2, bool exec, bool priv);
    // Where it is, and the guest's PASID Control register.
    std::optional<uint16_t> pasidCapability() const;
    uint16_t pasidControl() const;

    IrqMode irqMode() const;
    VfioPciStats stats() const;
    vfio::VfioDevice& vfioDevice() { return *device_; }
    // Offsets of the capabilities left in the chain / the extended ones (for tests and logs).
    std::vector<uint8_t> capabilities() const { return keptCaps_; }
    std::vector<uint16_t> extendedCapabilities() const { return keptExtCaps_; }

    // A trapped BAR access (the bus windows call this).
    void barAccess(unsigned index, uint64_t offset, std::span<uint8_t> data, bool write);

private:
    struct Area {
        BarArea range;
        uint64_t span = 0;  // bytes mmapped, memslot and DMA-mapped: range.size, or a page for a sub-page BAR
        vfio::HostMapping map;
        std::unique_ptr<pci::GuestMapping> slot;
        bool dmaMapped = false;
        uint64_t dmaIova = 0;
        vfio::HostFd dmaBuf;
    };
    struct Trap {
        BarArea range;
        std::shared_ptr<BusDevice> window;
        std::optional<uint64_t> at;
    };
    struct BarState {
        vfio::RegionInfo region;
        std::vector<Area> areas;
        std::vector<Trap> traps;
        std::optional<uint64_t> lastAddress;
        // Smaller than a page and mmapped: its one area is the whole host page, its one trap the
        // whole BAR; `pageRest` claims the rest of the guest page while the page is a memslot.
        bool subPage = false;
        Trap pageRest;
    };
    // The table, PBA and Enable / Function Mask state are the MsixTable's; the routes and the
    // host vectors behind them are this device's (the MsixVectors callbacks below).
    struct Msix {
        uint8_t cap = 0;
        std::unique_ptr<pci::MsixTable> table;
        // The host adds vectors while MSI-X is on (NORESIZE clear): routes are made as the guest
        // unmasks entries, one slot per entry, empty until used. Otherwise one per entry at enable.
        bool dynamic = false;
        std::vector<std::unique_ptr<pci::MsiRoute>> routes;
        uint16_t vectors() const { return table->layout().vectors; }
    };
    struct Msi {
        uint8_t cap = 0;
        bool is64 = false, perVectorMask = false;
        unsigned maxVectors = 1;
        bool enabled = false;
        std::vector<std::unique_ptr<pci::MsiRoute>> routes;
        uint32_t dataOff() const { return cap + (is64 ? 12 : 8); }
        uint32_t maskOff() const { return cap + (is64 ? 16 : 12); }
        uint32_t size() const { return (is64 ? 14 : 10) + (perVectorMask ? 10 : 0); }
    };

    VfioPciDevice(std::unique_ptr<vfio::VfioDevice> device, VfioPciPlatform platform, std::string name, uint32_t cfgSize);
    Result<void> init();
    Result<void> setupCapabilities(const std::vector<uint8_t>& raw);
    Result<void> setupBars(const std::vector<uint8_t>& raw);

    void updateBars();
    Result<void> activateBar(unsigned index, uint64_t gpa);
    bool mapSubPageBar(unsigned index, uint64_t gpa);
    Result<void> deactivateBar(unsigned index, uint64_t gpa);
    void p2pMap(unsigned index, Area& area, uint64_t gpa);
    void p2pUnmap(Area& area);
    void powerStateWritten(unsigned state);

    // Interrupts (called with mutex_ held).
    void enableIntx();
    void disableIntx();
    Result<void> enableVectors(uint32_t index, std::vector<std::unique_ptr<pci::MsiRoute>>& routes);
    void msixControlChanged();
    // pci::MsixVectors: what the guest's MSI-X table and Message Control ask of the host vectors.
    Result<void> msixEnable() override;
    void msixDisable() override;
    void msixVectorChanged(unsigned vector, const pci::MsiMessage& message, bool masked) override;
    bool msixPending(unsigned vector) const override;
    Result<void> enableMsixAll();
    Result<void> enableMsixInUse();
    Result<std::unique_ptr<pci::MsiRoute>> createMsixRoute(unsigned vector);
    void useMsixVector(unsigned vector);
    bool msixEntryInUse(unsigned vector) const;
    unsigned msixVectorsInUse() const;
    unsigned vectorsInUse() const;  // of the mode on now
    void notePeakIrq();             // after any interrupt mode or vector change
    void msiChanged();
    void msiApply();  // msiChanged() inside its route batch
    void disableMsi();
    pci::MsiMessage msiMessage(unsigned vector) const;
    void irqsOff();
    void refreshMsiPending();

    // Reset (called with mutex_ held). A function reset when the device has one, else a hot reset
    // (vfio/hot_reset.h) when this VM owns every function it reaches; decided before anything is
    // touched.
    struct ResetPlan {
        std::optional<vfio::HotResetPlan> hot;  // empty: VFIO_DEVICE_RESET
    };
    Result<ResetPlan> planReset(vfio::OpenSiblings siblings);
    Result<void> doReset(const ResetPlan& plan);
    // Decode, bus mastering and INTx-disable off in the device's COMMAND (QEMU's
    // vfio_pci_pre_reset()); returns COMMAND as it was.
    Result<uint16_t> quiesce();
    Result<void> resetLocked();
    void restoreAfterFailedReset(uint16_t cmd);

    mutable std::mutex mutex_;
    std::unique_ptr<vfio::VfioDevice> device_;
    VfioPciPlatform platform_;
    std::string name_;
    pci::ConfigSpace config_;
    std::unique_ptr<pci::PciBars> bars_;
    std::array<BarState, 7> barState_;
    std::optional<Msix> msix_;
    std::optional<Msi> msi_;
    std::optional<uint8_t> pcieCap_;
    std::optional<uint16_t> devicePasidAt_;  // the function's own (hidden) PASID capability
    std::optional<uint16_t> pasidCap_;       // addPasidCapability()
    std::optional<uint8_t> pmCap_;  // the PM capability (its PMCSR writes are forwarded)
    // The guest last wrote D3hot to PMCSR: the BARs' P2P mappings are down until it writes D0.
    bool pmD3hot_ = false;
    std::vector<uint8_t> keptCaps_;
    std::vector<uint16_t> keptExtCaps_;
    std::optional<uint32_t> requesterId_;  // bus << 8 | devfn once the root placed the function
    uint8_t intxPin_ = 0;
    std::unique_ptr<pci::IntxRoute> intx_;
    bool intxOn_ = false;
    VfioPciStats stats_;
};

}  // namespace conduit::devices::vfio_pci
