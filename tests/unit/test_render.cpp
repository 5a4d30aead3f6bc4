#include "reports/render.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

using namespace gms::report;
using Catch::Matchers::ContainsSubstring;

namespace {
Report sample() {
    Report r;
    r.tool_version = "0.1.0";
    r.command = "run";
    r.profile = {{"name", "unit"}};
    WorkloadResult w;
    w.name = "host-fault";
    w.label = "hf";
    w.ops["fault"].record(100, 4096);
    w.ops["fault"].record_error(22);
    w.checks.push_back({"a.b", Outcome::fail, "EINVAL", "success", ""});
    w.checks.push_back({"a.c", Outcome::skip, "", "", "no <WRITE> & flag"});
    r.workloads.push_back(w);
    r.invariants.push_back(
        {"page_cache_balance", Verdict::verified, "", "tracepoint", {{"adds", 3}}, {}});
    return r;
}
} // namespace

TEST_CASE("verdict: any failure, violation or kernel finding fails", "[report]") {
    Report r = sample();
    CHECK(r.verdict() == Outcome::fail); // a failed check
    r.workloads[0].checks[0].outcome = Outcome::pass;
    CHECK(r.verdict() == Outcome::pass);
    r.invariants[0].verdict = Verdict::violated;
    CHECK(r.verdict() == Outcome::fail);
    r.invariants[0].verdict = Verdict::unverifiable; // not a pass, not a failure
    CHECK(r.verdict() == Outcome::pass);
    r.kernel_log.push_back({"WARNING", "WARNING: at x", 1});
    CHECK(r.verdict() == Outcome::fail);
    r.kernel_log.clear();
    r.workloads[0].outcome = Outcome::error;
    CHECK(r.verdict() == Outcome::error);
    r.workloads[0].outcome = Outcome::skip; // nothing ran: not a pass
    r.workloads[0].checks.clear();
    CHECK(r.verdict() == Outcome::skip);
}

TEST_CASE("JSON rendering carries ops, errors and percentiles", "[report]") {
    auto j = to_json(sample());
    CHECK(j["schema_version"] == kSchemaVersion);
    CHECK(j["verdict"] == "fail");
    auto& op = j["workloads"][0]["ops"]["fault"];
    CHECK(op["count"] == 2);
    CHECK(op["bytes"] == 4096);
    CHECK(op["errors"]["EINVAL"] == 1);
    CHECK(op["latency_ns"]["max"] == 100);
    CHECK(j["invariants"][0]["evidence"]["adds"] == 3);
}

TEST_CASE("JSON rendering writes the probe expectations among the counters", "[report]") {
    Report r = sample();
    auto& w = r.workloads[0];
    w.counters["pages_first_touched"] = 7;
    CHECK(to_json(r)["workloads"][0]["counters"] == nlohmann::json{{"pages_first_touched", 7}});
    w.expect.gmem_files = 1;
    w.expect.pages_added = 7;
    w.expect.pages_removed = 6;
    w.expect.min_handouts_to_user = 0; // set, even to zero: written
    auto c = to_json(r)["workloads"][0]["counters"];
    CHECK(c == nlohmann::json{{"pages_first_touched", 7},
                              {"gmem_files", 1},
                              {"expected_pages_added", 7},
                              {"expected_pages_removed", 6},
                              {"min_handouts_to_user", 0}});
    w.expect.min_handouts_to_guest = 3;
    CHECK(to_json(r)["workloads"][0]["counters"]["min_handouts_to_guest"] == 3);
    // A workload without counters still has a counters object.
    WorkloadResult bare;
    r.workloads = {bare};
    CHECK(to_json(r)["workloads"][0]["counters"] == nlohmann::json::object());
}

TEST_CASE("JUnit escapes text and counts outcomes", "[report]") {
    std::string x = to_junit(sample());
    CHECK_THAT(x, ContainsSubstring("no &lt;WRITE&gt; &amp; flag"));
    CHECK_THAT(x, ContainsSubstring("failures=\"1\""));
    CHECK_THAT(x, ContainsSubstring("skipped=\"1\""));
    CHECK_THAT(x, ContainsSubstring("<failure message=\"expected EINVAL, observed success\"/>"));
}

TEST_CASE("atomic writes replace the file whole", "[report]") {
    std::string path = "/tmp/gms-unit-atomic.json";
    write_atomically(path, "first");
    write_atomically(path, "second");
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    CHECK(ss.str() == "second");
    std::remove(path.c_str());
    CHECK_THROWS(write_atomically("/nonexistent-dir/x.json", "x"));
}
