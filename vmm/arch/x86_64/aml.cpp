#include "vmm/arch/x86_64/aml.h"

#include <stdexcept>

namespace conduit::vmm::x86::aml {
namespace {

// Opcodes (ACPI 6.5, 20.3).
constexpr uint8_t kZeroOp = 0x00, kOneOp = 0x01, kNameOp = 0x08, kBytePrefix = 0x0a, kWordPrefix = 0x0b,
                  kDWordPrefix = 0x0c, kStringPrefix = 0x0d, kQWordPrefix = 0x0e, kScopeOp = 0x10,
                  kBufferOp = 0x11, kPackageOp = 0x12, kMethodOp = 0x14, kRootChar = 0x5c, kExtOpPrefix = 0x5b,
                  kDeviceOp = 0x82, kReturnOp = 0xa4;

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

template <typename T>
void appendLe(Bytes& out, T value) {
    for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(uint64_t(value) >> (8 * i)));
}

// A NameSeg: exactly four characters of [A-Z0-9_], padded with '_'. The names Conduit writes are
// fixed strings, so a bad one is a programming error, not a guest's or user's input.
void appendNameSeg(Bytes& out, std::string_view seg) {
    if (seg.empty() || seg.size() > 4) throw std::logic_error("aml: bad name segment");
    for (size_t i = 0; i < 4; ++i) out.push_back(i < seg.size() ? static_cast<uint8_t>(seg[i]) : '_');
}

// "\_SB_" or "PCI0": an optional root prefix and one segment (all Conduit needs).
void appendNameString(Bytes& out, std::string_view path) {
    if (!path.empty() && path[0] == '\\') {
        out.push_back(kRootChar);
        path.remove_prefix(1);
    }
    appendNameSeg(out, path);
}

// PkgLength (20.2.4): the length of what follows the opcode, counting the PkgLength bytes
// themselves. One byte holds up to 63; otherwise the lead byte's top two bits give the count of
// following bytes and its low nibble the low four bits of the length.
Bytes withPkgLength(uint8_t opcode, bool extended, const Bytes& body) {
    Bytes out;
    if (extended) out.push_back(kExtOpPrefix);
    out.push_back(opcode);
    size_t n = body.size();
    if (n + 1 < 64) {
        out.push_back(static_cast<uint8_t>(n + 1));
    } else {
        size_t extra = n + 2 < (1u << 12) ? 1 : n + 3 < (1u << 20) ? 2 : 3;
        size_t total = n + 1 + extra;
        if (total >= (1u << 28)) throw std::logic_error("aml: package too large");
        out.push_back(static_cast<uint8_t>((extra << 6) | (total & 0x0f)));
        for (size_t i = 0; i < extra; ++i) out.push_back(static_cast<uint8_t>(total >> (4 + 8 * i)));
    }
    append(out, body);
    return out;
}

Bytes largeDescriptor(uint8_t tag, const Bytes& body) {
    Bytes out{tag};
    appendLe<uint16_t>(out, static_cast<uint16_t>(body.size()));
    append(out, body);
    return out;
}

// The common head of the Word/DWord/QWord address space descriptors (6.4.3.5): resource type,
// general flags (producer, positive decode, min and max fixed), type-specific flags.
Bytes addressHead(uint8_t resourceType, uint8_t typeFlags) { return {resourceType, 0x0c, typeFlags}; }

template <typename T>
Bytes addressSpace(uint8_t tag, uint8_t resourceType, uint8_t typeFlags, T min, T max) {
    Bytes body = addressHead(resourceType, typeFlags);
    appendLe<T>(body, 0);                              // granularity (address decode is fixed)
    appendLe<T>(body, min);
    appendLe<T>(body, max);
    appendLe<T>(body, 0);                              // translation offset
    appendLe<T>(body, static_cast<T>(max - min + 1));  // length
    return largeDescriptor(tag, body);
}

}  // namespace

Bytes join(std::initializer_list<Bytes> terms) { return join(std::vector<Bytes>(terms)); }

Bytes join(const std::vector<Bytes>& terms) {
    Bytes out;
    for (const Bytes& t : terms) append(out, t);
    return out;
}

