// The pin-convert judge (workloads/pin_judge.h) on good and broken
// observations of KVM_SET_MEMORY_ATTRIBUTES2 with pinned pages, the report
// section's JSON round trip, and the workload's parameters at profile load.
// Pure: no kernel is asked.
#include "core/error.h"
#include "core/profile.h"
#include "reports/html.h"
#include "reports/model.h"
#include "reports/parse.h"
#include "reports/render.h"
#include "workloads/pin_judge.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cerrno>

using namespace gms;
using namespace gms::workloads;
using Catch::Matchers::ContainsSubstring;
using report::Outcome;

namespace {

constexpr uint64_t kPage = 4096;

// 16 pages, pages 3 and 8 pinned, every step as v8 answers it.
PinObservation good() {
    PinObservation o;
    o.range_offset = 0;
    o.range_size = 16 * kPage;
    o.pinned_offsets = {8 * kPage, 3 * kPage}; // any order
    o.while_pinned_errno = EAGAIN;
    o.error_offset = 3 * kPage;
    o.unpinned_subrange_errno = 0;
    o.after_unpin_errno = 0;
    o.private_after_unpin = true;
    o.back_to_shared_errno = 0;
    return o;
}

} // namespace

TEST_CASE("pin judge: v8's answers pass, with the evidence") {
    auto j = judge_pin_conversion(good());
    CHECK(j.outcome == Outcome::pass);
    CHECK(j.reason.empty());
    REQUIRE(j.expected_error_offset);
    CHECK(*j.expected_error_offset == 3 * kPage);
    REQUIRE(j.evidence.size() >= 4);
    CHECK_THAT(j.evidence[0], ContainsSubstring("EAGAIN, error_offset 0x3000"));
    CHECK_THAT(j.evidence[0], ContainsSubstring("0x3000, 0x8000"));

    // EAGAIN retried once after unpinning (io_uring drops pins late): still a pass, said so.
    auto o = good();
    o.after_unpin_retries = 2;
    j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::pass);
    CHECK_THAT(j.evidence[3], ContainsSubstring("after 2 EAGAIN"));

    // The first pinned page is the range's first: no unpinned sub-range to try.
    o = good();
    o.pinned_offsets = {0};
    o.error_offset = 0;
    o.unpinned_subrange_errno.reset();
    CHECK(judge_pin_conversion(o).outcome == Outcome::pass);

    // A range that starts inside the file: the first pinned page of the range.
    o = good();
    o.range_offset = 4 * kPage;
    o.range_size = 12 * kPage;
    o.error_offset = 8 * kPage;
    CHECK(judge_pin_conversion(o).outcome == Outcome::pass);
}

TEST_CASE("pin judge: a conversion that succeeds while pinned fails") {
    auto o = good();
    o.while_pinned_errno = 0;
    o.error_offset = 0;
    o.unpinned_subrange_errno.reset();
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("succeeded while pages were pinned"));
}

TEST_CASE("pin judge: another errno than EAGAIN fails") {
    auto o = good();
    o.while_pinned_errno = EBUSY;
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("EBUSY, not EAGAIN"));
}

TEST_CASE("pin judge: error_offset must name the first pinned page") {
    auto o = good();
    o.error_offset = 8 * kPage; // pinned, but not the first
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("names a pinned page, but not the first: 0x3000"));

    o.error_offset = 2 * kPage; // not pinned
    j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("not pinned"));

    o.error_offset = 0; // the range's start: what a kernel that ignores the page would write
    CHECK(judge_pin_conversion(o).outcome == Outcome::fail);

    o.error_offset = 64 * kPage; // beyond the range
    j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("outside the range"));

    o.error_offset = ~0ull; // never written back
    CHECK(judge_pin_conversion(o).outcome == Outcome::fail);
}

TEST_CASE("pin judge: the failed conversion must leave the range shared") {
    auto o = good();
    o.not_shared_after_error = {5 * kPage};
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("0x5000 no longer shared"));
}

TEST_CASE("pin judge: a range without pins converts while others are pinned") {
    auto o = good();
    o.unpinned_subrange_errno = EAGAIN;
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("[0x0, 0x3000)"));
}

TEST_CASE("pin judge: after unpinning the conversion succeeds, SIGBUSes, converts back") {
    auto o = good();
    o.after_unpin_errno = EAGAIN;
    o.after_unpin_retries = 200;
    o.private_after_unpin.reset();
    o.back_to_shared_errno.reset();
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("still failed after unpinning: EAGAIN (retried 200"));

    o = good();
    o.private_after_unpin = false;
    j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("expected SIGBUS"));

    o = good();
    o.private_after_unpin.reset();
    CHECK(judge_pin_conversion(o).outcome == Outcome::fail); // not checked is not a pass

    o = good();
    o.back_to_shared_errno = EINVAL;
    j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("back to shared failed: EINVAL"));
}

