// populate against the real /dev/kvm: every population path this kernel
// offers is used and verified; the paths it lacks are skips with a reason.
#include "host_test_util.h"
#include "workloads/host_common.h"

#include <catch2/catch_test_macros.hpp>

using namespace gms;
using namespace host_test;

namespace {

const report::Check* find_check(const report::WorkloadResult& r, const std::string& prefix) {
    for (const auto& c : r.checks)
        if (c.name.rfind(prefix, 0) == 0)
            return &c;
    return nullptr;
}

} // namespace

TEST_CASE("populate: every available way populates and reads back", "[populate]") {
    auto p = make_profile("kind = \"populate\"\nthreads = 2\nops = 400\nmax_pages = 16");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(r.verification.mismatches == 0);
    CHECK(r.verification.pages_checked > 400);
    CHECK(op_count(r, "fallocate") > 0);
    CHECK(op_count(r, "memcpy") > 0);
    CHECK(op_count(r, "punch_hole") > 0);
    CHECK(r.expect.gmem_files.value() == 1);
    CHECK(r.expect.pages_added.has_value());
    CHECK(r.expect.pages_added.value() >= r.expect.pages_removed.value());
    CHECK(o.progress_ops == 400);

    const auto* fa = find_check(r, "populate by fallocate");
    const auto* mc = find_check(r, "populate by memcpy");
    const auto* wr = find_check(r, "populate by write()");
    const auto* pf = find_check(r, "populate by KVM_PRE_FAULT_MEMORY");
    REQUIRE(fa);
    REQUIRE(mc);
    REQUIRE(wr);
    REQUIRE(pf);
    CHECK(fa->outcome == report::Outcome::pass);
    CHECK(mc->outcome == report::Outcome::pass);

    const uint64_t write_flag = 1ull << p.bits.write;
    if (caps().has_gmem_flag(write_flag)) {
        CHECK(wr->outcome == report::Outcome::pass);
        CHECK(op_count(r, "pwrite") > 0);
    } else {
        // The path is a skip with its reason, and pwrite() is shown refused.
        CHECK(wr->outcome == report::Outcome::skip);
        CHECK(wr->reason.find("WRITE") != std::string::npos);
        CHECK(wr->reason.find("KVM_CAP_GUEST_MEMFD_FLAGS") != std::string::npos);
        CHECK(op_count(r, "pwrite") == 0);
        const auto* refused = find_check(r, "pwrite refused without the WRITE flag");
        REQUIRE(refused);
        CHECK(refused->outcome == report::Outcome::pass);
        CHECK(refused->observed.find("pwrite failed with E") != std::string::npos);
    }
    if (caps().pre_fault_memory) {
        CHECK(pf->outcome != report::Outcome::fail);
    } else {
        CHECK(pf->outcome == report::Outcome::skip);
        CHECK(pf->reason.find("KVM_CAP_PRE_FAULT_MEMORY=0") != std::string::npos);
        CHECK(op_count(r, "pre_fault") == 0);
    }
    CHECK(obs.created == 1);
    CHECK(obs.released == 1);
    CHECK(obs.violations.empty());
}

TEST_CASE("populate: same seed, same operations", "[populate]") {
    auto a = make_profile("kind = \"populate\"\nthreads = 2\nops = 200", "4MiB", 2, 77);
    auto b = make_profile("kind = \"populate\"\nthreads = 2\nops = 200", "4MiB", 2, 77);
    if (auto why = skip_reason(a))
        SKIP(*why);
    RecordingObserver oa, ob;
    auto ra = run(a, oa).result, rb = run(b, ob).result;
    INFO(summary(ra));
    REQUIRE(ra.outcome == report::Outcome::pass);
    REQUIRE(rb.outcome == report::Outcome::pass);
    for (const auto* op : {"fallocate", "memcpy", "punch_hole", "pwrite", "pre_fault"})
        CHECK(op_count(ra, op) == op_count(rb, op));
    CHECK(ra.expect.pages_added.value() == rb.expect.pages_added.value());
    CHECK(ra.expect.pages_removed.value() == rb.expect.pages_removed.value());
    CHECK(ra.expect.gmem_files.value() == 2);
}
