// Decodes a libFuzzer input as a stream of little-endian integers; past the end every read is 0,
// so any prefix of an input is a valid (shorter) program and libFuzzer's shrinking stays useful.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace conduit::fuzz {

class Input {
public:
    Input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
    bool done() const { return p_ >= end_; }
    template <class T>
    T get() {
        T v = 0;
        for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(next()) << (8 * i));
        return v;
    }
    uint8_t u8() { return get<uint8_t>(); }
    uint16_t u16() { return get<uint16_t>(); }
    uint32_t u32() { return get<uint32_t>(); }
    uint64_t u64() { return get<uint64_t>(); }

private:
    uint8_t next() { return p_ < end_ ? *p_++ : 0; }
    const uint8_t* p_;
    const uint8_t* end_;
};

// An invariant of the code under test does not hold: report and abort so libFuzzer saves the input.
[[noreturn]] inline void violated(const char* what, const char* file, int line) {
    std::fprintf(stderr, "fuzz invariant violated: %s (%s:%d)\n", what, file, line);
    std::abort();
}
#define FUZZ_CHECK(cond) \
    do { \
        if (!(cond)) ::conduit::fuzz::violated(#cond, __FILE__, __LINE__); \
    } while (0)

}  // namespace conduit::fuzz
