// A vfio::HostInterface that passes every call on to another (the simulated host). A test derives
// from it and overrides only the calls it counts or scripts.
#pragma once

#include "vfio/host_interface.h"

namespace conduit::test {

class ForwardingHost : public vfio::HostInterface {
public:
    explicit ForwardingHost(vfio::HostInterface& inner) : inner_(inner) {}

    Result<int> open(const std::string& p, int f) override { return inner_.open(p, f); }
    void close(int fd) override { inner_.close(fd); }
    Result<int> ioctl(int fd, unsigned long req, uintptr_t arg) override { return inner_.ioctl(fd, req, arg); }
    Result<void*> mmap(void* a, size_t l, int p, int f, int fd, off_t o) override { return inner_.mmap(a, l, p, f, fd, o); }
    void munmap(void* a, size_t l) override { inner_.munmap(a, l); }
    Result<size_t> pread(int fd, void* b, size_t c, off_t o) override { return inner_.pread(fd, b, c, o); }
    Result<size_t> pwrite(int fd, const void* b, size_t c, off_t o) override { return inner_.pwrite(fd, b, c, o); }
    Result<size_t> read(int fd, void* b, size_t c) override { return inner_.read(fd, b, c); }
    Result<int> eventfd(unsigned i, int f) override { return inner_.eventfd(i, f); }
    Result<std::string> readFile(const std::filesystem::path& p) override { return inner_.readFile(p); }
    Result<std::filesystem::path> readLink(const std::filesystem::path& p) override { return inner_.readLink(p); }
    Result<std::vector<std::string>> listDirectory(const std::filesystem::path& p) override { return inner_.listDirectory(p); }
    bool exists(const std::filesystem::path& p) override { return inner_.exists(p); }

private:
    vfio::HostInterface& inner_;
};

}  // namespace conduit::test
