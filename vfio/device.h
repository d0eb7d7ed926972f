// VfioDevice: one VFIO device fd (from a type1 group or an iommufd-bound cdev). Regions with their
// full capability chains, interrupts, reset, config space and region access, region mmap.
// The backend that opened it must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "vfio/host_fd.h"
#include "vfio/hot_reset.h"
#include "vfio/uapi_compat.h"

namespace conduit::vfio {

struct SparseArea {
    uint64_t offset = 0;  // within the region
    uint64_t size = 0;
};

struct RegionInfo {
    uint32_t index = 0;
    uint32_t flags = 0;   // VFIO_REGION_INFO_FLAG_*
    uint64_t size = 0;
    uint64_t offset = 0;  // file offset of the region in the device fd
    std::vector<SparseArea> sparseAreas;  // from VFIO_REGION_INFO_CAP_SPARSE_MMAP (empty: none)
    bool hasSparseCap = false;
    bool msixMappable = false;            // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE
    std::optional<std::pair<uint32_t, uint32_t>> typeSubtype;  // VFIO_REGION_INFO_CAP_TYPE

    bool readable() const { return flags & VFIO_REGION_INFO_FLAG_READ; }
    bool writable() const { return flags & VFIO_REGION_INFO_FLAG_WRITE; }
    bool mmappable() const { return flags & VFIO_REGION_INFO_FLAG_MMAP; }
};

struct IrqInfo {
    uint32_t index = 0;
    uint32_t flags = 0;  // VFIO_IRQ_INFO_*
    uint32_t count = 0;
};

class VfioDevice {
public:
    // Takes an opened device fd (group GET_DEVICE_FD, or a bound+attached cdev) and reads its info.
    // The fd is moved from only on success.
    static Result<VfioDevice> create(HostInterface& host, HostFd&& fd, std::string name);

    VfioDevice(VfioDevice&&) = default;
    VfioDevice& operator=(VfioDevice&&) = default;

    const std::string& name() const { return name_; }
    int fd() const { return fd_.get(); }
    uint32_t flags() const { return flags_; }
    uint32_t numRegions() const { return numRegions_; }
    uint32_t numIrqs() const { return numIrqs_; }
    bool isPci() const { return flags_ & VFIO_DEVICE_FLAGS_PCI; }
    bool canReset() const { return flags_ & VFIO_DEVICE_FLAGS_RESET; }

    // VFIO_DEVICE_GET_REGION_INFO, re-issued with a larger argsz when the capability chain needs it.
    Result<RegionInfo> regionInfo(uint32_t index);
    Result<IrqInfo> irqInfo(uint32_t index);

    // VFIO_DEVICE_SET_IRQS ACTION_TRIGGER with eventfds for vectors [start, start + fds.size());
    // -1 de-assigns a vector. When this enables MSI/MSI-X and the host has fewer interrupt
    // vectors than that, the kernel enables nothing and returns how many it has: an error here
    // (ENOSPC, naming both counts); enableVectors() is the form that hands the count back.
    Result<void> setIrqEventfds(uint32_t index, uint32_t start, std::span<const int32_t> fds);
    // Enables MSI or MSI-X (which must be off) with one eventfd per vector from vector 0. All or
    // nothing: returns fds.size() when every vector is on; otherwise nothing is on and the result
    // is the smaller number of vectors the host can give (vfio_msi_enable() passes
    // pci_alloc_irq_vectors()'s count back as the ioctl's value), to retry with.
    Result<uint32_t> enableVectors(uint32_t index, std::span<const int32_t> fds);
    // ACTION_TRIGGER DATA_NONE count 0: all vectors of the index off.
    Result<void> disableIrq(uint32_t index);
    // ACTION_TRIGGER DATA_NONE count > 0: fire the vectors (loopback; useful in tests).
    Result<void> triggerIrq(uint32_t index, uint32_t start, uint32_t count);
    Result<void> maskIrq(uint32_t index, uint32_t subindex);
    Result<void> unmaskIrq(uint32_t index, uint32_t subindex);
    // ACTION_UNMASK with an eventfd: the INTx resample path (a write to the eventfd unmasks).
    Result<void> setUnmaskEventfd(uint32_t index, uint32_t subindex, int32_t fd);

