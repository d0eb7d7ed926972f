// The JSON config loader: parse (nlohmann), locate (JsonPositionIndex), apply command-line
// overrides, then validate into a VmConfig. The format is documented in docs/config.md and
// configs/schema.json; keep the three in step.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "memory/address_layout.h"
#include "vmm/config.h"
#include "base/printable.h"
#include "base/unique_fd.h"
#include "vmm/config_positions.h"
#include "vfio/sysfs.h"

namespace conduit::vmm {

namespace fs = std::filesystem;

namespace {

// Ordered so the first error reported is the first one in the file.
using Json = nlohmann::ordered_json;

// Guest-physical addresses beyond 48 bits are certainly a typo: no guest we build has more.
constexpr uint64_t kMaxGuestAddress = 1ull << 48;
constexpr uint64_t kMinMemoryMib = memory::AddressLayout::kMinRam >> 20;
constexpr uint64_t kMaxMemoryMib = memory::AddressLayout::kMaxRam >> 20;
constexpr size_t kMaxConfigBytes = 1 << 20;
// A VM config nests four levels at most; anything far deeper is hostile or broken input.
constexpr unsigned kMaxNesting = 32;

std::string jsonQuote(const std::string& s) { return Json(s).dump(); }


// "string \"256\"", "number 1.5", "boolean true", "null", "object", "array".
std::string describeValue(const Json& v) {
    switch (v.type()) {
    case Json::value_t::string: {
        std::string s = v.get<std::string>();
        if (s.size() > 40) s = s.substr(0, 37) + "...";
        return "string " + jsonQuote(s);
    }
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
        return "number " + v.dump();
    case Json::value_t::boolean:
        return std::string("boolean ") + (v.get<bool>() ? "true" : "false");
    case Json::value_t::null:
        return "null";
    case Json::value_t::object:
        return "object";
    case Json::value_t::array:
        return "array";
    default:
        return v.type_name();
    }
}

size_t editDistance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

// The PCI address a sysfs device path names: /sys/bus/pci/devices/BDF, or the device's own directory
// under /sys/devices/pciDDDD:BB/ (one BDF per bridge on the way). Any other /sys path that happens
// to end in a BDF (a driver's bind link, a class device, "..") is not a device directory.
std::optional<std::string> sysfsDeviceBdf(const std::string& path) {
    auto bdfOf = [](const std::string& name) -> std::optional<std::string> {
        auto bdf = vfio::normalizeBdf(name);
        if (!bdf) return std::nullopt;
        return *bdf;
    };
    std::vector<std::string> parts;
    for (size_t at = 1; at <= path.size();) {
        size_t next = path.find('/', at);
        if (next == std::string::npos) next = path.size();
        if (next > at) parts.push_back(path.substr(at, next - at));
        at = next + 1;
    }
    if (parts.size() == 5 && parts[0] == "sys" && parts[1] == "bus" && parts[2] == "pci" && parts[3] == "devices")
        return bdfOf(parts[4]);
    static const std::regex hostBridge("pci[0-9a-fA-F]{4}:[0-9a-fA-F]{2}");
    if (parts.size() < 4 || parts[0] != "sys" || parts[1] != "devices" || !std::regex_match(parts[2], hostBridge))
        return std::nullopt;
    for (size_t i = 3; i < parts.size(); ++i)
        if (!bdfOf(parts[i])) return std::nullopt;
    return bdfOf(parts.back());
}

std::string parentPointer(const std::string& pointer) {
    auto slash = pointer.rfind('/');
    return slash == std::string::npos ? std::string() : pointer.substr(0, slash);
}

// Why `path` cannot be an output file the VMM creates or truncates, or nothing.
std::optional<std::string> outputFileProblem(const fs::path& path) {
    auto accessAsOpen = [](const fs::path& p, int mode) { return ::faccessat(AT_FDCWD, p.c_str(), mode, AT_EACCESS); };
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return fmt::format("is a directory: {}", path.string());
        if (accessAsOpen(path, W_OK) != 0) return fmt::format("file not writable: {} ({})", path.string(), std::strerror(errno));
        return std::nullopt;
    }
    fs::path dir = path.parent_path();
    if (accessAsOpen(dir, W_OK) != 0) {
        int e = errno;
        const char* what = (e == ENOENT || e == ENOTDIR) ? "directory not found" : "directory not writable";
        return fmt::format("{}: {} ({})", what, dir.string(), std::strerror(e));
    }
    return std::nullopt;
}

// The same file, by path or (when both exist) by inode: a link or a second name is still the same file.
bool sameFile(const fs::path& a, const fs::path& b) {
    if (a.lexically_normal() == b.lexically_normal()) return true;
    struct stat sa {}, sb {};
    return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

std::optional<std::string> inputFileNamed(const VmConfig& config, const fs::path& path) {
    if (config.kernel && sameFile(path, config.kernel->path)) return "the kernel (" + config.kernel->path.string() + ")";
    if (config.kernel && config.kernel->initrd && sameFile(path, *config.kernel->initrd))
        return "the initrd (" + config.kernel->initrd->string() + ")";
    if (config.payload && sameFile(path, config.payload->path)) return "the payload (" + config.payload->path.string() + ")";
    if (!config.sourceFile.empty() && sameFile(path, fs::absolute(config.sourceFile)))
        return "the config file (" + config.sourceFile.string() + ")";
    return std::nullopt;
}

Result<std::filesystem::path> checkOutputFile(const VmConfig& config, const std::string& path, const std::string& flag) {
    if (path.empty()) return Error(flag + ": must not be empty");
    const fs::path abs = fs::absolute(path).lexically_normal();
    if (auto problem = outputFileProblem(abs)) return Error(printable(flag + ": " + *problem));
    if (auto input = inputFileNamed(config, abs)) return Error(printable(fmt::format("{}: {} is {}: writing there would overwrite it", flag, abs.string(), *input)));
    if (config.serial.output == SerialOutput::File && sameFile(abs, config.serial.path))
        return Error(printable(fmt::format("{}: {} is also the serial output", flag, abs.string())));
    return abs;
}

namespace {

class Validator {
public:
    Validator(std::string fileLabel, fs::path baseDir, const JsonPositionIndex& positions)
        : file_(std::move(fileLabel)), baseDir_(std::move(baseDir)), positions_(positions) {}

    std::map<std::string, std::string>& origins() { return origins_; }

    // "FILE:LINE:COL: /pointer: message", or "--flag: /pointer: message" when the value (or the
    // object holding it) came from a command-line override.
    Error error(const std::string& pointer, const std::string& message, bool atKey = false) const {
        const std::string what = printable(pointer.empty() ? message : pointer + ": " + message);
        std::string p = pointer;
        for (;;) {
            if (auto o = origins_.find(p); o != origins_.end()) return Error(o->second + ": " + what);
            std::optional<TextPosition> pos = (atKey && p == pointer) ? positions_.key(p) : positions_.value(p);
            if (pos) return Error(fmt::format("{}:{}:{}: {}", file_, pos->line, pos->column, what));
            if (p.empty()) break;
            p = parentPointer(p);
        }
        return Error(fmt::format("{}: {}", file_, what));
    }

    Error unknownKey(const std::string& pointer, const std::string& key, std::initializer_list<const char*> allowed) const {
        std::string best;
        size_t bestDistance = SIZE_MAX;
        for (const char* a : allowed) {
            size_t d = editDistance(key, a);
            if (d < bestDistance) {
                bestDistance = d;
                best = a;
            }
        }
        if (bestDistance <= 2 && bestDistance < key.size())
            return error(pointer, fmt::format("unknown key (did you mean {}?)", jsonQuote(best)), true);
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + jsonQuote(a);
        return error(pointer, "unknown key (expected one of " + list + ")", true);
    }

    Result<const Json*> object(const Json& v, const std::string& pointer) const {
        if (!v.is_object()) return error(pointer, "expected an object, got " + describeValue(v));
        return &v;
    }

    Result<uint64_t> integer(const Json& v, const std::string& pointer, uint64_t min, uint64_t max,
                             const std::string& rangeNote = "") const {
        uint64_t value = 0;
        if (v.is_number_unsigned()) {
            value = v.get<uint64_t>();
        } else if (v.is_number_integer()) {
            // JSON's -0 is an integer 0 to nlohmann: zero, not a negative number.
            if (v.get<int64_t>() < 0) return error(pointer, fmt::format("must not be negative, got {}", v.get<int64_t>()));
            value = 0;
        } else if (v.is_number_float()) {
            // JSON Schema counts 2.0 as an integer; follow it.
            double d = v.get<double>();
            if (d != std::floor(d)) return error(pointer, "expected an integer, got " + describeValue(v));
            if (d < 0) return error(pointer, fmt::format("must not be negative, got {}", v.dump()));  // -0.0 is not < 0
            if (d >= 18446744073709551616.0) return error(pointer, "out of range: " + v.dump());
            value = static_cast<uint64_t>(d);
        } else {
            return error(pointer, "expected an integer, got " + describeValue(v));
        }
        if (value < min || value > max)
            return error(pointer, fmt::format("must be between {} and {}{}, got {}", min, max, rangeNote, value));
        return value;
    }

    // An integer or a "0x..." string.
    Result<uint64_t> address(const Json& v, const std::string& pointer) const {
        uint64_t value = 0;
        if (v.is_string()) {
            const std::string s = v.get<std::string>();
            static const std::regex hex("0[xX][0-9a-fA-F]+");
            if (!std::regex_match(s, hex))
                return error(pointer, "expected an integer or a \"0x...\" hex string, got " + describeValue(v));
            auto [ptr, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), value, 16);
            if (ec != std::errc()) return error(pointer, fmt::format("out of range: {}", s));
        } else if (v.is_number()) {
            value = TRY(integer(v, pointer, 0, UINT64_MAX));
        } else {
            return error(pointer, "expected an integer or a \"0x...\" hex string, got " + describeValue(v));
        }
        if (value >= kMaxGuestAddress)
            return error(pointer, fmt::format("out of range: {:#x} is beyond the 48-bit guest address space", value));
        return value;
    }

    Result<std::string> string(const Json& v, const std::string& pointer, bool allowEmpty = true) const {
        if (!v.is_string()) return error(pointer, "expected a string, got " + describeValue(v));
        std::string s = v.get<std::string>();
        if (!allowEmpty && s.empty()) return error(pointer, "must not be empty");
        if (s.find('\0') != std::string::npos) return error(pointer, "must not contain a NUL character");
        return s;
    }

    Result<bool> boolean(const Json& v, const std::string& pointer) const {
        if (!v.is_boolean()) return error(pointer, "expected true or false, got " + describeValue(v));
        return v.get<bool>();
    }

    template <class E>
    Result<E> choice(const Json& v, const std::string& pointer, std::initializer_list<std::pair<const char*, E>> options) const {
        std::string list;
        for (auto& [name, e] : options) list += (list.empty() ? "" : ", ") + jsonQuote(name);
        if (!v.is_string()) return error(pointer, "expected one of " + list + ", got " + describeValue(v));
        const std::string s = v.get<std::string>();
        for (auto& [name, e] : options)
            if (s == name) return e;
        return error(pointer, fmt::format("unknown value {} (expected one of {})", jsonQuote(s), list));
    }

    fs::path resolve(const std::string& p) const {
        fs::path path(p);
        return (path.is_absolute() ? path : baseDir_ / path).lexically_normal();
    }

    // access(2) asks with the real uid and a real-root caller's full capabilities; the VMM opens files
    // with its effective ids and capabilities, so ask the same way the open will be judged.
    static int accessAsOpen(const fs::path& path, int mode) { return ::faccessat(AT_FDCWD, path.c_str(), mode, AT_EACCESS); }

    // A path to an existing, readable regular file.
    Result<fs::path> inputFile(const Json& v, const std::string& pointer) const {
        fs::path path = resolve(TRY(string(v, pointer, false)));
        if (accessAsOpen(path, R_OK) != 0) {
            int e = errno;
            const char* what = (e == ENOENT || e == ENOTDIR) ? "file not found" : e == EACCES ? "file not readable" : "cannot access file";
            return error(pointer, fmt::format("{}: {} ({})", what, path.string(), std::strerror(e)));
        }
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
            return error(pointer, fmt::format("not a regular file: {}", path.string()));
        return path;
    }

    // A file the VMM will create or append to: its directory must exist and be writable.
    Result<fs::path> outputFile(const Json& v, const std::string& pointer) const {
        fs::path path = resolve(TRY(string(v, pointer, false)));
        if (auto problem = outputFileProblem(path)) return error(pointer, *problem);
        return path;
    }

    Result<VmConfig> validate(const Json& doc, const fs::path& sourceFile);

private:
    Result<void> memory(const Json& v, const std::string& ptr, MemoryConfig& out) const;
    Result<KernelConfig> kernel(const Json& v, const std::string& ptr) const;
    Result<PayloadConfig> payload(const Json& v, const std::string& ptr) const;
    Result<void> serial(const Json& v, const std::string& ptr, SerialConfig& out) const;
    Result<void> exitDevice(const Json& v, const std::string& ptr, ExitDeviceConfig& out) const;
    Result<void> devices(const Json& v, const std::string& ptr, std::vector<DeviceConfig>& out) const;
    Result<VfioPciConfig> vfioPci(const Json& v, const std::string& ptr) const;
    Result<void> vfioHost(const Json& v, const std::string& ptr, VfioHostConfig& out) const;
    Result<ViommuConfig> viommu(const Json& v, const std::string& ptr) const;
    Result<SimulatedDeviceConfig> simDevice(const Json& v, const std::string& ptr, size_t index) const;
    Result<void> crossCheck(VmConfig& config) const;

    static std::string child(const std::string& ptr, const std::string& key) {
        return ptr + "/" + JsonPositionIndex::escapeToken(key);
    }

    std::string file_;
    fs::path baseDir_;
    const JsonPositionIndex& positions_;
    std::map<std::string, std::string> origins_;  // pointer -> override flag that set it
};

Result<VmConfig> Validator::validate(const Json& doc, const fs::path& sourceFile) {
    static const std::string kExclusive = "\"kernel\" and \"payload\" are mutually exclusive (give one)";
    if (!doc.is_object()) return error("", "expected an object at the top level, got " + describeValue(doc));
    VmConfig config;
    config.sourceFile = sourceFile;
    for (const auto& [key, value] : doc.items()) {
        const std::string ptr = child("", key);
        if (key == "$schema") {
            TRY(string(value, ptr));  // lets editors find configs/schema.json; otherwise ignored
        } else if (key == "vcpus") {
            config.vcpus = static_cast<unsigned>(TRY(integer(value, ptr, 1, kMaxVcpus)));
        } else if (key == "memory") {
            TRY(memory(value, ptr, config.memory));
        } else if (key == "kernel") {
            if (config.payload) return error(ptr, kExclusive, true);
            config.kernel = TRY(kernel(value, ptr));
        } else if (key == "payload") {
            if (config.kernel) return error(ptr, kExclusive, true);
            config.payload = TRY(payload(value, ptr));
        } else if (key == "serial") {
            TRY(serial(value, ptr, config.serial));
        } else if (key == "exit_device") {
            TRY(exitDevice(value, ptr, config.exitDevice));
        } else if (key == "devices") {
            TRY(devices(value, ptr, config.devices));
        } else if (key == "vfio_host") {
            TRY(vfioHost(value, ptr, config.vfioHost));
        } else if (key == "on_reboot") {
            config.onReboot = TRY(choice<RebootAction>(value, ptr, {{"exit", RebootAction::Exit}, {"error", RebootAction::Error}}));
        } else if (key == "viommu") {
            config.viommu = TRY(viommu(value, ptr));
        } else {
            return unknownKey(ptr, key,
                              {"vcpus", "memory", "kernel", "payload", "serial", "exit_device", "devices", "vfio_host",
                               "on_reboot", "viommu", "$schema"});
        }
    }
    if (!config.kernel && !config.payload) return Error(fmt::format("{}: missing \"kernel\" or \"payload\"", file_));
    TRY(crossCheck(config));
    return config;
}

// What no single value shows: checks between sections, so `validate` refuses what `run` would
// refuse later (or what would destroy data: the serial output truncating an input file), and the
// slots every device gets, decided here once instead of in device order at run time.
Result<void> Validator::crossCheck(VmConfig& config) const {
    if (config.serial.output == SerialOutput::File) {
        if (auto input = inputFileNamed(config, config.serial.path))
            return error("/serial/path", fmt::format("is {}: the serial output would overwrite it", *input));
    }
    if (config.memory.hugePages == memory::HugePages::Hugetlbfs && (config.memory.sizeBytes & ((2u << 20) - 1)))
        return error("/memory/size_mib", fmt::format("must be a multiple of 2 with \"hugepages\": \"hugetlbfs\" (2 MiB pages), got {}",
                                                     config.memory.sizeBytes >> 20));
    // Slots: those named first, then the lowest free one for each device without, in order.
    std::array<bool, 32> taken{};
    taken[0] = true;  // the host bridge
    for (const auto& d : config.devices)
        if (d.vfioPci && d.vfioPci->slot) taken[*d.vfioPci->slot] = true;
    for (size_t i = 0; i < config.devices.size(); ++i) {
        auto& d = *config.devices[i].vfioPci;
        if (d.slot) continue;
        auto free = std::find(taken.begin(), taken.end(), false);
        if (free == taken.end())
            return error("/devices/" + std::to_string(i), "no free slot on PCI bus 0 (slots 1 to 31 are all taken)");
        *free = true;
        d.slot = static_cast<uint8_t>(free - taken.begin());
    }
    // The virtual IOMMU: a device without "viommu" is behind it when there is one; one behind it
    // must use iommufd (nesting has no type1 form), and "auto" becomes iommufd.
    for (size_t i = 0; i < config.devices.size(); ++i) {
        auto& d = *config.devices[i].vfioPci;
        const std::string p = "/devices/" + std::to_string(i);
        d.viommu = d.viommuRequested.value_or(config.viommu.has_value());
        if (!d.viommu) continue;
        if (!config.viommu)
            return error(p + "/viommu", "there is no virtual IOMMU to put the device behind: add a top-level "
                                        "\"viommu\": {\"type\": \"smmuv3\"}");
        if (d.backend == vfio::BackendKind::Type1)
            return error(p + "/backend", "a device behind the virtual IOMMU needs the iommufd backend (its nesting "
                                         "objects have no type1 form); use \"iommufd\" or \"auto\", or set "
                                         "\"viommu\": false");
        d.backend = vfio::BackendKind::Iommufd;
    }
    if (config.viommu && std::none_of(config.devices.begin(), config.devices.end(),
                                      [](const DeviceConfig& d) { return d.vfioPci && d.vfioPci->viommu; }))
        return error("/viommu", "no vfio-pci device is behind the virtual IOMMU (every one says \"viommu\": false, "
                                "or there is none)");
    if (config.vfioHost.kind == VfioHostConfig::Kind::Simulated) {
        std::string known;
        for (const auto& sd : config.vfioHost.devices) known += (known.empty() ? "" : ", ") + sd.bdf;
        for (size_t i = 0; i < config.devices.size(); ++i) {
            const auto& d = *config.devices[i].vfioPci;
            if (d.form == VfioPciConfig::HostForm::Cdev) continue;  // the simulated host numbers its cdevs as it opens them
            bool found = std::any_of(config.vfioHost.devices.begin(), config.vfioHost.devices.end(),
                                     [&](const SimulatedDeviceConfig& sd) { return sd.bdf == d.bdf; });
            if (!found)
                return error("/devices/" + std::to_string(i) + "/host",
                             fmt::format("{} is not a device of the simulated host ({})", d.bdf,
                                         known.empty() ? "it has none: add it to \"vfio_host\".\"devices\"" : "it has " + known));
        }
    }
    return success();
}

Result<void> Validator::memory(const Json& v, const std::string& ptr, MemoryConfig& out) const {
    TRY(object(v, ptr));
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "size_mib") {
            // Whole MiB, so always a multiple of 4 KiB (and of 2 MiB hugepages only if even: the
            // memory room reports that when hugetlbfs is asked for).
            out.sizeBytes = TRY(integer(value, p, kMinMemoryMib, kMaxMemoryMib, " (2 MiB to 1 TiB)")) << 20;
        } else if (key == "hugepages") {
            out.hugePages = TRY(choice<memory::HugePages>(value, p,
                                                          {{"none", memory::HugePages::None},
                                                           {"transparent", memory::HugePages::Transparent},
                                                           {"hugetlbfs", memory::HugePages::Hugetlbfs}}));
        } else if (key == "prefault") {
            out.prefault = TRY(boolean(value, p));
        } else {
            return unknownKey(p, key, {"size_mib", "hugepages", "prefault"});
        }
    }
    return success();
}

