// kvm_probe: exits 0 iff this machine's /dev/kvm can run a guest, else 1 with one line saying
// which step failed and why. "Usable" means more than a device node: the node exists on hosts whose
// KVM cannot create a VM (a kernel that is itself a guest without nested virtualisation), so the
// probe opens it, checks the API version, creates a VM with one page of RAM and a vCPU, and runs
// the vCPU until the guest's first instruction, `hlt`, comes back as KVM_EXIT_HLT.
//
// A KVM that runs that guest but not an unmodified guest kernel is refused as well: kvm-pvm (a KVM
// for a host that is itself a guest without virtualisation extensions) runs the guest's kernel
// deprivileged and emulates its privileged work, and Debian's kernel stops there at an instruction
// its emulator lacks (`lock cmpxchg16b`: KVM_EXIT_INTERNAL_ERROR, emulation failure), so the
// Linux-boot tests cannot pass on it. kvm-pvm is known by its module, loaded with neither
// kvm_intel nor kvm_amd (then /dev/kvm is necessarily its).
//
// Used by tests/bed (where KVM tests run: host KVM or the nested bed) and scripts/demo.sh.
// Plain C with the kernel's uAPI only, so it builds and runs before anything else of the project.
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static int fail(const char* what) {
    printf("%s: %s\n", what, strerror(errno));
    return 1;
}

static int loaded(const char* module) {
    char path[96];
    snprintf(path, sizeof path, "/sys/module/%s", module);
    return access(path, F_OK) == 0;
}

int main(void) {
    if (loaded("kvm_pvm") && !loaded("kvm_intel") && !loaded("kvm_amd")) {
        printf("/dev/kvm is kvm-pvm's, which cannot run an unmodified guest kernel (CONDUIT_KVM=host uses it anyway)\n");
        return 1;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) return fail("open /dev/kvm");
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        printf("KVM_GET_API_VERSION: %d, expected %d\n", api, KVM_API_VERSION);
        return 1;
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) return fail("KVM_CREATE_VM");
    const size_t page = 4096;
    uint8_t* mem = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return fail("mmap");
#if defined(__x86_64__)
    mem[0] = 0xf4;  // hlt, at the real-mode entry below
    struct kvm_userspace_memory_region slot = {
        .slot = 0, .guest_phys_addr = 0x1000, .memory_size = page, .userspace_addr = (uintptr_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0) return fail("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) return fail("KVM_CREATE_VCPU");
    int runSize = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (runSize < 0) return fail("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run* run = mmap(NULL, (size_t)runSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) return fail("mmap kvm_run");
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return fail("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return fail("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return fail("KVM_SET_REGS");
    if (ioctl(vcpu, KVM_RUN, 0) < 0) return fail("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_HLT) {
        printf("KVM_RUN: exit reason %u, expected KVM_EXIT_HLT (%u)\n", run->exit_reason, KVM_EXIT_HLT);
        return 1;
    }
#else
#error "kvm_probe: no guest for this architecture yet"
#endif
    return 0;
}
