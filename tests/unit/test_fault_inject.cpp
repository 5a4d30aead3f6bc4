// fault-inject's pure pieces: the debugfs settings it saves, writes and
// restores (on a directory standing in for debugfs), the fail-nth read-back,
// the clean errnos, its parameters, and the sweep in the report renderers.
#include "core/error.h"
#include "core/util.h"
#include "reports/render.h"
#include "workloads/fault_inject.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace gms;
using namespace gms::workloads::fault;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

struct FakeDebugfs {
    fs::path dir;
    FakeDebugfs() {
        char tmpl[] = "/tmp/gms-fault-XXXXXX";
        dir = ::mkdtemp(tmpl);
        // Values as the kernel shows them before anyone configures it.
        const std::pair<const char*, const char*> initial[] = {
            {"failslab/ignore-gfp-wait", "Y\n"},      {"failslab/probability", "0\n"},
            {"failslab/times", "1\n"},                {"failslab/verbose", "2\n"},
            {"fail_page_alloc/ignore-gfp-wait", "Y\n"}, {"fail_page_alloc/ignore-gfp-highmem", "Y\n"},
            {"fail_page_alloc/min-order", "1\n"},     {"fail_page_alloc/probability", "0\n"},
            {"fail_page_alloc/times", "1\n"},         {"fail_page_alloc/verbose", "2\n"},
        };
        for (auto [file, value] : initial) {
            fs::create_directories((dir / file).parent_path());
            std::ofstream(dir / file) << value;
        }
    }
    ~FakeDebugfs() { fs::remove_all(dir); }
    std::string value(const std::string& file) const {
        std::ifstream f(dir / file);
        std::string v;
        std::getline(f, v);
        return v;
    }
};

} // namespace

TEST_CASE("fault-inject: debugfs settings are written, then restored", "[fault-inject]") {
    FakeDebugfs d;
    {
        DebugfsSettings s(d.dir, sweep_settings());
        CHECK(d.value("failslab/ignore-gfp-wait") == "N");
        CHECK(d.value("fail_page_alloc/ignore-gfp-highmem") == "N");
        CHECK(d.value("fail_page_alloc/min-order") == "0");
        CHECK(d.value("failslab/probability") == "0"); // only fail-nth injects
        CHECK(d.value("fail_page_alloc/times") == "-1");
        CHECK(d.value("failslab/verbose") == "0");
        REQUIRE(s.previous().size() == sweep_settings().size());
        CHECK(s.previous()[0].value == "Y");
    }
    CHECK(d.value("failslab/ignore-gfp-wait") == "Y");
    CHECK(d.value("fail_page_alloc/min-order") == "1");
    CHECK(d.value("fail_page_alloc/times") == "1");
    CHECK(d.value("failslab/verbose") == "2");
}

TEST_CASE("fault-inject: a failed write restores what was written and names the file",
          "[fault-inject]") {
    FakeDebugfs d;
    // A directory where a value file should be: reading works (empty), writing fails.
    fs::remove(d.dir / "fail_page_alloc/min-order");
    fs::create_directory(d.dir / "fail_page_alloc/min-order");
    try {
        DebugfsSettings s(d.dir, sweep_settings());
        FAIL("no error");
    } catch (const EnvError& e) {
        CHECK_THAT(e.what(), ContainsSubstring("min-order"));
    }
    CHECK(d.value("failslab/ignore-gfp-wait") == "Y");
    CHECK(d.value("fail_page_alloc/ignore-gfp-highmem") == "Y");
}

TEST_CASE("fault-inject: a missing attribute is an environment error naming it",
          "[fault-inject]") {
    FakeDebugfs d;
    fs::remove_all(d.dir / "fail_page_alloc");
    try {
        DebugfsSettings s(d.dir, sweep_settings());
        FAIL("no error");
    } catch (const EnvError& e) {
        CHECK_THAT(e.what(), ContainsSubstring("fail_page_alloc/ignore-gfp-wait"));
    }
    CHECK(d.value("failslab/ignore-gfp-wait") == "Y"); // nothing was written
}

TEST_CASE("fault-inject: fail-nth read-back", "[fault-inject]") {
    CHECK(parse_fail_nth("0\n", 2) == 0u); // injected
    CHECK(parse_fail_nth("7\n", 2) == 7u); // still pending: nothing injected
    CHECK(parse_fail_nth("12", 2) == 12u);
    CHECK_FALSE(parse_fail_nth("", 0));
    CHECK_FALSE(parse_fail_nth("x\n", 2));
    CHECK_FALSE(parse_fail_nth("-1\n", 3));
}

TEST_CASE("fault-inject: FailNth on a plain file arms and reads back", "[fault-inject]") {
    // The kernel's file keeps its offset at 0 across the write; a plain file
    // does not, so only arming and a failed parse are checked here.
    char tmpl[] = "/tmp/gms-failnth-XXXXXX";
    int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    FailNth f(tmpl);
    CHECK(f.try_arm(42) == 0);
    int err = 0;
    CHECK_FALSE(f.injected(&err));
    CHECK(err != 0); // read at the end of "42": nothing to parse
    CHECK(f.try_arm(1) == 0);
    ::unlink(tmpl);
    FailNth missing("/nonexistent/fail-nth");
    CHECK(missing.try_arm(1) == ENOENT);
}

TEST_CASE("fault-inject: clean failures", "[fault-inject]") {
    for (const auto& c : call_names()) {
        CHECK(clean_failure(c, "ENOMEM") == (c != "first_touch"));
        CHECK_FALSE(clean_failure(c, "EFAULT"));
        CHECK_FALSE(clean_failure(c, "EEXIST"));
    }
    CHECK(clean_failure("first_touch", kSigbus));
    CHECK_FALSE(clean_failure("allocate", kSigbus));
}