Result<KernelConfig> Validator::kernel(const Json& v, const std::string& ptr) const {
    TRY(object(v, ptr));
    KernelConfig out;
    bool havePath = false;
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "path") {
            out.path = TRY(inputFile(value, p));
            havePath = true;
        } else if (key == "cmdline") {
            out.cmdline = TRY(string(value, p));
        } else if (key == "initrd") {
            out.initrd = TRY(inputFile(value, p));
        } else if (key == "unpack") {
            out.unpack = TRY(choice<KernelUnpack>(value, p, {{"guest", KernelUnpack::Guest}, {"host", KernelUnpack::Host}}));
        } else {
            return unknownKey(p, key, {"path", "cmdline", "initrd", "unpack"});
        }
    }
    if (!havePath) return error(ptr, "missing \"path\"");
    return out;
}

Result<PayloadConfig> Validator::payload(const Json& v, const std::string& ptr) const {
    TRY(object(v, ptr));
    PayloadConfig out;
    bool havePath = false;
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "path") {
            out.path = TRY(inputFile(value, p));
            havePath = true;
        } else if (key == "load_address") {
            out.loadAddress = TRY(address(value, p));
        } else if (key == "entry") {
            out.entry = TRY(address(value, p));
        } else if (key == "mode") {
            out.mode = TRY(choice<PayloadMode>(value, p, {{"long64", PayloadMode::Long64}, {"real16", PayloadMode::Real16}}));
        } else if (key == "ap_start") {
            out.apStart = TRY(choice<PayloadApStart>(value, p, {{"entry", PayloadApStart::Entry}, {"sipi", PayloadApStart::Sipi}}));
        } else {
            return unknownKey(p, key, {"path", "load_address", "entry", "mode", "ap_start"});
        }
    }
    if (!havePath) return error(ptr, "missing \"path\"");
    // real16 APs always wait for INIT/SIPI (there is no 16-bit "entry" for them): refuse the contradiction.
    if (out.mode == PayloadMode::Real16 && v.contains("ap_start") && out.apStart == PayloadApStart::Entry)
        return error(child(ptr, "ap_start"), "\"entry\" needs \"mode\": \"long64\" (real16 APs always wait for INIT/SIPI)");
    return out;
}

