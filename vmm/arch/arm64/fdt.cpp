#include "vmm/arch/arm64/fdt.h"

#include <libfdt.h>

#include <cstring>

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

using memory::AddressRange;

namespace {

constexpr size_t kMaxFdtSize = 2 * memory::MiB;  // Documentation/arch/arm64/booting.rst
constexpr uint64_t kMpidrHwidMask = 0xff'00ff'ffffull;  // Aff3..Aff0: a cpu node's reg
constexpr uint64_t kEcamBusSize = 1 * memory::MiB;

uint32_t hi(uint64_t v) { return static_cast<uint32_t>(v >> 32); }
uint32_t lo(uint64_t v) { return static_cast<uint32_t>(v); }

std::string unitName(std::string_view base, uint64_t addr) { return fmt::format("{}@{:x}", base, addr); }

}  // namespace

// ---- FdtWriter ----

Result<FdtWriter> FdtWriter::create(size_t capacity) {
    FdtWriter w(capacity);
    TRY(w.check(fdt_create(w.buf_.data(), static_cast<int>(w.buf_.size())), "fdt_create"));
    TRY(w.check(fdt_finish_reservemap(w.buf_.data()), "fdt_finish_reservemap"));
    return w;
}

std::string FdtWriter::path() const {
    if (stack_.empty()) return "(no node)";
    std::string p;
    for (size_t i = 1; i < stack_.size(); ++i) p += "/" + stack_[i];
    return p.empty() ? "/" : p;
}

Result<void> FdtWriter::check(int err, std::string_view what, std::string_view property) {
    if (err >= 0) return success();
    if (err == -FDT_ERR_NOSPACE) outOfSpace_ = true;
    std::string where = property.empty() ? fmt::format("node {}", path())
                                         : fmt::format("node {} property {}", path(), property);
    return Error(fmt::format("device tree: {}: {}: {} ({} byte buffer)", where, what, fdt_strerror(err), buf_.size()));
}

Result<void> FdtWriter::beginNode(std::string_view name) {
    std::string n(name);
    stack_.push_back(n);  // first, so an error names the node that failed
    return check(fdt_begin_node(buf_.data(), n.c_str()), "fdt_begin_node");
}

Result<void> FdtWriter::endNode() {
    if (stack_.empty()) return Error("device tree: fdt_end_node with no open node");
    TRY(check(fdt_end_node(buf_.data()), "fdt_end_node"));
    stack_.pop_back();
    return success();
}

Result<void> FdtWriter::property(std::string_view name, std::span<const uint8_t> bytes) {
    std::string n(name);
    return check(fdt_property(buf_.data(), n.c_str(), bytes.data(), static_cast<int>(bytes.size())), "fdt_property",
                 name);
}

Result<void> FdtWriter::propertyEmpty(std::string_view name) { return property(name, {}); }

Result<void> FdtWriter::propertyU32(std::string_view name, uint32_t value) { return propertyCells(name, {value}); }

Result<void> FdtWriter::propertyU64(std::string_view name, uint64_t value) {
    return propertyCells(name, {hi(value), lo(value)});
}

Result<void> FdtWriter::propertyCells(std::string_view name, std::span<const uint32_t> cells) {
    std::vector<uint8_t> bytes(cells.size() * 4);
    for (size_t i = 0; i < cells.size(); ++i) {
        fdt32_t be = cpu_to_fdt32(cells[i]);
        std::memcpy(bytes.data() + 4 * i, &be, 4);
    }
    return property(name, bytes);
}

Result<void> FdtWriter::propertyString(std::string_view name, std::string_view value) {
    return propertyStrings(name, {value});
}

Result<void> FdtWriter::propertyStrings(std::string_view name, std::initializer_list<std::string_view> values) {
    std::vector<uint8_t> bytes;
    for (auto v : values) {
        bytes.insert(bytes.end(), v.begin(), v.end());
        bytes.push_back(0);
    }
    return property(name, bytes);
}