Bytes integer(uint64_t value) {
    Bytes out;
    if (value == 0) return {kZeroOp};
    if (value == 1) return {kOneOp};
    if (value <= 0xff) {
        out.push_back(kBytePrefix);
        appendLe<uint8_t>(out, static_cast<uint8_t>(value));
    } else if (value <= 0xffff) {
        out.push_back(kWordPrefix);
        appendLe<uint16_t>(out, static_cast<uint16_t>(value));
    } else if (value <= 0xffffffff) {
        out.push_back(kDWordPrefix);
        appendLe<uint32_t>(out, static_cast<uint32_t>(value));
    } else {
        out.push_back(kQWordPrefix);
        appendLe<uint64_t>(out, value);
    }
    return out;
}

Bytes string(std::string_view text) {
    Bytes out;
    out.reserve(text.size() + 2);
    out.push_back(kStringPrefix);
    for (char c : text) out.push_back(static_cast<uint8_t>(c));
    out.push_back(0);
    return out;
}

Bytes eisaId(std::string_view id) {
    // Three letters of five bits each ('A' = 1) and four hex digits, stored byte-swapped.
    if (id.size() != 7) throw std::logic_error("aml: EISA id must be 7 characters");
    auto hex = [](char c) -> uint32_t { return c <= '9' ? uint32_t(c - '0') : uint32_t(c - 'A' + 10); };
    uint32_t v = (uint32_t(id[0] - '@') << 26) | (uint32_t(id[1] - '@') << 21) | (uint32_t(id[2] - '@') << 16) |
                 (hex(id[3]) << 12) | (hex(id[4]) << 8) | (hex(id[5]) << 4) | hex(id[6]);
    return integer(__builtin_bswap32(v));
}

Bytes package(const std::vector<Bytes>& elements) {
    if (elements.size() > 255) throw std::logic_error("aml: package of more than 255 elements");
    Bytes body{static_cast<uint8_t>(elements.size())};
    append(body, join(elements));
    return withPkgLength(kPackageOp, false, body);
}

Bytes buffer(const Bytes& bytes) {
    Bytes body = integer(bytes.size());
    append(body, bytes);
    return withPkgLength(kBufferOp, false, body);
}

Bytes name(std::string_view seg, const Bytes& value) {
    Bytes out{kNameOp};
    appendNameSeg(out, seg);
    append(out, value);
    return out;
}

Bytes scope(std::string_view path, const Bytes& body) {
    Bytes inner;
    appendNameString(inner, path);
    append(inner, body);
    return withPkgLength(kScopeOp, false, inner);
}

Bytes device(std::string_view seg, const Bytes& body) {
    Bytes inner;
    appendNameSeg(inner, seg);
    append(inner, body);
    return withPkgLength(kDeviceOp, true, inner);
}

Bytes method(std::string_view seg, uint8_t args, const Bytes& body) {
    Bytes inner;
    appendNameSeg(inner, seg);
    inner.push_back(static_cast<uint8_t>(args & 7));  // MethodFlags: arg count, not serialized
    append(inner, body);
    return withPkgLength(kMethodOp, false, inner);
}

Bytes returnValue(const Bytes& value) {
    Bytes out{kReturnOp};
    append(out, value);
    return out;
}

Bytes arg(unsigned n) {
    if (n > 6) throw std::logic_error("aml: there are 7 method arguments");
    return {static_cast<uint8_t>(0x68 + n)};  // Arg0Op..Arg6Op
}

Bytes resourceTemplate(const std::vector<Bytes>& descriptors) {
    Bytes bytes = join(descriptors);
    bytes.push_back(0x79);  // end tag, small item of length 1
    bytes.push_back(0x00);  // checksum 0: "treated as if the checksum operation succeeded"
    return buffer(bytes);
}

Bytes wordBusNumber(uint16_t min, uint16_t max) { return addressSpace<uint16_t>(0x88, 2, 0, min, max); }
Bytes wordIo(uint16_t min, uint16_t max) { return addressSpace<uint16_t>(0x88, 1, 0x03, min, max); }
Bytes dwordMemory(uint32_t min, uint32_t max) { return addressSpace<uint32_t>(0x87, 0, 0x01, min, max); }
Bytes qwordMemory(uint64_t min, uint64_t max) { return addressSpace<uint64_t>(0x8a, 0, 0x01, min, max); }

Bytes io(uint16_t base, uint8_t length) {
    Bytes out{0x47, 0x01};  // I/O port descriptor, 16-bit decode
    appendLe<uint16_t>(out, base);
    appendLe<uint16_t>(out, base);
    out.push_back(1);  // alignment
    out.push_back(length);
    return out;
}

Bytes irqNoFlags(uint16_t irqMask) {
    Bytes out{0x22};
    appendLe<uint16_t>(out, irqMask);
    return out;
}

}  // namespace conduit::vmm::x86::aml
