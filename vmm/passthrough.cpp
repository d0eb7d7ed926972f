#include "vmm/passthrough.h"

#include <fmt/format.h>

#include "base/log.h"
#include "vfio/sysfs.h"

namespace conduit::vmm {

namespace {

using devices::vfio_pci::VfioPciDevice;

nlohmann::json areasJson(const std::vector<devices::vfio_pci::BarArea>& areas) {
    nlohmann::json a = nlohmann::json::array();
    for (auto& x : areas) a.push_back({{"offset", x.offset}, {"size", x.size}});
    return a;
}

}  // namespace

Passthrough::Passthrough(Env env)
    : env_(env), mapper_(env.vm), msiRouter_(env.vm), intxRouter_(env.vm),
      mmio32_("mmio32", env.layout.mmio32Window()), mmio64_("mmio64", env.layout.mmio64Window()),
      io_("io", env.platform.pciIoPortWindow().value_or(memory::AddressRange{}), 4) {}

Result<std::unique_ptr<Passthrough>> Passthrough::create(const VmConfig& config, Env env,
                                                        const VfioHostFactory& hosts) {
    std::unique_ptr<Passthrough> p(new Passthrough(env));
    TRY(p->build(config, hosts));
    return p;
}

Result<void> Passthrough::build(const VmConfig& config, const VfioHostFactory& hosts) {
    auto& log = log::get("vmm");
    root_ = std::make_unique<devices::pci::PciRoot>();
    if (env_.platform.pciIoPortWindow()) {  // the 0xCF8 mechanism exists where port I/O does
        TRY_CTX(env_.pio.insert(root_->configPorts(), devices::pci::PciRoot::kConfigAddressPort,
                                devices::pci::PciRoot::kConfigPortCount),
                "PCI config ports");
        portsOnBus_ = true;
    }
    TRY_CTX(env_.mmio.insert(root_->ecam(), env_.layout.pciEcam().base, env_.layout.pciEcam().size), "PCI ECAM");
    ecamOnBus_ = true;
    for (const auto* ranges : {&env_.layout.platformRanges(), &env_.layout.reservedIova()}) {
        for (auto& r : *ranges) {
            mmio32_.exclude(r.range);
            mmio64_.exclude(r.range);
        }
    }

    host_ = TRY_CTX(hosts(config.vfioHost), "passthrough");
    if (config.viommu) {
        // A platform without a vIOMMU slot refuses here, before any device is opened (the same
        // refusal VirtualIommu would give).
        auto slot = TRY_CTX(env_.platform.viommuSlot(config.viommu->type), "virtual IOMMU");
        if (slot.msiDoorbell) doorbellRouter_.emplace(msiRouter_, *slot.msiDoorbell);
    }

    for (const auto& entry : config.devices) {
        if (!entry.vfioPci) continue;
        const auto& d = *entry.vfioPci;
        const std::string bdf = TRY(resolveHost(d));
        auto* backend = TRY_CTX(backendFor(d.backend), fmt::format("vfio-pci {}", d.host));
        // On the kernel's VFIO, KVM's VFIO device learns the group / cdev before the device is
        // opened (add() below); another host's fds are no VFIO files KVM would take.
        auto vdev = TRY_CTX(backend->openDevice(bdf, host_->isKernel() ? this : nullptr), fmt::format("vfio-pci {}", d.host));
        auto& be = backends_[backend->kind()];
        if (!be.listening) {
            // After the first device: type1 has its IOMMU set, iommufd its IOVA ranges narrowed.
            be.dma = std::make_unique<memory::DmaMapper>(*backend);
            TRY_CTX(env_.memory.addListener(be.dma.get()), fmt::format("DMA mapping of guest RAM ({})", backend->backendName()));
            be.listening = true;
        }
        const uint8_t slot = d.slot ? *d.slot : TRY(root_->nextFreeSlot());
        const std::string name = fmt::format("00:{:02x}.0 ({})", slot, bdf);
        devices::vfio_pci::VfioPciPlatform platform;
        platform.mmio = &env_.mmio;
        platform.pio = &env_.pio;
        platform.mapper = &mapper_;
        platform.msi = d.viommu && doorbellRouter_ ? static_cast<devices::pci::MsiRouter*>(&*doorbellRouter_)
                                                   : static_cast<devices::pci::MsiRouter*>(&msiRouter_);
        platform.intx = &intxRouter_;
        platform.intxGsi = env_.platform.pciIntxGsi(slot);
        platform.dma = d.p2p ? static_cast<vfio::VfioOps*>(backend) : nullptr;
        auto dev = TRY(VfioPciDevice::create(std::move(vdev), platform, name));
        TRY(placeBars(*dev, *backend));
        const uint8_t devfn = TRY(root_->addDevice(dev, slot));
        devices_.push_back({dev, devfn, bdf, backend->kind(), d.viommu});
        log.info("passthrough: {} on {} backend{}", name, backend->backendName(),
                 d.p2p ? "" : "; p2p off: its BARs stay out of the IOMMU, and DMA from other devices to them faults");
    }
    return success();
}

Result<vfio::IommuNesting*> Passthrough::nesting(vfio::BackendKind kind) {
    auto it = backends_.find(kind);
    if (it == backends_.end())
        return Error(fmt::format("passthrough: no {} backend is open", vfio::backendKindName(kind)), ENOENT);
    return it->second.backend->nesting();
}

// KVM must know every VFIO group / cdev the VM uses (coherency, arch hooks), and before the device
// opens: drivers that need KVM at open time take it from the group or cdev file then.
Result<void> Passthrough::add(int fd, bool isGroup, const std::string& what) {
    if (!kvmVfio_) kvmVfio_ = TRY(env_.vm.createVfioDevice());
    TRY_CTX(isGroup ? kvmVfio_->addGroup(fd) : kvmVfio_->addFile(fd), what);
    kvmVfioEntries_.emplace_back(isGroup, fd);
    return success();
}

void Passthrough::remove(int fd, bool isGroup) {
    auto r = isGroup ? kvmVfio_->removeGroup(fd) : kvmVfio_->removeFile(fd);
    if (!r) log::get("vmm").warn("{}", r.error().describe());
    std::erase(kvmVfioEntries_, std::make_pair(isGroup, fd));
}

Result<std::string> Passthrough::resolveHost(const VfioPciConfig& d) {
    const vfio::Sysfs sysfs(host_->interface(), host_->paths());
    if (d.form == VfioPciConfig::HostForm::Cdev)  // /dev/vfio/devices/vfioN
        return TRY_CTX(sysfs.deviceWithCdev(d.cdevIndex), fmt::format("vfio-pci {}", d.host));
    if (!sysfs.deviceExists(d.bdf))
        return Error(fmt::format("vfio-pci {}: no PCI device {} on this {}host ({} does not exist)", d.host, d.bdf,
                                 host_->isKernel() ? "" : host_->name() + " ", sysfs.deviceDir(d.bdf).string()),
                     ENODEV);
    return d.bdf;
}

Result<vfio::VfioBackend*> Passthrough::backendFor(vfio::BackendKind kind) {
    if (kind != vfio::BackendKind::Auto) {
        if (auto it = backends_.find(kind); it != backends_.end()) return it->second.backend.get();
    } else if (!backends_.empty()) {
        return backends_.begin()->second.backend.get();  // auto: whatever is already open
    }
    auto backend = TRY(vfio::openBackend(host_->interface(), kind, host_->paths()));
    auto* raw = backend.get();
    backends_[raw->kind()].backend = std::move(backend);
    return raw;
}

Result<void> Passthrough::placeBars(VfioPciDevice& dev, vfio::VfioOps& ops) {
    // Never over a reserved IOVA range: P2P maps BARs at their guest address.
    if (auto reserved = ops.reservedRegions()) {
        for (auto& r : *reserved) {
            memory::AddressRange range{r.range.start, r.range.last - r.range.start + 1};
            mmio32_.exclude(range);
            mmio64_.exclude(range);
        }
    }
    for (unsigned i = 0; i < 6; ++i) {
        const auto& b = dev.bar(i);
        if (!b.present()) continue;
        const std::string what = fmt::format("{} BAR{}", dev.name(), i);
        uint64_t at = 0;
        if (b.type == devices::pci::BarType::Io) {
            if (!env_.platform.pciIoPortWindow()) {
                // No port I/O on this platform: the BAR stays unassigned, as firmware leaves it.
                log::get("vmm").info("passthrough: {} not placed (the platform has no port I/O)", what);
                continue;
            }
            at = TRY(io_.allocate(b.size, what));
        } else {
            auto low = b.size <= 256 * memory::MiB ? mmio32_.allocate(b.size, what) : Result<uint64_t>(Error("too large"));
            if (low) at = *low;
            else if (b.type == devices::pci::BarType::Mem64) at = TRY(mmio64_.allocate(b.size, what));
            else return std::move(low).error();
        }
        dev.programBar(i, at);
    }
    if (dev.romSize()) dev.programBar(devices::pci::kRomBar, TRY(mmio32_.allocate(dev.romSize(), dev.name() + " ROM")));
    return success();
}

nlohmann::json Passthrough::stats() const {
    nlohmann::json j;
    j["host"] = host_->name();
    auto& list = j["devices"] = nlohmann::json::array();
    for (auto& a : devices_) {
        auto s = a.device->stats();
        nlohmann::json d;
        d["guest"] = devices::pci::formatDevfn(0, a.devfn);
        d["host"] = a.hostBdf;
        d["backend"] = vfio::backendKindName(a.backend);
        d["irq_mode"] = devices::vfio_pci::irqModeName(s.irqMode);
        d["vectors"] = s.vectors;
        d["peak_irq_mode"] = devices::vfio_pci::irqModeName(s.peakIrqMode);
        d["peak_vectors"] = s.peakVectors;
        d["config_reads"] = s.configReads;
        d["config_writes"] = s.configWrites;
        d["msix_table_reads"] = s.msixTableReads;
        d["msix_table_writes"] = s.msixTableWrites;
        d["pba_reads"] = s.pbaReads;
        d["route_message_updates"] = s.routeMessageUpdates;
        d["route_mask_changes"] = s.routeMaskChanges;
        d["set_irqs_calls"] = s.setIrqsCalls;
        d["resets"] = s.resets;
        d["relocations"] = s.relocations;
        d["memslots"] = s.memslots;
        d["p2p_mappings"] = s.p2pMappings;
        d["trapped_ranges"] = s.trappedRanges;
        auto& bars = d["bars"] = nlohmann::json::array();
        for (unsigned i = 0; i < 7; ++i) {
            const uint64_t size = i == devices::pci::kRomBar ? a.device->romSize() : a.device->bar(i).size;
            if (!size) continue;
            nlohmann::json b;
            b["index"] = i == devices::pci::kRomBar ? nlohmann::json("rom") : nlohmann::json(i);
            b["type"] = i == devices::pci::kRomBar ? "rom" : devices::pci::barTypeName(a.device->bar(i).type);
            b["size"] = size;
            auto active = a.device->activeBar(i);
            b["address"] = active ? nlohmann::json(*active) : nlohmann::json(nullptr);
            b["programmed"] = a.device->programmedBar(i);
            b["mmapped"] = areasJson(a.device->mmapAreas(i));
            b["trapped"] = areasJson(a.device->trappedAreas(i));
            b["trapped_reads"] = s.trappedReads[i];
            b["trapped_writes"] = s.trappedWrites[i];
            bars.push_back(std::move(b));
        }
        host_->addDeviceStats(a.hostBdf, d);
        list.push_back(std::move(d));
    }
    host_->addStats(j);
    return j;
}

Passthrough::~Passthrough() {
    auto& log = log::get("vmm");
    // 1. KVM's view of the VFIO groups/cdevs.
    if (kvmVfio_) {
        for (auto& [isGroup, fd] : kvmVfioEntries_) {
            auto r = isGroup ? kvmVfio_->removeGroup(fd) : kvmVfio_->removeFile(fd);
            if (!r) log.warn("{}", r.error().describe());
        }
    }
    kvmVfioEntries_.clear();
    // 2. Devices: off the bus, then destroyed (IRQs off, slots, ranges, P2P DMA, fds).
    if (root_)
        for (auto& a : devices_) root_->removeDevice(a.devfn);
    devices_.clear();
    // 3. Guest RAM out of the IOMMUs, 4. the backends (containers/iommufds, groups).
    for (auto& [kind, be] : backends_) {
        if (be.listening) env_.memory.removeListener(be.dma.get());
        be.dma.reset();
        be.backend.reset();
    }
    backends_.clear();
    kvmVfio_.reset();
    // 5. The root off the buses, 6. the host.
    if (portsOnBus_) (void)env_.pio.remove(devices::pci::PciRoot::kConfigAddressPort);
    if (ecamOnBus_) (void)env_.mmio.remove(env_.layout.pciEcam().base);
    root_.reset();
    host_.reset();
}

}  // namespace conduit::vmm