TEST_CASE("pin judge: the first failure is the reason, later ones stay in the evidence") {
    auto o = good();
    o.while_pinned_errno = 0;
    o.back_to_shared_errno = EINVAL;
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::fail);
    CHECK_THAT(j.reason, ContainsSubstring("succeeded while pages were pinned"));
    CHECK_THAT(j.evidence.back(), ContainsSubstring("back to shared: EINVAL"));
}

TEST_CASE("pin judge: what cannot be judged is not a pass") {
    auto o = good();
    o.pinned_offsets = {20 * kPage}; // outside the range
    auto j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::error);
    CHECK_THAT(j.reason, ContainsSubstring("no pinned page inside"));

    o = good();
    o.error_offset.reset(); // the struct has no error_offset
    j = judge_pin_conversion(o);
    CHECK(j.outcome == Outcome::skip);
    CHECK_THAT(j.reason, ContainsSubstring("no error_offset"));

    o.while_pinned_errno = 0; // ... but a success while pinned still fails
    o.unpinned_subrange_errno.reset();
    CHECK(judge_pin_conversion(o).outcome == Outcome::fail);
}

TEST_CASE("pin-convert section: JSON round trip through the report parser") {
    report::Report r;
    r.tool_version = "test";
    r.command = "run";
    report::WorkloadResult w;
    w.name = "pin-convert";
    w.label = "pin-convert";
    report::PinConvert s;
    s.vm_type = "sw_protected";
    s.gmem_flags = 1;
    s.attrs2_request = 0xc080aed2;
    s.attrs2_source = "BTF";
    s.pages = 16;
    auto o = good();
    s.cases.push_back(pin_case("vmsplice", "vmsplice of 2 page(s)", o, judge_pin_conversion(o)));
    o.error_offset = 8 * kPage;
    s.cases.push_back(
        pin_case("io_uring_fixed_buffers", "IORING_REGISTER_BUFFERS", o, judge_pin_conversion(o)));
    w.pin_convert = s;
    r.workloads.push_back(w);
    const std::string text = report::to_json(r).dump();
    report::Report back = report::parse_report(nlohmann::json::parse(text), "r.json");
    REQUIRE(back.workloads.size() == 1);
    REQUIRE(back.workloads[0].pin_convert);
    const auto& b = *back.workloads[0].pin_convert;
    CHECK(b.attrs2_request == 0xc080aed2);
    REQUIRE(b.cases.size() == 2);
    CHECK(b.cases[0].outcome == Outcome::pass);
    CHECK(b.cases[0].while_pinned == "EAGAIN");
    CHECK(*b.cases[0].error_offset == 3 * kPage);
    CHECK(*b.cases[0].expected_error_offset == 3 * kPage);
    CHECK(b.cases[0].unpinned_subrange == "ok");
    CHECK(b.cases[0].private_after_unpin == true);
    CHECK(b.cases[1].outcome == Outcome::fail);
    CHECK_THAT(b.cases[1].reason, ContainsSubstring("not the first"));
    CHECK(report::to_json(back).dump() == text);

    auto lines = report::to_text_lines(b, "  ");
    REQUIRE(lines.size() == 3);
    CHECK_THAT(lines[1], ContainsSubstring("vmsplice"));
    CHECK_THAT(lines[2], ContainsSubstring("error_offset 0x8000"));

    const std::string html = report::to_html(back);
    CHECK_THAT(html, ContainsSubstring("id=\"pin-convert-pin-convert\""));
    CHECK_THAT(html, ContainsSubstring("not the first"));

    report::PinConvert skipped;
    skipped.skip_reason = "no KVM_SET_MEMORY_ATTRIBUTES2: ENOTTY";
    CHECK_THAT(report::to_text_lines(skipped, "")[0], ContainsSubstring("not run here: no KVM"));
}

TEST_CASE("pin-convert parameters are checked when the profile loads") {
    const auto schemas = workloads::schemas();
    const std::string head = "name = \"p\"\n[[workload]]\nkind = \"pin-convert\"\n";
    auto p = profile::parse_profile(head, "p.toml", {}, schemas);
    REQUIRE(p.workloads.size() == 1);
    CHECK(p.workloads[0].integer("pin_first") == 3);
    CHECK(p.workloads[0].list("methods").size() == 2);
    // A pinned page beyond the range: refused at load (exit 2), naming the key.
    CHECK_THROWS_WITH(profile::parse_profile(head + "pages = 8\n", "p.toml", {}, schemas),
                      ContainsSubstring("pin_first"));
    CHECK_THROWS_WITH(
        profile::parse_profile(head + "methods = [\"o_direct\"]\n", "p.toml", {}, schemas),
        ContainsSubstring("o_direct"));
    CHECK_NOTHROW(profile::parse_profile(head + "pages = 9\n", "p.toml", {}, schemas));
}
