#include "reports/ktap.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <sstream>

using namespace gms::report;
using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::EndsWith;
using Catch::Matchers::StartsWith;

namespace {

Report passing() {
    Report r;
    r.tool_version = "0.1.0";
    r.command = "run";
    r.profile = {{"name", "unit"}};
    WorkloadResult w;
    w.name = "host-fault";
    w.label = "hf";
    w.ops["fault"].record(100, 4096);
    w.verification.pages_checked = 1;
    w.checks.push_back({"a.b", Outcome::pass, "", "", ""});
    w.checks.push_back({"a.c", Outcome::skip, "", "", "no WRITE flag"});
    r.workloads.push_back(w);
    r.invariants.push_back({"page_cache_balance", Verdict::verified, "", "tracepoint", {}, {}});
    r.invariants.push_back({"direct_map", Verdict::unverifiable, "no fentry", "", {}, {}});
    return r;
}

std::vector<std::string> lines(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);)
        out.push_back(l);
    return out;
}

} // namespace

TEST_CASE("ktap: a passing run", "[ktap]") {
    std::string k = to_ktap(passing());
    auto l = lines(k);
    REQUIRE(l.size() > 3);
    CHECK(l[0] == "KTAP version 1");
    CHECK(l[1] == "1..3"); // workload, invariants, kernel log
    CHECK_THAT(k, ContainsSubstring("  KTAP version 1\n  # Subtest: workload.hf\n  1..3\n"));
    CHECK_THAT(k, ContainsSubstring("  ok 1 run\n  ok 2 a.b\n  ok 3 a.c # SKIP no WRITE flag\n"
                                    "ok 1 workload.hf\n"));
    CHECK_THAT(k, ContainsSubstring("  ok 1 page_cache_balance\n"
                                    "  ok 2 direct_map # SKIP unverifiable: no fentry\n"
                                    "ok 2 invariants\n"));
    CHECK_THAT(
        k, ContainsSubstring("  # Subtest: kernel_log\n  1..1\n  ok 1 clean\nok 3 kernel_log\n"));
    CHECK_THAT(k, EndsWith("# Totals: pass:4 fail:0 xfail:0 xpass:0 skip:2 error:0\n"));
    CHECK_THAT(k, !ContainsSubstring("not ok"));
}

TEST_CASE("ktap: failures, errors and kernel findings are not ok", "[ktap]") {
    Report r = passing();
    r.workloads[0].checks[0] = {"a.b", Outcome::fail, "EINVAL", "success", ""};
    r.workloads[0].outcome = Outcome::fail;
    r.invariants[0].verdict = Verdict::violated;
    r.invariants[0].violations = {"pfn 0x1 # left in the direct map"};
    r.kernel_log.push_back({"Oops", "Oops: general protection fault", 1});
    r.errors.push_back("recording not saved: ENOSPC");
    r.conformance.push_back({"x.y", Outcome::skip, "", "", "not here"});
    std::string k = to_ktap(r);
    CHECK_THAT(k, StartsWith("KTAP version 1\n1..5\n"));
    CHECK_THAT(k, ContainsSubstring("  # expected EINVAL, observed success\n  not ok 2 a.b\n"));
    CHECK_THAT(k, ContainsSubstring("not ok 1 workload.hf\n"));
    CHECK_THAT(k, ContainsSubstring("  # Subtest: conformance\n  1..1\n  ok 1 x.y # SKIP not here\n"
                                    "ok 2 conformance # SKIP not here\n"));
    CHECK_THAT(k, ContainsSubstring("  # violation: pfn 0x1 # left in the direct map\n"
                                    "  not ok 1 page_cache_balance\n"));
    CHECK_THAT(k, ContainsSubstring("  # error: recording not saved: ENOSPC\n  not ok 1 error_1\n"
                                    "not ok 4 tool_errors\n"));
    CHECK_THAT(k, ContainsSubstring("  # Oops: general protection fault\n  not ok 1 Oops\n"
                                    "not ok 5 kernel_log\n"));
    CHECK_THAT(k, EndsWith("# Totals: pass:0 fail:4 xfail:0 xpass:0 skip:3 error:1\n"));
}

TEST_CASE("ktap: nothing ran is one skipped test, never 1..0", "[ktap]") {
    Report r = passing();
    r.workloads[0].outcome = Outcome::skip;
    r.workloads[0].reason = "no guest_memfd";
    r.workloads[0].ops.clear();
    r.workloads[0].checks.clear();
    r.workloads[0].verification = {};
    REQUIRE(r.verdict() == Outcome::skip);
    CHECK(to_ktap(r) == "KTAP version 1\n1..1\n"
                        "# gmemstress 0.1.0 run: profile unit, seed 0\n"
                        "ok 1 gmemstress # SKIP nothing ran: hf: no guest_memfd\n"
                        "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0\n");
}

TEST_CASE("ktap: names carry no '#' and no line breaks; a skipped workload says why", "[ktap]") {
    Report r = passing();
    r.workloads[0].label = "odd #1\nlabel";
    r.workloads[0].checks[0].name = "c#2";
    WorkloadResult s;
    s.name = "convert";
    s.outcome = Outcome::skip;
    s.reason = "no memory attributes";
    r.workloads.push_back(s);
    std::string k = to_ktap(r);
    CHECK_THAT(k, ContainsSubstring("  # Subtest: workload.odd _1 label\n"));
    CHECK_THAT(k, ContainsSubstring("ok 1 workload.odd _1 label\n"));
    CHECK_THAT(k, ContainsSubstring("  ok 2 c_2\n"));
    CHECK_THAT(k, ContainsSubstring("  ok 1 run # SKIP no memory attributes\n"
                                    "ok 2 workload.convert # SKIP no memory attributes\n"));
}

TEST_CASE("ktap: a run without a report is one test", "[ktap]") {
    CHECK(ktap_single(Outcome::skip, "lab boot failure: no init") ==
          "KTAP version 1\n1..1\nok 1 gmemstress # SKIP lab boot failure: no init\n"
          "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0\n");
    CHECK(ktap_single(Outcome::fail, "the guest kernel crashed: panic", {"[Oops] Oops: 0000"}) ==
          "KTAP version 1\n1..1\n# the guest kernel crashed: panic\n# [Oops] Oops: 0000\n"
          "not ok 1 gmemstress\n# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0\n");
}
