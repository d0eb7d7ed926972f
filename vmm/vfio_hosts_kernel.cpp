// binaryVfioHosts() of a `conduit` built without the simulated host (CONDUIT_SIMULATED_HOST=OFF):
// the kernel's VFIO only. Linked into the executable, not into conduit_vmm (vmm/CMakeLists.txt).
#include "vmm/vfio_host.h"

namespace conduit::vmm {

VfioHostFactory binaryVfioHosts() { return kernelVfioHosts(); }

}  // namespace conduit::vmm
