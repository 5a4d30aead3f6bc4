// Kernel-log waivers: checked where they are given (profile line, --waive,
// waivers file line), applied to findings, rendered by every renderer.
#include "core/error.h"
#include "core/kmsg.h"
#include "core/profile.h"
#include "reports/kcidb.h"
#include "reports/ktap.h"
#include "reports/lava.h"
#include "reports/render.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cstdio>
#include <fstream>
#include <unistd.h>

using namespace gms;
using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::EndsWith;

namespace {

std::string usage_error(const std::function<void()>& f) {
    try {
        f();
    } catch (const UsageError& e) {
        return e.what();
    }
    return "(no UsageError)";
}

profile::Profile parse(const std::string& text) {
    profile::WorkloadSchemas schemas = {
        {"lifecycle", {{"label", profile::ParamType::string, std::string(), ""}}}};
    return profile::parse_profile(text, "w.toml", {}, schemas);
}

const char* kWorkload = "[[workload]]\nkind = \"lifecycle\"\n";

report::Report with_findings() {
    report::Report r;
    r.tool_version = "0.1.0";
    r.command = "run";
    r.profile = {{"name", "unit"}};
    report::WorkloadResult w;
    w.name = w.label = "hf";
    w.ops["fault"].record(100, 4096);
    r.workloads.push_back(w);
    r.kernel_log_waivers = {make_waiver("known splat", "w.toml:4", "bug 123"),
                            make_waiver("never", "--waive")};
    auto split = apply_waivers({{"WARNING", "WARNING: known splat at x.c:1", 5},
                                {"WARNING", "WARNING: known splat at x.c:1", 6},
                                {"BUG", "BUG: a new one", 7}},
                               r.kernel_log_waivers);
    r.kernel_log = split.findings;
    r.kernel_log_waived = split.waived;
    return r;
}

} // namespace

TEST_CASE("waivers: a bad regex is a usage error naming where it was given", "[kmsg]") {
    CHECK_THAT(usage_error([] { make_waiver("WARNING: (", "--waive"); }),
               ContainsSubstring("--waive: bad regular expression 'WARNING: ('"));
    CHECK_THAT(usage_error([] { make_waiver("", "--waive"); }), ContainsSubstring("empty"));
    CHECK_NOTHROW(make_waiver(R"(soft lockup - CPU#\d+)", "--waive"));

    std::string bad =
        std::string("name = \"w\"\n[kernel_log]\nwaive = [\n  \"ok\",\n  \"[x\",\n]\n") + kWorkload;
    CHECK_THAT(usage_error([&] { parse(bad); }),
               ContainsSubstring("w.toml:5: bad regular expression '[x'"));
    std::string table =
        std::string("[kernel_log]\nwaive = [{ reason = \"no regex\" }]\n") + kWorkload;
    CHECK_THAT(usage_error([&] { parse(table); }), ContainsSubstring("w.toml:2"));
    CHECK_THAT(usage_error([&] { parse(table); }), ContainsSubstring("needs 'regex'"));
    std::string key = std::string("[kernel_log]\nwaiver = [\"x\"]\n") + kWorkload;
    CHECK_THAT(usage_error([&] { parse(key); }),
               ContainsSubstring("w.toml:2: unknown key 'kernel_log.waiver'"));
    CHECK_THAT(usage_error([&] {
                   profile::WorkloadSchemas s = {
                       {"lifecycle", {{"label", profile::ParamType::string, std::string(), ""}}}};
                   profile::parse_profile(kWorkload, "w.toml",
                                          {profile::parse_set_flag("kernel_log.waive=[\"(\"]")}, s);
               }),
               ContainsSubstring("--set kernel_log.waive=[\"(\"]: bad regular expression"));
}

TEST_CASE("waivers: the profile's list, strings and tables, with their lines", "[kmsg]") {
    auto p = parse(std::string("[kernel_log]\nwaive = [\n  \"a+\",\n  { regex = \"b\", reason = "
                               "\"known\" },\n]\n") +
                   kWorkload);
    REQUIRE(p.kernel_log_waivers.size() == 2);
    CHECK(p.kernel_log_waivers[0].regex == "a+");
    CHECK(p.kernel_log_waivers[0].origin == "w.toml:3");
    CHECK(p.kernel_log_waivers[1].origin == "w.toml:4");
    CHECK(p.kernel_log_waivers[1].reason == "known");
    CHECK(p.to_json()["kernel_log"]["waive"].size() == 2);
    CHECK(parse(kWorkload).kernel_log_waivers.empty());
}

