// A scratch directory for config tests: the files configs name (p.bin, vmlinuz, initrd.img), a
// subdirectory, and vm.json's path; expand() turns {F} / {D} in an expected message into them.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

namespace conduit::vmm {

class ConfigDirFixture : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/conduit-config-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        for (const char* f : {"p.bin", "vmlinuz", "initrd.img"}) std::ofstream(dir / f) << "x";
        std::filesystem::create_directory(dir / "sub");
        file = dir / "vm.json";
    }
    void TearDown() override { std::filesystem::remove_all(dir); }

    // Replaces {F} with the config file name and {D} with its directory.
    std::string expand(std::string s) const {
        for (auto [key, value] : {std::pair<std::string, std::string>{"{F}", file.string()}, {"{D}", dir.string()}}) {
            for (size_t pos; (pos = s.find(key)) != std::string::npos;) s.replace(pos, key.size(), value);
        }
        return s;
    }

    std::filesystem::path dir;
    std::filesystem::path file;
};

}  // namespace conduit::vmm