Result<std::vector<uint8_t>> FdtWriter::finish() {
    if (finished_) return Error("device tree: finish() called twice");
    if (!stack_.empty()) return Error(fmt::format("device tree: finish() with node {} still open", path()));
    TRY(check(fdt_finish(buf_.data()), "fdt_finish"));
    finished_ = true;
    std::vector<uint8_t> blob(buf_.begin(), buf_.begin() + fdt_totalsize(buf_.data()));
    return blob;
}

// ---- the tree ----

namespace {

class TreeBuilder {
public:
    TreeBuilder(const FdtDescription& d, FdtWriter& w, const FdtPhandles& ph) : d_(d), w_(w), ph_(ph) {}

    Result<void> write() {
        TRY(w_.beginNode(""));
        TRY(w_.propertyString("compatible", "linux,dummy-virt"));
        TRY(w_.propertyU32("#address-cells", 2));
        TRY(w_.propertyU32("#size-cells", 2));
        TRY(w_.propertyU32("interrupt-parent", ph_.gic));
        TRY(psci());
        TRY(memory());
        TRY(cpus());
        TRY(gic());
        TRY(timer());
        if (d_.uart) TRY(uart(*d_.uart));
        if (d_.pci) TRY(pci(*d_.pci));
        for (const auto* e : d_.extensions) TRY(e->writeRootNodes(w_, ph_));
        if (d_.uart) TRY(aliases(*d_.uart));
        TRY(chosen());
        TRY(w_.endNode());
        return success();
    }

private:
    Result<void> reg(std::initializer_list<AddressRange> ranges) {
        std::vector<uint32_t> cells;
        for (auto& r : ranges) cells.insert(cells.end(), {hi(r.base), lo(r.base), hi(r.size), lo(r.size)});
        return w_.propertyCells("reg", cells);
    }

    Result<void> psci() {
        TRY(w_.beginNode("psci"));
        // KVM implements PSCI 1.x once a vCPU asks for KVM_ARM_VCPU_PSCI_0_2; 0.2 stays as the
        // fallback compatible for kernels that predate the 1.0 binding.
        TRY(w_.propertyStrings("compatible", {"arm,psci-1.0", "arm,psci-0.2"}));
        TRY(w_.propertyString("method", "hvc"));
        return w_.endNode();
    }

    Result<void> memory() {
        for (auto& m : d_.memory) {
            TRY(w_.beginNode(unitName("memory", m.base)));
            TRY(w_.propertyString("device_type", "memory"));
            TRY(reg({m}));
            TRY(w_.endNode());
        }
        return success();
    }

    Result<void> cpus() {
        bool aff3 = false;
        for (uint64_t m : d_.cpuMpidrs) aff3 |= (m & kMpidrHwidMask) >> 32 != 0;
        TRY(w_.beginNode("cpus"));
        TRY(w_.propertyU32("#address-cells", aff3 ? 2 : 1));
        TRY(w_.propertyU32("#size-cells", 0));
        for (uint64_t mpidr : d_.cpuMpidrs) {
            uint64_t id = mpidr & kMpidrHwidMask;
            TRY(w_.beginNode(unitName("cpu", id)));
            TRY(w_.propertyString("device_type", "cpu"));
            TRY(w_.propertyString("compatible", "arm,arm-v8"));
            TRY(w_.propertyString("enable-method", "psci"));
            if (aff3) TRY(w_.propertyU64("reg", id));
            else TRY(w_.propertyU32("reg", lo(id)));
            TRY(w_.endNode());
        }
        return w_.endNode();
    }

