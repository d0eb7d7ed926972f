// A full device bring-up against any host, as the passthrough device will do it: backend, device,
// every region's info, mmap of the mmappable areas, MSI-X eventfds armed, a DMA buffer mapped.
// Shared by the unit tests (and the fault-injection sweep) of vfio/ and memory/.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/event_fd.h"
#include "base/mapping.h"
#include "vfio/backend.h"

namespace conduit::hostsim {

struct BringUp {
    // Declaration order is teardown order reversed: mappings and eventfds go before the device,
    // the device before the backend.
    std::unique_ptr<vfio::VfioBackend> backend;
    std::unique_ptr<vfio::VfioDevice> device;
    std::vector<vfio::HostMapping> barMaps;
    std::vector<EventFd> msix;
    Mapping dmaBuffer;
    uint64_t dmaIova = 0;
    bool dmaMapped = false;

    ~BringUp() { teardown(); }
    void teardown();
};

// iova: where the 64 KiB DMA buffer is mapped.
Result<void> bringUp(vfio::HostInterface& host, vfio::BackendKind kind, const vfio::HostPaths& paths,
                     const std::string& bdf, BringUp& out, uint64_t iova = 0x100000);

}  // namespace conduit::hostsim
