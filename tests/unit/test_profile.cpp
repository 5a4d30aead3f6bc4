#include "core/error.h"
#include "core/profile.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace gms;
using namespace gms::profile;
using Catch::Matchers::ContainsSubstring;

namespace {

WorkloadSchemas schemas() {
    std::vector<ParamSpec> common = {
        {"label", ParamType::string, std::string(), ""},
        {"ops", ParamType::integer, int64_t(0), "", 0, 1e15},
        {"duration", ParamType::duration, 0.0, "", 0, 1e6},
        {"threads", ParamType::integer, int64_t(1), "", 1, 256},
    };
    auto hf = common;
    hf.push_back({"pattern",
                  ParamType::choice,
                  std::string("sequential"),
                  "",
                  0,
                  0,
                  {"sequential", "random"}});
    return {{"host-fault", hf}, {"lifecycle", common}};
}

const char* kGood = R"(name = "t"
seed = 5
duration = "3s"
[vm]
count = 2
[guest_memfd]
size = "4MiB"
flags = ["mmap", "init_shared"]
[[workload]]
kind = "host-fault"
threads = 3
pattern = "random"
[[workload]]
kind = "lifecycle"
)";

std::string error_of(const std::string& text, std::vector<Override> o = {}) {
    try {
        parse_profile(text, "p.toml", o, schemas());
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("a valid profile resolves every field", "[profile]") {
    Profile p = parse_profile(kGood, "p.toml", {}, schemas());
    CHECK(p.name == "t");
    CHECK(p.seed == 5);
    CHECK(p.duration_s == 3.0);
    CHECK(p.vm_count == 2);
    CHECK(p.vcpus == 1);
    CHECK(p.gmem_size == 4u << 20);
    CHECK(p.gmem_flags == 3);
    REQUIRE(p.workloads.size() == 2);
    CHECK(p.workloads[0].integer("threads") == 3);
    CHECK(p.workloads[0].str("pattern") == "random");
    CHECK(p.workloads[1].integer("threads") == 1); // default
    CHECK(p.workloads[1].label == "lifecycle");
}

TEST_CASE("profile errors name file:line and the key", "[profile]") {
    CHECK_THAT(error_of(std::string(kGood) + "bogus = 1\n"),
               ContainsSubstring("workload[1].bogus"));
    CHECK_THAT(error_of(std::string(kGood) + "bogus = 1\n"), ContainsSubstring("p.toml:15"));
    std::string bad_type = kGood;
    bad_type.replace(bad_type.find("threads = 3"), 11, "threads = \"x\"");
    CHECK_THAT(error_of(bad_type), ContainsSubstring("p.toml:11"));
    CHECK_THAT(error_of(bad_type), ContainsSubstring("must be an integer"));
    std::string range = kGood;
    range.replace(range.find("count = 2"), 9, "count = 0");
    CHECK_THAT(error_of(range), ContainsSubstring("p.toml:5"));
    CHECK_THAT(error_of(range), ContainsSubstring("out of range"));
    std::string flag = kGood;
    flag.replace(flag.find("\"init_shared\""), 13, "\"shiny\"");
    CHECK_THAT(error_of(flag), ContainsSubstring("unknown guest_memfd flag 'shiny'"));
    CHECK_THAT(error_of("name = \n"), ContainsSubstring("p.toml:1"));
    CHECK_THAT(error_of("seed = 1\n"), ContainsSubstring("no [[workload]]"));
    CHECK_THAT(error_of("[[workload]]\nkind = \"nope\"\n"),
               ContainsSubstring("unknown workload kind 'nope'"));
    CHECK_THAT(error_of(std::string(kGood) + "[vm]\n"), ContainsSubstring("p.toml"));
    std::string size = kGood;
    size.replace(size.find("\"4MiB\""), 6, "\"8000\"");
    CHECK_THAT(error_of(size), ContainsSubstring("multiple of 4096"));
}

TEST_CASE("overrides apply and their errors name the flag", "[profile]") {
    Profile p = parse_profile(kGood, "p.toml",
                              {{"vm.vcpus", "4", "--vcpus 4"},
                               {"workload.host-fault.pattern", "sequential", "--set x"},
                               {"workload.*.ops", "7", "--ops 7"},
                               {"duration", "\"1m\"", "--duration 1m"}},
                              schemas());
    CHECK(p.vcpus == 4);
    CHECK(p.workloads[0].str("pattern") == "sequential");
    CHECK(p.workloads[0].integer("ops") == 7);
    CHECK(p.workloads[1].integer("ops") == 7);
    CHECK(p.duration_s == 60);
    CHECK_THAT(error_of(kGood, {{"vm.count", "0", "--vms 0"}}), ContainsSubstring("--vms 0"));
    CHECK_THAT(error_of(kGood, {{"workload.nothere.ops", "1", "--set workload.nothere.ops=1"}}),
               ContainsSubstring("no workload in the profile matches 'nothere'"));
    CHECK_THAT(
        error_of(kGood, {{"workload.0.pattern", "zigzag", "--set workload.0.pattern=zigzag"}}),
        ContainsSubstring("--set workload.0.pattern=zigzag"));
    CHECK_THROWS_AS(parse_set_flag("novalue"), UsageError);
    CHECK(parse_set_flag("a.b=c=d").value == "c=d");
}

TEST_CASE("every built-in profile parses with the real workload registry", "[profile]") {
    // The registry-backed check lives in tests/integration (it needs gms_workloads);
    // here: each built-in is valid TOML with a name and at least one workload.
    for (const auto& [name, text] : builtin_profiles()) {
        INFO(name);
        CHECK_THAT(text, ContainsSubstring("[[workload]]"));
    }
    CHECK(builtin_profiles().count("smoke") == 1);
    CHECK(builtin_profiles().count("conformance") == 1);
}

TEST_CASE("probes.exclude names attach points; an unknown one is named with file:line",
          "[profile]") {
    const std::vector<std::string> points = {"pc_add", "pc_del", "user_fault"};
    // [probes] before the first [[workload]] (line 9), so exclude is on line 10.
    auto with_exclude = [](const std::string& list) {
        std::string t = kGood;
        return t.insert(t.find("[[workload]]"), "[probes]\nexclude = " + list + "\n");
    };
    std::string text = with_exclude("[\"user_fault\"]");
    Profile p = parse_profile(text, "p.toml", {}, schemas(), points);
    REQUIRE(p.probes.exclude == std::vector<std::string>{"user_fault"});
    CHECK(p.to_json()["probes"]["exclude"][0] == "user_fault");

    std::string bad = with_exclude("[\"usr_fault\"]");
    try {
        parse_profile(bad, "p.toml", {}, schemas(), points);
        FAIL("an unknown attach point was accepted");
    } catch (const UsageError& e) {
        CHECK_THAT(e.what(), ContainsSubstring("p.toml:10"));
        CHECK_THAT(e.what(), ContainsSubstring("usr_fault"));
        CHECK_THAT(e.what(), ContainsSubstring("user_fault")); // the known names
    }
    // Without the list (e.g. tools that do not attach), names are not checked here.
    CHECK(parse_profile(bad, "p.toml", {}, schemas()).probes.exclude.size() == 1);
    // --set reaches it like any key.
    Profile q = parse_profile(kGood, "p.toml", {parse_set_flag("probes.exclude=[\"pc_del\"]")},
                              schemas(), points);
    CHECK(q.probes.exclude == std::vector<std::string>{"pc_del"});
}

namespace {

// The real workloads' parameters, as `gmemstress run` loads them.
WorkloadSchemas registry_schemas() {
    WorkloadSchemas out;
    for (const auto& w : gms::workloads::registry()) {
        auto params = gms::workloads::common_params();
        params.insert(params.end(), w.params.begin(), w.params.end());
        out[w.name] = params;
    }
    return out;
}

std::string registry_error(const std::string& profile, std::vector<Override> o) {
    try {
        load_profile(profile, o, registry_schemas());
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

// A one-workload profile file whose line 4 is `line`.
std::string one_workload(const std::string& kind, const std::string& line) {
    return "name = \"t\"\n[[workload]]\nkind = \"" + kind + "\"\n" + line + "\n";
}

std::string text_error(const std::string& text, std::vector<Override> o = {}) {
    try {
        parse_profile(text, "p.toml", o, registry_schemas());
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("parameter rules: power of two, multiple, relation, allowed elements", "[profile]") {
    std::vector<ParamSpec> specs = {
        {"label", ParamType::string, std::string(), ""},
        {"stride", ParamType::integer, int64_t(4), "", 1, 1024, {}, {power_of_two()}},
        {"size", ParamType::size, int64_t(0), "", 0, 1e12, {}, {multiple_of(4096, "the page")}},
        {"max", ParamType::integer, int64_t(8), "", 1, 1024},
        {"align", ParamType::integer, int64_t(1), "", 1, 1024, {}, {at_most("max")}},
        {"kinds", ParamType::string_list, std::vector<std::string>{}, "", 0, 0, {"a", "b"}},
    };
    WorkloadSchemas s = {{"w", specs}};
    auto err = [&](const std::string& body, std::vector<Override> o = {}) -> std::string {
        try {
            parse_profile("[[workload]]\nkind = \"w\"\n" + body, "p.toml", o, s);
        } catch (const UsageError& e) {
            return e.what();
        }
        return "";
    };
    // Good values, defaults included, pass every rule.
    CHECK(err("").empty());
    CHECK(err("stride = 1\nsize = 0\nalign = 8\nkinds = [\"b\", \"a\"]\n").empty());
    CHECK(err("stride = 1024\nsize = \"8KiB\"\nmax = 1\nalign = 1\n").empty());

    // Each broken value is named with file:line, the key and what is wrong.
    std::string e = err("label = \"x\"\nstride = 3\n");
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].stride' = 3 is not a power of two"));
    CHECK_THAT(err("stride = 0\n"), ContainsSubstring("out of range")); // the range comes first
    e = err("size = 4097\n");
    CHECK_THAT(e, ContainsSubstring("p.toml:3"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].size' = 4097 is not a multiple of 4096"));
    e = err("max = 4\nalign = 8\n");
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].align' = 8 is above max = 4"));
    e = err("kinds = [\"a\", \"zzz\"]\n");
    CHECK_THAT(e, ContainsSubstring("p.toml:3"));
    CHECK_THAT(e, ContainsSubstring("zzz"));
    CHECK_THAT(e, ContainsSubstring("a, b"));

    // A relation broken by the other key alone points at that key (or its flag).
    s["w"][4].default_value = int64_t(16);
    e = err("label = \"x\"\nmax = 4\n");
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].align' = 16 is above max = 4"));
    e = err("", {{"workload.w.max", "4", "--set workload.w.max=4"}});
    CHECK_THAT(e, ContainsSubstring("--set workload.w.max=4"));
    // The flag that broke it is named even when the file sets the parameter.
    e = err("align = 4\n", {{"workload.w.max", "2", "--set workload.w.max=2"}});
    CHECK_THAT(e, ContainsSubstring("--set workload.w.max=2"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].align' = 4 is above max = 2"));
    // An override is named by its flag.
    e = err("", {{"workload.0.stride", "6", "--set workload.0.stride=6"}});
    CHECK_THAT(e, ContainsSubstring("--set workload.0.stride=6"));
    CHECK_THAT(e, ContainsSubstring("not a power of two"));
}

TEST_CASE("the workloads' constraints are checked when the profile loads", "[profile]") {
    // The built-in profiles satisfy them.
    for (const auto& [name, text] : builtin_profiles()) {
        INFO(name);
        CHECK(registry_error(name, {}).empty());
    }
    // guest-fault's guest code masks with guest_stride - 1: a power of two.
    for (std::string good : {"1", "2", "64", "1024"})
        CHECK(registry_error("smoke", {parse_set_flag("workload.guest-fault.guest_stride=" + good)})
                  .empty());
    std::string e =
        registry_error("smoke", {parse_set_flag("workload.guest-fault.guest_stride=3")});
    CHECK_THAT(e, ContainsSubstring("--set workload.guest-fault.guest_stride=3"));
    CHECK_THAT(e, ContainsSubstring("guest_stride' = 3 is not a power of two"));
    CHECK_THAT(registry_error("smoke", {parse_set_flag("workload.guest-fault.guest_stride=2048")}),
               ContainsSubstring("out of range"));

    // convert works on two halves: an even page count.
    e = text_error(one_workload("convert", "pages = 33"));
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].pages' = 33 is not a multiple of 2 (even)"));
    CHECK(text_error(one_workload("convert", "pages = 34")).empty());
    // Its layouts: interleave_pages even, the straddle window in one guest batch.
    e = text_error(one_workload("convert", "interleave_pages = 7"));
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].interleave_pages' = 7 is not a multiple of 2"));
    CHECK_THAT(text_error(one_workload("convert", "straddle_pages = 193")),
               ContainsSubstring("out of range"));
    CHECK(text_error(one_workload("convert", "straddle_pages = 192\nrace_time = \"2s\"")).empty());

    // lifecycle: known scenario names, whole pages.
    e = text_error(one_workload("lifecycle", "kinds = [\"bind_unbind\", \"explode\"]"));
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("explode"));
    CHECK_THAT(e, ContainsSubstring("destroy_vm_first")); // the known names
    e = text_error(one_workload("lifecycle", "size = 5000"));
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].size' = 5000 is not a multiple of 4096"));
    CHECK(text_error(one_workload("lifecycle", "size = \"64KiB\"")).empty());
    CHECK(text_error(one_workload("lifecycle", "size = 0")).empty()); // 0: guest_memfd.size

    // punch-hole: an alignment above the longest range would make every range longer.
    e = text_error(one_workload("punch-hole", "align_pages = 128"));
    CHECK_THAT(e, ContainsSubstring("p.toml:4"));
    CHECK_THAT(e, ContainsSubstring("'workload[0].align_pages' = 128 is above max_pages = 64"));
    CHECK(text_error(one_workload("punch-hole", "align_pages = 64")).empty());

    // The profile's own sizes: whole pages, a power-of-two ring buffer.
    e = registry_error("smoke", {{"guest_memfd.size", "\"8000\"", "--gmem-size 8000"}});
    CHECK_THAT(e, ContainsSubstring("--gmem-size 8000"));
    CHECK_THAT(e, ContainsSubstring("multiple of 4096"));
    e = registry_error("smoke", {parse_set_flag("probes.ringbuf_size=\"3MiB\"")});
    CHECK_THAT(e, ContainsSubstring("--set probes.ringbuf_size"));
    CHECK_THAT(e, ContainsSubstring("not a power of two"));
}
