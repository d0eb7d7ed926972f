#include "vmm/kvm_interrupt_line.h"

#include "base/log.h"
#include "vmm/vm.h"

namespace conduit::vmm {

void KvmInterruptLine::setLevel(bool asserted) {
    auto r = vm_.irqLine(gsi_, asserted);
    if (!r) log::get("vmm").warn("interrupt line GSI {}: {}", gsi_, r.error().describe());
}

}  // namespace conduit::vmm
