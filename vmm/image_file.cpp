#include "vmm/image_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "base/unique_fd.h"

namespace conduit::vmm {

Result<std::vector<uint8_t>> readImageFile(const std::filesystem::path& path, const std::string& what) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        return Error::fromErrno(fmt::format("opening {} {}", what, path.string()));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return Error::fromErrno(fmt::format("fstat {} {}", what, path.string()));
    if (!S_ISREG(st.st_mode))
        return Error(fmt::format("{} {} is not a regular file", what, path.string()));
    std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::pread(fd.get(), data.data() + done, data.size() - done, static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return Error::fromErrno(fmt::format("reading {} {} at offset {}", what, path.string(), done));
        }
        if (n == 0)
            return Error(fmt::format("{} {} shrank while reading ({} of {} bytes)", what, path.string(), done,
                                     data.size()));
        done += static_cast<size_t>(n);
    }
    return data;
}

}  // namespace conduit::vmm
