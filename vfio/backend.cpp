#include "vfio/backend.h"

#include "base/log.h"
#include "vfio/iommufd.h"
#include "vfio/type1.h"

namespace conduit::vfio {

const char* backendKindName(BackendKind kind) {
    switch (kind) {
        case BackendKind::Auto: return "auto";
        case BackendKind::Type1: return "type1";
        case BackendKind::Iommufd: return "iommufd";
    }
    return "?";
}

Result<std::unique_ptr<VfioBackend>> openBackend(HostInterface& host, BackendKind kind, const HostPaths& paths) {
    if (kind == BackendKind::Auto) {
        // iommufd needs both /dev/iommu and the VFIO cdev support (/dev/vfio/devices).
        kind = (host.exists(paths.dev / "iommu") && host.exists(paths.dev / "vfio/devices")) ? BackendKind::Iommufd
                                                                                             : BackendKind::Type1;
        log::get("vfio").info("VFIO backend: {} (auto)", backendKindName(kind));
    }
    if (kind == BackendKind::Iommufd) {
        auto b = TRY(IommufdBackend::open(host, paths));
        return std::unique_ptr<VfioBackend>(std::move(b));
    }
    auto b = TRY(Type1Backend::open(host, paths));
    return std::unique_ptr<VfioBackend>(std::move(b));
}

}  // namespace conduit::vfio
