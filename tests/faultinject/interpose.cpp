// Link-level interposers for the fault-injection binary: CMake links it with
// -Wl,--wrap=ioctl,--wrap=mmap,--wrap=munmap,--wrap=eventfd,--wrap=memfd_create, so every call
// to those in the Conduit libraries (and this binary) lands here first; pthread_create is
// interposed by definition (std::thread reaches it from libstdc++). Each asks
// host_call_faults.cpp whether to fail, and records what succeeded.
#include <dlfcn.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdarg>
#include <map>

#include <fmt/format.h>

#include "tests/faultinject/host_call_faults.h"
#include "tests/hostsim/host_call_observer.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/kvm_uapi.h"

using namespace conduit;

extern "C" {
int __real_ioctl(int fd, unsigned long request, ...);
void* __real_mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset);
int __real_munmap(void* addr, size_t length);
int __real_eventfd(unsigned initval, int flags);
int __real_memfd_create(const char* name, unsigned flags);
}

namespace {

// The KVM ioctls Conduit makes, by number (vmm/kvm_uapi.h and vmm/arch/x86_64/kvm_x86.h for the three that <linux/kvm.h>
// numbers wrongly under C++).
const std::map<unsigned long, const char*>& kvmIoctlNames() {
    static const std::map<unsigned long, const char*> names = {
#define N(x) {x, #x}
        N(KVM_GET_API_VERSION), N(KVM_CREATE_VM), N(KVM_CHECK_EXTENSION), N(KVM_GET_VCPU_MMAP_SIZE),
        N(KVM_CREATE_VCPU), N(KVM_SET_TSS_ADDR), N(KVM_SET_IDENTITY_MAP_ADDR), N(KVM_CREATE_IRQCHIP),
        N(KVM_CREATE_PIT2), N(KVM_SET_USER_MEMORY_REGION), N(KVM_IRQ_LINE), N(KVM_SIGNAL_MSI), N(KVM_IRQFD),
        N(KVM_IOEVENTFD), N(KVM_CREATE_DEVICE), N(KVM_SET_DEVICE_ATTR), N(KVM_RUN), N(KVM_GET_REGS),
        N(KVM_SET_REGS), N(KVM_GET_SREGS), N(KVM_SET_SREGS), N(KVM_GET_FPU), N(KVM_SET_FPU), N(KVM_GET_LAPIC),
        N(KVM_SET_LAPIC), N(KVM_GET_MP_STATE), N(KVM_SET_MP_STATE), N(KVM_SET_MSRS), N(KVM_GET_MSRS),
#undef N
        {vmm::x86::kGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID"},
        {vmm::x86::kSetCpuid2, "KVM_SET_CPUID2"},
        {vmm::uapi::kSetGsiRouting, "KVM_SET_GSI_ROUTING"},
    };
    return names;
}

std::string ioctlName(unsigned long request) {
    auto it = kvmIoctlNames().find(request);
    return it != kvmIoctlNames().end() ? it->second : fmt::format("ioctl {:#x}", request);
}

// KVM_RUN is counted once per vCPU thread: failing its first entry is a distinct failure, the
// thousands of re-entries after exits are the same call again.
thread_local bool t_kvmRunCounted = false;

}  // namespace

extern "C" int __wrap_ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    if (!hostsim::insideSimulatedHost()) {
        bool count = true;
        if (request == KVM_RUN) {
            count = !t_kvmRunCounted;
            t_kvmRunCounted = true;
        }
        if (count) {
            if (int err = faultinject::decide(ioctlName(request), EIO)) {
                errno = err;
                return -1;
            }
        }
    }
    int r = __real_ioctl(fd, request, arg);
    if (r == 0 && request == KVM_SET_USER_MEMORY_REGION && !hostsim::insideSimulatedHost()) {
        auto* region = static_cast<const kvm_userspace_memory_region*>(arg);
        faultinject::trackMemslot(fd, region->slot, region->memory_size);
    }
    return r;
}

extern "C" void* __wrap_mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset) {
    const bool ours = !hostsim::insideSimulatedHost();
    if (ours) {
        if (int err = faultinject::decide("mmap", ENOMEM)) {
            errno = err;
            return MAP_FAILED;
        }
    }
    void* p = __real_mmap(addr, length, prot, flags, fd, offset);
    if (ours && p != MAP_FAILED) faultinject::trackMmap(p, length);
    return p;
}

extern "C" int __wrap_munmap(void* addr, size_t length) {
    if (!hostsim::insideSimulatedHost()) faultinject::trackMunmap(addr, length);
    return __real_munmap(addr, length);
}

extern "C" int __wrap_eventfd(unsigned initval, int flags) {
    if (!hostsim::insideSimulatedHost()) {
        if (int err = faultinject::decide("eventfd", EMFILE)) {
            errno = err;
            return -1;
        }
    }
    return __real_eventfd(initval, flags);
}

extern "C" int __wrap_memfd_create(const char* name, unsigned flags) {
    if (!hostsim::insideSimulatedHost()) {
        if (int err = faultinject::decide("memfd_create", EMFILE)) {
            errno = err;
            return -1;
        }
    }
    return __real_memfd_create(name, flags);
}

// Interposed by definition: the executable's symbol comes first for libstdc++'s std::thread.
extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
    using Fn = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
    static Fn real = reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, "pthread_create"));
    if (!hostsim::insideSimulatedHost()) {
        if (int err = faultinject::decide("pthread_create", EAGAIN)) return err;  // pthread: errno as result
    }
    return real(thread, attr, start, arg);
}
