#include "vmm/vfio_host.h"

namespace conduit::vmm {

namespace {

class KernelVfioHost final : public VfioHost {
public:
    vfio::HostInterface& interface() override { return vfio::realHost(); }
    const vfio::HostPaths& paths() const override { return paths_; }
    bool isKernel() const override { return true; }
    std::string name() const override { return "real"; }

private:
    vfio::HostPaths paths_;
};

}  // namespace

std::unique_ptr<VfioHost> kernelVfioHost() { return std::make_unique<KernelVfioHost>(); }

VfioHostFactory kernelVfioHosts() {
    return [](const VfioHostConfig& config) -> Result<std::unique_ptr<VfioHost>> {
        if (config.kind == VfioHostConfig::Kind::Real) return kernelVfioHost();
        return Error("vfio_host: this binary has no simulated VFIO host (a test/demo host: build with "
                     "CONDUIT_SIMULATED_HOST=ON)",
                     ENOTSUP);
    };
}

}  // namespace conduit::vmm
