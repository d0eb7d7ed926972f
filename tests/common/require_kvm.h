// REQUIRE_KVM(): the first statement of a test that needs a real KVM. Without a usable /dev/kvm
// the test is skipped with the reason, or, when CONDUIT_REQUIRE_KVM=1 (set by tests/bed/kvm-test.sh,
// the way ctest runs every KVM test: on this host's KVM or in the nested-KVM bed), it fails: a KVM
// test that did not touch KVM must never look green (docs/testing.md).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace conduit::test {

// Empty when /dev/kvm opens read-write, else why not.
inline std::string kvmUnavailableReason() {
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        ::close(fd);
        return {};
    }
    return std::string("/dev/kvm cannot be opened read-write: ") + std::strerror(errno);
}

inline bool kvmRequired() {
    const char* v = std::getenv("CONDUIT_REQUIRE_KVM");
    return v && std::string(v) == "1";
}

}  // namespace conduit::test

#define REQUIRE_KVM()                                                                        \
    do {                                                                                     \
        if (auto why_ = ::conduit::test::kvmUnavailableReason(); !why_.empty()) {            \
            if (::conduit::test::kvmRequired()) FAIL() << why_ << " (CONDUIT_REQUIRE_KVM=1)"; \
            GTEST_SKIP() << why_ << ": this test needs a real KVM";                           \
        }                                                                                    \
    } while (0)
