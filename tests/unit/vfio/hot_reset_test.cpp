// PCI hot reset: the simulated kernel's VFIO_DEVICE_GET_PCI_HOT_RESET_INFO / VFIO_DEVICE_PCI_HOT_RESET
// in both forms (group fds for type1, zero-length array + iommufd device ids for cdevs) against the
// rules of vfio_pci_core.c, then Conduit's planning on top (vfio/hot_reset.h). And the order in
// which the backends tell KVM about a group or cdev: before the device is opened or bound.
//
// The rig: a GPU (01:00.0) and its audio function (01:00.1) behind a bridge, neither with a function
// reset, as on many GPU + audio pairs; each in its own IOMMU group unless a test says otherwise.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "tests/hostsim/host_call_observer.h"
#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"
#include "vfio/iommufd.h"

using namespace conduit;
using namespace conduit::vfio;
using namespace conduit::hostsim;

namespace {

constexpr const char* kGpu = "0000:01:00.0";
constexpr const char* kAudio = "0000:01:00.1";

struct Rig {
    explicit Rig(bool sameGroup = false, bool audioReset = false) {
        SimDeviceConfig gpu;
        gpu.bdf = kGpu;
        gpu.group = 10;
        gpu.resetSupported = false;
        host.addDevice(gpu);
        SimDeviceConfig audio;
        audio.bdf = kAudio;
        audio.group = sameGroup ? 10 : 11;
        audio.resetSupported = audioReset;
        audio.msixVectors = 0;
        host.addDevice(audio);
    }
    std::unique_ptr<VfioBackend> backend(BackendKind kind) {
        auto b = openBackend(host, kind, host.paths());
        EXPECT_TRUE(b.ok()) << b.error().describe();
        return b.ok() ? std::move(b).value() : nullptr;
    }
    unsigned resets(const char* bdf) { return host.device(bdf)->resetCount(); }
    SimHost host;
};

std::unique_ptr<VfioDevice> open(VfioBackend& b, const char* bdf) {
    auto d = b.openDevice(bdf);
    EXPECT_TRUE(d.ok()) << d.error().describe();
    return d.ok() ? std::move(d).value() : nullptr;
}

// Raw VFIO_DEVICE_PCI_HOT_RESET with `fds` (the ioctl as the kernel receives it).
Result<int> rawHotReset(SimHost& host, int deviceFd, std::vector<int32_t> fds, uint32_t flags = 0,
                        std::optional<uint32_t> argsz = std::nullopt, std::optional<uint32_t> count = std::nullopt) {
    std::vector<uint8_t> buf(sizeof(vfio_pci_hot_reset) + fds.size() * 4);
    auto* r = reinterpret_cast<vfio_pci_hot_reset*>(buf.data());
    r->argsz = argsz ? *argsz : static_cast<uint32_t>(buf.size());
    r->flags = flags;
    r->count = count ? *count : static_cast<uint32_t>(fds.size());
    if (!fds.empty()) std::memcpy(buf.data() + sizeof *r, fds.data(), fds.size() * 4);
    return host.ioctl(deviceFd, VFIO_DEVICE_PCI_HOT_RESET, reinterpret_cast<uintptr_t>(r));
}

struct RawHeader {  // vfio_pci_hot_reset_info without its flexible array
    uint32_t argsz, flags, count;
};
struct RawInfo {
    Result<int> result = 0;
    RawHeader hdr{};
    std::vector<vfio_pci_dependent_device> devices;
};
RawInfo rawInfo(SimHost& host, int deviceFd, uint32_t argsz) {
    std::vector<uint8_t> buf(std::max<size_t>(argsz, sizeof(vfio_pci_hot_reset_info)) + 64, 0xa5);
    auto* h = reinterpret_cast<vfio_pci_hot_reset_info*>(buf.data());
    h->argsz = argsz;
    h->flags = 0xdead;
    h->count = 0xbeef;
    RawInfo out;
    out.result = host.ioctl(deviceFd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, reinterpret_cast<uintptr_t>(h));
    std::memcpy(&out.hdr, h, sizeof out.hdr);
    for (uint32_t i = 0; out.result.ok() && i < out.hdr.count; ++i) {
        vfio_pci_dependent_device d;
        std::memcpy(&d, buf.data() + sizeof out.hdr + i * sizeof d, sizeof d);
        out.devices.push_back(d);
    }
    return out;
}

int groupFd(VfioBackend& b, unsigned group) { return *b.ownedGroupFd(group); }

// ------------------------------------------------------------------ the simulated kernel

class SimHotReset : public ::testing::TestWithParam<BackendKind> {};

// vfio_pci_ioctl_get_pci_hot_reset_info(): argsz below the header is EINVAL; room for fewer
// functions than the bus has is ENOSPC with the count in the header and flags 0.
TEST_P(SimHotReset, InfoTooSmallIsEnospcWithTheCountFilledIn) {
    Rig rig;
    auto b = rig.backend(GetParam());
    auto gpu = open(*b, kGpu);
    auto tiny = rawInfo(rig.host, gpu->fd(), sizeof(vfio_pci_hot_reset_info) - 1);
    ASSERT_FALSE(tiny.result.ok());
    EXPECT_EQ(tiny.result.error().code(), EINVAL);
    for (uint32_t room : {0u, 1u}) {
        auto r = rawInfo(rig.host, gpu->fd(), sizeof(vfio_pci_hot_reset_info) + room * sizeof(vfio_pci_dependent_device));
        ASSERT_FALSE(r.result.ok()) << "room for " << room;
        EXPECT_EQ(r.result.error().code(), ENOSPC);
        EXPECT_EQ(r.hdr.count, 2u) << "the count of affected functions comes back";
        EXPECT_EQ(r.hdr.flags, 0u) << "flags are cleared before the size check";
    }
    auto full = rawInfo(rig.host, gpu->fd(), sizeof(vfio_pci_hot_reset_info) + 2 * sizeof(vfio_pci_dependent_device));
    ASSERT_TRUE(full.result.ok()) << full.result.error().describe();
    ASSERT_EQ(full.devices.size(), 2u);
    EXPECT_EQ(full.devices[0].devfn, 0);
    EXPECT_EQ(full.devices[1].devfn, 1);
    EXPECT_EQ(full.devices[1].bus, 1);
    // Conduit's wrapper asks again with the count the kernel gave.
    auto info = gpu->hotResetInfo();
    ASSERT_TRUE(info.ok()) << info.error().describe();
    EXPECT_EQ(info->devices.size(), 2u);
    if (GetParam() == BackendKind::Type1) {
        EXPECT_EQ(info->flags, 0u);
        EXPECT_EQ(info->devices[1].groupId, 11u);
    } else {
        EXPECT_TRUE(info->devIdForm());
        EXPECT_FALSE(info->allOwned()) << "the audio function is bound to nothing";
        EXPECT_EQ(info->devices[1].devId, uint32_t(VFIO_PCI_DEVID_NOT_OWNED));
    }
}

// The root bus has no secondary bus reset: ENODEV for the info and the reset alike.
TEST_P(SimHotReset, RootBusHasNoHotReset) {
    SimHost host;
    host.addDevice({});  // 0000:00:03.0
    auto b = openBackend(host, GetParam(), host.paths());
    ASSERT_TRUE(b.ok());
    auto d = (*b)->openDevice("0000:00:03.0");
    ASSERT_TRUE(d.ok());
    auto info = rawInfo(host, (*d)->fd(), 64);
    ASSERT_FALSE(info.result.ok());
    EXPECT_EQ(info.result.error().code(), ENODEV);
    auto r = GetParam() == BackendKind::Type1 ? rawHotReset(host, (*d)->fd(), {groupFd(**b, 7)})
                                              : rawHotReset(host, (*d)->fd(), {});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ENODEV);
}

