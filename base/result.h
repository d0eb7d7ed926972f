// Errors as values: every fallible operation returns Result<T>, carrying either the value or an
// Error that says what was attempted (object, ioctl, address) and, where the kernel answered, the
// errno. Exceptions are kept for the CLI boundary only.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace conduit {

class Error {
public:
    // `what` names what was attempted, e.g. "KVM_SET_USER_MEMORY_REGION slot 3 gpa 0x100000".
    // `errnoValue` is 0 when the failure did not come from the kernel (bad input, logic).
    explicit Error(std::string what, int errnoValue = 0) : what_(std::move(what)), errno_(errnoValue) {}

    // Captures the current errno; call right after the failing syscall.
    static Error fromErrno(std::string what) { return Error(std::move(what), errno); }

    int code() const { return errno_; }
    const std::string& what() const { return what_; }

    // Adds an outer layer of context: "outer: inner".
    Error withContext(const std::string& outer) && {
        what_ = outer + ": " + what_;
        return std::move(*this);
    }

    // One line for humans: "what: strerror (ENAME)" or just "what".
    std::string describe() const;

private:
    std::string what_;
    int errno_;
};

// Short symbolic name of an errno value ("EINVAL"), or "errno N" when unknown.
std::string errnoName(int errnoValue);

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }

    const Error& error() const& { return std::get<1>(v_); }
    Error&& error() && { return std::get<1>(std::move(v_)); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), ok_(false) {}

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    void value() const {}

    const Error& error() const& { return error_; }
    Error&& error() && { return std::move(error_); }

private:
    Error error_{""};
    bool ok_ = true;
};

inline Result<void> success() { return {}; }

}  // namespace conduit

// Propagates an error to the caller (which must return a Result<...>); yields the value otherwise.
// Uses a GNU statement expression, which g++ and clang both accept.
#define TRY(expr)                                             \
    ({                                                        \
        auto conduit_try_result_ = (expr);                    \
        if (!conduit_try_result_.ok())                        \
            return std::move(conduit_try_result_).error();    \
        std::move(conduit_try_result_).value();               \
    })

// Like TRY, but prefixes the error with context when it propagates.
#define TRY_CTX(expr, ctx)                                                        \
    ({                                                                            \
        auto conduit_try_result_ = (expr);                                        \
        if (!conduit_try_result_.ok())                                            \
            return std::move(conduit_try_result_).error().withContext(ctx);       \
        std::move(conduit_try_result_).value();                                   \
    })
