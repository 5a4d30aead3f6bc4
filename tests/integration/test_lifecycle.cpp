// lifecycle against the real /dev/kvm: VMs, guest_memfds and bindings torn
// down in every order, data surviving the VM, every file released.
#include "host_test_util.h"
#include "workloads/host_common.h"

#include <catch2/catch_test_macros.hpp>

using namespace gms;
using namespace host_test;

TEST_CASE("lifecycle: every scenario, every file released", "[lifecycle]") {
    auto p = make_profile("kind = \"lifecycle\"\nops = 60");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    uint64_t scenarios = 0;
    for (const auto* k :
         {"create_destroy", "bind_unbind", "close_while_bound", "destroy_vm_first"}) {
        INFO(k);
        CHECK(op_count(r, k) > 0);
        scenarios += op_count(r, k);
    }
    CHECK(scenarios == 60);
    CHECK(o.progress_ops == 60);
    // One guest_memfd per scenario, each created and released exactly once.
    CHECK(r.expect.gmem_files.value() == 60);
    CHECK(op_count(r, "create_gmem") == 60);
    CHECK(op_count(r, "create_vm") == 60);
    CHECK(op_count(r, "bind") > 0);
    CHECK(op_count(r, "bind") >= op_count(r, "unbind"));
    CHECK(obs.created == 60);
    CHECK(obs.released == 60);
    CHECK(obs.live.empty());
    CHECK(obs.violations.empty());
    if (caps().has_gmem_flag(workloads::host::kMmapFlags)) {
        CHECK(r.verification.pages_checked > 0);
        CHECK(r.expect.pages_added.value() == r.expect.pages_removed.value());
    }
    CHECK(r.verification.mismatches == 0);
}

TEST_CASE("lifecycle: the guest_memfd outlives its VM with its data", "[lifecycle]") {
    auto p = make_profile(
        "kind = \"lifecycle\"\nops = 10\nkinds = [\"destroy_vm_first\"]\ntouch_pages = 32");
    if (auto why = skip_reason(p))
        SKIP(*why);
    if (!caps().has_gmem_flag(workloads::host::kMmapFlags))
        SKIP("guest_memfd MMAP|INIT_SHARED not supported: no mapping to check the data through");
    RecordingObserver obs;
    auto r = run(p, obs).result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(op_count(r, "destroy_vm_first") == 10);
    CHECK(op_count(r, "fallocate_after_destroy") == 10);
    CHECK(op_count(r, "punch_after_destroy") == 10);
    CHECK(op_count(r, "destroy_vm") == 10);
    // 32 pages written before and 32 after the VM went, each read back, plus the full re-reads.
    CHECK(r.verification.pages_checked >= 10 * 64);
    CHECK(obs.released == 10);
    CHECK(obs.violations.empty());
}

TEST_CASE("lifecycle: close while bound, threads in parallel", "[lifecycle]") {
    auto p =
        make_profile("kind = \"lifecycle\"\nops = 30\nthreads = 2\nkinds = [\"close_while_bound\", "
                     "\"bind_unbind\"]");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto r = run(p, obs).result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(op_count(r, "close_while_bound") + op_count(r, "bind_unbind") == 30);
    CHECK(op_count(r, "close_while_bound") > 0);
    CHECK(op_count(r, "unbind_after_close") > 0);
    CHECK(r.expect.gmem_files.value() == 30);
    CHECK(obs.released == 30);
    CHECK(obs.violations.empty());
}