INSTANTIATE_TEST_SUITE_P(Backends, SimHotReset, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](const auto& info) { return std::string(backendKindName(info.param)); });

// Group form (vfio_pci_ioctl_pci_hot_reset_groups()): between 1 and the number of affected
// functions of group fds, each a VFIO group; every vfio function of the bus in one of them.
TEST(SimHotResetGroups, EveryAffectedGroupMustBeGiven) {
    Rig rig;
    auto b = rig.backend(BackendKind::Type1);
    auto gpu = open(*b, kGpu);
    const int g10 = groupFd(*b, 10);
    const unsigned gpuResets = rig.resets(kGpu), audioResets = rig.resets(kAudio);
    auto expectErrno = [&](Result<int> r, int err, const char* what) {
        ASSERT_FALSE(r.ok()) << what;
        EXPECT_EQ(r.error().code(), err) << what << ": " << r.error().describe();
    };
    expectErrno(rawHotReset(rig.host, gpu->fd(), {}), EINVAL, "zero-length array on a group-opened device");
    expectErrno(rawHotReset(rig.host, gpu->fd(), {g10}, 1), EINVAL, "flags");
    expectErrno(rawHotReset(rig.host, gpu->fd(), {g10}, 0, 8), EINVAL, "argsz below the header");
    expectErrno(rawHotReset(rig.host, gpu->fd(), {g10, g10, g10}), EINVAL, "more fds than affected functions");
    const int notOpen = ::open("/dev/null", O_RDONLY);
    ASSERT_GE(notOpen, 0);
    ::close(notOpen);
    expectErrno(rawHotReset(rig.host, gpu->fd(), {notOpen}), EBADF, "not an fd");
    expectErrno(rawHotReset(rig.host, gpu->fd(), {gpu->fd()}), EINVAL, "a device fd is not a group fd");
    expectErrno(rawHotReset(rig.host, gpu->fd(), {g10}), EINVAL, "the audio function's group 11 is missing");
    EXPECT_EQ(rig.resets(kGpu), gpuResets) << "a refused hot reset resets nothing";
    EXPECT_EQ(rig.resets(kAudio), audioResets);

    // Holding group 11 (the audio function stays closed): both groups given, both functions reset.
    auto audio = open(*b, kAudio);
    const int g11 = groupFd(*b, 11);
    auto r = rawHotReset(rig.host, gpu->fd(), {g10, g11});
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(rig.resets(kGpu), gpuResets + 1);
    EXPECT_EQ(rig.resets(kAudio), audioResets + 1);
}

