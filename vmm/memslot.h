// One KVM memory slot (KVM_SET_USER_MEMORY_REGION) as a move-only object: destroying it deletes
// the slot (size 0) and frees the slot number. The Vm that made it must outlive it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace conduit::vmm {

class Vm;

class MemorySlot {
public:
    MemorySlot() = default;
    MemorySlot(MemorySlot&& o) noexcept { *this = std::move(o); }
    MemorySlot& operator=(MemorySlot&& o) noexcept;
    MemorySlot(const MemorySlot&) = delete;
    MemorySlot& operator=(const MemorySlot&) = delete;
    ~MemorySlot() { reset(); }

    bool valid() const { return vm_ != nullptr; }
    uint32_t slot() const { return slot_; }
    uint64_t gpa() const { return gpa_; }
    uint64_t size() const { return size_; }
    void* host() const { return host_; }
    const std::string& name() const { return name_; }

    void reset();

private:
    friend class Vm;
    MemorySlot(Vm* vm, uint32_t slot, uint64_t gpa, uint64_t size, void* host, std::string name)
        : vm_(vm), slot_(slot), gpa_(gpa), size_(size), host_(host), name_(std::move(name)) {}

    Vm* vm_ = nullptr;
    uint32_t slot_ = 0;
    uint64_t gpa_ = 0;
    uint64_t size_ = 0;
    void* host_ = nullptr;
    std::string name_;
};

}  // namespace conduit::vmm
