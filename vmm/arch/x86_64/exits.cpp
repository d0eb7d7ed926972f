#include "vmm/arch/x86_64/exits.h"

#include <cstring>
#include <span>

#include <fmt/format.h>

#include "base/log.h"
#include "vmm/arch/x86_64/kvm_x86.h"

namespace conduit::vmm::x86 {

bool X86Exits::handle(Vcpu& vcpu) {
    if (vcpu.run()->exit_reason != KVM_EXIT_IO) return false;
    portIo(vcpu);
    return true;
}

void X86Exits::portIo(Vcpu& vcpu) {
    kvm_run* run = vcpu.run();
    const auto& io = run->io;
    uint8_t* base = reinterpret_cast<uint8_t*>(run) + io.data_offset;
    const bool write = io.direction == KVM_EXIT_IO_OUT;
    // count > 1 for rep ins/outs: consecutive elements of `size` bytes, all at the same port.
    for (uint32_t i = 0; i < io.count; ++i) {
        std::span<uint8_t> data(base + i * io.size, io.size);
        bool claimed = write ? pio_.write(io.port, data) : pio_.read(io.port, data);
        stats_.countAccess(BusSpace::Pio, io.port, write, claimed);
        if (!claimed) {
            if (!write) std::memset(data.data(), 0xff, data.size());
            log::get("vmm").debug("{}: unclaimed PIO {} port {:#x} size {}", vcpu.name(), write ? "write" : "read",
                                  io.port, io.size);
        }
    }
}

std::string X86Exits::where(const Vcpu& vcpu) const {
    auto regs = getRegs(vcpu);
    return regs ? fmt::format("rip {:#x}", regs->rip) : "rip <unknown: " + regs.error().describe() + ">";
}

}  // namespace conduit::vmm::x86
