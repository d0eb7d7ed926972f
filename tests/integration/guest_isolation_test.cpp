// Issue 5, item 4: guest isolation. A hostile guest drives every emulated register of every device
// (the UART, the PCI root's CF8/CFC and ECAM, both passed-through devices' config space, trapped
// BAR registers, MSI-X tables and PBAs, and the edu DMA engines with biased addresses) with random
// sequences from a fixed seed. The accesses are made in-process through the Machine's buses, the
// very entry points a vCPU exit reaches, so many iterations run fast. Afterwards:
//  - no device DMA touched host memory outside guest RAM or a mapped BAR (every page the simulated
//    IOMMU let through is audited), and the hostile DMAs did happen and were blocked;
//  - the IOMMU mappings of guest RAM are exactly those before;
//  - the VMM is alive: the same Machine then boots its payload, which reports through the exit
//    device as usual.
// The exit device's port is left out: writing it is the guest's legitimate "power off".
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <unistd.h>
#include <cstring>

#include "base/log.h"
#include "vmm/arch/x86_64/payload_abi.h"
#include "memory/address_layout.h"
#include "tests/hostsim/sim_host.h"
#include "tests/integration/test_env.h"
#include "vmm/config.h"
#include "vmm/machine.h"

namespace conduit::test {
namespace {

class GuestIsolation : public ::testing::TestWithParam<std::string> {};

// Host memory a device may reach: guest RAM and the BAR mmaps (peer-to-peer).
struct Reachable {
    std::vector<std::pair<const uint8_t*, size_t>> ranges;
    bool contains(const uint8_t* p, size_t n) const {
        for (auto& [base, size] : ranges)
            if (p >= base && n <= size && static_cast<size_t>(p - base) <= size - n) return true;
        return false;
    }
};

TEST_P(GuestIsolation, HostileRegisterTrafficKeepsTheVmmAliveAndDmaInsideWhatIsMapped) {
    REQUIRE_KVM();
    const std::string json = fmt::format(R"({{
  "vcpus": 1, "memory": {{"size_mib": 64}},
  "payload": {{"path": "{}"}},
  "serial": {{"output": "none", "input": "none"}},
  "vfio_host": {{"kind": "simulated", "devices": [
      {{"bdf": "0000:01:00.0", "model": "edu"}},
      {{"bdf": "0000:02:00.0", "model": "edu", "msi_vectors": 4}}]}},
  "devices": [
    {{"type": "vfio-pci", "host": "0000:01:00.0", "backend": "{}"}},
    {{"type": "vfio-pci", "host": "0000:02:00.0", "backend": "{}"}}]
}})",
                                         payloadPath("hello"), GetParam(), GetParam());
    auto config = vmm::parseConfig(json, "isolation.json");
    ASSERT_TRUE(config.ok()) << config.error().describe();
    log::setLevel("error");  // the hostile traffic is meant to provoke warnings; thousands of them
    auto created = vmm::Machine::create(*config);
    ASSERT_TRUE(created.ok()) << created.error().describe();
    vmm::Machine& m = **created;
    hostsim::SimHost& sim = *m.passthrough().simHost();

    Reachable ram;
    for (auto& r : m.memory().regions()) ram.ranges.push_back({r->host(), r->gpa().size});
    auto ramMappings = [&] {
        std::vector<hostsim::SimHost::DmaMappingView> v;
        for (auto& mp : sim.dmaMappings())
            if (ram.contains(mp.host, mp.size)) v.push_back(mp);
        return v;
    };
    const auto ramBefore = ramMappings();
    ASSERT_FALSE(ramBefore.empty());

    size_t audited = 0;
    std::vector<std::string> violations;
    sim.setDmaAudit([&](const hostsim::SimHost::DmaAccess& a) {
        ++audited;
        Reachable ok = ram;
        for (auto& [p, n] : sim.barMmaps()) ok.ranges.push_back({static_cast<const uint8_t*>(p), n});
        if (!ok.contains(a.host, a.size) && violations.size() < 10)
            violations.push_back(fmt::format("{} DMA {} iova {:#x} +{:#x} touched host {} outside guest RAM and BAR mmaps",
                                             a.bdf, a.write ? "write" : "read", a.iova, a.size,
                                             static_cast<const void*>(a.host)));
    });

    const uint64_t ecam = m.layout().pciEcam().base;
    auto cfgWrite = [&](unsigned dev, unsigned off, uint32_t v, unsigned size) {
        uint8_t b[4];
        std::memcpy(b, &v, 4);
        m.mmioBus().write(ecam + (dev << 15) + off, std::span<const uint8_t>(b, size));
    };
    // A friendly start, so the BARs are decoded and the DMA engines reachable: memory decode and
    // bus mastering on both devices.
    for (unsigned dev : {1u, 2u}) cfgWrite(dev, 0x04, 0x6, 2);

    std::mt19937_64 rng(0xC0DE5u);
    auto pick = [&](uint64_t n) { return n ? rng() % n : 0; };
    const uint64_t ramSize = m.memory().totalBytes();
    std::vector<uint64_t> interesting = {0,           ~0ull,          0xffffffffull, ramSize - 0x800, ramSize,
                                         0xfee00000,  0xe0000000,     0xc0000000,    0x100000000ull, 0x40000,
                                         0x40800,     0x40ff8,        0x1000,        0x8,            0xfff};
    const size_t iterations = 1000000;
    size_t accesses = 0;
    for (size_t i = 0; i < iterations; ++i) {
        const unsigned size = 1u << pick(4);  // 1, 2, 4, 8
        uint64_t value = rng();
        if (pick(2)) value = interesting[pick(interesting.size())] + (pick(4) ? 0 : pick(0x1000));
        uint8_t buf[8];
        std::memcpy(buf, &value, 8);
        const bool write = pick(4) != 0;
        const unsigned what = static_cast<unsigned>(pick(100));
        if (i % 512 == 0) {
            // Now and then the guest turns memory decode and bus mastering back on.
            for (unsigned dev : {1u, 2u}) cfgWrite(dev, 0x04, 0x6, 2);
        }
        if (what < 15) {
            // A whole DMA through an edu engine wherever its BAR0 is decoded now: the device
            // buffer on one side, on the other an address in RAM, near its end, in the MSI window,
            // in a BAR or anywhere.
            const unsigned dev = 1 + static_cast<unsigned>(pick(2));
            uint8_t raw[4];
            m.mmioBus().read(ecam + (dev << 15) + 0x10, raw);
            uint32_t bar0;
            std::memcpy(&bar0, raw, 4);
            bar0 &= ~0xfu;
            auto reg = [&](uint64_t off, uint64_t v) { m.mmioBus().write(bar0 + off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 8)); };
            const uint64_t devSide = 0x40000 + pick(0x1000);
            const uint64_t hostSide = pick(2) ? pick(ramSize) : interesting[pick(interesting.size())] + pick(0x2000);
            const bool toRam = pick(2);
            reg(0x80, toRam ? devSide : hostSide);
            reg(0x88, toRam ? hostSide : devSide);
            reg(0x90, 1 + pick(0x1000));
            reg(0x98, 1 | (toRam ? 2 : 0) | (pick(2) << 2));
        } else if (what < 40) {
            // Config space of the bridge, both devices or an absent slot, mostly the header.
            const unsigned dev = static_cast<unsigned>(pick(4));
            const unsigned off = static_cast<unsigned>(pick(10) ? pick(0x100) : pick(0x1000)) & ~(std::min(size, 4u) - 1);
            const uint64_t gpa = ecam + (dev << 15) + off;
            write ? m.mmioBus().write(gpa, std::span<const uint8_t>(buf, std::min(size, 4u)))
                  : m.mmioBus().read(gpa, std::span<uint8_t>(buf, std::min(size, 4u)));
        } else if (what < 88) {
            // Any range the MMIO bus holds now (trapped BAR registers, MSI-X table/PBA, ECAM),
            // mostly its first 256 bytes: the edu registers and DMA engine live there.
            auto entries = m.mmioBus().entries();
            const auto& e = entries[pick(entries.size())];
            const uint64_t span = std::min<uint64_t>(e.size, pick(4) ? 0x100 : e.size);
            if (span < size) continue;
            uint64_t off = pick(span - size + 1) & ~uint64_t(size - 1);
            if (pick(3) == 0) {  // the DMA engine: source, destination, count, command
                static const uint64_t regs[] = {0x80, 0x88, 0x90, 0x98};
                off = regs[pick(4)];
                if (off == 0x90) value = pick(0x1001);
                if (off == 0x98) value = 1 | (pick(2) << 1) | (pick(2) << 2);
                std::memcpy(buf, &value, 8);
            }
            if (off + size > e.size) continue;
            write ? m.mmioBus().write(e.base + off, std::span<const uint8_t>(buf, size))
                  : m.mmioBus().read(e.base + off, std::span<uint8_t>(buf, size));
        } else {
            // Any port the PIO bus holds except the exit device: the UART, CF8/CFC, I/O BARs.
            auto entries = m.pioBus().entries();
            const auto& e = entries[pick(entries.size())];
            if (e.base == CONDUIT_EXIT_PORT) continue;
            const unsigned psize = std::min(size, 4u);
            if (e.size < psize) continue;
            const uint64_t off = pick(e.size - psize + 1);
            write ? m.pioBus().write(e.base + off, std::span<const uint8_t>(buf, psize))
                  : m.pioBus().read(e.base + off, std::span<uint8_t>(buf, psize));
        }
        ++accesses;
        if (i % 10000 == 9999) {
            ASSERT_EQ(ramMappings(), ramBefore) << "the IOMMU mappings of guest RAM changed by iteration " << i;
            ASSERT_TRUE(violations.empty()) << violations.front();
        }
    }
    sim.setDmaAudit(nullptr);
    EXPECT_TRUE(violations.empty()) << violations.front();
    EXPECT_EQ(ramMappings(), ramBefore);
    // The traffic reached the DMA engines: some DMA went through, some was blocked.
    size_t blocked = sim.dmaFaults().size();
    std::printf("%s: %zu hostile accesses, %zu DMA pages let through (all inside guest RAM or a BAR), %zu DMAs "
                "blocked by the IOMMU or bus-master off\n",
                GetParam().c_str(), accesses, audited, blocked);
    EXPECT_GT(audited, 0u) << "no DMA reached memory: the generator does not exercise the DMA engines";
    EXPECT_GT(blocked, 0u) << "no DMA was blocked: the generator never aimed outside what is mapped";

    // Alive: the devices still answer as they should once a guest programs them sanely again.
    for (unsigned dev : {1u, 2u}) {
        uint8_t id[4];
        ASSERT_TRUE(m.mmioBus().read(ecam + (dev << 15), id));
        uint32_t vendorDevice;
        std::memcpy(&vendorDevice, id, 4);
        EXPECT_EQ(vendorDevice, 0x11e81234u) << "device " << dev;
        const uint32_t bar0 = 0xc0000000u + (dev << 20);
        cfgWrite(dev, 0x04, 0x0, 2);
        cfgWrite(dev, 0x10, bar0, 4);
        cfgWrite(dev, 0x04, 0x2, 2);
        uint8_t ident[4] = {};
        ASSERT_TRUE(m.mmioBus().read(bar0, ident)) << "BAR0 of device " << dev << " not decoded at " << bar0;
        uint32_t identValue;
        std::memcpy(&identValue, ident, 4);
        EXPECT_EQ(identValue, 0x010000edu) << "device " << dev;
    }
    // And the same VMM still runs its vCPU to an end and reports it. What end is the guest's own
    // business: the hostile traffic programmed MSI-X/MSI messages at random, so it may have sent
    // its vCPU an NMI or an INIT, which this payload (no IDT, no BIOS at 0xfff0) does not survive;
    // the VMM then reports a shutdown (0) or the vCPU's failure on one line. A guest's boot quiets
    // the UART first (its interrupts may have been left on, and this payload has no IRQ 4 handler).
    const uint8_t zero = 0;
    m.pioBus().write(0x3f9, std::span<const uint8_t>(&zero, 1));  // IER
    m.pioBus().write(0x3fc, std::span<const uint8_t>(&zero, 1));  // MCR (OUT2 gates the IRQ)
    log::setLevel("info");
    auto r = m.run();
    if (r.ok())
        EXPECT_EQ(*r, 0) << "hello exits with 0, a shutdown reports 0";
    else
        EXPECT_EQ(r.error().describe().find('\n'), std::string::npos) << r.error().describe();
    std::printf("%s: the guest's run after the hostile traffic: %s\n", GetParam().c_str(),
                r.ok() ? fmt::format("returned {}", *r).c_str() : r.error().describe().c_str());
}

INSTANTIATE_TEST_SUITE_P(Backends, GuestIsolation, ::testing::Values("type1", "iommufd"));

}  // namespace
}  // namespace conduit::test