// A function on the bus bound to another driver is outside the dev_set: no hot reset at all
// (vfio_pci_dev_set_resettable()), in either form.
TEST(SimHotResetGroups, AFunctionOfAnotherDriverOnTheBusBlocksIt) {
    Rig rig;
    rig.host.addGroupPeer("0000:01:00.2", 12, "snd_hda_intel");
    for (auto kind : {BackendKind::Type1, BackendKind::Iommufd}) {
        SCOPED_TRACE(backendKindName(kind));
        auto b = rig.backend(kind);
        auto gpu = open(*b, kGpu);
        auto audio = open(*b, kAudio);
        auto info = gpu->hotResetInfo();
        ASSERT_TRUE(info.ok()) << info.error().describe();
        ASSERT_EQ(info->devices.size(), 3u);
        EXPECT_EQ(info->devices[2].bdf(), "0000:01:00.2");
        std::vector<int32_t> fds;
        if (kind == BackendKind::Type1) {
            fds = {groupFd(*b, 10), groupFd(*b, 11)};
            EXPECT_EQ(info->devices[2].groupId, 12u);
        } else {
            EXPECT_EQ(info->devices[2].devId, uint32_t(VFIO_PCI_DEVID_NOT_OWNED));
            EXPECT_FALSE(info->allOwned());
        }
        auto r = rawHotReset(rig.host, gpu->fd(), fds);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code(), EINVAL);
    }
}

