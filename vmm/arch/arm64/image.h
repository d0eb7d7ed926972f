// The arm64 Linux `Image` and where it, the initrd and the device tree go in guest RAM, by the
// rules of Documentation/arch/arm64/booting.rst:
//  - the 64-byte header: magic "ARM\x64" at 0x38, text_offset, image_size (the effective size,
//    bss included; 0 before Linux 3.17, then text_offset is 0x80000), flags (bit 0 big-endian,
//    bits 1-2 page size, bit 3 "2 MiB-aligned base may be anywhere in RAM");
//  - the kernel at a 2 MiB-aligned base + text_offset, image_size bytes free from there;
//  - the DTB 8-byte aligned, at most 2 MiB, not in a 2 MiB block that needs special attributes
//    (it gets a 2 MiB block of its own here);
//  - the initrd inside one 1 GiB-aligned window of at most 32 GiB that also covers the kernel.
// Pure data: parsing and placement are functions of their inputs; writing goes through GuestMemory.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/result.h"
#include "memory/address_range.h"
#include "memory/guest_memory.h"

namespace conduit::vmm::arm64 {

struct ImageHeader {
    static constexpr size_t kSize = 64;
    static constexpr uint32_t kMagic = 0x644d'5241;  // "ARM\x64" little-endian, at offset 0x38
    static constexpr uint64_t kLegacyTextOffset = 0x80000;

    uint64_t textOffset = 0;
    uint64_t imageSize = 0;        // effective size (bss included); the file size for legacy images
    unsigned pageSizeKiB = 0;      // 4, 16, 64; 0 = not stated
    bool anywhere = false;         // flags bit 3: the 2 MiB-aligned base may be anywhere in RAM
    bool legacy = false;           // image_size was 0 (Linux before 3.17)

    std::string describe() const;  // "arm64 Image, text_offset 0x0, image_size 0x2a30000, 4K pages"
};

// Parses and checks the header of `image` (the whole file: its size matters for legacy images).
Result<ImageHeader> parseImageHeader(std::span<const uint8_t> image);

struct BootPlacement {
    uint64_t kernel = 0;               // load address == entry point
    memory::AddressRange kernelSpan;   // [kernel, kernel + image_size): must stay free
    std::optional<memory::AddressRange> initrd;
    memory::AddressRange fdtSlot;      // 2 MiB, 2 MiB-aligned: the DTB goes at its base
};

inline constexpr uint64_t kFdtMaxSize = 2 * memory::MiB;

// Places a kernel with `header` (its file `fileSize` bytes), an initrd of `initrdSize` bytes (0 =
// none) and the DTB slot in `ram`. Fails, saying what does not fit, when RAM is too small.
Result<BootPlacement> placeBoot(const ImageHeader& header, uint64_t fileSize, memory::AddressRange ram,
                                uint64_t initrdSize);

// Parses `image`, places everything in `ram` and copies the kernel and the initrd into guest
// memory. The DTB is written later (it names the initrd), at placement.fdtSlot.base.
struct LoadedImage {
    ImageHeader header;
    BootPlacement placement;
};
Result<LoadedImage> loadImage(const memory::GuestMemory& mem, memory::AddressRange ram, std::span<const uint8_t> image,
                              std::span<const uint8_t> initrd);

}  // namespace conduit::vmm::arm64
