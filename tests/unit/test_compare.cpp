// The report parser (JSON back into the model), compare's decisions, the
// timeline, and what the HTML page is made of.
#include "core/error.h"
#include "reports/compare.h"
#include "reports/html.h"
#include "reports/parse.h"
#include "reports/render.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <fstream>

using namespace gms;
using namespace gms::report;
using Catch::Matchers::ContainsSubstring;

namespace {

// A run: `ops` faults spread over 2 s, at `ns` each, and what else it says.
Report run(uint64_t ops, uint64_t ns, Verdict inv = Verdict::verified) {
    Report r;
    r.tool_version = "0.1.0";
    r.command = "run";
    r.timestamp = "2026-12-01T00:00:00Z";
    r.host = {{"kernel_release", "7.3.4"}};
    r.profile = {{"name", "unit"}};
    r.duration_s = 2;
    WorkloadResult w;
    w.name = "host-fault";
    w.label = "hf";
    w.duration_s = 2;
    for (uint64_t i = 0; i < ops; ++i) {
        w.ops["fault"].count++;
        w.ops["fault"].latency_ns.add(ns + i % 7);
        w.ops["fault"].timeline.add(i * 2'000'000'000ull / ops);
    }
    w.ops["fault"].record_error(14);
    w.checks.push_back({"sigbus_after_punch", Outcome::pass, "SIGBUS", "SIGBUS", ""});
    w.counters["pages_first_touched"] = 5;
    w.expect.gmem_files = 1;
    r.workloads.push_back(w);
    r.conformance.push_back({"create.bad_flags", Outcome::pass, "EINVAL", "EINVAL", ""});
    InvariantResult i{"page_cache_balance", inv, "", "tracepoint", {{"adds", 3}}, {}};
    if (inv == Verdict::violated)
        i.violations.push_back("file 1: 3 adds, 1 removal");
    r.invariants.push_back(i);
    r.kernel_log_waivers.push_back({"known", "--waive", ""});
    r.kernel_log_waived.push_back({{"WARNING", "WARNING: known thing", 5}, 0});
    return r;
}

RunSet side(std::vector<Report> rs) {
    RunSet s;
    for (size_t i = 0; i < rs.size(); ++i)
        s.paths.push_back("r" + std::to_string(i) + ".json");
    s.reports = std::move(rs);
    return s;
}

} // namespace

TEST_CASE("timeline: buckets of 100 ms, widened on long runs, mergeable", "[compare]") {
    Timeline t;
    t.add(50'000'000);
    t.add(250'000'000, 2);
    CHECK(t.bucket_ns() == 100'000'000);
    CHECK(t.counts() == std::vector<uint64_t>{1, 0, 2});
    Timeline long_run;
    long_run.add(100'000'000ull * Timeline::kMaxBuckets); // one bucket past the end
    CHECK(long_run.bucket_ns() == 200'000'000);
    CHECK(long_run.counts().size() == Timeline::kMaxBuckets / 2 + 1);
    t.merge(long_run); // widened to match
    CHECK(t.bucket_ns() == 200'000'000);
    CHECK(t.counts()[0] == 1);
    CHECK(t.counts()[1] == 2);
    CHECK(t.total() == 4);
    CHECK(!Timeline::restore(150'000'000, {1}));
    CHECK(Timeline::restore(400'000'000, {1, 2})->counts().size() == 2);
}

TEST_CASE("histogram: buckets restore exactly", "[compare]") {
    Histogram h;
    for (uint64_t v : {1, 7, 8, 100, 1000, 123456, 99999999})
        h.add(v);
    Histogram::Parts p{{}, h.min(), h.max(), h.sum()};
    for (unsigned i = 0; i < Histogram::kBuckets; ++i) {
        if (h.bucket(i)) {
            p.buckets.push_back({i, h.bucket(i)});
            CHECK(Histogram::index(Histogram::lower_bound(i)) == i);
            CHECK(Histogram::index(Histogram::upper_bound(i)) == i);
        }
    }
    auto r = Histogram::restore(p);
    REQUIRE(r);
    CHECK(r->count() == h.count());
    CHECK(r->percentile(0.999) == h.percentile(0.999));
    CHECK(r->mean() == h.mean());
}

TEST_CASE("parse: a report reads back into the same model", "[compare]") {
    Report r = run(1000, 5000);
    auto j = to_json(r);
    CHECK(j["workloads"][0]["ops"]["fault"]["latency_ns"]["buckets"].size() > 0);
    CHECK(j["workloads"][0]["ops"]["fault"]["timeline"]["counts"].size() == 20);
    Report back = parse_report(j, "r.json");
    CHECK(to_json(back) == j);
    CHECK(back.workloads[0].expect.gmem_files == 1);
    CHECK(back.workloads[0].counters.count("gmem_files") == 0);
    CHECK(back.kernel_log_waived.size() == 1);
}

TEST_CASE("parse: the watchdog's stalls and an incomplete run read back", "[compare]") {
    Report r = run(10, 5000);
    Stall st;
    st.tid = 42;
    st.thread = "puncher";
    st.workload = "hf";
    st.operation = "fallocate(PUNCH_HOLE)";
    st.args = "guest_memfd fd=7 offset=0x0 len=0x40000";
    st.started_at = "2026-12-01T00:00:01.000Z";
    st.started_s = 1;
    st.duration_s = 6.5;
    st.task_state = "D (disk sleep)";
    st.kernel_stack = {"msleep+0x2d/0x40", "kvm_gmem_fallocate+0x1/0x2"};
    Stall vcpu = st;
    vcpu.operation = "KVM_RUN";
    vcpu.ended = true;
    vcpu.vcpu = VcpuStallState{0, "HLT", true, true, 0xfff0, "kicked"};
    r.stalls = {st, vcpu};
    r.stall_threshold_s = 5;
    r.incomplete = true;
    r.incomplete_reason = "abandoned";
    auto j = to_json(r);
    CHECK(j["verdict"] == "fail"); // a stall fails the verdict
    Report back = parse_report(j, "r.json");
    CHECK(to_json(back) == j);
    REQUIRE(back.stalls.size() == 2);
    CHECK(back.stalls[1].vcpu->guest_rip == 0xfff0u);
    std::string html = to_html(back);
    CHECK_THAT(html, ContainsSubstring("id=\"stalls\""));
    CHECK_THAT(html, ContainsSubstring("msleep+0x2d/0x40"));
    CHECK_THAT(html, ContainsSubstring("incomplete: abandoned"));
    CHECK_THAT(to_html(run(10, 5000)), !ContainsSubstring("id=\"stalls\""));
    // A report from before the watchdog has none of these fields.
    auto old = to_json(run(10, 5000));
    for (const char* k : {"stalls", "stall_threshold_s", "incomplete", "incomplete_reason"})
        old.erase(k);
    Report before = parse_report(old, "old.json");
    CHECK(before.stalls.empty());
    CHECK(!before.incomplete);
}

TEST_CASE("parse: bad input names the file and the field", "[compare]") {
    auto j = to_json(run(10, 5000));
    auto fails = [](const nlohmann::json& doc, const std::string& needle) {
        try {
            parse_report(doc, "base/A.json");
            FAIL("parsed: " << needle);
        } catch (const UsageError& e) {
            CHECK_THAT(e.what(), ContainsSubstring("base/A.json"));
            CHECK_THAT(e.what(), ContainsSubstring(needle));
        }
    };
    auto v1 = j;
    v1["schema_version"] = 1;
    fails(v1, "schema_version 1");
    auto v9 = j;
    v9["schema_version"] = 9;
    fails(v9, "reads version 2 only");
    auto no_buckets = j;
    no_buckets["workloads"][0]["ops"]["fault"]["latency_ns"].erase("buckets");
    fails(no_buckets, "workloads[0].ops.fault.latency_ns: missing \"buckets\"");
    auto bad_count = j;
    bad_count["workloads"][0]["ops"]["fault"]["latency_ns"]["count"] = 11;
    fails(bad_count, "buckets add up to 10, count says 11");
    auto bad_bucket = j;
    bad_bucket["workloads"][0]["ops"]["fault"]["latency_ns"]["buckets"][0][1] = 3;
    fails(bad_bucket, "is not a bucket");
    auto verdict = j;
    verdict["verdict"] = "pass"; // a passing check says otherwise? no: make it lie
    verdict["workloads"][0]["checks"][0]["outcome"] = "fail";
    fails(verdict, "verdict: says pass");
    fails(nlohmann::json::array(), "not a gmemstress report");
    CHECK_THROWS_AS(read_report("/nonexistent/x.json"), UsageError);
}

TEST_CASE("compare: same runs, no regression; one report per side not judged", "[compare]") {
    auto c = compare(side({run(1000, 5000)}), side({run(500, 9000)}));
    CHECK(c.regressions() == 0);
    REQUIRE(!c.metrics.empty());
    for (const auto& m : c.metrics)
        CHECK(m.judgement.change == stats::Change::not_enough_samples);
    CHECK_THAT(to_text(c), ContainsSubstring("not enough samples"));
    CHECK(to_json(c)["verdict"] == "no regression");
}

TEST_CASE("compare: regressions of every kind", "[compare]") {
    auto base = side({run(1000, 5000), run(1010, 5000), run(990, 5000)});
    std::vector<Report> next = {run(600, 5000), run(610, 5000, Verdict::violated), run(590, 5000)};
    next[0].kernel_log.push_back({"WARNING", "WARNING: CPU: 1 PID: 42 at mm/x.c:7 f+0x1/0x2", 9});
    next[0].conformance[0].outcome = Outcome::fail;
    auto c = compare(base, side(next));
    auto j = to_json(c);
    CHECK(j["verdict"] == "regression");
    CHECK(j["new_kernel_log_findings"].size() == 1);
    bool throughput_worse = false, invariant = false, conformance = false;
    for (const auto& m : c.metrics)
        throughput_worse |= m.metric == "throughput" && m.regression();
    for (const auto& s : c.states) {
        invariant |= s.kind == "invariant" && s.regression && s.next == "verified x2, violated x1";
        conformance |= s.kind == "conformance" && s.regression;
    }
    CHECK(throughput_worse);
    CHECK(invariant);
    CHECK(conformance);
    // The same splat with another PID and address in a base report: not new.
    base.reports[1].kernel_log.push_back(
        {"WARNING", "WARNING: CPU: 0 PID: 7 at mm/x.c:7 f+0x9/0x2", 1});
    CHECK(compare(base, side(next)).new_findings.empty());
}

TEST_CASE("html: a run and a comparison show what they hold", "[compare]") {
    std::string one = to_html(run(1000, 5000));
    CHECK_THAT(one, ContainsSubstring("<!DOCTYPE html>"));
    CHECK(one.find("id=\"kernel-log\"") < one.find("id=\"workloads\""));
    CHECK_THAT(one, ContainsSubstring("class=\"histogram\""));
    CHECK_THAT(one, ContainsSubstring("class=\"line timeline run\""));
    CHECK_THAT(one, ContainsSubstring("page_cache_balance"));
    CHECK(one.find("<script") == std::string::npos);
    CHECK(one.find("src=") == std::string::npos);
    auto c = compare(side({run(1000, 5000), run(1010, 5000), run(990, 5000)}),
                     side({run(600, 5000), run(610, 5000), run(590, 5000)}));
    std::string two = to_html(c);
    CHECK_THAT(two, ContainsSubstring("sig-worse"));
    CHECK_THAT(two, ContainsSubstring("class=\"line timeline new\""));
    CHECK_THAT(two, ContainsSubstring("verdict: regression"));
}