Result<void> Validator::serial(const Json& v, const std::string& ptr, SerialConfig& out) const {
    TRY(object(v, ptr));
    const Json* path = nullptr;
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "output") {
            out.output = TRY(choice<SerialOutput>(
                value, p, {{"stdout", SerialOutput::Stdout}, {"file", SerialOutput::File}, {"none", SerialOutput::None}}));
        } else if (key == "path") {
            TRY(string(value, p));
            path = &value;
        } else if (key == "input") {
            out.input = TRY(choice<SerialInput>(value, p, {{"stdin", SerialInput::Stdin}, {"none", SerialInput::None}}));
        } else {
            return unknownKey(p, key, {"output", "path", "input"});
        }
    }
    if (out.output == SerialOutput::File) {
        if (!path) return error(ptr, "missing \"path\" (required when \"output\" is \"file\")");
        out.path = TRY(outputFile(*path, child(ptr, "path")));
    } else if (path) {
        return error(child(ptr, "path"), "only used when \"output\" is \"file\"", true);
    }
    return success();
}

Result<void> Validator::exitDevice(const Json& v, const std::string& ptr, ExitDeviceConfig& out) const {
    TRY(object(v, ptr));
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "enabled")
            out.enabled = TRY(boolean(value, p));
        else
            return unknownKey(p, key, {"enabled"});
    }
    return success();
}

