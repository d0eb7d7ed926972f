// Where assigned devices come from ("vfio_host" in the config): the kernel's VFIO, or a host the
// binary brings along. The product knows only the kernel; a binary that carries another host (the
// simulated one of tests/hostsim, for the tests and the demo) passes its own VfioHostFactory to
// Machine::create, so no test code is part of vmm/.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "vfio/host_interface.h"
#include "vmm/config.h"

namespace conduit::vmm {

class VfioHost {
public:
    virtual ~VfioHost() = default;
    // Every VFIO, iommufd, sysfs and /dev call goes through this.
    virtual vfio::HostInterface& interface() = 0;
    virtual const vfio::HostPaths& paths() const = 0;
    // The kernel's VFIO: group and cdev fds are VFIO files that KVM's VFIO device must learn.
    virtual bool isKernel() const = 0;
    // "real", "simulated": `stats` reports it as passthrough.host.
    virtual std::string name() const = 0;
    // What the host adds to the stats of one assigned device, and to the passthrough stats.
    // The kernel's host adds nothing.
    virtual void addDeviceStats(const std::string& /*hostBdf*/, nlohmann::json& /*device*/) const {}
    virtual void addStats(nlohmann::json& /*passthrough*/) const {}
};

// Opens the host a config asks for.
using VfioHostFactory = std::function<Result<std::unique_ptr<VfioHost>>(const VfioHostConfig& config)>;

// The kernel's VFIO (vfio::realHost(), /sys, /dev).
std::unique_ptr<VfioHost> kernelVfioHost();
// The product's factory: the kernel for "real"; any other kind is refused, naming it.
VfioHostFactory kernelVfioHosts();

// The factory of the `conduit` binary: defined by what the binary links, vmm/vfio_hosts_kernel.cpp
// (the kernel only) or, with CONDUIT_SIMULATED_HOST (on by default: the tests and the demo run
// `conduit` on the simulated host), tests/hostsim/vmm_hosts.cpp.
VfioHostFactory binaryVfioHosts();

}  // namespace conduit::vmm
