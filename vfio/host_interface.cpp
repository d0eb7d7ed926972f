#include "vfio/host_interface.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <system_error>

namespace conduit::vfio {

Result<int> RealHost::open(const std::string& path, int flags) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) return Error::fromErrno("open " + path);
    return fd;
}

void RealHost::close(int fd) { ::close(fd); }

Result<int> RealHost::ioctl(int fd, unsigned long request, uintptr_t arg) {
    int r = ::ioctl(fd, request, arg);
    if (r < 0) return Error::fromErrno("ioctl");
    return r;
}

Result<void*> RealHost::mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
    void* p = ::mmap(addr, length, prot, flags, fd, offset);
    if (p == MAP_FAILED) return Error::fromErrno("mmap");
    return p;
}

void RealHost::munmap(void* addr, size_t length) { ::munmap(addr, length); }

Result<size_t> RealHost::pread(int fd, void* buf, size_t count, off_t offset) {
    ssize_t n = ::pread(fd, buf, count, offset);
    if (n < 0) return Error::fromErrno("pread");
    return static_cast<size_t>(n);
}

Result<size_t> RealHost::read(int fd, void* buf, size_t count) {
    ssize_t n = ::read(fd, buf, count);
    if (n < 0) return Error::fromErrno("read");
    return static_cast<size_t>(n);
}

Result<size_t> RealHost::pwrite(int fd, const void* buf, size_t count, off_t offset) {
    ssize_t n = ::pwrite(fd, buf, count, offset);
    if (n < 0) return Error::fromErrno("pwrite");
    return static_cast<size_t>(n);
}

Result<int> RealHost::eventfd(unsigned initval, int flags) {
    int fd = ::eventfd(initval, flags);
    if (fd < 0) return Error::fromErrno("eventfd");
    return fd;
}

Result<std::string> RealHost::readFile(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) return Error::fromErrno("read " + path.string());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

Result<std::filesystem::path> RealHost::readLink(const std::filesystem::path& path) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(path, ec);
    if (ec) return Error("readlink " + path.string(), ec.value());
    return target;
}

Result<std::vector<std::string>> RealHost::listDirectory(const std::filesystem::path& path) {
    std::error_code ec;
    std::vector<std::string> names;
    for (auto it = std::filesystem::directory_iterator(path, ec); !ec && it != std::filesystem::directory_iterator();
         it.increment(ec))
        names.push_back(it->path().filename().string());
    if (ec) return Error("list " + path.string(), ec.value());
    return names;
}

bool RealHost::exists(const std::filesystem::path& path) {
    std::error_code ec;
    return std::filesystem::exists(path, ec);
}

HostInterface& realHost() {
    static RealHost host;
    return host;
}

}  // namespace conduit::vfio