Result<void> Validator::devices(const Json& v, const std::string& ptr, std::vector<DeviceConfig>& out) const {
    if (!v.is_array()) return error(ptr, "expected an array, got " + describeValue(v));
    std::map<uint8_t, std::string> slots;
    for (size_t i = 0; i < v.size(); ++i) {
        const std::string p = ptr + "/" + std::to_string(i);
        const Json& entry = v[i];
        TRY(object(entry, p));
        if (!entry.contains("type")) return error(p, "missing \"type\"");
        const std::string type = TRY(string(entry["type"], p + "/type"));
        if (type != "vfio-pci")
            return error(p + "/type", fmt::format("unknown device type {} (expected \"vfio-pci\")", jsonQuote(type)));
        DeviceConfig d;
        d.type = type;
        d.vfioPci = TRY(vfioPci(entry, p));
        if (d.vfioPci->slot) {
            if (auto it = slots.find(*d.vfioPci->slot); it != slots.end())
                return error(p + "/slot", fmt::format("slot {} is already used by {}", *d.vfioPci->slot, it->second));
            slots[*d.vfioPci->slot] = p;
        }
        for (auto& other : out) {
            const auto& o = *other.vfioPci;
            if (o.host == d.vfioPci->host || (!o.bdf.empty() && o.bdf == d.vfioPci->bdf))
                return error(p + "/host", fmt::format("device {} is assigned twice", jsonQuote(d.vfioPci->host)));
        }
        out.push_back(std::move(d));
    }
    return success();
}

