#include "vmm/arch/arm64/image.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace conduit::vmm::arm64 {

using memory::AddressRange;
using memory::alignDown;
using memory::alignUp;
using memory::GiB;
using memory::KiB;
using memory::MiB;

namespace {

constexpr uint64_t kKernelAlign = 2 * MiB;
constexpr uint64_t kInitrdWindowAlign = 1 * GiB;
constexpr uint64_t kInitrdWindowSize = 32 * GiB;
// The initrd starts on a 64 KiB boundary: page-aligned whatever page size the kernel uses.
constexpr uint64_t kInitrdAlign = 64 * KiB;

uint64_t le64(std::span<const uint8_t> b, size_t off) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | b[off + i];
    return v;
}
uint32_t le32(std::span<const uint8_t> b, size_t off) { return static_cast<uint32_t>(le64(b, off) & 0xffff'ffff); }

// What a file that is not an Image but commonly stands in for one looks like, for the message.
std::string notAnImage(std::span<const uint8_t> image) {
    if (image.size() >= 2 && image[0] == 0x1f && image[1] == 0x8b)
        return "a gzip stream (a compressed vmlinuz): decompress it to the plain Image first";
    if (image.size() >= 8 && image[0] == 'M' && image[1] == 'Z' && std::memcmp(image.data() + 4, "zimg", 4) == 0)
        return "an EFI zboot image (compressed, for EFI firmware): boot the plain Image instead";
    if (image.size() >= 4 && std::memcmp(image.data(), "\x7f" "ELF", 4) == 0)
        return "an ELF file (vmlinux): boot the arm64 Image (arch/arm64/boot/Image) instead";
    return "no \"ARM\\x64\" magic at offset 0x38";
}

}  // namespace

std::string ImageHeader::describe() const {
    std::string pages = pageSizeKiB ? fmt::format("{}K pages", pageSizeKiB) : std::string("page size not stated");
    return fmt::format("arm64 Image, text_offset {:#x}, image_size {:#x}{}, {}", textOffset, imageSize,
                       legacy ? " (no image_size: pre-3.17 kernel, file size used)" : "", pages);
}

Result<ImageHeader> parseImageHeader(std::span<const uint8_t> image) {
    if (image.size() < ImageHeader::kSize)
        return Error(fmt::format("arm64 Image: {} bytes, shorter than the {}-byte header", image.size(),
                                 ImageHeader::kSize));
    if (le32(image, 0x38) != ImageHeader::kMagic) return Error("arm64 Image: not an arm64 Image: " + notAnImage(image));
    uint64_t flags = le64(image, 24);
    if (flags & 1) return Error("arm64 Image: a big-endian kernel (flags bit 0); KVM guests here are little-endian");

    ImageHeader h;
    h.textOffset = le64(image, 8);
    h.imageSize = le64(image, 16);
    static constexpr unsigned kPageKiB[] = {0, 4, 16, 64};
    h.pageSizeKiB = kPageKiB[(flags >> 1) & 3];
    h.anywhere = (flags >> 3) & 1;
    if (h.imageSize == 0) {
        h.legacy = true;
        h.textOffset = ImageHeader::kLegacyTextOffset;
        h.imageSize = image.size();
    }
    if (h.imageSize < image.size())
        return Error(fmt::format("arm64 Image: image_size {:#x} is smaller than the file ({:#x} bytes)", h.imageSize,
                                 image.size()));
    if (h.textOffset >= kKernelAlign || h.textOffset % 4096)
        return Error(fmt::format("arm64 Image: text_offset {:#x} is not a page offset inside 2 MiB", h.textOffset));
    return h;
}

Result<BootPlacement> placeBoot(const ImageHeader& header, uint64_t fileSize, AddressRange ram, uint64_t initrdSize) {
    BootPlacement p;
    // As low as RAM allows: right for both values of the placement flag (bit 3 clear asks for
    // "as close as possible to the base of DRAM"; set allows anywhere).
    uint64_t base = alignUp(ram.base, kKernelAlign);
    p.kernel = base + header.textOffset;
    p.kernelSpan = {p.kernel, std::max(header.imageSize, fileSize)};
    if (!ram.contains(p.kernelSpan.base, p.kernelSpan.size))
        return Error(fmt::format("arm64 boot: the kernel needs {} at {:#x} ({} MiB of RAM from {:#x}): too large for RAM",
                                 p.kernelSpan.toString(), p.kernel, ram.size / MiB, ram.base));

    // The DTB's 2 MiB block and the initrd sit at the top of the window that holds the kernel,
    // so the kernel's bss and early allocations keep the RAM right after it.
    uint64_t windowBase = alignDown(p.kernel, kInitrdWindowAlign);
    uint64_t top = std::min(ram.end(), windowBase + kInitrdWindowSize);
    uint64_t kernelEnd = p.kernelSpan.end();
    if (top < kFdtMaxSize || alignDown(top - kFdtMaxSize, kKernelAlign) < kernelEnd)
        return Error(fmt::format("arm64 boot: no room for the device tree's 2 MiB after the kernel (ends {:#x}, RAM "
                                 "ends {:#x})", kernelEnd, ram.end()));
    p.fdtSlot = {alignDown(top - kFdtMaxSize, kKernelAlign), kFdtMaxSize};

    if (initrdSize > 0) {
        uint64_t room = p.fdtSlot.base - kernelEnd;
        uint64_t start = p.fdtSlot.base >= initrdSize ? alignDown(p.fdtSlot.base - initrdSize, kInitrdAlign) : 0;
        if (initrdSize > room || start < kernelEnd)
            return Error(fmt::format("arm64 boot: the initrd ({} bytes) does not fit between the kernel's end {:#x} "
                                     "and the device tree at {:#x}", initrdSize, kernelEnd, p.fdtSlot.base));
        p.initrd = AddressRange{start, initrdSize};
    }
    return p;
}

Result<LoadedImage> loadImage(const memory::GuestMemory& mem, AddressRange ram, std::span<const uint8_t> image,
                              std::span<const uint8_t> initrd) {
    LoadedImage l;
    l.header = TRY(parseImageHeader(image));
    l.placement = TRY(placeBoot(l.header, image.size(), ram, initrd.size()));
    TRY_CTX(mem.write(l.placement.kernel, image), "arm64 boot: writing the kernel");
    if (l.placement.initrd) TRY_CTX(mem.write(l.placement.initrd->base, initrd), "arm64 boot: writing the initrd");
    return l;
}

}  // namespace conduit::vmm::arm64
