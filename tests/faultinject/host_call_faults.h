// End-to-end fault injection: counts the host calls Conduit makes (KVM and other ioctls, mmap,
// memfd_create, eventfd and thread creation through link-level interposers in interpose.cpp; VFIO
// and iommufd ioctls, opens, mmaps, eventfds and region reads/writes through the simulated host's
// HostCallObserver) and fails one, named by the call and its occurrence (the 3rd "eventfd"): the
// order of calls made on different threads (a vCPU's, a device's) varies from run to run, while
// each call's own count does not. It also tracks what Conduit's own calls created, so a test can
// check that a failed start leaves no mapping or memslot behind.
//
// Only the code linked into a test binary built with the interposers is observed (see
// CMakeLists.txt: -Wl,--wrap=...); calls the simulated host makes for itself are not Conduit's and
// pass through (hostsim::insideSimulatedHost()).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "tests/hostsim/host_call_observer.h"

namespace conduit::faultinject {

// One host call of a run: its name ("KVM_CREATE_VCPU", "mmap", "VFIO_DEVICE_SET_IRQS",
// "open /.../vfio/vfio", ...; the simulated host's temporary root, new in every run, as
// "conduit-hostsim-*") and which of the calls of that name it is (1-based).
struct CallTarget {
    std::string name;
    size_t occurrence = 0;
    bool operator==(const CallTarget&) const = default;
};

struct InjectedCall {
    CallTarget call;
    std::string name;  // as this run made it (the simulated host's root in full)
    int err = 0;
};

// Each counted call as its CallTarget, in counting order.
std::vector<CallTarget> targetsOf(const std::vector<std::string>& calls);

// Starts counting host calls; the one `failAt` names (none: nullopt) fails with the errno usual for
// its kind (ioctl EIO, mmap/memfd_create ENOMEM, eventfd EMFILE, thread EAGAIN, open EACCES,
// pread/pwrite EIO). Resets the tracked mappings, memslots and simulated-host leftovers.
void startCounting(std::optional<CallTarget> failAt);
// Stops counting and injecting; tracking of mappings and memslots goes on until finish().
void stopCounting();
// Ends the run: returns the names of the counted calls, in order.
std::vector<std::string> finish();

std::optional<InjectedCall> injected();

// What Conduit's own calls left behind since startCounting(): mmaps never unmapped, KVM memslots
// never deleted, and what the simulated hosts destroyed meanwhile still held. Empty: nothing.
std::vector<std::string> leftovers();

// Decides one call (the interposers and the simulated host's observer call this). Returns the
// errno to fail it with, or 0.
int decide(const std::string& name, int errnoIfInjected);

// Interposer bookkeeping (no effect unless counting or tracking).
void trackMmap(void* addr, size_t length);
void trackMunmap(void* addr, size_t length);
void trackMemslot(int vmFd, unsigned slot, unsigned long long size);

}  // namespace conduit::faultinject