Result<VfioPciConfig> Validator::vfioPci(const Json& v, const std::string& ptr) const {
    VfioPciConfig out;
    bool haveHost = false;
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "type") continue;
        if (key == "host") {
            out.host = TRY(string(value, p, false));
            haveHost = true;
            static const std::regex cdev("/dev/vfio/devices/vfio([0-9]{1,6})");
            std::smatch m;
            if (std::regex_match(out.host, m, cdev)) {
                out.form = VfioPciConfig::HostForm::Cdev;
                out.cdevIndex = static_cast<unsigned>(std::stoul(m[1]));
            } else if (out.host.rfind("/sys/", 0) == 0) {
                out.form = VfioPciConfig::HostForm::SysfsPath;
                auto bdf = sysfsDeviceBdf(out.host);
                if (!bdf)
                    return error(p, fmt::format("{} is not a PCI device's sysfs directory (expected /sys/bus/pci/devices/DDDD:BB:DD.F "
                                                "or /sys/devices/pciDDDD:BB/.../DDDD:BB:DD.F)",
                                                jsonQuote(out.host)));
                out.bdf = *bdf;
            } else {
                auto bdf = vfio::normalizeBdf(out.host);
                if (!bdf)
                    return error(p, fmt::format("{} is neither a PCI address (\"0000:01:00.0\"), a sysfs device path nor "
                                                "/dev/vfio/devices/vfioN",
                                                jsonQuote(out.host)));
                out.bdf = *bdf;
            }
        } else if (key == "backend") {
            out.backend = TRY(choice<vfio::BackendKind>(
                value, p, {{"auto", vfio::BackendKind::Auto}, {"type1", vfio::BackendKind::Type1}, {"iommufd", vfio::BackendKind::Iommufd}}));
        } else if (key == "slot") {
            out.slot = static_cast<uint8_t>(TRY(integer(value, p, 1, 31)));
        } else if (key == "p2p") {
            out.p2p = TRY(boolean(value, p));
        } else if (key == "viommu") {
            out.viommuRequested = TRY(boolean(value, p));  // resolved against the top-level "viommu" in crossCheck()
        } else {
            return unknownKey(p, key, {"type", "host", "backend", "slot", "p2p", "viommu"});
        }
    }
    if (!haveHost) return error(ptr, "missing \"host\"");
    if (out.form == VfioPciConfig::HostForm::Cdev && out.backend == vfio::BackendKind::Type1)
        return error(child(ptr, "backend"), "a /dev/vfio/devices/vfioN cdev needs the iommufd backend (give a BDF for type1)");
    return out;
}