    // VFIO_DEVICE_RESET (a function reset: FLR, PM reset, or a bus reset when the function is alone
    // on its bus); refused without the ioctl when VFIO_DEVICE_FLAGS_RESET is clear.
    Result<void> reset();
    // VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, re-issued with the count the kernel asked for (ENOSPC);
    // the flags say which form the list is in (hot_reset.h).
    Result<HotResetInfo> hotResetInfo();
    // The info, checked against what the backend that opened this device owns (no reset yet).
    Result<HotResetPlan> planHotReset(OpenSiblings siblings);
    // VFIO_DEVICE_PCI_HOT_RESET as planned: the group fds, or a zero-length array in the dev-id form.
    Result<void> hotReset(const HotResetPlan& plan);

    Result<void> readRegion(uint32_t index, uint64_t offset, std::span<uint8_t> out);
    Result<void> writeRegion(uint32_t index, uint64_t offset, std::span<const uint8_t> in);
    Result<void> readConfig(uint64_t offset, std::span<uint8_t> out) {
        return readRegion(VFIO_PCI_CONFIG_REGION_INDEX, offset, out);
    }
    Result<void> writeConfig(uint64_t offset, std::span<const uint8_t> in) {
        return writeRegion(VFIO_PCI_CONFIG_REGION_INDEX, offset, in);
    }
    template <class T>
    Result<T> readConfigObj(uint64_t offset) {
        T v{};
        TRY(readConfig(offset, std::span(reinterpret_cast<uint8_t*>(&v), sizeof v)));
        return v;
    }
    template <class T>
    Result<void> writeConfigObj(uint64_t offset, T v) {
        return writeConfig(offset, std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v));
    }

    // mmap of [offset, offset + size) of a region (must be mmappable; page aligned). The end may
    // reach the region's size rounded up to a page: vfio-pci makes a BAR smaller than a page
    // mmappable by reserving the rest of its host page, and maps that whole page.
    Result<HostMapping> mapRegion(uint32_t index, uint64_t offset, uint64_t size, int prot);
    // The mmappable areas of a region, as cloud-hypervisor's generate_sparse_areas(): the sparse
    // mmap areas when the cap is present; else the whole region (with MSIX_MAPPABLE or no MSI-X);
    // empty when the region is not mmappable.
    Result<std::vector<SparseArea>> mmapAreas(uint32_t index);

    // VFIO_DEVICE_FEATURE_DMA_BUF: a dma-buf fd for a slice of a region (P2P with iommufd).
    Result<HostFd> exportDmaBuf(uint32_t index, uint64_t offset, uint64_t length);

    // Run once when the device is destroyed, before its fd is closed (the backend detaches and
    // forgets the device there).
    void setCloseHook(std::function<void(int fd)> hook) { closeHook_.fn = std::move(hook); closeHook_.fd = fd(); }
    // Set by the backend that opened the device (it must outlive the device); planHotReset() asks it.
    void setHotResetOwner(const HotResetOwner* owner) { hotResetOwner_ = owner; }

private:
    struct CloseHook {
        std::function<void(int)> fn;
        int fd = -1;
        CloseHook() = default;
        CloseHook(CloseHook&& o) noexcept : fn(std::exchange(o.fn, nullptr)), fd(o.fd) {}
        CloseHook& operator=(CloseHook&& o) noexcept {
            if (this != &o) {
                run();
                fn = std::exchange(o.fn, nullptr);
                fd = o.fd;
            }
            return *this;
        }
        ~CloseHook() { run(); }
        void run() {
            if (fn) std::exchange(fn, nullptr)(fd);
        }
    };

    VfioDevice(HostInterface& host, HostFd fd, std::string name) : host_(&host), fd_(std::move(fd)), name_(std::move(name)) {}
    // The ioctl's value: 0, or (enabling MSI/MSI-X) the number of vectors the host has.
    Result<int> setIrqs(uint32_t flags, uint32_t index, uint32_t start, uint32_t count, std::span<const uint8_t> data,
                        const std::string& what);

    HostInterface* host_;
    HostFd fd_;
    std::string name_;
    uint32_t flags_ = 0;
    uint32_t numRegions_ = 0;
    uint32_t numIrqs_ = 0;
    std::map<uint32_t, RegionInfo> regions_;  // cache
    const HotResetOwner* hotResetOwner_ = nullptr;
    CloseHook closeHook_;  // declared after fd_: runs before the fd is closed
};

const char* irqIndexName(uint32_t index);
std::string regionName(uint32_t index);

}  // namespace conduit::vfio
