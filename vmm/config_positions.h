// Where each value (and each object key) of a JSON text sits, by JSON pointer, so config errors can
// say FILE:LINE:COL. nlohmann::json keeps no source positions, so this is a second, small pass over
// text that nlohmann has already accepted; it also finds duplicate keys, which nlohmann silently
// collapses.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace conduit::vmm {

struct TextPosition {
    unsigned line = 1;    // 1-based
    unsigned column = 1;  // 1-based, in bytes
};

class JsonPositionIndex {
public:
    // `text` must be valid JSON (strict: no comments). Returns nullopt only if it is not.
    static std::optional<JsonPositionIndex> build(const std::string& text);

    // Position of the value at `pointer` ("" is the document), or of the key naming it.
    std::optional<TextPosition> value(const std::string& pointer) const;
    std::optional<TextPosition> key(const std::string& pointer) const;

    // The first key that appears twice in one object, as a pointer to its second occurrence.
    const std::optional<std::string>& firstDuplicate() const { return firstDuplicate_; }

    // Where `text` first opens an array or object nested deeper than `maxDepth` levels, if it
    // does. Needs no valid JSON: it runs before the parser so that neither the parser nor build()
    // (recursive, one pointer string per level) ever sees hostile nesting.
    static std::optional<TextPosition> firstNestingBeyond(const std::string& text, unsigned maxDepth);

    // "a/b" -> "a~1b", "~" -> "~0" (RFC 6901).
    static std::string escapeToken(const std::string& key);

private:
    std::map<std::string, TextPosition> values_;
    std::map<std::string, TextPosition> keys_;
    std::optional<std::string> firstDuplicate_;

    friend class PositionScanner;
};

}  // namespace conduit::vmm