Result<ViommuConfig> Validator::viommu(const Json& v, const std::string& ptr) const {
    TRY(object(v, ptr));
    ViommuConfig out;
    if (!v.contains("type")) return error(ptr, "missing \"type\" (\"smmuv3\")");
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "type") {
            out.type = TRY(choice<ViommuConfig::Type>(value, p, {{"smmuv3", ViommuConfig::Type::SmmuV3}}));
        } else {
            return unknownKey(p, key, {"type"});
        }
    }
    return out;
}

Result<void> Validator::vfioHost(const Json& v, const std::string& ptr, VfioHostConfig& out) const {
    TRY(object(v, ptr));
    if (!v.contains("kind")) return error(ptr, "missing \"kind\" (\"real\" or \"simulated\")");
    out.kind = TRY(choice<VfioHostConfig::Kind>(v["kind"], child(ptr, "kind"),
                                                {{"real", VfioHostConfig::Kind::Real}, {"simulated", VfioHostConfig::Kind::Simulated}}));
    const bool sim = out.kind == VfioHostConfig::Kind::Simulated;
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "kind") continue;
        if (!sim && (key == "devices" || key == "iommufd" || key == "type1" || key == "iommu" || key == "smmu_ssid_bits"))
            return error(p, "only used with \"kind\": \"simulated\"", true);
        if (key == "iommufd") {
            out.iommufd = TRY(boolean(value, p));
        } else if (key == "type1") {
            out.type1 = TRY(boolean(value, p));
        } else if (key == "iommu") {
            out.iommu = TRY(choice<VfioHostConfig::SimIommu>(
                value, p, {{"intel-vtd", VfioHostConfig::SimIommu::IntelVtd}, {"smmuv3", VfioHostConfig::SimIommu::SmmuV3}}));
        } else if (key == "smmu_ssid_bits") {
            out.smmuSsidBits = static_cast<unsigned>(TRY(integer(value, p, 0, 20)));
        } else if (key == "devices") {
            if (!value.is_array()) return error(p, "expected an array, got " + describeValue(value));
            for (size_t i = 0; i < value.size(); ++i) {
                auto d = TRY(simDevice(value[i], p + "/" + std::to_string(i), i));
                for (auto& o : out.devices) {
                    if (o.bdf == d.bdf)
                        return error(p + "/" + std::to_string(i) + "/bdf", fmt::format("{} is simulated twice", jsonQuote(d.bdf)));
                }
                out.devices.push_back(std::move(d));
            }
        } else {
            return unknownKey(p, key, {"kind", "devices", "iommufd", "type1", "iommu", "smmu_ssid_bits"});
        }
    }
    if (out.smmuSsidBits && out.iommu != VfioHostConfig::SimIommu::SmmuV3)
        return error(child(ptr, "smmu_ssid_bits"), "only used with \"iommu\": \"smmuv3\"", true);
    return success();
}

Result<SimulatedDeviceConfig> Validator::simDevice(const Json& v, const std::string& ptr, size_t index) const {
    TRY(object(v, ptr));
    SimulatedDeviceConfig out;
    out.group = static_cast<unsigned>(10 + index);
    bool haveBdf = false;
    for (const auto& [key, value] : v.items()) {
        const std::string p = child(ptr, key);
        if (key == "bdf") {
            auto bdf = vfio::normalizeBdf(TRY(string(value, p, false)));
            if (!bdf) return error(p, fmt::format("{} is not a PCI address like \"0000:01:00.0\"", value.dump()));
            out.bdf = *bdf;
            haveBdf = true;
        } else if (key == "group") {
            out.group = static_cast<unsigned>(TRY(integer(value, p, 0, 65535)));
        } else if (key == "model") {
            out.model = TRY(choice<std::string>(value, p, {{"edu", std::string("edu")}}));
        } else if (key == "msi_vectors") {
            out.msiVectors = static_cast<unsigned>(TRY(integer(value, p, 1, 32)));
            if (out.msiVectors & (out.msiVectors - 1)) return error(p, fmt::format("must be a power of two, got {}", out.msiVectors));
        } else if (key == "msix_vectors") {
            out.msixVectors = static_cast<unsigned>(TRY(integer(value, p, 0, 256)));
        } else if (key == "msix_mappable") {
            out.msixMappable = TRY(boolean(value, p));
        } else if (key == "sparse_mmap") {
            out.sparseMmap = TRY(boolean(value, p));
        } else if (key == "memory_bar_size") {
            out.memoryBarSize = TRY(address(value, p));
            if (out.memoryBarSize < 0x4000 || (out.memoryBarSize & (out.memoryBarSize - 1)) || out.memoryBarSize > (1ull << 30))
                return error(p, fmt::format("must be a power of two between 16 KiB and 1 GiB, got {:#x}", out.memoryBarSize));
        } else if (key == "reset") {
            out.reset = TRY(boolean(value, p));
        } else if (key == "pasid_width") {
            out.pasidWidth = static_cast<unsigned>(TRY(integer(value, p, 0, 20)));
        } else if (key == "pasid_exec") {
            out.pasidExec = TRY(boolean(value, p));
        } else if (key == "pasid_priv") {
            out.pasidPriv = TRY(boolean(value, p));
        } else {
            return unknownKey(p, key, {"bdf", "group", "model", "msi_vectors", "msix_vectors", "msix_mappable", "sparse_mmap",
                                       "memory_bar_size", "reset", "pasid_width", "pasid_exec", "pasid_priv"});
        }
    }
    if (!haveBdf) return error(ptr, "missing \"bdf\"");
    return out;
}

