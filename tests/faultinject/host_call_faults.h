// End-to-end fault injection: counts the host calls Conduit makes (KVM and other ioctls, mmap,
// memfd_create, eventfd and thread creation through link-level interposers in interpose.cpp; VFIO
// and iommufd ioctls, opens, mmaps, eventfds and region reads/writes through the simulated host's
// HostCallObserver) and fails the n-th one. It also tracks what Conduit's own calls created, so a
// test can check that a failed start leaves no mapping or memslot behind.
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

struct InjectedCall {
    size_t index = 0;  // 1-based, in counting order
    std::string name;  // "KVM_CREATE_VCPU", "mmap", "VFIO_DEVICE_SET_IRQS", "open /.../vfio/vfio", ...
    int err = 0;
};

// Starts counting host calls; the failAt-th (1-based; 0: none) fails with the errno usual for its
// kind (ioctl EIO, mmap/memfd_create ENOMEM, eventfd EMFILE, thread EAGAIN, open EACCES,
// pread/pwrite EIO). Resets the tracked mappings, memslots and simulated-host leftovers.
void startCounting(size_t failAt);
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