TEST_CASE("waivers: a waivers file, with comments, errors at FILE:LINE", "[kmsg]") {
    std::string path = "/tmp/gms-unit-waivers-" + std::to_string(::getpid());
    { std::ofstream(path) << "# known\n\n  WARNING: .* at fs/x.c  \nBUG: (\n"; }
    CHECK_THAT(usage_error([&] { read_waivers_file(path); }),
               ContainsSubstring(path + ":4: bad regular expression 'BUG: ('"));
    { std::ofstream(path) << "# known\n\n  WARNING: .* at fs/x.c  \n"; }
    auto w = read_waivers_file(path);
    REQUIRE(w.size() == 1);
    CHECK(w[0].regex == "WARNING: .* at fs/x.c");
    CHECK(w[0].origin == path + ":3");
    std::remove(path.c_str());
    CHECK_THAT(usage_error([&] { read_waivers_file(path); }), ContainsSubstring("cannot read"));
}

TEST_CASE("waivers: matching findings are waived, by the first waiver that matches", "[kmsg]") {
    auto r = with_findings();
    REQUIRE(r.kernel_log.size() == 1);
    CHECK(r.kernel_log[0].kind == "BUG");
    REQUIRE(r.kernel_log_waived.size() == 2);
    CHECK(r.kernel_log_waived[0].waiver == 0);
    CHECK(r.waiver_counts() == std::vector<size_t>{2, 0});
    CHECK(r.verdict() == report::Outcome::fail); // the BUG is not waived
    r.kernel_log.clear();
    CHECK(r.verdict() == report::Outcome::pass); // the waived ones fail nothing
}

TEST_CASE("waivers: every renderer shows waived findings with their regex", "[kmsg]") {
    auto r = with_findings();
    r.kernel_log.clear();

    auto j = report::to_json(r);
    CHECK(j["verdict"] == "pass");
    REQUIRE(j["kernel_log"]["waived"].size() == 2);
    CHECK(j["kernel_log"]["waived"][0]["waived_by"] == "known splat");
    CHECK(j["kernel_log"]["waived"][0]["waiver_origin"] == "w.toml:4");
    CHECK(j["kernel_log"]["waivers"][0]["waived"] == 2);
    CHECK(j["kernel_log"]["waivers"][1]["waived"] == 0);

    auto text = report::to_text(r);
    CHECK_THAT(text, ContainsSubstring("kernel log waived WARNING: WARNING: known splat at x.c:1 "
                                       "(by /known splat/, w.toml:4)"));
    CHECK_THAT(text, ContainsSubstring("kernel log: 2 findings waived (/known splat/: 2)"));

    auto junit = report::to_junit(r);
    CHECK_THAT(junit,
               ContainsSubstring("classname=\"gmemstress.kernel.waived\" name=\"WARNING.2\""));
    CHECK_THAT(junit, ContainsSubstring("<skipped message=\"waived by /known splat/ (w.toml:4)"));

    auto ktap = report::to_ktap(r);
    CHECK_THAT(ktap, ContainsSubstring("  ok 1 clean\n  ok 2 WARNING # XFAIL waived by /known "
                                       "splat/ (w.toml:4): WARNING: known splat at x.c:1\n"));
    CHECK_THAT(ktap, EndsWith("# Totals: pass:2 fail:0 xfail:2 xpass:0 skip:0 error:0\n"));

    auto k = report::to_kcidb(r, report::kcidb_options("unit", "b1"));
    int waived = 0;
    for (const auto& t : k["tests"])
        if (t["path"].get<std::string>().starts_with("gmemstress.kernel_log.waived.WARNING")) {
            ++waived;
            CHECK(t["status"] == "DONE");
            CHECK(t["misc"]["waived_by"] == "known splat");
        }
    CHECK(waived == 2);

    auto lava = report::lava_signal_lines(report::to_lava(r));
    CHECK_THAT(lava, ContainsSubstring("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=kernel_log.waived."
                                       "WARNING RESULT=pass>"));
    CHECK_THAT(lava, ContainsSubstring("TEST_CASE_ID=kernel_log.waived.WARNING_2 RESULT=pass"));
    CHECK_THAT(lava, ContainsSubstring("waived by /known splat/ (w.toml:4): bug 123"));
}