TEST_CASE("fault-inject: one thread, known calls, bounded N", "[fault-inject][profile]") {
    auto schemas = workloads::schemas();
    auto load = [&](const std::string& extra) {
        return profile::parse_profile("[[workload]]\nkind = \"fault-inject\"\n" + extra, "t.toml",
                                      {}, schemas);
    };
    auto p = load("");
    CHECK(p.workloads[0].integer("threads") == 1);
    CHECK(p.workloads[0].integer("max_n") == 2000);
    CHECK(p.workloads[0].list("calls").empty());
    CHECK(p.workloads[0].integer("attempt_s") == 20);
    auto error = [&](const std::string& extra) {
        try {
            load(extra);
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK_THAT(error("threads = 2"), ContainsSubstring("t.toml:3"));
    CHECK_THAT(error("calls = [\"allocate\", \"explode\"]"), ContainsSubstring("explode"));
    CHECK_THAT(error("max_n = 0"), ContainsSubstring("max_n"));
    CHECK_THAT(error("attempt_s = 0"), ContainsSubstring("attempt_s"));
    // Other workloads keep the common thread count.
    auto hf = profile::parse_profile("[[workload]]\nkind = \"host-fault\"\nthreads = 4\n",
                                     "t.toml", {}, schemas);
    CHECK(hf.workloads[0].integer("threads") == 4);
}

namespace {
// An allocate sweep over N = 1..last with `injected` faults, all ENOMEM.
report::FaultSweep allocate_sweep(unsigned last, unsigned injected) {
    report::FaultSweep s;
    s.call = "allocate";
    s.syscall = "fallocate(KEEP_SIZE)";
    s.attempts = last;
    s.faults_injected = injected;
    s.first_n = 1;
    s.last_n = last;
    s.errnos["ENOMEM"] = injected;
    return s;
}
} // namespace

TEST_CASE("fault-inject: sweeps in JSON and text", "[fault-inject][report]") {
    report::Report r;
    r.command = "run";
    r.profile = {{"name", "fault-inject"}};
    report::WorkloadResult w;
    w.name = "fault-inject";
    report::FaultSweep s = allocate_sweep(15, 14);
    s.exhausted = true;
    s.unevictable_delta_kb = 0;
    w.fault_sweeps.push_back(s);
    report::FaultSweep bad;
    bad.call = "bind";
    bad.syscall = "KVM_SET_USER_MEMORY_REGION2";
    bad.attempts = 3;
    bad.faults_injected = 3;
    bad.first_n = 1;
    bad.last_n = 3;
    bad.bounded_by = "max_n";
    bad.succeeded_despite_fault = 1;
    bad.errnos["EFAULT"] = 2;
    bad.failure("N=2: failed with EFAULT");
    bad.leak("N=3: binding again returned EEXIST");
    bad.outcome = report::Outcome::fail;
    w.fault_sweeps.push_back(bad);
    report::FaultSweep skipped;
    skipped.call = "set_attributes";
    skipped.outcome = report::Outcome::skip;
    skipped.reason = "KVM_X86_SW_PROTECTED_VM is not a VM type here";
    w.fault_sweeps.push_back(skipped);
    r.workloads.push_back(w);

    auto j = report::to_json(r);
    auto& sw = j["workloads"][0]["fault_sweeps"];
    REQUIRE(sw.size() == 3);
    CHECK(sw[0]["faults_injected"] == 14);
    CHECK(sw[0]["n_range"] == nlohmann::json::array({1, 15}));
    CHECK(sw[0]["errnos"]["ENOMEM"] == 14);
    CHECK(sw[0]["unevictable_delta_kb"] == 0);
    CHECK(sw[1]["leaks"] == 1);
    CHECK(sw[1]["failures"] == 1);
    CHECK(sw[1]["bounded_by"] == "max_n");
    CHECK(sw[2]["unevictable_delta_kb"].is_null());
    // Workloads without sweeps carry no key (their reports are unchanged).
    report::Report plain;
    plain.workloads.push_back(report::WorkloadResult{});
    CHECK_FALSE(report::to_json(plain)["workloads"][0].contains("fault_sweeps"));

    std::string text = report::to_text(r);
    CHECK_THAT(text, ContainsSubstring("fail-nth allocate"));
    CHECK_THAT(text, ContainsSubstring("14 faults injected, N 1..15 (exhausted): ENOMEM 14"));
    CHECK_THAT(text, ContainsSubstring("bounded by max_n"));
    CHECK_THAT(text, ContainsSubstring("leak: N=3: binding again returned EEXIST"));
    CHECK_THAT(text, ContainsSubstring("failure: N=2: failed with EFAULT"));
    CHECK_THAT(text, ContainsSubstring("KVM_X86_SW_PROTECTED_VM is not a VM type here"));
}

TEST_CASE("fault-inject: the sweep's check names each count once, in its place", "[fault-inject]") {
    report::FaultSweep s = allocate_sweep(709, 709);
    s.bounded_by = "stop";
    s.errnos["ENOMEM"] = 697;
    s.succeeded_despite_fault = 12;
    s.leaks = 696;
    s.failures = 3;
    s.outcome = report::Outcome::fail;
    auto c = gms::workloads::fault::sweep_check(s);
    CHECK(c.name == "fail-nth.allocate");
    CHECK(c.observed == "709 faults injected at N 1..709 (bounded by stop); ENOMEM 697, 12 "
                        "succeeded; 696 leaks, 3 failures");
    s.errnos.clear();
    CHECK_THAT(gms::workloads::fault::sweep_check(s).observed,
               Catch::Matchers::ContainsSubstring("(bounded by stop); 12 succeeded; 696 leaks"));
}
