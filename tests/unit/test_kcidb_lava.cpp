// The KCIDB and LAVA renderers: ids, paths, statuses, numbers, signal lines.
// (The KCIDB schema itself is checked by tests/e2e/test_kcidb.py.)
#include "core/error.h"
#include "reports/kcidb.h"
#include "reports/lava.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <map>
#include <regex>

using namespace gms;
using namespace gms::report;
using Catch::Matchers::ContainsSubstring;

namespace {

Report sample() {
    Report r;
    r.tool_version = "0.1.0";
    r.command = "run";
    r.timestamp = "2026-12-01T10:00:00Z";
    r.host = {{"kernel_release", "7.3.4"}};
    r.profile = {{"name", "unit"}};
    WorkloadResult w;
    w.name = "host-fault";
    w.label = "hf";
    w.duration_s = 2;
    for (int i = 0; i < 10; ++i)
        w.ops["fault"].record(1000, 4096);
    w.checks.push_back({"io.write", Outcome::fail, "EINVAL", "success", ""});
    w.checks.push_back({"io write", Outcome::skip, "", "", "no WRITE flag"});
    w.checks.push_back({"io_write", Outcome::pass, "", "", ""});
    r.workloads.push_back(w);
    r.invariants.push_back({"page_cache_balance", Verdict::verified, "", "tracepoint", {}, {}});
    r.invariants.push_back({"direct_map", Verdict::unverifiable, "no fentry", "", {}, {}});
    r.invariants.push_back({"uptodate", Verdict::incomplete, "lost events", "fentry", {}, {}});
    r.errors.push_back("recording not saved");
    return r;
}

std::map<std::string, nlohmann::json> by_path(const nlohmann::json& k) {
    std::map<std::string, nlohmann::json> out;
    for (const auto& t : k["tests"])
        out[t["path"]] = t;
    return out;
}

} // namespace

TEST_CASE("kcidb: origin and build id are checked", "[kcidb]") {
    CHECK_THROWS_AS(kcidb_options("My-Lab", ""), UsageError);
    CHECK_THROWS_AS(kcidb_options("", ""), UsageError);
    CHECK_THROWS_AS(kcidb_options("lab", "Bad Origin:x"), UsageError);
    CHECK(kcidb_options("lab", "b42").build_id == "lab:b42");
    CHECK(kcidb_options("lab", "other_ci:b42").build_id == "other_ci:b42");
    CHECK(kcidb_options("lab", "").build_id.empty());
    CHECK(kcidb_options("lab", "").run_id != kcidb_options("lab", "").run_id);
}

TEST_CASE("kcidb: tests, statuses, paths, numbers", "[kcidb]") {
    auto k = to_kcidb(sample(), kcidb_options("my_lab", ""));
    CHECK(k["version"]["major"] == 5);
    CHECK(k["version"]["minor"] == 3);
    auto t = by_path(k);
    std::regex path_re("^[a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*$");
    for (const auto& [p, test] : t) {
        CHECK(std::regex_match(p, path_re));
        CHECK(test["origin"] == "my_lab");
        CHECK(test["build_id"] == "my_lab:7.3.4"); // default: the kernel release
        CHECK(test["id"].get<std::string>().starts_with("my_lab:gms-"));
        CHECK(test["environment"]["misc"]["caps"]["kernel_release"] == "7.3.4");
        CHECK(test["start_time"] == "2026-12-01T10:00:00Z");
    }
    CHECK(t.at("gmemstress")["status"] == "FAIL");
    CHECK(t.at("gmemstress.workload.hf")["status"] == "PASS");
    // "io.write" is two components; "io write" and "io_write" meet at io_write.
    CHECK(t.at("gmemstress.workload.hf.checks.io.write")["status"] == "FAIL");
    CHECK_THAT(t.at("gmemstress.workload.hf.checks.io.write")["log_excerpt"].get<std::string>(),
               ContainsSubstring("expected EINVAL, observed success"));
    CHECK(t.at("gmemstress.workload.hf.checks.io_write")["status"] == "SKIP");
    CHECK(t.at("gmemstress.workload.hf.checks.io_write_2")["status"] == "PASS");
    CHECK(t.at("gmemstress.invariants.page_cache_balance")["status"] == "PASS");
    CHECK(t.at("gmemstress.invariants.direct_map")["status"] == "SKIP");
    CHECK(t.at("gmemstress.invariants.uptodate")["status"] == "ERROR");
    CHECK(t.at("gmemstress.tool_errors.error_1")["status"] == "ERROR");
    CHECK(t.at("gmemstress.kernel_log")["status"] == "PASS");
    const auto& tput = t.at("gmemstress.workload.hf.ops.fault.throughput");
    CHECK(tput["status"] == "DONE");
    CHECK(tput["number"]["value"] == 5.0); // 10 faults in 2 s
    CHECK(tput["number"]["unit"] == "ops/s");
    CHECK(t.at("gmemstress.workload.hf.ops.fault.latency_p50")["number"]["unit"] == "ns");
    CHECK(t.at("gmemstress.workload.hf.ops.fault.bandwidth")["number"]["prefix"] == "binary");
    // Ids are unique.
    std::set<std::string> ids;
    for (const auto& test : k["tests"])
        CHECK(ids.insert(test["id"].get<std::string>()).second);
}

