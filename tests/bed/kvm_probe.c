// kvm_probe: exits 0 iff this machine's /dev/kvm can run a guest, else 1 with one line saying
// which step failed and why. "Usable" means more than a device node: the node exists on hosts whose
// KVM cannot create a VM (a kernel that is itself a guest without nested virtualisation), so the
// probe opens it, checks the API version, creates a VM with one page of RAM and a vCPU, and runs
// the vCPU until the guest's first instruction comes back: on x86_64 `hlt` as KVM_EXIT_HLT; on
// arm64 (KVM_ARM_PREFERRED_TARGET, KVM_ARM_VCPU_INIT, the PC set through KVM_SET_ONE_REG) a store
// of 42 to an address outside every memslot as a KVM_EXIT_MMIO write of 8 bytes with that value.
// On arm64 it prints what it saw on success too (the arm64 bed's smoke test shows it); it is
// cross-built statically there (tests/bed/CMakeLists.txt), since L1 runs no x86 binary.
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
#include <stddef.h>
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
    const uint64_t guestBase = 0x1000;
    mem[0] = 0xf4;  // hlt, at the real-mode entry below
#elif defined(__aarch64__)
    // At the guest's reset PC, MMU off, EL1: x2 = 0x100000 (no memslot there), x1 = 42, str x1, [x2].
    const uint64_t guestBase = 0x10000, mmioAddr = 0x100000;
    const uint32_t code[] = {
        0xd2a00202,  // movz x2, #0x10, lsl #16
        0xd2800541,  // movz x1, #42
        0xf9000041,  // str x1, [x2]
        0x14000000,  // b . (never reached: the store exits first)
    };
    memcpy(mem, code, sizeof code);
#else
#error "kvm_probe: no guest for this architecture yet"
#endif
    // One page of RAM at guestBase holding the code above, and one vCPU with its kvm_run.
    struct kvm_userspace_memory_region slot = {
        .slot = 0, .guest_phys_addr = guestBase, .memory_size = page, .userspace_addr = (uintptr_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0) return fail("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) return fail("KVM_CREATE_VCPU");
    int runSize = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (runSize < 0) return fail("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run* run = mmap(NULL, (size_t)runSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) return fail("mmap kvm_run");
#if defined(__x86_64__)
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) return fail("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) return fail("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = guestBase, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) return fail("KVM_SET_REGS");
    if (ioctl(vcpu, KVM_RUN, 0) < 0) return fail("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_HLT) {
        printf("KVM_RUN: exit reason %u, expected KVM_EXIT_HLT (%u)\n", run->exit_reason, KVM_EXIT_HLT);
        return 1;
    }
#elif defined(__aarch64__)
    struct kvm_vcpu_init init;
    memset(&init, 0, sizeof init);
    if (ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0) return fail("KVM_ARM_PREFERRED_TARGET");
    if (ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0) return fail("KVM_ARM_VCPU_INIT");
    uint64_t pc = guestBase;
    struct kvm_one_reg reg = {
        .id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
              (offsetof(struct kvm_regs, regs.pc) / sizeof(uint32_t)),
        .addr = (uintptr_t)&pc};
    if (ioctl(vcpu, KVM_SET_ONE_REG, &reg) < 0) return fail("KVM_SET_ONE_REG(pc)");
    if (ioctl(vcpu, KVM_RUN, 0) < 0) return fail("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_MMIO) {
        printf("KVM_RUN: exit reason %u, expected KVM_EXIT_MMIO (%u)\n", run->exit_reason, KVM_EXIT_MMIO);
        return 1;
    }
    uint64_t value = 0;
    memcpy(&value, run->mmio.data, sizeof value);
    if (run->mmio.phys_addr != mmioAddr || !run->mmio.is_write || run->mmio.len != 8 || value != 42) {
        printf("KVM_EXIT_MMIO: addr 0x%llx len %u write %u data %llu, expected a write of 42 (8 bytes) at 0x%llx\n",
               (unsigned long long)run->mmio.phys_addr, run->mmio.len, run->mmio.is_write,
               (unsigned long long)value, (unsigned long long)mmioAddr);
        return 1;
    }
    printf("kvm_probe: KVM_ARM_PREFERRED_TARGET target %u, vCPU initialised, KVM_EXIT_MMIO write of %llu at 0x%llx\n",
           init.target, (unsigned long long)value, (unsigned long long)run->mmio.phys_addr);
#endif
    return 0;
}
