// The seam between Conduit and the host kernel for everything VFIO/iommufd. Nothing in vfio/ talks
// to the kernel any other way: the real implementation (RealHost) is a thin layer over syscalls,
// and tests/hostsim/ implements the same interface with the kernel's semantics so every line of
// vfio/ runs on machines without VFIO.
//
// Errors come back as Result with the errno the kernel (or the simulation) gave; callers add the
// name of the ioctl and the object (see ioctl_util.h).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "base/result.h"

namespace conduit::vfio {

class HostInterface {
public:
    virtual ~HostInterface() = default;

    virtual Result<int> open(const std::string& path, int flags) = 0;
    virtual void close(int fd) = 0;
    // `arg` is either a pointer to the ioctl's struct or a plain integer argument
    // (VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU), exactly as ioctl(2) receives it.
    virtual Result<int> ioctl(int fd, unsigned long request, uintptr_t arg) = 0;
    virtual Result<void*> mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) = 0;
    virtual void munmap(void* addr, size_t length) = 0;
    virtual Result<size_t> pread(int fd, void* buf, size_t count, off_t offset) = 0;
    virtual Result<size_t> pwrite(int fd, const void* buf, size_t count, off_t offset) = 0;
    // read(2) of a stream fd: an iommufd vEVENTQ is an anon-inode file, which has no pread
    // (no FMODE_PREAD: ESPIPE). A host that hands out no such fds may keep this default.
    virtual Result<size_t> read(int fd, void* buf, size_t count) {
        (void)buf;
        (void)count;
        return Error("read fd " + std::to_string(fd) + ": this host has no stream reads", ENOSYS);
    }
    virtual Result<int> eventfd(unsigned initval, int flags) = 0;

    // sysfs (and /dev) inspection.
    virtual Result<std::string> readFile(const std::filesystem::path& path) = 0;
    virtual Result<std::filesystem::path> readLink(const std::filesystem::path& path) = 0;
    virtual Result<std::vector<std::string>> listDirectory(const std::filesystem::path& path) = 0;
    virtual bool exists(const std::filesystem::path& path) = 0;
};

// Thin syscalls. Stateless; one process-wide instance is enough.
class RealHost final : public HostInterface {
public:
    Result<int> open(const std::string& path, int flags) override;
    void close(int fd) override;
    Result<int> ioctl(int fd, unsigned long request, uintptr_t arg) override;
    Result<void*> mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) override;
    void munmap(void* addr, size_t length) override;
    Result<size_t> pread(int fd, void* buf, size_t count, off_t offset) override;
    Result<size_t> pwrite(int fd, const void* buf, size_t count, off_t offset) override;
    Result<size_t> read(int fd, void* buf, size_t count) override;
    Result<int> eventfd(unsigned initval, int flags) override;
    Result<std::string> readFile(const std::filesystem::path& path) override;
    Result<std::filesystem::path> readLink(const std::filesystem::path& path) override;
    Result<std::vector<std::string>> listDirectory(const std::filesystem::path& path) override;
    bool exists(const std::filesystem::path& path) override;
};

HostInterface& realHost();

// Where the host's device nodes and sysfs live (tests point these at temporary trees).
struct HostPaths {
    std::filesystem::path sysfs = "/sys";
    std::filesystem::path dev = "/dev";
};

}  // namespace conduit::vfio