// Dev-id form: what each function is to the caller's iommufd, and the zero-length array.
TEST(SimHotResetCdev, InfoSaysWhoOwnsEachFunctionAndTheResetTakesNoFds) {
    {
        Rig rig;  // audio in its own group, not bound: not owned
        auto b = rig.backend(BackendKind::Iommufd);
        auto gpu = open(*b, kGpu);
        auto r = rawInfo(rig.host, gpu->fd(), 64);
        ASSERT_TRUE(r.result.ok());
        EXPECT_EQ(r.hdr.flags, uint32_t(VFIO_PCI_HOT_RESET_FLAG_DEV_ID)) << "DEV_ID_OWNED cleared";
        ASSERT_EQ(r.devices.size(), 2u);
        EXPECT_EQ(r.devices[0].group_id, *static_cast<IommufdBackend&>(*b).devId(kGpu)) << "the caller's own id";
        EXPECT_EQ(r.devices[1].group_id, uint32_t(VFIO_PCI_DEVID_NOT_OWNED));
        auto one = rawHotReset(rig.host, gpu->fd(), {gpu->fd()});
        ASSERT_FALSE(one.ok());
        EXPECT_EQ(one.error().code(), EINVAL) << "a cdev-opened device takes no fds";
        auto zero = rawHotReset(rig.host, gpu->fd(), {});
        ASSERT_FALSE(zero.ok());
        EXPECT_EQ(zero.error().code(), EINVAL) << "the audio function is not owned";
    }
    {
        Rig rig(/*sameGroup=*/true);  // audio shares the GPU's group: owned without being bound
        auto b = rig.backend(BackendKind::Iommufd);
        auto gpu = open(*b, kGpu);
        auto r = rawInfo(rig.host, gpu->fd(), 64);
        ASSERT_TRUE(r.result.ok());
        EXPECT_EQ(r.hdr.flags, uint32_t(VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED));
        EXPECT_EQ(r.devices[1].group_id, uint32_t(VFIO_PCI_DEVID_OWNED));
        const unsigned before = rig.resets(kAudio);
        auto zero = rawHotReset(rig.host, gpu->fd(), {});
        ASSERT_TRUE(zero.ok()) << zero.error().describe();
        EXPECT_EQ(rig.resets(kAudio), before + 1);
    }
    {
        Rig rig;  // both bound to the same iommufd
        auto b = rig.backend(BackendKind::Iommufd);
        auto gpu = open(*b, kGpu);
        auto audio = open(*b, kAudio);
        auto r = rawInfo(rig.host, gpu->fd(), 64);
        ASSERT_TRUE(r.result.ok());
        EXPECT_EQ(r.hdr.flags, uint32_t(VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED));
        EXPECT_EQ(r.devices[1].group_id, *static_cast<IommufdBackend&>(*b).devId(kAudio));
    }
}

// A reset the kernel does for a user restores the config state saved before it; only the
// device's own registers are back at their reset values.
TEST(SimHotResetState, HotResetRestoresConfigAndResetsRegisters) {
    Rig rig;
    auto b = rig.backend(BackendKind::Type1);
    auto gpu = open(*b, kGpu);
    auto audio = open(*b, kAudio);
    ASSERT_TRUE(gpu->writeConfigObj<uint16_t>(0x04, 0x0006).ok());
    ASSERT_TRUE(gpu->writeConfigObj<uint32_t>(0x10, 0xc0000000).ok());
    uint32_t five = 5, fact = 0;
    ASSERT_TRUE(gpu->writeRegion(0, 0x08, std::span(reinterpret_cast<const uint8_t*>(&five), 4)).ok());
    auto plan = gpu->planHotReset(OpenSiblings::ResetToo);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    ASSERT_TRUE(gpu->hotReset(*plan).ok());
    EXPECT_EQ(gpu->readConfigObj<uint16_t>(0x04).value(), 0x0006);
    EXPECT_EQ(gpu->readConfigObj<uint32_t>(0x10).value() & ~0xfu, 0xc0000000u);
    ASSERT_TRUE(gpu->readRegion(0, 0x08, std::span(reinterpret_cast<uint8_t*>(&fact), 4)).ok());
    EXPECT_EQ(fact, 0u) << "the factorial register is back at its reset value";
}

