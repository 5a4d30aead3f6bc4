// The "nothing ran is never a pass" rule of the report model: did_run(),
// settle_outcome() and Report::verdict(), with good and broken results.
#include "reports/model.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace gms::report;
using Catch::Matchers::ContainsSubstring;

namespace {

Check skipped_check(const std::string& name, const std::string& reason) {
    return {name, Outcome::skip, "", "", reason};
}

// What the conformance workload returned on Debian's 6.12 kernel
// (KVM_CAP_GUEST_MEMFD=0 on the default VM type): `pass`, one check, skipped.
WorkloadResult conformance_without_guest_memfd() {
    WorkloadResult w;
    w.name = w.label = "conformance";
    w.outcome = Outcome::pass;
    w.reason = "1 checks: 0 pass, 0 fail, 1 skip, 0 error";
    w.checks.push_back(
        skipped_check("guest_memfd.supported", "KVM_CAP_GUEST_MEMFD is 0 on a VM of type 0"));
    w.counters["checks"] = 1;
    return w;
}

WorkloadResult ran_host_fault() {
    WorkloadResult w;
    w.name = w.label = "host-fault";
    w.ops["fault"].record(100, 4096);
    w.verification.pages_checked = 1;
    return w;
}

Report run_report(std::vector<WorkloadResult> workloads) {
    Report r;
    r.command = "run";
    r.workloads = std::move(workloads);
    return r;
}

size_t count(const std::string& s, const std::string& needle) {
    size_t n = 0;
    for (auto pos = s.find(needle); pos != std::string::npos; pos = s.find(needle, pos + 1))
        ++n;
    return n;
}

} // namespace

TEST_CASE("did_run: an operation, a verified page or a check that ran", "[report][verdict]") {
    WorkloadResult w;
    CHECK_FALSE(did_run(w));
    w.ops["fault"]; // an op kind with no count is not an operation
    CHECK_FALSE(did_run(w));
    w.checks.push_back(skipped_check("a", "no WRITE flag"));
    CHECK_FALSE(did_run(w)); // skipped checks did not run

    WorkloadResult op;
    op.ops["fault"].record(10);
    CHECK(did_run(op));
    WorkloadResult failed_op; // a failed operation still ran
    failed_op.ops["punch_hole"].record_error(22);
    CHECK(did_run(failed_op));
    WorkloadResult verified;
    verified.verification.pages_checked = 3;
    CHECK(did_run(verified));
    WorkloadResult check = w;
    check.checks.push_back({"b", Outcome::pass, "x", "x", ""});
    CHECK(did_run(check));
}

TEST_CASE("settle_outcome: a pass where every check skipped is a skip naming the reasons",
          "[report][verdict]") {
    WorkloadResult w = conformance_without_guest_memfd();
    settle_outcome(w);
    CHECK(w.outcome == Outcome::skip);
    CHECK_THAT(w.reason, ContainsSubstring("guest_memfd.supported"));
    CHECK_THAT(w.reason, ContainsSubstring("KVM_CAP_GUEST_MEMFD is 0 on a VM of type 0"));

    // Checks that skip for the same reason are named together, the reason once.
    WorkloadResult many;
    many.checks = {skipped_check("a", "no WRITE flag"), skipped_check("b", "no mmap"),
                   skipped_check("c", "no WRITE flag"), skipped_check("d", "")};
    settle_outcome(many);
    CHECK(many.outcome == Outcome::skip);
    CHECK_THAT(many.reason, ContainsSubstring("a, c: no WRITE flag"));
    CHECK_THAT(many.reason, ContainsSubstring("b: no mmap"));
    CHECK_THAT(many.reason, ContainsSubstring("d: no reason given"));
    CHECK(count(many.reason, "no WRITE flag") == 1);

    // Nothing at all: still a skip, and what the workload said is kept.
    WorkloadResult empty;
    empty.reason = "stopped before every group ran";
    settle_outcome(empty);
    CHECK(empty.outcome == Outcome::skip);
    CHECK_THAT(empty.reason, ContainsSubstring("nothing ran"));
    CHECK_THAT(empty.reason, ContainsSubstring("stopped before every group ran"));
}

TEST_CASE("settle_outcome leaves runs, failures, errors and skips alone", "[report][verdict]") {
    WorkloadResult ran = ran_host_fault();
    settle_outcome(ran);
    CHECK(ran.outcome == Outcome::pass);
    CHECK(ran.reason.empty());

    for (Outcome o : {Outcome::fail, Outcome::error}) {
        WorkloadResult w = conformance_without_guest_memfd();
        w.outcome = o;
        w.reason = "setup failed";
        settle_outcome(w);
        CHECK(w.outcome == o); // a failure or an error is never hidden as a skip
        CHECK(w.reason == "setup failed");
    }
    WorkloadResult skip;
    skip.outcome = Outcome::skip;
    skip.reason = "KVM_CAP_USER_MEMORY2 is not supported";
    settle_outcome(skip);
    CHECK(skip.outcome == Outcome::skip);
    CHECK(skip.reason == "KVM_CAP_USER_MEMORY2 is not supported");
}

TEST_CASE("verdict: nothing ran is skip, never pass", "[report][verdict]") {
    // The broken case: the workload claims pass but did nothing. The verdict
    // does not take its word for it, settled or not.
    Report r = run_report({conformance_without_guest_memfd()});
    CHECK(r.verdict() == Outcome::skip);
    settle_outcome(r.workloads[0]);
    CHECK(r.verdict() == Outcome::skip);

    // No workload at all, or only skipped ones: skip.
    CHECK(run_report({}).verdict() == Outcome::skip);
    WorkloadResult skipped;
    skipped.outcome = Outcome::skip;
    skipped.reason = "no guest_memfd";
    CHECK(run_report({skipped, skipped}).verdict() == Outcome::skip);
    // A skipped workload that did some work before skipping did not pass either.
    WorkloadResult cut_short = ran_host_fault();
    cut_short.outcome = Outcome::skip;
    CHECK(run_report({cut_short}).verdict() == Outcome::skip);

    // One workload that ran is enough for a pass; the others' skips are listed.
    CHECK(run_report({conformance_without_guest_memfd(), ran_host_fault()}).verdict() ==
          Outcome::pass);
    // Report-level conformance checks count when they ran, not when they skipped.
    Report conf = run_report({});
    conf.conformance.push_back(skipped_check("flags.x", "no mmap"));
    CHECK(conf.verdict() == Outcome::skip);
    conf.conformance.push_back({"flags.y", Outcome::pass, "EINVAL", "EINVAL", ""});
    CHECK(conf.verdict() == Outcome::pass);
}

TEST_CASE("verdict: failures and errors win over nothing having run", "[report][verdict]") {
    Report failed = run_report({conformance_without_guest_memfd()});
    failed.kernel_log.push_back({"WARNING", "WARNING: at mm/filemap.c", 1});
    CHECK(failed.verdict() == Outcome::fail);
    Report errored = run_report({conformance_without_guest_memfd()});
    errored.errors.push_back("recording not saved: EISDIR");
    CHECK(errored.verdict() == Outcome::error);
    WorkloadResult thrown;
    thrown.outcome = Outcome::error;
    thrown.reason = "KVM_CREATE_VM: ENOMEM";
    CHECK(run_report({thrown}).verdict() == Outcome::error);
}

TEST_CASE("verdict: watch runs no workloads and passes when nothing failed", "[report][verdict]") {
    Report w;
    w.command = "watch";
    CHECK(w.verdict() == Outcome::pass);
    w.errors.push_back("recording not saved: EISDIR");
    CHECK(w.verdict() == Outcome::error);
}
