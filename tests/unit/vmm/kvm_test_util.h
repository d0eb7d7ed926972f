// Helpers for vmm unit tests on the real /dev/kvm: a VM with RAM at GPA 0 and a long-mode vCPU
// set-up written here (GDT, identity page tables), so tiny hand-assembled guests can run. The
// guests are x86 code: the x86 platform's KVM helpers (vmm/arch/x86_64/kvm_x86.h) set them up.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "memory/guest_memory.h"
#include "tests/common/require_kvm.h"
#include "vmm/arch/x86_64/kvm_x86.h"
#include "vmm/kvm.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

namespace conduit::vmm::test {


constexpr uint64_t kGdt = 0x1000;
constexpr uint64_t kPml4 = 0x10000;
constexpr uint64_t kCode = 0x100000;
constexpr uint64_t kStackTop = 0x80000;
constexpr uint64_t kRamSize = 4 * memory::MiB;

// A VM with `kRamSize` of RAM at GPA 0 mapped through the GuestMemory listener.
struct TestVm {
    std::unique_ptr<Kvm> kvm;
    std::unique_ptr<Vm> vm;
    std::unique_ptr<memory::GuestMemory> mem;
    bool irqchip = false;

    ~TestVm() {
        if (mem && vm) mem->removeListener(vm.get());
    }

    void init(bool withIrqchip) {
        auto k = Kvm::open();
        ASSERT_TRUE(k.ok()) << k.error().describe();
        kvm = std::make_unique<Kvm>(std::move(k).value());
        auto v = Vm::create(*kvm);
        ASSERT_TRUE(v.ok()) << v.error().describe();
        vm = std::move(v).value();
        if (withIrqchip) {
            auto r = x86::createIrqchip(*vm);
            ASSERT_TRUE(r.ok()) << r.error().describe();
            irqchip = true;
        }
        auto m = memory::GuestMemory::create({{0, kRamSize}}, {});
        ASSERT_TRUE(m.ok()) << m.error().describe();
        mem = std::make_unique<memory::GuestMemory>(std::move(m).value());
        auto l = mem->addListener(vm.get());
        ASSERT_TRUE(l.ok()) << l.error().describe();
        writeTables();
    }

    // Identity map of 0-4 GiB with 2 MiB pages (user bit set) and a flat 64-bit GDT.
    void writeTables() {
        uint8_t* base = mem->hostPointer(0, kRamSize).value();
        auto* pml4 = reinterpret_cast<uint64_t*>(base + kPml4);
        auto* pdpt = reinterpret_cast<uint64_t*>(base + kPml4 + 0x1000);
        auto* pd = reinterpret_cast<uint64_t*>(base + kPml4 + 0x2000);
        pml4[0] = (kPml4 + 0x1000) | 7;
        for (int i = 0; i < 4; ++i) pdpt[i] = (kPml4 + 0x2000 + i * 0x1000) | 7;
        for (uint64_t i = 0; i < 2048; ++i) pd[i] = (i << 21) | 0x87;
        auto* gdt = reinterpret_cast<uint64_t*>(base + kGdt);
        gdt[0] = 0;
        gdt[1] = 0x00af9b000000ffffull;  // 0x08 64-bit code
        gdt[2] = 0x00cf93000000ffffull;  // 0x10 data
    }

    void loadCode(const std::vector<uint8_t>& code, uint64_t at = kCode) {
        ASSERT_TRUE(mem->write(at, code).ok());
    }

    // A vCPU in 64-bit mode at CPL0 with rip = `rip`.
    std::unique_ptr<Vcpu> longModeVcpu(unsigned index = 0, uint64_t rip = kCode) {
        auto c = vm->createVcpu(index);
        EXPECT_TRUE(c.ok()) << c.error().describe();
        if (!c.ok()) return nullptr;
        auto vcpu = std::move(c).value();
        EXPECT_TRUE(x86::setCpuid(*vcpu, x86::supportedCpuid(*kvm).value()).ok());
        kvm_sregs s = x86::getSregs(*vcpu).value();
        kvm_segment code{};
        code.base = 0;
        code.limit = 0xffffffff;
        code.selector = 0x08;
        code.type = 11;
        code.present = 1;
        code.s = 1;
        code.l = 1;
        code.g = 1;
        kvm_segment data = code;
        data.selector = 0x10;
        data.type = 3;
        data.l = 0;
        data.db = 1;
        s.cs = code;
        s.ds = s.es = s.fs = s.gs = s.ss = data;
        s.gdt.base = kGdt;
        s.gdt.limit = 23;
        s.idt.base = 0;
        s.idt.limit = 0;
        s.cr0 = 0x80050033;
        s.cr3 = kPml4;
        s.cr4 = 0x6a0;
        s.efer = 0x500;
        EXPECT_TRUE(x86::setSregs(*vcpu, s).ok());
        kvm_regs r{};
        r.rip = rip;
        r.rsp = kStackTop - index * 0x1000;
        r.rflags = 2;
        r.rsi = index;
        EXPECT_TRUE(x86::setRegs(*vcpu, r).ok());
        if (irqchip && index > 0) {
            EXPECT_TRUE(vcpu->setMpState(KVM_MP_STATE_RUNNABLE).ok());
        }
        return vcpu;
    }
};

}  // namespace conduit::vmm::test