// vfio_pci_dev_set_try_reset(): without a function reset, the last close of the bus's functions
// makes the kernel reset the bus; while one stays open it does not.
TEST(SimHotResetState, LastCloseOfTheBusResetsIt) {
    Rig rig;
    auto b = rig.backend(BackendKind::Iommufd);
    auto gpu = open(*b, kGpu);
    auto audio = open(*b, kAudio);
    const unsigned gpuResets = rig.resets(kGpu), audioResets = rig.resets(kAudio);
    gpu.reset();
    EXPECT_EQ(rig.resets(kGpu), gpuResets) << "the audio function is still open";
    audio.reset();
    EXPECT_EQ(rig.resets(kGpu), gpuResets + 1);
    EXPECT_EQ(rig.resets(kAudio), audioResets + 1);
}

// ------------------------------------------------------------------ Conduit's planning

TEST(HotResetPlan, Type1PassesEveryAffectedGroupFd) {
    Rig rig;
    auto b = rig.backend(BackendKind::Type1);
    auto gpu = open(*b, kGpu);
    auto audio = open(*b, kAudio);
    auto plan = gpu->planHotReset(OpenSiblings::ResetToo);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_FALSE(plan->devIdForm);
    std::vector<int32_t> want{groupFd(*b, 10), groupFd(*b, 11)};
    EXPECT_EQ(plan->groupFds, want);
    EXPECT_EQ(plan->affected, (std::vector<std::string>{kGpu, kAudio}));
    const unsigned before = rig.resets(kAudio);
    ASSERT_TRUE(gpu->hotReset(*plan).ok());
    EXPECT_EQ(rig.resets(kAudio), before + 1);
    // The audio function is driven by this VM: a reset for the GPU alone must not reach it.
    auto single = gpu->planHotReset(OpenSiblings::Refuse);
    ASSERT_FALSE(single.ok());
    EXPECT_EQ(single.error().code(), EBUSY);
    EXPECT_EQ(single.error().describe(),
              "VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0: the reset would also reset 0000:01:00.1, which this VM drives; "
              "it is not reset behind its driver's back: Device or resource busy (EBUSY)");
}

TEST(HotResetPlan, Type1RefusesWithoutTheIoctlWhenAGroupIsNotOwned) {
    Rig rig;
    auto b = rig.backend(BackendKind::Type1);
    auto gpu = open(*b, kGpu);
    rig.host.failIoctl(VFIO_DEVICE_PCI_HOT_RESET, EIO);  // would show if it were issued
    auto plan = gpu->planHotReset(OpenSiblings::ResetToo);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.error().code(), EPERM);
    EXPECT_EQ(plan.error().describe(),
              "VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0: the reset would also reset 0000:01:00.1 in IOMMU group 11, "
              "which this VM does not own; assign a device of that group to this VM: Operation not permitted (EPERM)");
    EXPECT_TRUE(rig.host.injected().empty()) << "no VFIO_DEVICE_PCI_HOT_RESET was issued";
}

TEST(HotResetPlan, Type1OwnsAnUnopenedFunctionOfItsOwnGroup) {
    Rig rig(/*sameGroup=*/true);
    auto b = rig.backend(BackendKind::Type1);
    auto gpu = open(*b, kGpu);
    auto plan = gpu->planHotReset(OpenSiblings::Refuse);  // the audio function is not driven
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_EQ(plan->groupFds, std::vector<int32_t>{groupFd(*b, 10)});
    const unsigned before = rig.resets(kAudio);
    ASSERT_TRUE(gpu->hotReset(*plan).ok());
    EXPECT_EQ(rig.resets(kAudio), before + 1);
}

