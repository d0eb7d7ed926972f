// A process-wide observer of the calls the simulated host answers for Conduit, for the end-to-end
// fault-injection sweep (tests/faultinject). The simulated host asks it before every call Conduit
// makes through vfio::HostInterface (open, ioctl, mmap, eventfd, pread, pwrite), and may be told to
// fail that call; it also reports what each SimHost still held when it was destroyed.
//
// The simulated host runs its own system calls (memfds for BAR memory, eventfds and /dev/null fds
// standing for kernel objects, mmaps of device memory). Those are the simulated kernel's, not
// Conduit's: insideSimulatedHost() is true on a thread while the simulated host runs, so a
// link-level interposer of mmap/eventfd/ioctl can let them through untouched.
#pragma once

#include <cstddef>
#include <string>

namespace conduit::hostsim {

// What a SimHost still held at its destruction: Conduit should have closed, unmapped and
// destroyed all of it itself.
struct SimHostLeftovers {
    size_t fds = 0;             // VFIO/iommufd fds and eventfds handed to Conduit, still open
    size_t mmaps = 0;           // BAR mmaps still mapped
    size_t dmaMappings = 0;     // IOMMU mappings (type1 or IOAS) still present
    size_t iommufdObjects = 0;  // IOAS, HWPT, vIOMMU, ... still allocated
    // IOMMU mappings that were still present when their container/IOAS fd was closed: the kernel
    // drops them, but a VMM that unmaps what it mapped has none.
    size_t dmaMappingsDroppedByClose = 0;
};

class HostCallObserver {
public:
    virtual ~HostCallObserver() = default;
    // Before a call ("VFIO_DEVICE_GET_INFO", "open /dev/vfio/vfio", "mmap", "eventfd", "pread",
    // "pwrite"). A non-zero return fails the call with that errno and no side effect.
    virtual int beforeCall(const std::string& call) = 0;
    virtual void hostDestroyed(const SimHostLeftovers& leftovers) = 0;
};

// Installs `observer` (null removes it). Not owned; must outlive its installation.
void setHostCallObserver(HostCallObserver* observer);
HostCallObserver* hostCallObserver();

bool insideSimulatedHost();

// Marks the current thread as running simulated-host code for its lifetime (nests).
class SimulatedHostScope {
public:
    SimulatedHostScope();
    ~SimulatedHostScope();
    SimulatedHostScope(const SimulatedHostScope&) = delete;
    SimulatedHostScope& operator=(const SimulatedHostScope&) = delete;
};

}  // namespace conduit::hostsim
