// The simulated host as a vmm::VfioHost: what "vfio_host": {"kind": "simulated", ...} opens in the
// binaries that carry it (test binaries, bench, and `conduit` with CONDUIT_SIMULATED_HOST). Not
// part of vmm/: those binaries pass simulatedVfioHosts() to Machine::create (the `conduit`
// binary through binaryVfioHosts(), defined in vmm_hosts.cpp).
#pragma once

#include <memory>

#include "tests/hostsim/sim_host.h"
#include "vmm/passthrough.h"
#include "vmm/vfio_host.h"

namespace conduit::hostsim {

// "simulated": a SimHost with the config's devices, every call serialised (vCPU threads reach it
// at once); "real": the kernel.
vmm::VfioHostFactory simulatedVfioHosts();

// The simulated host behind a Machine's passthrough, or null when it uses another host.
SimHost* simHostOf(vmm::Passthrough& passthrough);

}  // namespace conduit::hostsim
