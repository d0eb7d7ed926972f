// A small ACPI Machine Language (AML) writer: the few constructs a VMM's DSDT needs (ACPI 6.5,
// section 20 "ACPI Machine Language Specification"; resource descriptors from section 6.4).
// Each function returns the encoded bytes of one term, so a table reads like its ASL:
//
//   scope("\\_SB_", {device("PCI0", {name("_HID", eisaId("PNP0A08")), ...})})
//
// Only what Conduit emits is here; nothing parses AML. Names are 4-character segments, padded
// with '_' as ASL does ("COM1", "_S5_"); a scope name may start with the root prefix '\'.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace conduit::vmm::x86::aml {

using Bytes = std::vector<uint8_t>;

// Concatenation of terms, as the body of a scope, device or package.
Bytes join(std::initializer_list<Bytes> terms);
Bytes join(const std::vector<Bytes>& terms);

// Data objects.
Bytes integer(uint64_t value);        // the shortest encoding: Zero, One, Byte, Word, DWord or QWord
Bytes string(std::string_view text);  // StringPrefix + ASCII + NUL
Bytes eisaId(std::string_view id);    // "PNP0A08" -> the compressed 32-bit EISA id, as an integer
Bytes package(const std::vector<Bytes>& elements);
Bytes buffer(const Bytes& bytes);

// Named objects.
Bytes name(std::string_view seg, const Bytes& value);               // Name(seg, value)
Bytes scope(std::string_view path, const Bytes& body);              // Scope(path) { body }
Bytes device(std::string_view seg, const Bytes& body);              // Device(seg) { body }
Bytes method(std::string_view seg, uint8_t args, const Bytes& body);  // Method(seg, args, NotSerialized)
Bytes returnValue(const Bytes& value);                              // Return(value)
Bytes arg(unsigned n);                                              // Arg0..Arg6

// Resource descriptors; resourceTemplate() wraps them in a buffer with the end tag.
Bytes resourceTemplate(const std::vector<Bytes>& descriptors);
Bytes wordBusNumber(uint16_t min, uint16_t max);           // producer, fixed min and max
Bytes wordIo(uint16_t min, uint16_t max);                  // producer window, ISA and non-ISA ranges
Bytes dwordMemory(uint32_t min, uint32_t max);             // producer window, non-cacheable, read-write
Bytes qwordMemory(uint64_t min, uint64_t max);             // producer window, non-cacheable, read-write
Bytes io(uint16_t base, uint8_t length);                   // fixed 16-bit decode at `base`
Bytes irqNoFlags(uint16_t irqMask);                        // ISA IRQs (edge, active high), bit n = IRQ n

}  // namespace conduit::vmm::x86::aml
