// Reading a boot image (kernel, initrd, payload) from disk into memory, with errors that name the
// file and carry errno.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "base/result.h"

namespace conduit::vmm {

// `what` says what the file is for messages ("kernel", "initrd", "payload").
Result<std::vector<uint8_t>> readImageFile(const std::filesystem::path& path, const std::string& what);

}  // namespace conduit::vmm