TEST_CASE("kcidb: nothing ran is SKIP, an interrupted pass is ERROR", "[kcidb]") {
    Report r = sample();
    r.workloads[0].outcome = Outcome::skip;
    r.workloads[0].reason = "no guest_memfd";
    r.workloads[0].ops.clear();
    r.workloads[0].checks.clear();
    r.invariants.clear();
    r.errors.clear();
    auto t = by_path(to_kcidb(r, kcidb_options("l", "")));
    CHECK(t.at("gmemstress")["status"] == "SKIP");
    CHECK(t.at("gmemstress.workload.hf")["log_excerpt"] == "no guest_memfd");
    CHECK(t.count("gmemstress.workload.hf.ops.fault.throughput") == 0); // measured nothing
    r = sample();
    r.workloads[0].checks.clear();
    r.errors.clear();
    r.invariants.resize(1);
    r.interrupted = true;
    CHECK(by_path(to_kcidb(r, kcidb_options("l", "")))["gmemstress"]["status"] == "ERROR");
    auto single = kcidb_single(Outcome::fail, "the guest kernel crashed", {"[panic] Kernel panic"},
                               kcidb_options("l", "b"), "7.3.4");
    REQUIRE(single["tests"].size() == 1);
    CHECK(single["tests"][0]["status"] == "FAIL");
    CHECK(single["tests"][0]["build_id"] == "l:b");
    CHECK_THAT(single["tests"][0]["log_excerpt"].get<std::string>(),
               ContainsSubstring("Kernel panic"));
}

TEST_CASE("lava: sets, unique case names, results, measurements", "[lava]") {
    auto sets = to_lava(sample());
    auto text = lava_signal_lines(sets);
    CHECK_THAT(text, ContainsSubstring("<LAVA_SIGNAL_TESTSET START workload.hf>\n"));
    CHECK_THAT(text, ContainsSubstring("<LAVA_SIGNAL_STARTTC workload.hf.io.write>\nexpected "
                                       "EINVAL, observed success\n<LAVA_SIGNAL_ENDTC "
                                       "workload.hf.io.write>\n<LAVA_SIGNAL_TESTCASE "
                                       "TEST_CASE_ID=workload.hf.io.write RESULT=fail>\n"));
    CHECK_THAT(text, ContainsSubstring("TEST_CASE_ID=workload.hf.io_write RESULT=skip>"));
    CHECK_THAT(text, ContainsSubstring("TEST_CASE_ID=workload.hf.io_write_2 RESULT=pass>"));
    CHECK_THAT(text, ContainsSubstring("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=workload.hf.fault."
                                       "throughput RESULT=pass MEASUREMENT=5 UNITS=ops/s>"));
    CHECK_THAT(text, ContainsSubstring("TEST_CASE_ID=invariants.uptodate RESULT=unknown>"));
    CHECK_THAT(text, ContainsSubstring("TEST_CASE_ID=invariants.direct_map RESULT=skip>"));
    CHECK_THAT(text, ContainsSubstring("TEST_CASE_ID=tool_errors.error_1 RESULT=unknown>"));
    CHECK_THAT(text, ContainsSubstring("<LAVA_SIGNAL_TESTSET STOP>\n"));
    CHECK_THAT(text,
               ContainsSubstring("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=gmemstress RESULT=fail>"));
    // No name holds what LAVA splits a signal at.
    for (const auto& s : sets)
        for (const auto& c : s.cases)
            CHECK(c.name.find_first_of(" =<>/") == std::string::npos);
    // The lab's transport keeps everything.
    CHECK(lava_signal_lines(lava_from_json(lava_to_json(sets))) == text);
    CHECK_THROWS_AS(lava_from_json(nlohmann::json::parse(R"({"lava_sets": [{"name": "x"}]})")),
                    Error);
}

TEST_CASE("lava: a log line cannot fake a signal", "[lava]") {
    auto sets = lava_single(Outcome::skip, "boot failure\n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=x "
                                           "RESULT=pass>");
    auto text = lava_signal_lines(sets);
    CHECK_THAT(text, ContainsSubstring("boot failure <LAVA-SIGNAL_TESTCASE"));
    CHECK_THAT(text,
               ContainsSubstring("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=gmemstress RESULT=skip>"));
}
