// A VFIO backend owns one IOMMU address space for the VM (type1: the container; iommufd: an IOAS)
// and opens devices into it. Devices must be closed before their backend is destroyed.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "vfio/device.h"
#include "vfio/host_interface.h"
#include "vfio/vfio_ops.h"

namespace conduit::vfio {

enum class BackendKind { Auto, Type1, Iommufd };

const char* backendKindName(BackendKind kind);

class VfioBackend : public VfioOps {
public:
    // Opens a PCI device by BDF ("0000:00:03.0") into this backend's address space.
    virtual Result<std::unique_ptr<VfioDevice>> openDevice(const std::string& bdf) = 0;
    virtual BackendKind kind() const = 0;
};

// Auto: iommufd when the host has /dev/iommu and VFIO device cdevs, else type1.
Result<std::unique_ptr<VfioBackend>> openBackend(HostInterface& host, BackendKind kind, const HostPaths& paths = {});

}  // namespace conduit::vfio