// Sets `pointer` in `doc`, creating objects on the way and recording which flag created what.
Result<void> applyOverride(Json& doc, const ConfigOverride& o, Validator& v) {
    for (const auto& rm : o.removes) {
        Json::json_pointer jp(rm);
        if (doc.contains(jp)) doc[jp.parent_pointer()].erase(jp.back());
    }
    if (!o.needs.empty() && !(doc.is_object() && doc.contains(Json::json_pointer(o.needs)))) return Error(o.flag + ": " + o.needsMessage);
    if (o.pointer.empty()) return success();
    Json value;
    if (o.integer) {
        const std::string& s = o.value;
        uint64_t u = 0;
        int64_t i = 0;
        const char* end = s.data() + s.size();
        if (!s.empty() && std::from_chars(s.data(), end, u).ptr == end && std::from_chars(s.data(), end, u).ec == std::errc())
            value = u;
        else if (!s.empty() && std::from_chars(s.data(), end, i).ptr == end && std::from_chars(s.data(), end, i).ec == std::errc())
            value = i;
        else
            value = s;
    } else {
        value = o.value;
    }
    // Walk the pointer, creating missing objects.
    Json* node = &doc;
    std::string so_far;
    std::string rest = o.pointer;
    while (!rest.empty()) {
        size_t next = rest.find('/', 1);
        std::string token = rest.substr(1, next == std::string::npos ? std::string::npos : next - 1);
        rest = next == std::string::npos ? std::string() : rest.substr(next);
        if (!node->is_object()) return v.error(so_far, "expected an object, got " + describeValue(*node));
        so_far += "/" + token;
        if (!node->contains(token)) {
            (*node)[token] = rest.empty() ? value : Json::object();
            v.origins()[so_far] = o.flag;
        }
        node = &(*node)[token];
    }
    *node = value;
    v.origins()[o.pointer] = o.flag;
    return success();
}

// nlohmann reports where its lexer stopped, which is one character past a number or literal and
// counts lines after the lookahead: locate the error ourselves from the byte offset, stepping back
// over whitespace to the last character actually read. The message keeps nlohmann's wording
// without its "[json.exception...] parse error at ...: syntax error " prefix.
std::string describeSyntaxError(const std::string& file, const std::string& text, const nlohmann::json::parse_error& e) {
    size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    if (offset >= text.size()) offset = text.empty() ? 0 : text.size() - 1;
    while (offset > 0 && (text[offset] == ' ' || text[offset] == '\t' || text[offset] == '\n' || text[offset] == '\r'))
        --offset;
    unsigned line = 1;
    size_t lineStart = 0;
    for (size_t i = 0; i < offset && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            lineStart = i + 1;
        }
    }
    const unsigned column = static_cast<unsigned>(offset - lineStart + 1);
    std::string msg = e.what();
    const std::string marker = "syntax error ";
    if (auto pos = msg.find(marker); pos != std::string::npos) {
        msg = msg.substr(pos + marker.size());
    } else if (auto colon = msg.find(": "); colon != std::string::npos) {
        msg = msg.substr(colon + 2);
    }
    return fmt::format("{}:{}:{}: syntax error: {}", file, line, column, msg);
}

// nlohmann throws out_of_range (406) for a number beyond double range, with no position: find the
// first such number token outside strings ourselves, so the message still says where it is.
std::string describeNumberOverflow(const std::string& file, const std::string& text) {
    unsigned line = 1, column = 1;
    bool inString = false;
    for (size_t i = 0; i < text.size(); ++i, ++column) {
        const char c = text[i];
        if (inString) {
            if (c == '\\') ++i, ++column;
            else if (c == '"') inString = false;
        } else if (c == '"') {
            inString = true;
        } else if (c == '\n') {
            ++line;
            column = 0;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t end = text.find_first_not_of("+-0123456789.eE", i);
            const std::string token = text.substr(i, end == std::string::npos ? std::string::npos : end - i);
            if (std::isinf(std::strtod(token.c_str(), nullptr)))
                return fmt::format("{}:{}:{}: number {} is out of range", file, line, column, token);
            column += static_cast<unsigned>(token.size()) - 1;
            i += token.size() - 1;
        }
    }
    return fmt::format("{}: a number is out of range", file);
}

}  // namespace