    Result<void> gic() {
        const auto& g = d_.gic;
        TRY(w_.beginNode(unitName("intc", g.distributor.base)));
        TRY(w_.propertyString("compatible", "arm,gic-v3"));
        TRY(w_.propertyU32("#interrupt-cells", 3));
        TRY(w_.propertyEmpty("interrupt-controller"));
        // The ITS child has a two-cell reg like everything else.
        TRY(w_.propertyU32("#address-cells", 2));
        TRY(w_.propertyU32("#size-cells", 2));
        TRY(w_.propertyEmpty("ranges"));
        std::vector<uint32_t> cells{hi(g.distributor.base), lo(g.distributor.base), hi(g.distributor.size),
                                    lo(g.distributor.size)};
        for (auto& r : g.redistributorRegions) cells.insert(cells.end(), {hi(r.base), lo(r.base), hi(r.size), lo(r.size)});
        TRY(w_.propertyCells("reg", cells));
        if (g.redistributorRegions.size() > 1)
            TRY(w_.propertyU32("#redistributor-regions", static_cast<uint32_t>(g.redistributorRegions.size())));
        TRY(w_.propertyU32("phandle", ph_.gic));
        if (g.its) {
            TRY(w_.beginNode(unitName("its", g.its->base)));
            TRY(w_.propertyString("compatible", "arm,gic-v3-its"));
            TRY(w_.propertyEmpty("msi-controller"));
            TRY(w_.propertyU32("#msi-cells", 1));  // the device id
            TRY(reg({*g.its}));
            TRY(w_.propertyU32("phandle", ph_.its));
            TRY(w_.endNode());
        }
        return w_.endNode();
    }

    Result<void> timer() {
        TRY(w_.beginNode("timer"));
        TRY(w_.propertyString("compatible", "arm,armv8-timer"));
        std::vector<uint32_t> cells;
        for (uint32_t ppi : d_.timerPpis) cells.insert(cells.end(), {kFdtIrqPpi, ppi, kFdtIrqLevelHigh});
        TRY(w_.propertyCells("interrupts", cells));
        TRY(w_.propertyEmpty("always-on"));  // KVM keeps the counter running in every guest state
        return w_.endNode();
    }

    Result<void> uart(const FdtUart& u) {
        TRY(w_.beginNode(unitName("uart", u.reg.base)));
        TRY(w_.propertyString("compatible", "ns16550a"));
        TRY(reg({u.reg}));
        TRY(w_.propertyU32("clock-frequency", u.clockHz));
        // One byte per register, registers one byte apart: the PC layout, now on MMIO.
        TRY(w_.propertyU32("reg-shift", 0));
        TRY(w_.propertyU32("reg-io-width", 1));
        TRY(w_.propertyCells("interrupts", {kFdtIrqSpi, u.spi, kFdtIrqLevelHigh}));
        return w_.endNode();
    }

