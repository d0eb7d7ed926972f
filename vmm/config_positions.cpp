#include "vmm/config_positions.h"

#include <nlohmann/json.hpp>

#include <set>
#include <stdexcept>

namespace conduit::vmm {

// A recursive-descent walk over the JSON grammar that records where every value and key starts.
// It throws std::runtime_error on malformed input (which build() turns into nullopt).
class PositionScanner {
public:
    PositionScanner(const std::string& text, JsonPositionIndex& index) : s_(text), index_(index) {}

    void document() {
        skipSpace();
        parseValue("");
        skipSpace();
        if (i_ != s_.size()) fail();
    }

private:
    [[noreturn]] void fail() { throw std::runtime_error("not JSON"); }

    TextPosition here() const { return {line_, static_cast<unsigned>(i_ - lineStart_ + 1)}; }

    void advance() {
        if (s_[i_] == '\n') {
            ++line_;
            lineStart_ = i_ + 1;
        }
        ++i_;
    }

    void skipSpace() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) advance();
    }

    char peek() const {
        if (i_ >= s_.size()) return '\0';
        return s_[i_];
    }

    void expect(char c) {
        if (peek() != c) fail();
        advance();
    }

    // Returns the decoded string; nlohmann does the unescaping so \u sequences come out right.
    std::string parseString() {
        const size_t start = i_;
        expect('"');
        while (i_ < s_.size() && s_[i_] != '"') {
            if (s_[i_] == '\\') advance();
            if (i_ < s_.size()) advance();
        }
        expect('"');
        return nlohmann::json::parse(s_.substr(start, i_ - start)).get<std::string>();
    }

    void parseValue(const std::string& pointer) {
        index_.values_[pointer] = here();
        char c = peek();
        if (c == '{') {
            advance();
            skipSpace();
            std::set<std::string> seen;
            if (peek() == '}') {
                advance();
                return;
            }
            for (;;) {
                skipSpace();
                TextPosition keyPos = here();
                std::string key = parseString();
                std::string child = pointer + "/" + JsonPositionIndex::escapeToken(key);
                if (!seen.insert(key).second && !index_.firstDuplicate_) index_.firstDuplicate_ = child;
                index_.keys_[child] = keyPos;
                skipSpace();
                expect(':');
                skipSpace();
                parseValue(child);
                skipSpace();
                if (peek() == ',') {
                    advance();
                    continue;
                }
                expect('}');
                return;
            }
        }
        if (c == '[') {
            advance();
            skipSpace();
            if (peek() == ']') {
                advance();
                return;
            }
            for (size_t n = 0;; ++n) {
                skipSpace();
                parseValue(pointer + "/" + std::to_string(n));
                skipSpace();
                if (peek() == ',') {
                    advance();
                    continue;
                }
                expect(']');
                return;
            }
        }
        if (c == '"') {
            parseString();
            return;
        }
        // Literal or number: consume up to a delimiter; nlohmann has already validated it.
        if (i_ >= s_.size()) fail();
        while (i_ < s_.size()) {
            char d = s_[i_];
            if (d == ',' || d == '}' || d == ']' || d == ' ' || d == '\t' || d == '\n' || d == '\r') break;
            advance();
        }
    }

    const std::string& s_;
    JsonPositionIndex& index_;
    size_t i_ = 0;
    size_t lineStart_ = 0;
    unsigned line_ = 1;
};

std::optional<JsonPositionIndex> JsonPositionIndex::build(const std::string& text) {
    JsonPositionIndex index;
    try {
        PositionScanner(text, index).document();
    } catch (const std::exception&) {
        return std::nullopt;
    }
    return index;
}

std::optional<TextPosition> JsonPositionIndex::firstNestingBeyond(const std::string& text, unsigned maxDepth) {
    unsigned depth = 0, line = 1;
    size_t lineStart = 0;
    bool inString = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\n') {
            ++line;
            lineStart = i + 1;
        }
        if (inString) {
            if (c == '\\')
                ++i;  // the escaped character cannot end the string
            else if (c == '"')
                inString = false;
            continue;
        }
        if (c == '"') {
            inString = true;
        } else if (c == '[' || c == '{') {
            if (++depth > maxDepth) return TextPosition{line, static_cast<unsigned>(i - lineStart + 1)};
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return std::nullopt;
}

std::optional<TextPosition> JsonPositionIndex::value(const std::string& pointer) const {
    auto it = values_.find(pointer);
    if (it == values_.end()) return std::nullopt;
    return it->second;
}

std::optional<TextPosition> JsonPositionIndex::key(const std::string& pointer) const {
    auto it = keys_.find(pointer);
    if (it == keys_.end()) return std::nullopt;
    return it->second;
}

std::string JsonPositionIndex::escapeToken(const std::string& key) {
    std::string out;
    for (char c : key) {
        if (c == '~')
            out += "~0";
        else if (c == '/')
            out += "~1";
        else
            out += c;
    }
    return out;
}

}  // namespace conduit::vmm
