// Optional: a real distribution bzImage, when CONDUIT_TEST_BZIMAGE names one (e.g. a Debian
// vmlinuz extracted with dpkg-deb -x). Skipped otherwise; the synthetic kernels in
// linux_boot_test.cpp cover the same code always.
#include <gtest/gtest.h>

#include <cstdlib>

#include "vmm/x86/boot.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/image_file.h"
#include "vmm/x86/linux_boot_params.h"
#include "vmm/x86/linux_layout.h"
#include "x86_test_util.h"

namespace conduit::vmm::x86 {
namespace {

TEST(RealKernel, LoadsDistributionBzImage) {
    const char* path = std::getenv("CONDUIT_TEST_BZIMAGE");
    if (!path)
        GTEST_SKIP() << "set CONDUIT_TEST_BZIMAGE to a bzImage to run this test";
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
