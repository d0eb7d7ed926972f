// The VM configuration: what a JSON config file (docs/config.md, configs/schema.json) becomes
// after validation. Everything here has been checked: paths exist and are readable, numbers are in
// range, exactly one of kernel/payload is set.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"
#include "vfio/backend.h"

namespace conduit::vmm {

struct MemoryConfig {
    uint64_t sizeBytes = 256ull << 20;                    // JSON: memory.size_mib
    memory::HugePages hugePages = memory::HugePages::None;  // JSON: memory.hugepages "none"|"transparent"|"hugetlbfs"
    bool prefault = false;                                // JSON: memory.prefault
};

// Who decompresses a bzImage's kernel (JSON: kernel.unpack). "guest" is the standard boot
// protocol: the bzImage's own decompressor runs in the guest. "host": Conduit decompresses it and
// enters the kernel proper directly (vmm/arch/x86_64/kernel_unpack.h says why and what differs).
enum class KernelUnpack { Guest, Host };

struct KernelConfig {  // boot a Linux kernel (bzImage or ELF vmlinux, detected from the file)
    std::filesystem::path path;
    std::string cmdline = "console=ttyS0";
    std::optional<std::filesystem::path> initrd;
    KernelUnpack unpack = KernelUnpack::Guest;  // bzImage only
};

enum class PayloadMode { Long64, Real16 };
// How the APs of a 64-bit payload start: all at `entry` in long mode (Entry), or left in the reset
// state (wait-for-SIPI) for the payload's BSP to start with INIT/SIPI (Sipi). real16 always waits.
enum class PayloadApStart { Entry, Sipi };

struct PayloadConfig {  // boot a flat binary (docs/payloads.md)
    std::filesystem::path path;
    uint64_t loadAddress = 0x100000;
    std::optional<uint64_t> entry;  // default: loadAddress
    PayloadMode mode = PayloadMode::Long64;
    PayloadApStart apStart = PayloadApStart::Entry;  // "ap_start"
};

enum class SerialOutput { Stdout, File, None };
enum class SerialInput { Stdin, None };

struct SerialConfig {
    SerialOutput output = SerialOutput::Stdout;
    std::filesystem::path path;  // when output == File
    SerialInput input = SerialInput::None;
};

struct ExitDeviceConfig {
    bool enabled = true;  // where it sits is the platform's payload ABI (vmm/arch/<arch>/)
};

// A "vfio-pci" device: a host PCI function assigned to the guest (docs/config.md).
struct VfioPciConfig {
    enum class HostForm { Bdf, SysfsPath, Cdev };
    std::string host;          // as written in the config
    HostForm form = HostForm::Bdf;
    std::string bdf;           // canonical "0000:01:00.0" (Bdf and SysfsPath forms)
    unsigned cdevIndex = 0;    // N of /dev/vfio/devices/vfioN (Cdev form)
    vfio::BackendKind backend = vfio::BackendKind::Auto;
    std::optional<uint8_t> slot;  // guest device number on bus 0 (1..31); default: lowest free
    bool p2p = true;              // DMA-map the device's mmapped BAR areas at their guest address
    // JSON "viommu": behind the VM's virtual IOMMU (the top-level "viommu"); as written, and as
    // resolved by the loader (not written: true when the VM has one).
    std::optional<bool> viommuRequested;
    bool viommu = false;
};

// One entry of the "devices" array.
struct DeviceConfig {
    std::string type;                     // "vfio-pci"
    std::optional<VfioPciConfig> vfioPci;
};

// A device of the simulated host (tests/hostsim: QEMU's edu plus MSI-X and a memory BAR).
struct SimulatedDeviceConfig {
    std::string bdf;             // canonical
    unsigned group = 0;          // IOMMU group; default 10 + index
    std::string model = "edu";
    unsigned msiVectors = 1;     // 1, 2, 4, 8, 16, 32
    unsigned msixVectors = 8;    // 0 (no MSI-X) .. 256
    bool msixMappable = true;    // report VFIO_REGION_INFO_CAP_MSIX_MAPPABLE
    bool sparseMmap = false;     // report sparse mmap areas around the MSI-X table/PBA instead
    uint64_t memoryBarSize = 1 << 20;  // BAR2 (64-bit, prefetchable, mmappable): power of two >= 16 KiB
    bool reset = true;           // VFIO_DEVICE_FLAGS_RESET
    // A PCIe PASID extended capability with this Max PASID Width (0: none), Exec and Privileged
    // Mode supported or not: what IOMMU_GET_HW_INFO's max_pasid_log2 and PASID_EXEC/PRIV derive
    // from on an SMMUv3 host with substreams (VfioHostConfig::smmuSsidBits).
    unsigned pasidWidth = 0;
    bool pasidExec = false, pasidPriv = false;
};

// Which host kernel VFIO devices come from: the real one, or the simulated host (a test/demo host
// that runs anywhere /dev/kvm does; its devices' BARs are memfds and its IOMMU is a model).
struct VfioHostConfig {
    enum class Kind { Real, Simulated };
    Kind kind = Kind::Real;
    bool iommufd = true;  // simulated: /dev/iommu and VFIO cdevs exist
    bool type1 = true;    // simulated: the container offers VFIO_TYPE1v2_IOMMU
    // simulated: the IOMMU IOMMU_GET_HW_INFO reports ("iommu": "intel-vtd" or "smmuv3"; the
    // SMMUv3 is QEMU's stage=nested one, with nesting, for the virtual SMMUv3)
    enum class SimIommu { IntelVtd, SmmuV3 };
    SimIommu iommu = SimIommu::IntelVtd;
    // simulated SMMUv3: IDR1.SSIDSIZE (0: QEMU's, no substreams; > 0 also IDR0.CD2L), so the
    // guest's CD tables with S1CDMax > 0 and PASID DMA can be exercised ("smmu_ssid_bits")
    unsigned smmuSsidBits = 0;
    std::vector<SimulatedDeviceConfig> devices;
};

// What `conduit run` does when the guest resets itself (ACPI reset register, keyboard controller,
// triple fault). JSON "on_reboot": "exit" (default: end the run with 0 and log the reason) or
// "error" (end it as a VMM error, 125, naming the reason: for runs where a reboot means something
// went wrong). Restarting the guest is not offered yet.
enum class RebootAction { Exit, Error };

// JSON "viommu": a virtual IOMMU in front of the assigned devices, bound to the host's IOMMU
// through iommufd nesting (docs/vsmmu.md). The guest runs its own IOMMU driver.
struct ViommuConfig {
    enum class Type { SmmuV3 };  // "smmuv3": an Arm SMMUv3 (arm64 guests, docs/vsmmu.md)
    Type type = Type::SmmuV3;
};

struct VmConfig {
    std::filesystem::path sourceFile;  // the JSON file this came from, for messages
    unsigned vcpus = 1;
    MemoryConfig memory;
    std::optional<KernelConfig> kernel;
    std::optional<PayloadConfig> payload;
    SerialConfig serial;
    ExitDeviceConfig exitDevice;
    std::vector<DeviceConfig> devices;
    VfioHostConfig vfioHost;  // JSON: "vfio_host"
    RebootAction onReboot = RebootAction::Exit;  // JSON: "on_reboot"
    std::optional<ViommuConfig> viommu;          // JSON: "viommu"
};

constexpr unsigned kMaxVcpus = 32;

// A command-line override, applied to the JSON document before validation so it gets the same
// checks as the file; errors caused by it name the flag instead of a file position.
struct ConfigOverride {
    std::string flag;     // "--vcpus", for messages
    std::string pointer;  // JSON pointer of the value to set, "/memory/size_mib"
    std::string value;    // the flag's argument; paths should already be absolute (they came from the cwd)
    // true: the flag takes a number, and a decimal integer argument becomes a JSON number (anything
    // else stays a string and is refused by the type check with the flag named).
    bool integer = false;
    // JSON pointers removed before the value is set ("--kernel" removes "/payload"). A flag that
    // only removes ("--no-initrd") has an empty `pointer`.
    std::vector<std::string> removes;
    // A JSON pointer that must exist for the flag to make sense ("--cmdline" needs "/kernel"), and
    // the refusal when it does not.
    std::string needs;
    std::string needsMessage;
};

// Reads, parses and validates a config file. Errors read "FILE:LINE:COL: /json/path: message".
Result<VmConfig> loadConfig(const std::filesystem::path& file);
Result<VmConfig> loadConfig(const std::filesystem::path& file, const std::vector<ConfigOverride>& overrides);
// Same, from text already in memory (`file` is used for messages and to resolve relative paths).
Result<VmConfig> parseConfig(const std::string& text, const std::filesystem::path& file);
Result<VmConfig> parseConfig(const std::string& text, const std::filesystem::path& file,
                             const std::vector<ConfigOverride>& overrides);

// Which of the config's input files (kernel, initrd, payload, the config itself) `path` is, as
// "the kernel (/abs/vmlinuz)", or nothing: an output there would destroy it.
std::optional<std::string> inputFileNamed(const VmConfig& config, const std::filesystem::path& path);

// An output file named on the command line (`--stats`), checked before anything runs: its
// directory exists and is writable, and it is none of the config's inputs nor its serial output.
// Errors start with `flag`. Returns the absolute path.
Result<std::filesystem::path> checkOutputFile(const VmConfig& config, const std::string& path, const std::string& flag);

// One line for humans: "2 vCPUs, 512 MiB RAM, payload /abs/hello.bin (long64 at 0x100000), ...".
std::string describeConfig(const VmConfig& config);

}  // namespace conduit::vmm