TEST(HotResetPlan, CdevUsesAZeroLengthArrayAndNamesWhatItDoesNotOwn) {
    {
        Rig rig;
        auto b = rig.backend(BackendKind::Iommufd);
        auto gpu = open(*b, kGpu);
        auto plan = gpu->planHotReset(OpenSiblings::ResetToo);
        ASSERT_FALSE(plan.ok());
        EXPECT_EQ(plan.error().code(), EPERM);
        EXPECT_EQ(plan.error().describe(),
                  "VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0: the reset would also reset 0000:01:00.1, which this VM does "
                  "not own (bound to another driver or another iommufd); assign it to this VM or unbind it: "
                  "Operation not permitted (EPERM)");
    }
    Rig rig;
    auto b = rig.backend(BackendKind::Iommufd);
    auto gpu = open(*b, kGpu);
    auto audio = open(*b, kAudio);
    auto plan = gpu->planHotReset(OpenSiblings::ResetToo);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    EXPECT_TRUE(plan->devIdForm);
    EXPECT_TRUE(plan->groupFds.empty());
    const unsigned gpuResets = rig.resets(kGpu), audioResets = rig.resets(kAudio);
    auto r = gpu->hotReset(*plan);
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(rig.resets(kGpu), gpuResets + 1);
    EXPECT_EQ(rig.resets(kAudio), audioResets + 1);
    // A failing reset names the ioctl, the device and what it would have reset.
    rig.host.failIoctl(VFIO_DEVICE_PCI_HOT_RESET, EIO);
    auto failed = gpu->hotReset(*plan);
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.error().describe(),
              "VFIO_DEVICE_PCI_HOT_RESET 0000:01:00.0 (iommufd-owned, resets 0000:01:00.0, 0000:01:00.1): "
              "Input/output error (EIO)");
}

// ------------------------------------------------------------------ KVM before open

// Records the host calls and KVM registrations in one sequence.
struct CallLog final : HostCallObserver {
    std::vector<std::string> calls;
    int beforeCall(const std::string& call) override {
        calls.push_back(call);
        return 0;
    }
    void hostDestroyed(const SimHostLeftovers&) override {}
    size_t indexOf(const std::string& call) const {
        auto it = std::find(calls.begin(), calls.end(), call);
        return it == calls.end() ? calls.size() : size_t(it - calls.begin());
    }
    size_t count(const std::string& call) const { return std::count(calls.begin(), calls.end(), call); }
};

struct ScopedObserver {
    explicit ScopedObserver(HostCallObserver* o) { setHostCallObserver(o); }
    ~ScopedObserver() { setHostCallObserver(nullptr); }
};

struct RecordingKvm final : KvmFileRegistrar {
    SimHost& host;
    CallLog& log;
    int failAdd = 0;
    std::vector<std::pair<int, bool>> live;
    std::vector<std::string> kindsSeen;  // "group" / "device" as the simulated host knows the fd
    RecordingKvm(SimHost& h, CallLog& l) : host(h), log(l) {}
    std::string kindOf(int fd) {
        if (host.ioctlNameFor(fd, VFIO_GROUP_GET_STATUS) == "VFIO_GROUP_GET_STATUS") return "group";
        if (host.ioctlNameFor(fd, VFIO_DEVICE_BIND_IOMMUFD) == "VFIO_DEVICE_BIND_IOMMUFD") return "device";
        return "closed or unknown";
    }
    Result<void> add(int fd, bool isGroup, const std::string& what) override {
        log.calls.push_back(isGroup ? "KVM_DEV_VFIO_FILE_ADD group" : "KVM_DEV_VFIO_FILE_ADD cdev");
        kindsSeen.push_back(kindOf(fd));
        if (failAdd) return Error("KVM_SET_DEVICE_ATTR KVM_DEV_VFIO_FILE_ADD " + what, failAdd);
        live.emplace_back(fd, isGroup);
        return success();
    }
    void remove(int fd, bool isGroup) override {
        log.calls.push_back("KVM_DEV_VFIO_FILE_DEL " + kindOf(fd));
        std::erase(live, std::make_pair(fd, isGroup));
    }
};

class KvmFileOrder : public ::testing::TestWithParam<BackendKind> {};

