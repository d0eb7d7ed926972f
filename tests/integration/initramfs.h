// A Linux initramfs for the Linux-boot tests, written without cpio(1): the "newc" format
// (Documentation/driver-api/early-userspace/buffer-format.rst), uncompressed, which every kernel
// accepts. Holds /init (a shell script the test writes) and a static busybox to run it.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace conduit::test {

class Initramfs {
public:
    void dir(const std::string& path) { add(path, S_IFDIR | 0755, {}); }
    void file(const std::string& path, const std::string& bytes, unsigned mode = 0755) {
        add(path, S_IFREG | mode, std::vector<uint8_t>(bytes.begin(), bytes.end()));
    }
    // Copies a host file in; false if it cannot be read.
    bool hostFile(const std::string& path, const std::filesystem::path& from, unsigned mode = 0755) {
        std::ifstream in(from, std::ios::binary);
        if (!in) return false;
        add(path, S_IFREG | mode, std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {}));
        return true;
    }
    std::vector<uint8_t> bytes() const {
        Initramfs done = *this;
        done.add("TRAILER!!!", 0, {});
        return done.out_;
    }
    void writeTo(const std::filesystem::path& p) const {
        auto b = bytes();
        std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
    }

private:
    void add(const std::string& name, unsigned mode, const std::vector<uint8_t>& data) {
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize (with NUL), check; each field 8 hex digits.
        std::string h = fmt::format("070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                                    ++ino_, mode, 0, 0, 1, 0, data.size(), 0, 0, 0, 0, name.size() + 1, 0);
        out_.insert(out_.end(), h.begin(), h.end());
        out_.insert(out_.end(), name.begin(), name.end());
        out_.push_back(0);
        pad();
        out_.insert(out_.end(), data.begin(), data.end());
        pad();
    }
    void pad() {
        while (out_.size() % 4) out_.push_back(0);
    }
    std::vector<uint8_t> out_;
    unsigned ino_ = 0;
};

}  // namespace conduit::test
