// The process's open-file limit. Every interrupt vector of a passed-through device holds an
// eventfd (and KVM an irqfd on it), so a device with a 2,048-entry MSI-X table on a host that
// must allocate every vector at once (NORESIZE) needs more than the usual soft limit of 1,024.
// The hard limit is the administrator's word; the soft one is ours to raise up to it (QEMU and
// cloud-hypervisor do the same at start).
#pragma once

#include "base/result.h"

namespace conduit {

struct FdLimit {
    unsigned long before = 0, now = 0;
};

// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns both values.
Result<FdLimit> raiseFdLimit();

}  // namespace conduit