// The kernel hands drivers device->kvm at open (vfio_device_open()): KVM must know the group
// before VFIO_GROUP_GET_DEVICE_FD, the cdev before VFIO_DEVICE_BIND_IOMMUFD.
TEST_P(KvmFileOrder, KvmKnowsTheGroupOrCdevBeforeTheDeviceOpens) {
    Rig rig(/*sameGroup=*/true);
    CallLog log;
    ScopedObserver observe(&log);
    RecordingKvm kvm(rig.host, log);
    auto b = rig.backend(GetParam());
    auto gpu = b->openDevice(kGpu, &kvm);
    ASSERT_TRUE(gpu.ok()) << gpu.error().describe();
    auto audio = b->openDevice(kAudio, &kvm);
    ASSERT_TRUE(audio.ok()) << audio.error().describe();
    if (GetParam() == BackendKind::Type1) {
        const size_t add = log.indexOf("KVM_DEV_VFIO_FILE_ADD group");
        ASSERT_LT(add, log.calls.size());
        EXPECT_LT(log.indexOf("VFIO_GROUP_SET_CONTAINER"), add) << "the group joins the container first";
        EXPECT_LT(add, log.indexOf("VFIO_GROUP_GET_DEVICE_FD"));
        EXPECT_EQ(log.count("KVM_DEV_VFIO_FILE_ADD group"), 1u) << "once per group, not per device";
        EXPECT_EQ(kvm.kindsSeen, std::vector<std::string>{"group"});
    } else {
        const size_t add = log.indexOf("KVM_DEV_VFIO_FILE_ADD cdev");
        ASSERT_LT(add, log.calls.size());
        EXPECT_LT(log.indexOf(std::string("open ") + (rig.host.paths().dev / "vfio/devices/vfio0").string()), add);
        EXPECT_LT(add, log.indexOf("VFIO_DEVICE_BIND_IOMMUFD"));
        EXPECT_EQ(log.count("KVM_DEV_VFIO_FILE_ADD cdev"), 2u) << "every cdev";
        EXPECT_EQ(kvm.kindsSeen, (std::vector<std::string>{"device", "device"}));
    }
    EXPECT_EQ(log.count("KVM_DEV_VFIO_FILE_DEL group") + log.count("KVM_DEV_VFIO_FILE_DEL device"), 0u);
}

// A refused registration opens nothing; an open that fails after it makes KVM forget the file
// while its fd is still open, and leaves nothing behind.
TEST_P(KvmFileOrder, AFailureUndoesTheRegistrationBeforeTheFdCloses) {
    Rig rig;
    CallLog log;
    ScopedObserver observe(&log);
    RecordingKvm kvm(rig.host, log);
    auto b = rig.backend(GetParam());
    const size_t fds = rig.host.openFdCount();
    kvm.failAdd = EINVAL;
    auto refused = b->openDevice(kGpu, &kvm);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code(), EINVAL);
    EXPECT_NE(refused.error().describe().find("KVM_DEV_VFIO_FILE_ADD"), std::string::npos) << refused.error().describe();
    EXPECT_EQ(log.count("VFIO_GROUP_GET_DEVICE_FD") + log.count("VFIO_DEVICE_BIND_IOMMUFD"), 0u);
    EXPECT_EQ(rig.host.openFdCount(), fds);
    EXPECT_FALSE(b->ownedGroupFd(10)) << "the group left the container again";

    kvm.failAdd = 0;
    rig.host.failIoctl(GetParam() == BackendKind::Type1 ? VFIO_GROUP_GET_DEVICE_FD : VFIO_DEVICE_BIND_IOMMUFD, EIO);
    auto failed = b->openDevice(kGpu, &kvm);
    ASSERT_FALSE(failed.ok());
    EXPECT_TRUE(kvm.live.empty());
    const std::string del = GetParam() == BackendKind::Type1 ? "KVM_DEV_VFIO_FILE_DEL group" : "KVM_DEV_VFIO_FILE_DEL device";
    EXPECT_EQ(log.count(del), 1u) << "KVM forgot the file while its fd was still open";
    EXPECT_EQ(rig.host.openFdCount(), fds);

    rig.host.clearInjectedFaults();
    auto ok = b->openDevice(kGpu, &kvm);
    EXPECT_TRUE(ok.ok()) << ok.error().describe();
    EXPECT_EQ(kvm.live.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, KvmFileOrder, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](const auto& info) { return std::string(backendKindName(info.param)); });

}  // namespace