Result<VmConfig> parseConfig(const std::string& rawText, const fs::path& file, const std::vector<ConfigOverride>& overrides) {
    const std::string label = printable(file.empty() ? std::string("(config)") : file.string());
    // JSON is UTF-8 (RFC 8259 section 8.1); a UTF-8 byte order mark may be ignored, and is, so
    // positions count from the first character after it. UTF-16 and UTF-32 are told apart by their
    // mark or their NUL bytes and refused by name rather than as a syntax error at a raw byte.
    std::string_view view(rawText);
    if (view.substr(0, 3) == "\xEF\xBB\xBF") view.remove_prefix(3);
    const bool utf16Mark = view.substr(0, 2) == "\xFF\xFE" || view.substr(0, 2) == "\xFE\xFF";
    if (utf16Mark || (view.size() >= 2 && (view[0] == '\0' || view[1] == '\0')))
        return Error(fmt::format("{}: the config is UTF-16 or UTF-32 text; JSON configs are UTF-8 (iconv -f UTF-16 -t UTF-8 converts it)", label));
    const std::string text(view);
    if (auto deep = JsonPositionIndex::firstNestingBeyond(text, kMaxNesting))
        return Error(fmt::format("{}:{}:{}: nested deeper than {} levels", label, deep->line, deep->column, kMaxNesting));
    Json doc;
    try {
        doc = Json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
        return Error(printable(describeSyntaxError(label, text, e)));  // nlohmann shows DEL (0x7f) raw
    } catch (const nlohmann::json::out_of_range&) {
        return Error(describeNumberOverflow(label, text));
    }
    auto positions = JsonPositionIndex::build(text);
    if (!positions) return Error(label + ": cannot locate values in the JSON text");  // not expected
    const fs::path baseDir = file.empty() ? fs::current_path() : fs::absolute(file).parent_path();
    Validator validator(label, baseDir, *positions);
    if (const auto& dup = positions->firstDuplicate()) {
        return validator.error(*dup, "duplicate key", true);
    }
    for (const auto& o : overrides) TRY(applyOverride(doc, o, validator));
    // Validation errors carry errno 0: their text already says everything (including strerror
    // for files), so Error::describe() prints them unchanged.
    auto config = validator.validate(doc, file);
    return config;
}

Result<VmConfig> parseConfig(const std::string& text, const fs::path& file) { return parseConfig(text, file, {}); }

Result<VmConfig> loadConfig(const fs::path& file, const std::vector<ConfigOverride>& overrides) {
    const std::string label = printable(file.string());
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return Error::fromErrno(fmt::format("{}: cannot open config file", label));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::fromErrno(fmt::format("{}: cannot open config file", label));
    if (!S_ISREG(st.st_mode)) {
        const char* kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) ? "a character device"
                         : S_ISSOCK(st.st_mode) ? "a socket" : S_ISBLK(st.st_mode) ? "a block device" : "not a regular file";
        return Error(fmt::format("{}: the config is {}; give a regular file", label, kind));
    }
    if (st.st_size > static_cast<off_t>(kMaxConfigBytes))
        return Error(fmt::format("{}: config file larger than {} bytes", label, kMaxConfigBytes), EFBIG);
    std::string text;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::fromErrno(fmt::format("{}: reading config file", label));
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxConfigBytes)
            return Error(fmt::format("{}: config file larger than {} bytes", label, kMaxConfigBytes), EFBIG);
    }
    return parseConfig(text, file, overrides);
}

Result<VmConfig> loadConfig(const fs::path& file) { return loadConfig(file, {}); }

std::string describeConfig(const VmConfig& c) {
    std::string s = fmt::format("{} vCPU{}, {} MiB RAM", c.vcpus, c.vcpus == 1 ? "" : "s", c.memory.sizeBytes >> 20);
    if (c.memory.hugePages == memory::HugePages::Transparent) s += " (transparent hugepages)";
    if (c.memory.hugePages == memory::HugePages::Hugetlbfs) s += " (hugetlbfs)";
    if (c.kernel) {
        s += fmt::format(", kernel {}", c.kernel->path.string());
        if (c.kernel->initrd) s += fmt::format(" + initrd {}", c.kernel->initrd->string());
        s += fmt::format(" cmdline {}", jsonQuote(c.kernel->cmdline));
    }
    if (c.payload) {
        s += fmt::format(", payload {} ({} at {:#x}, entry {:#x})", c.payload->path.string(),
                         c.payload->mode == PayloadMode::Long64 ? "long64" : "real16", c.payload->loadAddress,
                         c.payload->entry.value_or(c.payload->loadAddress));
        if (c.payload->apStart == PayloadApStart::Sipi) s += ", APs started by the guest (INIT/SIPI)";
    }
    switch (c.serial.output) {
    case SerialOutput::Stdout: s += ", serial to stdout"; break;
    case SerialOutput::File: s += ", serial to " + c.serial.path.string(); break;
    case SerialOutput::None: s += ", serial output discarded"; break;
    }
    if (c.serial.input == SerialInput::Stdin) s += ", serial input from stdin";
    s += c.exitDevice.enabled ? ", exit device" : ", no exit device";  // where it is, is the platform's
    if (c.onReboot == RebootAction::Error) s += ", a guest reboot is an error";
    for (const auto& d : c.devices) {
        if (d.vfioPci)
            s += fmt::format(", vfio-pci {} ({}{}{})", d.vfioPci->host, vfio::backendKindName(d.vfioPci->backend),
                             d.vfioPci->slot ? fmt::format(", slot {}", *d.vfioPci->slot) : "",
                             d.vfioPci->viommu ? ", behind the virtual IOMMU" : "");
    }
    if (c.viommu) s += ", virtual IOMMU smmuv3 (iommufd nesting)";
    if (c.vfioHost.kind == VfioHostConfig::Kind::Simulated)
        s += fmt::format(", simulated VFIO host with {} device(s)", c.vfioHost.devices.size());
    return printable(s);  // paths and host strings come from outside
}

}  // namespace conduit::vmm
