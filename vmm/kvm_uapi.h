// Fixes for <linux/kvm.h> under C++. Debian 12's uAPI headers declare flexible array members with
// __DECLARE_FLEX_ARRAY, which wraps them in a struct holding an empty struct. An empty struct is
// 0 bytes in C but 1 byte in C++, so under g++ sizeof(kvm_cpuid2) == 12 (not 8), the entries
// start at offset 12, and every ioctl number computed from such a struct is wrong: the kernel
// answers EINVAL/ENOTTY (seen here: KVM_GET_SUPPORTED_CPUID = 0xc00cae05 instead of 0xc008ae05).
// So for those ioctls we spell out the fixed header and build the buffers ourselves.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace conduit::vmm::uapi {

// The C layout of struct kvm_cpuid2 / kvm_irq_routing / kvm_msrs without the flexible array.
struct FlexHeader {
    uint32_t count;  // nent / nr / nmsrs
    uint32_t flags;  // padding / flags / pad
};
static_assert(sizeof(FlexHeader) == 8);

// (x86's CPUID ioctls are spelled the same way in vmm/arch/x86_64/kvm_x86.h.)
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, FlexHeader);       // KVM_SET_GSI_ROUTING

// A header followed by `entries` laid out as the kernel expects (entries at offset 8).
template <class Entry>
std::vector<uint8_t> flexBuffer(uint32_t count, const Entry* entries, size_t capacity) {
    std::vector<uint8_t> buf(sizeof(FlexHeader) + capacity * sizeof(Entry), 0);
    FlexHeader h{count, 0};
    std::memcpy(buf.data(), &h, sizeof h);
    if (entries && count) std::memcpy(buf.data() + sizeof h, entries, count * sizeof(Entry));
    return buf;
}

template <class Entry>
std::vector<Entry> flexEntries(const std::vector<uint8_t>& buf) {
    FlexHeader h;
    std::memcpy(&h, buf.data(), sizeof h);
    std::vector<Entry> out(h.count);
    std::memcpy(out.data(), buf.data() + sizeof h, h.count * sizeof(Entry));
    return out;
}

}  // namespace conduit::vmm::uapi
