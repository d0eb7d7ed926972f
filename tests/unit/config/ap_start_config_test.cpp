// "payload": {"ap_start": ...}: parsing, default, refusal of contradictions (docs/config.md).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "vmm/config.h"

namespace conduit::vmm {
namespace {

namespace fs = std::filesystem;

class ApStartConfigTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/conduit-apstart-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        std::ofstream(dir / "p.bin") << "x";
        file = dir / "vm.json";
    }
    void TearDown() override { fs::remove_all(dir); }
    Result<VmConfig> parse(const std::string& payloadExtra) const {
        return parseConfig("{\"vcpus\": 2, \"payload\": {\"path\": \"p.bin\"" + payloadExtra + "}}", file);
    }
    fs::path dir;
    fs::path file;
};

TEST_F(ApStartConfigTest, DefaultsToEntry) {
    auto r = parse("");
    ASSERT_TRUE(r.ok()) << r.error().what();
    EXPECT_EQ(r->payload->apStart, PayloadApStart::Entry);
    EXPECT_EQ(describeConfig(r.value()).find("INIT/SIPI"), std::string::npos);
}

TEST_F(ApStartConfigTest, ParsesBothValues) {
    auto e = parse(", \"ap_start\": \"entry\"");
    ASSERT_TRUE(e.ok()) << e.error().what();
    EXPECT_EQ(e->payload->apStart, PayloadApStart::Entry);
    auto s = parse(", \"ap_start\": \"sipi\"");
    ASSERT_TRUE(s.ok()) << s.error().what();
    EXPECT_EQ(s->payload->apStart, PayloadApStart::Sipi);
    EXPECT_NE(describeConfig(s.value()).find("APs started by the guest (INIT/SIPI)"), std::string::npos)
        << describeConfig(s.value());
}

TEST_F(ApStartConfigTest, RefusesUnknownValueAndNamesTheKey) {
    auto r = parse(", \"ap_start\": \"init\"");
    ASSERT_FALSE(r.ok());
    const std::string msg = r.error().what();
    EXPECT_NE(msg.find("/payload/ap_start"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\"sipi\""), std::string::npos) << msg;
}

TEST_F(ApStartConfigTest, Real16AcceptsSipiAndRefusesEntry) {
    auto ok = parse(", \"mode\": \"real16\", \"load_address\": \"0x8000\", \"ap_start\": \"sipi\"");
    ASSERT_TRUE(ok.ok()) << ok.error().what();
    EXPECT_EQ(ok->payload->apStart, PayloadApStart::Sipi);
    auto bad = parse(", \"mode\": \"real16\", \"load_address\": \"0x8000\", \"ap_start\": \"entry\"");
    ASSERT_FALSE(bad.ok());
    const std::string msg = bad.error().what();
    EXPECT_NE(msg.find("/payload/ap_start"), std::string::npos) << msg;
    EXPECT_NE(msg.find("real16"), std::string::npos) << msg;
}

}  // namespace
}  // namespace conduit::vmm
