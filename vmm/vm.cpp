#include "vmm/vm.h"

#include <fmt/format.h>

#include "base/log.h"

namespace conduit::vmm {

MemorySlot& MemorySlot::operator=(MemorySlot&& o) noexcept {
    if (this != &o) {
        reset();
        vm_ = std::exchange(o.vm_, nullptr);
        slot_ = o.slot_;
        gpa_ = o.gpa_;
        size_ = o.size_;
        host_ = o.host_;
        name_ = std::move(o.name_);
    }
    return *this;
}

void MemorySlot::reset() {
    if (!vm_) return;
    vm_->releaseSlot(*this);
    vm_ = nullptr;
}

Result<std::unique_ptr<Vm>> Vm::create(const Kvm& kvm, unsigned long type) {
    int fd = TRY(KVM_IOCTL(kvm.fd(), KVM_CREATE_VM, type, kvm.path(), fmt::format("type {:#x}", type)));
    UniqueFd owned(fd);
    int gsis = TRY(KVM_IOCTL(fd, KVM_CHECK_EXTENSION, static_cast<unsigned long>(KVM_CAP_IRQ_ROUTING), "vm",
                             "KVM_CAP_IRQ_ROUTING"));
    return std::unique_ptr<Vm>(new Vm(std::move(owned), kvm.vcpuMmapSize(), kvm.maxMemslots(),
                                      gsis > 0 ? static_cast<uint32_t>(gsis) : 1024));
}

Vm::~Vm() {
    // Region slots belong to GuestMemory's listener protocol; drop any the owner forgot to remove.
    std::map<uint64_t, MemorySlot> slots;
    {
        std::lock_guard lock(slotMutex_);
        slots.swap(regionSlots_);
    }
    slots.clear();
    for (const auto& [slot, gpa, name] : undeleted_) {
        kvm_userspace_memory_region region{};
        region.slot = slot;
        region.guest_phys_addr = gpa;
        auto r = KVM_IOCTL(fd(), KVM_SET_USER_MEMORY_REGION, &region, "vm",
                           fmt::format("delete slot {} gpa {:#x} for {} (again, at teardown)", slot, gpa, name));
        if (r)
            log::get("vmm").info("memslot {} ({}) deleted at teardown after an earlier refusal", slot, name);
        else
            log::get("vmm").error("{}", r.error().describe());
    }
}

Result<int> Vm::checkExtension(unsigned cap) const {
    return KVM_IOCTL(fd(), KVM_CHECK_EXTENSION, static_cast<unsigned long>(cap), "vm", capabilityName(cap));
}

Result<void> Vm::enableIrqRouting(IrqchipRoutes irqchip) {
    if (routing_) return Error("vm: the GSI routing table already exists", EEXIST);
    routing_ = std::make_unique<GsiRoutingTable>(fd(), maxGsis_, std::move(irqchip));
    return success();
}

Result<MemorySlot> Vm::mapMemory(uint64_t gpa, uint64_t size, void* host, const std::string& name, uint32_t flags) {
    uint32_t slot = 0;
    {
        std::lock_guard lock(slotMutex_);
        while (slot < slotUsed_.size() && slotUsed_[slot]) ++slot;
        if (slot == slotUsed_.size())
            return Error(fmt::format("memslot for {} [{:#x}, +{:#x}): all {} KVM memslots are in use", name, gpa, size,
                                     slotUsed_.size()),
                         ENOSPC);
        slotUsed_[slot] = true;
    }
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.flags = flags;
    region.guest_phys_addr = gpa;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<uint64_t>(host);
    auto r = KVM_IOCTL(fd(), KVM_SET_USER_MEMORY_REGION, &region, "vm",
                       fmt::format("slot {} gpa {:#x} size {:#x} for {}", slot, gpa, size, name));
    if (!r) {
        std::lock_guard lock(slotMutex_);
        slotUsed_[slot] = false;
        return std::move(r).error();
    }
    log::get("vmm").debug("memslot {}: {} at gpa {:#x} size {:#x} host {}", slot, name, gpa, size, host);
    return MemorySlot(this, slot, gpa, size, host, name);
}

void Vm::releaseSlot(const MemorySlot& s) {
    kvm_userspace_memory_region region{};
    region.slot = s.slot();
    region.guest_phys_addr = s.gpa();
    region.memory_size = 0;  // size 0 deletes the slot
    region.userspace_addr = reinterpret_cast<uint64_t>(s.host());
    auto r = KVM_IOCTL(fd(), KVM_SET_USER_MEMORY_REGION, &region, "vm",
                       fmt::format("delete slot {} gpa {:#x} for {}", s.slot(), s.gpa(), s.name()));
    std::lock_guard lock(slotMutex_);
    if (!r) {
        // The slot may still map the pages: never reuse its number; the destructor tries again.
        log::get("vmm").error("{}", r.error().describe());
        undeleted_.emplace_back(s.slot(), s.gpa(), s.name());
        return;
    }
    slotUsed_[s.slot()] = false;
    log::get("vmm").debug("memslot {} ({}) deleted", s.slot(), s.name());
}

Result<void> Vm::regionAdded(const memory::GuestRegion& region) {
    auto slot = TRY(mapMemory(region.gpa().base, region.gpa().size, region.host(), region.name()));
    std::lock_guard lock(slotMutex_);
    regionSlots_[region.gpa().base] = std::move(slot);
    return success();
}

void Vm::regionRemoved(const memory::GuestRegion& region) {
    MemorySlot slot;
    {
        std::lock_guard lock(slotMutex_);
        auto it = regionSlots_.find(region.gpa().base);
        if (it == regionSlots_.end()) return;
        slot = std::move(it->second);
        regionSlots_.erase(it);
    }
    // Destroyed here, outside the lock (releaseSlot takes it).
}

std::vector<Vm::SlotInfo> Vm::regionSlots() const {
    std::lock_guard lock(slotMutex_);
    std::vector<SlotInfo> out;
    for (auto& [gpa, s] : regionSlots_) out.push_back({s.slot(), s.gpa(), s.size(), s.name()});
    return out;
}

size_t Vm::slotsInUse() const {
    std::lock_guard lock(slotMutex_);
    size_t n = 0;
    for (bool b : slotUsed_) n += b;
    return n;
}

Result<void> Vm::irqLine(uint32_t line, bool level) {
    kvm_irq_level irq{};
    irq.irq = line;
    irq.level = level ? 1 : 0;
    TRY(KVM_IOCTL(fd(), KVM_IRQ_LINE, &irq, "vm", fmt::format("line {:#x} level {}", line, irq.level)));
    return success();
}

Result<int> Vm::signalMsi(const MsiMessage& m) {
    // The same device-id rule as the routes: an ITS needs the id, x86 KVM refuses the flag.
    kvm_msi msi = kvmMsi(m, routing_ && routing_->deviceIds());
    return KVM_IOCTL(fd(), KVM_SIGNAL_MSI, &msi, "vm", fmt::format("address {:#x} data {:#x}", m.address, m.data));
}

GsiRoutingTable& Vm::routing() {
    // Programming error, not a runtime condition: every Machine creates the irqchip first.
    if (!routing_) {
        log::get("vmm").critical("GSI routing table used before the platform created the irqchip");
        std::abort();
    }
    return *routing_;
}

}  // namespace conduit::vmm
