// The real workloads driven with a probes Session as their observer: the
// page-cache balance must be verified, with the probes' page counts equal to
// the workloads' own. SKIPs with the reason where BPF or the workload cannot
// run. `[.capture]` (hidden) also records the streams for tests/data when
// GMS_CAPTURE_DIR is set.
#include "core/caps.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/run_control.h"
#include "core/util.h"
#include "kvm/kvm.h"
#include "probes/session.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <cstdlib>
#include <fmt/format.h>
#include <unistd.h>

using namespace gms;
using gms::report::Verdict;

namespace {

struct Ran {
    report::WorkloadResult result;
    std::vector<report::InvariantResult> invariants;
    nlohmann::json describe;
};

std::string profile_text(const std::string& kind, const std::string& extra) {
    return fmt::format(R"(name = "probes-{0}"
duration = "20s"
[guest_memfd]
size = "4MiB"
flags = ["mmap", "init_shared"]
[[workload]]
kind = "{0}"
duration = "1s"
{1}
)",
                       kind, extra);
}

// Runs one workload with a probes Session attached; SKIPs when it cannot.
Ran run_observed(const std::string& kind, const std::string& extra = "",
                 const char* capture_name = nullptr) {
    if (::geteuid() != 0)
        SKIP("probes need root");
    auto prof =
        profile::parse_profile(profile_text(kind, extra), "test:" + kind, {}, workloads::schemas());
    REQUIRE(prof.workloads.size() == 1);
    const auto& spec = prof.workloads[0];
    Caps caps = detect_caps(prof.abi_overrides);
    profile::apply_series_abi(prof, caps.series.abi);
    if (!caps.kvm_accessible)
        SKIP("no /dev/kvm: " + caps.kvm_error);
    const auto* info = workloads::find(kind);
    REQUIRE(info);
    if (auto why = info->skip_reason(caps, prof, spec))
        SKIP(kind + " cannot run here: " + *why);

    probes::Options o;
    o.record = capture_name != nullptr;
    std::unique_ptr<probes::Session> s;
    try {
        s = probes::Session::attach(o, caps);
    } catch (const EnvError& e) {
        SKIP(fmt::format("BPF not permitted here: {}", e.what()));
    }
    auto kvm = kvm::Kvm::open();
    RunControl control;
    workloads::Progress progress;
    workloads::Context ctx{kvm, caps, prof, spec, prof.seed, control, *s, progress, 1.0};
    ctx.started_ns = now_ns();
    Ran ran;
    ran.result = info->run(ctx);
    s->finish();
    ran.invariants = s->check({ran.result});
    ran.describe = s->describe();
    if (capture_name) {
        if (const char* dir = std::getenv("GMS_CAPTURE_DIR")) {
            nlohmann::json notes = {
                {"workload", kind},
                {"kernel", caps.kernel_release},
                {"lockdown", caps.lockdown},
                {"captured_by", "tests/integration/test_probes_workloads.cpp [.capture]"}};
            s->save_recording(fmt::format("{}/{}.jsonl", dir, capture_name), {ran.result}, notes);
        }
    }
    return ran;
}

report::InvariantResult invariant(const Ran& r, const std::string& name) {
    for (const auto& i : r.invariants)
        if (i.name == name)
            return i;
    FAIL("no invariant " << name);
    return {};
}

std::string dump(const report::InvariantResult& r) {
    std::string s = fmt::format("{}: {} ({})\n", r.name, report::to_string(r.verdict), r.reason);
    for (const auto& [k, v] : r.evidence)
        s += fmt::format("  {}={}\n", k, v);
    for (const auto& v : r.violations)
        s += "  violation: " + v + "\n";
    return s;
}

void expect_balanced(const Ran& ran) {
    INFO("workload: " << ran.result.name << " outcome=" << report::to_string(ran.result.outcome)
                      << " " << ran.result.reason);
    if (ran.result.outcome == report::Outcome::skip)
        SKIP("workload skipped: " + ran.result.reason);
    REQUIRE(ran.result.outcome == report::Outcome::pass);
    auto pc = invariant(ran, "page_cache_balance");
    INFO(dump(pc));
    INFO(ran.describe["drops"].dump());
    REQUIRE(pc.verdict == Verdict::verified);
    const auto& x = ran.result.expect;
    REQUIRE(x.gmem_files.has_value());
    CHECK(pc.evidence.at("files_announced") == x.gmem_files.value());
    // The workload's own counts, when it knows them, must equal the probes'.
    if (x.pages_added.has_value()) {
        CHECK(pc.evidence.at("pages_added") == x.pages_added.value());
        CHECK(pc.evidence.at("pages_removed") == x.pages_removed.value());
    }
    CHECK(pc.evidence.at("pages_added") > 0);
    CHECK(pc.evidence.at("pages_added") == pc.evidence.at("pages_removed"));
}

} // namespace

TEST_CASE("probes+workloads: host-fault page-cache balance", "[probes][workloads]") {
    expect_balanced(run_observed("host-fault"));
}

TEST_CASE("probes+workloads: guest-fault page-cache balance", "[probes][workloads]") {
    expect_balanced(run_observed("guest-fault"));
}

TEST_CASE("probes+workloads: punch-hole page-cache balance", "[probes][workloads]") {
    expect_balanced(run_observed("punch-hole"));
}

// Records real streams for tests/data (run by hand):
//   GMS_CAPTURE_DIR=tests/data build/tests/gms_integration_tests "[.capture]"
TEST_CASE("probes+workloads: capture recorded streams", "[.capture]") {
    // Bounded so the files stay small (a few hundred KiB).
    const std::vector<std::pair<std::string, std::string>> runs = {
        {"host-fault", "threads = 2\nops = 3000"},
        {"guest-fault", ""},
        {"punch-hole", "threads = 2\nops = 40"},
    };
    for (const auto& [kind, extra] : runs) {
        std::string name = fmt::format("stream-{}", kind);
        auto ran = run_observed(kind, extra, name.c_str());
        CHECK(ran.describe["drops"]["recording_dropped"] == 0);
        auto pc = invariant(ran, "page_cache_balance");
        INFO(dump(pc));
        CHECK(pc.verdict == Verdict::verified);
    }
}
