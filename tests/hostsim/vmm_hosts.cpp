#include "tests/hostsim/vmm_hosts.h"

#include <mutex>

#include "base/log.h"

namespace conduit {

namespace hostsim {

namespace {

// The simulated host is single-threaded; vCPU threads reach it through BAR and config accesses
// of different devices at once, so every call is serialised here.
class LockedHost final : public vfio::HostInterface {
public:
    explicit LockedHost(vfio::HostInterface& inner) : inner_(inner) {}
    Result<int> open(const std::string& path, int flags) override { L l(m_); return inner_.open(path, flags); }
    void close(int fd) override { L l(m_); inner_.close(fd); }
    Result<int> ioctl(int fd, unsigned long request, uintptr_t arg) override { L l(m_); return inner_.ioctl(fd, request, arg); }
    Result<void*> mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) override {
        L l(m_);
        return inner_.mmap(addr, length, prot, flags, fd, offset);
    }
    void munmap(void* addr, size_t length) override { L l(m_); inner_.munmap(addr, length); }
    Result<size_t> pread(int fd, void* buf, size_t count, off_t offset) override { L l(m_); return inner_.pread(fd, buf, count, offset); }
    Result<size_t> pwrite(int fd, const void* buf, size_t count, off_t offset) override {
        L l(m_);
        return inner_.pwrite(fd, buf, count, offset);
    }
    Result<size_t> read(int fd, void* buf, size_t count) override { L l(m_); return inner_.read(fd, buf, count); }
    Result<int> eventfd(unsigned initval, int flags) override { L l(m_); return inner_.eventfd(initval, flags); }
    Result<std::string> readFile(const std::filesystem::path& path) override { L l(m_); return inner_.readFile(path); }
    Result<std::filesystem::path> readLink(const std::filesystem::path& path) override { L l(m_); return inner_.readLink(path); }
    Result<std::vector<std::string>> listDirectory(const std::filesystem::path& path) override {
        L l(m_);
        return inner_.listDirectory(path);
    }
    bool exists(const std::filesystem::path& path) override { L l(m_); return inner_.exists(path); }

private:
    using L = std::lock_guard<std::recursive_mutex>;
    vfio::HostInterface& inner_;
    std::recursive_mutex m_;
};

SimDeviceConfig simDeviceConfig(const vmm::SimulatedDeviceConfig& c) {
    SimDeviceConfig d;
    d.bdf = c.bdf;
    d.group = c.group;
    d.msiVectors = c.msiVectors;
    d.msixVectors = c.msixVectors;
    d.bars[2].size = c.memoryBarSize;
    d.msixBar = 2;
    d.msixTableOffset = c.memoryBarSize - 0x2000;
    d.msixPbaOffset = c.memoryBarSize - 0x1000;
    d.msixMappable = c.msixMappable && !c.sparseMmap;
    if (c.sparseMmap) d.bars[2].sparseAreas = {{0, c.memoryBarSize - 0x2000}};
    d.resetSupported = c.reset;
    if (c.pasidWidth) {
        // PCIe capabilities, then the PASID extended capability (PCI_PASID_CAP: bit 1 Exec,
        // bit 2 Priv, bits 12:8 Max PASID Width).
        d.pcieCaps = true;
        const auto features = uint8_t((c.pasidExec ? 0x02 : 0) | (c.pasidPriv ? 0x04 : 0));
        d.extCaps = {{0x1b, 1, 0x100, {features, uint8_t(c.pasidWidth), 0, 0}}};
    }
    return d;
}

class SimVfioHost final : public vmm::VfioHost {
public:
    explicit SimVfioHost(const vmm::VfioHostConfig& config) {
        SimHostConfig sc;
        sc.iommufd = config.iommufd;
        sc.cdev = config.iommufd;
        sc.type1v2 = config.type1;
        if (config.iommu == vmm::VfioHostConfig::SimIommu::SmmuV3) sc.hwInfoType = IOMMU_HW_INFO_TYPE_ARM_SMMUV3;
        if (config.smmuSsidBits) {
            sc.smmuIdr[0] |= 1u << 19;  // CD2L: 2-level CD tables
            sc.smmuIdr[1] = (sc.smmuIdr[1] & ~(0x1fu << vfio::smmuv3::kIdr1SsidSizeShift)) |
                            (config.smmuSsidBits << vfio::smmuv3::kIdr1SsidSizeShift);
        }
        sim_ = std::make_unique<SimHost>(sc);
        for (auto& d : config.devices) sim_->addDevice(simDeviceConfig(d));
        locked_ = std::make_unique<LockedHost>(*sim_);
        paths_ = sim_->paths();
    }
    ~SimVfioHost() override {
        locked_.reset();
        sim_.reset();
    }

    vfio::HostInterface& interface() override { return *locked_; }
    const vfio::HostPaths& paths() const override { return paths_; }
    bool isKernel() const override { return false; }  // its fds are no VFIO files KVM would take
    std::string name() const override { return "simulated"; }
    void addDeviceStats(const std::string& hostBdf, nlohmann::json& device) const override {
        if (auto* sd = sim_->device(hostBdf)) device["sim_interrupts_delivered"] = sd->interruptsDelivered();
    }
    void addStats(nlohmann::json& passthrough) const override {
        auto& faults = passthrough["dma_faults"] = nlohmann::json::array();
        for (auto& f : sim_->dmaFaults())
            faults.push_back({{"device", f.bdf}, {"iova", f.iova}, {"size", f.size}, {"write", f.write}, {"reason", f.reason}});
    }

    SimHost& sim() { return *sim_; }

private:
    std::unique_ptr<SimHost> sim_;
    std::unique_ptr<LockedHost> locked_;
    vfio::HostPaths paths_;
};

}  // namespace

vmm::VfioHostFactory simulatedVfioHosts() {
    return [](const vmm::VfioHostConfig& config) -> Result<std::unique_ptr<vmm::VfioHost>> {
        if (config.kind != vmm::VfioHostConfig::Kind::Simulated) return vmm::kernelVfioHost();
        log::get("vmm").info("passthrough: simulated VFIO host (test/demo) with {} device(s)", config.devices.size());
        return std::unique_ptr<vmm::VfioHost>(std::make_unique<SimVfioHost>(config));
    };
}

SimHost* simHostOf(vmm::Passthrough& passthrough) {
    auto* sim = dynamic_cast<SimVfioHost*>(&passthrough.host());  // test code: the one concrete host it made
    return sim ? &sim->sim() : nullptr;
}

}  // namespace hostsim

namespace vmm {
// The `conduit` binary built with CONDUIT_SIMULATED_HOST (the tests and the demo use it).
VfioHostFactory binaryVfioHosts() { return hostsim::simulatedVfioHosts(); }
}  // namespace vmm

}  // namespace conduit