    Result<void> pci(const FdtPci& p) {
        if (p.busLast < p.busFirst || p.busLast > 255)
            return Error(fmt::format("device tree: pcie: bus range {}..{} is not valid", p.busFirst, p.busLast));
        uint64_t ecamNeeded = (p.busLast - p.busFirst + 1) * kEcamBusSize;
        if (p.ecam.size != ecamNeeded)
            return Error(fmt::format("device tree: pcie: ECAM {} does not cover buses {}..{} ({:#x} bytes)",
                                     p.ecam.toString(), p.busFirst, p.busLast, ecamNeeded));
        TRY(w_.beginNode(unitName("pcie", p.ecam.base)));
        TRY(w_.propertyString("compatible", "pci-host-ecam-generic"));
        TRY(w_.propertyString("device_type", "pci"));
        TRY(w_.propertyU32("#address-cells", 3));
        TRY(w_.propertyU32("#size-cells", 2));
        TRY(w_.propertyU32("#interrupt-cells", 1));
        TRY(w_.propertyCells("bus-range", {p.busFirst, p.busLast}));
        TRY(reg({p.ecam}));
        // Guest-physical == PCI bus address in both windows.
        std::vector<uint32_t> ranges;
        auto window = [&](uint32_t space, const AddressRange& r) {
            ranges.insert(ranges.end(), {space, hi(r.base), lo(r.base), hi(r.base), lo(r.base), hi(r.size), lo(r.size)});
        };
        window(0x0200'0000, p.mmio32);                 // 32-bit memory space
        if (!p.mmio64.empty()) window(0x0300'0000, p.mmio64);  // 64-bit memory space
        TRY(w_.propertyCells("ranges", ranges));
        if (ph_.its) TRY(w_.propertyCells("msi-map", {0, ph_.its, 0, 0x10000}));  // device id == requester id
        TRY(w_.propertyEmpty("dma-coherent"));
        if (!p.intx.empty()) {
            // Child address (phys.hi carries the device number at bits 11..15) and pin; the GIC
            // parent has two address cells (for its ITS child), then the 3-cell specifier.
            TRY(w_.propertyCells("interrupt-map-mask", {0xf800, 0, 0, 7}));
            std::vector<uint32_t> map;
            for (auto& e : p.intx) {
                if (e.slot > 31 || e.pin < 1 || e.pin > 4)
                    return Error(fmt::format("device tree: pcie: INTx entry slot {} pin {} is not valid", e.slot, e.pin));
                map.insert(map.end(), {e.slot << 11, 0, 0, e.pin, ph_.gic, 0, 0, kFdtIrqSpi, e.spi, kFdtIrqLevelHigh});
            }
            TRY(w_.propertyCells("interrupt-map", map));
        }
        for (const auto* e : d_.extensions) TRY(e->writePciHostProperties(w_, ph_));
        return w_.endNode();
    }

    Result<void> aliases(const FdtUart& u) {
        TRY(w_.beginNode("aliases"));
        TRY(w_.propertyString("serial0", "/" + unitName("uart", u.reg.base)));
        return w_.endNode();
    }

    Result<void> chosen() {
        TRY(w_.beginNode("chosen"));
        TRY(w_.propertyString("bootargs", d_.chosen.bootargs));
        if (d_.uart) TRY(w_.propertyString("stdout-path", "/" + unitName("uart", d_.uart->reg.base)));
        if (d_.chosen.initrd) {
            TRY(w_.propertyU64("linux,initrd-start", d_.chosen.initrd->base));
            TRY(w_.propertyU64("linux,initrd-end", d_.chosen.initrd->end()));
        }
        return w_.endNode();
    }

    const FdtDescription& d_;
    FdtWriter& w_;
    const FdtPhandles& ph_;
};

Result<void> validate(const FdtDescription& d) {
    if (d.memory.empty()) return Error("device tree: no memory");
    if (d.cpuMpidrs.empty()) return Error("device tree: no cpus");
    if (d.gic.distributor.empty() || d.gic.redistributorRegions.empty())
        return Error("device tree: the GIC needs a distributor and at least one redistributor region");
    if (d.timerPpis.size() != 4) return Error(fmt::format("device tree: the timer takes 4 PPIs, {} given", d.timerPpis.size()));
    return success();
}

}  // namespace

Result<std::vector<uint8_t>> buildFdt(const FdtDescription& desc) {
    TRY(validate(desc));
    FdtPhandles phandles;
    phandles.gic = phandles.allocate();
    if (desc.gic.its) phandles.its = phandles.allocate();
    for (const auto* e : desc.extensions) e->reservePhandles(phandles);

    // Sequential write needs the buffer up front: start small and grow, up to the 2 MiB limit.
    for (size_t capacity = 16 * 1024;; capacity *= 2) {
        auto writer = TRY(FdtWriter::create(capacity));
        auto written = TreeBuilder(desc, writer, phandles).write();
        if (written) {
            auto blob = writer.finish();
            if (blob || !writer.outOfSpace()) return blob;
        } else if (!writer.outOfSpace()) {
            return std::move(written).error();
        }
        if (capacity >= kMaxFdtSize) return Error("device tree: larger than the 2 MiB arm64 limit");
    }
}

}  // namespace conduit::vmm::arm64
