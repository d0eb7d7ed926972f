// A real distribution bzImage: CONDUIT_TEST_BZIMAGE when it names one, else Debian's cloud kernel
// that ctest's fixture debian_kernel prepared (tests/integration/fetch-debian-kernel.sh; this
// binary's tests require that fixture, tests/unit/CMakeLists.txt). Loaded into guest memory only,
// no KVM: the Linux-boot tests boot it.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "vmm/arch/x86_64/boot.h"
#include "vmm/arch/x86_64/bzimage.h"
#include "vmm/image_file.h"
#include "vmm/arch/x86_64/linux_boot_params.h"
#include "vmm/arch/x86_64/linux_layout.h"
#include "x86_test_util.h"

namespace conduit::vmm::x86 {
namespace {

std::string distributionBzImage() {
    if (const char* path = std::getenv("CONDUIT_TEST_BZIMAGE")) return path;
    FILE* p = ::popen(CONDUIT_SOURCE_DIR "/tests/integration/fetch-debian-kernel.sh --offline", "r");
    if (!p) return {};
    char line[4096] = {};
    bool got = std::fgets(line, sizeof line, p) != nullptr;
    if (::pclose(p) != 0 || !got) return {};
    std::string dir(line);
    while (!dir.empty() && dir.back() == '\n') dir.pop_back();
    return dir + "/vmlinuz";
}

TEST(RealKernel, LoadsDistributionBzImage) {
    const std::string image = distributionBzImage();
    ASSERT_FALSE(image.empty()) << "no kernel: set CONDUIT_TEST_BZIMAGE, or run the ctest fixture debian_kernel";
    const char* path = image.c_str();
    auto bytes = readImageFile(path, "kernel");
    ASSERT_TRUE(bytes.ok()) << bytes.error().describe();
    auto hdr = readSetupHeader(*bytes);
    ASSERT_TRUE(hdr.ok()) << hdr.error().describe();
    auto payload = extractBzImagePayloadWithFormat(*bytes);
    ASSERT_TRUE(payload.ok()) << payload.error().describe();
    EXPECT_NE(payload->compression, Compression::Unknown);
    std::printf("protocol %x, init_size %#x, pref_address %#llx, payload %zu bytes %s\n",
                unsigned{hdr->version}, unsigned{hdr->init_size}, (unsigned long long)hdr->pref_address,
                payload->data.size(), std::string(compressionName(payload->compression)).c_str());

    test::Guest g = test::makeGuest(512 * memory::MiB);
    KernelConfig k;
    k.path = path;
    auto plan = loadLinux(g.mem, g.layout, k, 2);
    ASSERT_TRUE(plan.ok()) << plan.error().describe();
    std::printf("%s\n", plan->description.c_str());
    EXPECT_EQ(plan->vcpus[0].regs.rip % 0x200000, 0x200u);
    auto bp = test::readGuest<linux_boot::BootParams>(g.mem, kBootParamsAddr);
    EXPECT_EQ(bp.hdr.header, linux_boot::kHeaderMagic);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
}

}  // namespace
}  // namespace conduit::vmm::x86
