// pin-convert against the real /dev/kvm. Where the kernel has the in-place
// conversion series, every pin method's case passes or skips with why its pin
// could not be taken (the judge decides: workloads/pin_judge.h); elsewhere
// the workload skips naming each missing piece, and this test checks that
// reason and SKIPs. A wrong ioctl number in the profile makes the ioctl
// unknown even on a kernel with the series: a skip naming ENOTTY, never a pass.
#include "host_test_util.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace gms;
using namespace host_test;
using Catch::Matchers::ContainsSubstring;

namespace {

profile::Profile pin_profile(const std::string& extra = "") {
    std::string text = fmt::format(
        "name = \"test\"\nseed = 3\nduration = \"30s\"\n{}\n[vm]\ntype = \"sw_protected\"\n"
        "[guest_memfd]\nsize = \"1MiB\"\nflags = [\"mmap\"]\n[[workload]]\nkind = "
        "\"pin-convert\"\npages = 8\npin_first = 2\npin_stride = 3\npin_count = 2\n",
        extra);
    return profile::parse_profile(text, "test", {}, workloads::schemas());
}

} // namespace

TEST_CASE("pin-convert: each pin method passes, or the workload skips with the reason",
          "[pin-convert]") {
    auto p = pin_profile();
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs, 20);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.pin_convert);
    const auto& s = *r.pin_convert;
    if (r.outcome == report::Outcome::skip) {
        CHECK(s.cases.empty());
        CHECK(s.skip_reason == r.reason);
        CHECK(r.ops.empty());
        // Each missing piece is named with its evidence.
        const auto& c = caps();
        CHECK((r.reason.find("VM type lacks private memory") != std::string::npos) ==
              !c.vm_type_supported(uapi::kX86SwProtectedVm));
        if (!c.series.fingerprint.conversion.present)
            CHECK_THAT(r.reason, ContainsSubstring("gives ENOTTY"));
        SKIP("pin-convert cannot run here: " + r.reason);
    }
    REQUIRE(r.outcome != report::Outcome::error);
    REQUIRE(s.cases.size() == 2);
    unsigned ran = 0;
    for (const auto& c : s.cases) {
        INFO(c.method << ": " << c.reason);
        CHECK(c.outcome != report::Outcome::fail);
        if (c.outcome == report::Outcome::skip) {
            CHECK_FALSE(c.reason.empty());
        } else {
            ++ran;
            CHECK(c.error_offset == c.expected_error_offset);
        }
    }
    CHECK(r.expect.gmem_files == s.cases.size());
    if (!ran)
        SKIP("no pin method could pin a guest_memfd page here");
}

TEST_CASE("pin-convert: an ioctl number the kernel does not know is a skip, not a pass",
          "[pin-convert]") {
    auto p = pin_profile("[abi]\nset_memory_attributes2_nr = 0xfe\n");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs, 20);
    const auto& r = o.result;
    INFO(summary(r));
    CHECK(r.outcome == report::Outcome::skip);
    CHECK_THAT(r.reason, ContainsSubstring("nr 0xfe"));
    CHECK_THAT(r.reason, ContainsSubstring("ENOTTY"));
}
