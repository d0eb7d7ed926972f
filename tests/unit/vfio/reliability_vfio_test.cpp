// Bad device arguments (docs/reliability.md, "bad device arguments"): what opening a device that
// does not exist, is not bound to vfio-pci, sits in a non-viable IOMMU group, or is not a PCI
// address at all says, word for word, with both backends, and that the failure leaks nothing.
#include <gtest/gtest.h>

#include <string>

#include "tests/hostsim/sim_host.h"
#include "vfio/backend.h"

using namespace conduit;
using namespace conduit::vfio;
using hostsim::SimDeviceConfig;
using hostsim::SimHost;

namespace {

struct BadDevice {
    const char* name;
    const char* bdf;  // what the user asked for
    // describe() per backend (what the CLI prints); {S} = the simulated host's sysfs root, {V} = its /dev root
    const char* type1;
    const char* iommufd;
};

// The simulated host: 0000:00:03.0 bound to vfio-pci alone in group 7; 0000:00:04.0 bound to
// e1000e (group 8); 0000:00:05.0 bound to vfio-pci in group 9 with 0000:00:05.1 bound to
// snd_hda_intel.
const BadDevice kBadDevices[] = {
    {"does not exist", "0000:09:00.0",
     "PCI device 0000:09:00.0 does not exist ({S}/bus/pci/devices/0000:09:00.0 missing): No such device (ENODEV)",
     "PCI device 0000:09:00.0 does not exist ({S}/bus/pci/devices/0000:09:00.0 missing): No such device (ENODEV)"},
    {"not bound to vfio-pci", "0000:00:04.0",
     "PCI device 0000:00:04.0 is bound to e1000e, not to vfio-pci (bind it to vfio-pci first): No such device (ENODEV)",
     "PCI device 0000:00:04.0 is bound to e1000e, not to vfio-pci (bind it to vfio-pci first): No such device (ENODEV)"},
    {"group not viable", "0000:00:05.0",
     "IOMMU group 9 is not viable: 0000:00:05.1 (bound to snd_hda_intel) must be unbound or bound to vfio-pci: Operation not permitted (EPERM)",
     "IOMMU group 9 is not viable: 0000:00:05.1 (bound to snd_hda_intel) must be unbound or bound to vfio-pci: Operation not permitted (EPERM)"},
    {"a newline in the address (F4: shown escaped)", "0000:00:03.0\nx",
     "'0000:00:03.0\\nx' is not a PCI address (expected DDDD:BB:DD.F): Invalid argument (EINVAL)",
     "'0000:00:03.0\\nx' is not a PCI address (expected DDDD:BB:DD.F): Invalid argument (EINVAL)"},
    {"not a PCI address", "01:00",
     "'01:00' is not a PCI address (expected DDDD:BB:DD.F): Invalid argument (EINVAL)",
     "'01:00' is not a PCI address (expected DDDD:BB:DD.F): Invalid argument (EINVAL)"},
};

class ReliabilityVfio : public ::testing::TestWithParam<BackendKind> {
protected:
    void SetUp() override {
        SimDeviceConfig ok;
        ok.bdf = "0000:00:03.0";
        ok.group = 7;
        host.addDevice(ok);
        SimDeviceConfig nic;
        nic.bdf = "0000:00:04.0";
        nic.group = 8;
        nic.driver = "e1000e";
        host.addDevice(nic);
        SimDeviceConfig shared;
        shared.bdf = "0000:00:05.0";
        shared.group = 9;
        host.addDevice(shared);
        host.addGroupPeer("0000:00:05.1", 9, "snd_hda_intel");
    }
    std::string expand(std::string s) const {
        for (auto [key, value] : {std::pair<std::string, std::string>{"{S}", host.paths().sysfs.string()},
                                  {"{V}", host.paths().dev.string()}}) {
            for (size_t pos; (pos = s.find(key)) != std::string::npos;) s.replace(pos, key.size(), value);
        }
        return s;
    }
    SimHost host;
};

TEST_P(ReliabilityVfio, BadDeviceArgumentsGiveExactMessagesAndLeakNothing) {
    auto b = openBackend(host, GetParam(), host.paths());
    ASSERT_TRUE(b.ok()) << b.error().describe();
    const size_t fds = host.openFdCount();
    for (const auto& c : kBadDevices) {
        SCOPED_TRACE(c.name);
        auto d = (*b)->openDevice(c.bdf);
        ASSERT_FALSE(d.ok());
        EXPECT_EQ(d.error().describe(), expand(GetParam() == BackendKind::Type1 ? c.type1 : c.iommufd));
        EXPECT_EQ(d.error().describe().find('\n'), std::string::npos) << "one line: " << d.error().describe();
        EXPECT_EQ(host.openFdCount(), fds);
    }
    // The good device still opens afterwards: a refused open leaves no state behind.
    auto good = (*b)->openDevice("0000:00:03.0");
    EXPECT_TRUE(good.ok()) << good.error().describe();
    good = Error("dropped");
    b->reset();
    EXPECT_EQ(host.openFdCount(), 0u);
    EXPECT_EQ(host.mmapCount(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, ReliabilityVfio, ::testing::Values(BackendKind::Type1, BackendKind::Iommufd),
                         [](const auto& info) { return info.param == BackendKind::Type1 ? "type1" : "iommufd"; });

}  // namespace
