// The range-scaling fits on known datasets: exact linear, quadratic, n log n,
// constant, and linear with noise; the classes, slopes and projections.
#include "core/scaling_fit.h"
#include "reports/render.h"

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cmath>

using namespace gms::fit;
using Catch::Approx;
using gms::fit::Growth;

namespace {
// Page counts as the workload measures them: 1 MiB .. 1 GiB, doubling.
std::vector<double> sizes() {
    std::vector<double> xs;
    for (double x = 256; x <= 262144; x *= 2)
        xs.push_back(x);
    return xs;
}

template <class F> std::vector<Point> make(F&& f) {
    std::vector<Point> pts;
    for (double x : sizes())
        pts.push_back({x, f(x)});
    return pts;
}

// Deterministic noise in [-amp, +amp] (relative), the same on every machine.
double noise(unsigned i, double amp) {
    uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 29;
    return amp * (double(z % 2001) / 1000.0 - 1.0);
}

Growth class_of(const std::vector<Point>& pts, double tol = 0.2) {
    auto p = power(pts);
    REQUIRE(p);
    std::vector<double> xs;
    for (const auto& q : pts)
        xs.push_back(q.x);
    return classify(p->exponent, n_log_n_exponent(xs), tol);
}
} // namespace

TEST_CASE("scaling fit: exact linear data gives its slope, exponent 1, linear", "[fit]") {
    // 150 ns per page plus a 2 us syscall.
    auto pts = make([](double x) { return 2000 + 150 * x; });
    auto l = linear(pts);
    REQUIRE(l);
    CHECK(l->slope == Approx(150));
    CHECK(l->intercept == Approx(2000));
    CHECK(l->r2 == Approx(1));
    auto p = power(pts);
    REQUIRE(p);
    CHECK(p->exponent == Approx(1).margin(0.02));
    CHECK(class_of(pts) == Growth::linear);
    // 20 s at 150 ns/page: 133.3 M pages.
    auto x = reach(*l, 20e9);
    REQUIRE(x);
    CHECK(*x == Approx((20e9 - 2000) / 150));
}

TEST_CASE("scaling fit: quadratic data is superlinear, exponent 2", "[fit]") {
    auto pts = make([](double x) { return 3 * x * x; });
    auto p = power(pts);
    REQUIRE(p);
    CHECK(p->exponent == Approx(2));
    CHECK(p->coefficient == Approx(3));
    CHECK(p->r2 == Approx(1));
    CHECK(class_of(pts) == Growth::superlinear);
    // Where 3x^2 = 1.2e10: x = 63245.6.
    auto x = reach(*p, 1.2e10);
    REQUIRE(x);
    CHECK(*x == Approx(std::sqrt(4e9)));
}

TEST_CASE("scaling fit: noisy linear data stays linear with a close slope", "[fit]") {
    unsigned i = 0;
    auto pts = make([&](double x) { return (5000 + 80 * x) * (1 + noise(i++, 0.15)); });
    auto l = linear(pts);
    REQUIRE(l);
    CHECK(l->slope == Approx(80).epsilon(0.15));
    CHECK(l->r2 > 0.9);
    CHECK(class_of(pts) == Growth::linear);
    // Three repetitions per size, each noisy: the same.
    std::vector<Point> reps;
    for (double x : sizes())
        for (unsigned r = 0; r < 3; ++r)
            reps.push_back({x, (5000 + 80 * x) * (1 + noise(i++, 0.3))});
    CHECK(class_of(reps) == Growth::linear);
}

TEST_CASE("scaling fit: n log n and constant data are told apart", "[fit]") {
    auto nlogn = make([](double x) { return 40 * x * std::log(x); });
    double k = n_log_n_exponent(sizes());
    CHECK(k > 1.05);
    CHECK(k < 1.2);
    CHECK(class_of(nlogn, 0.05) == Growth::n_log_n);
    // With a wide tolerance n log n is within the linear band: the class
    // never claims more than the exponent can tell.
    CHECK(class_of(nlogn, 0.2) == Growth::linear);

    unsigned i = 0;
    auto flat = make([&](double) { return 30000 * (1 + noise(i++, 0.1)); });
    CHECK(class_of(flat) == Growth::constant);
    auto l = linear(flat);
    REQUIRE(l);
    CHECK(std::abs(l->slope) < 0.1);
}

TEST_CASE("scaling fit: too few points and impossible projections", "[fit]") {
    CHECK_FALSE(linear({}));
    CHECK_FALSE(linear({{1, 2}, {1, 3}})); // one distinct x
    CHECK_FALSE(power({{0, 5}, {-1, 3}})); // nothing positive
    CHECK_FALSE(reach(LinearFit{100, -1, 1, 2}, 1e9));
    CHECK_FALSE(reach(PowerFit{1, 0, 1, 2}, 1e9));
    // Already above the threshold at x = 0: reached at once.
    CHECK(reach(LinearFit{2e9, 5, 1, 2}, 1e9) == 0.0);
}

TEST_CASE("scaling fit: an isolated long operation is an outlier, not growth", "[fit]") {
    // A 3 s sleep planted in one punch at the smallest size.
    std::vector<Point> pts;
    for (double x : sizes())
        for (unsigned r = 0; r < 3; ++r)
            pts.push_back({x, 10000 + 100 * x});
    pts[1].y = 3e9;
    // The fit is made over the per-size minima; the outlier is judged against it.
    std::vector<Point> mins;
    for (double x : sizes())
        mins.push_back({x, 10000 + 100 * x});
    auto l = linear(mins);
    REQUIRE(l);
    auto out = outliers(
        pts, [&](double x) { return l->at(x); }, 10, 1e6);
    REQUIRE(out.size() == 1);
    CHECK(out[0] == 1);
    CHECK(class_of(mins) == Growth::linear);
}

// ---- the report section: fit_op over samples as the workload records them ----

namespace {
gms::report::ScalingOp op_from(const std::string& name, double (*t)(double)) {
    gms::report::ScalingOp o;
    o.name = name;
    o.x = "pages (all populated)";
    for (double x : sizes()) {
        gms::report::ScalingSample s;
        s.range_bytes = uint64_t(x) * 4096;
        s.work_pages = uint64_t(x);
        // Three repetitions; the second one disturbed a little.
        s.ns = {uint64_t(t(x)), uint64_t(t(x) * 1.3), uint64_t(t(x) * 1.05)};
        o.samples.push_back(s);
    }
    return o;
}
const std::vector<std::pair<std::string, double>> kThresholds = {{"soft_lockup", 20},
                                                                 {"guest_stall", 0.1}};
} // namespace

TEST_CASE("range scaling: fit_op classifies, projects and finds the outliers", "[fit]") {
    using namespace gms::report;
    auto punch = op_from("punch_hole", [](double x) { return 20000 + 250 * x; });
    // A 3 s sleep under the lock in the first repetition at 1 MiB.
    punch.samples[0].ns[0] = 3'000'000'000;
    fit_op(punch, 0.2, 10, kThresholds);
    REQUIRE(punch.growth);
    CHECK(*punch.growth == Growth::linear);
    REQUIRE(punch.linear);
    CHECK(punch.linear->slope == Approx(250).epsilon(0.02));
    REQUIRE(punch.projections.size() == 2);
    CHECK(punch.projections[0].threshold == "soft_lockup");
    CHECK(punch.projections[0].basis == "linear");
    CHECK(*punch.projections[0].pages == Approx((20e9 - 20000) / 250).epsilon(0.01));
    CHECK(*punch.projections[1].bytes < *punch.projections[0].bytes);
    REQUIRE(punch.outliers.size() == 1);
    CHECK(punch.outliers[0].range_bytes == 1u << 20);
    CHECK(punch.outliers[0].rep == 0);

    auto quad = op_from("release", [](double x) { return 0.01 * x * x; });
    fit_op(quad, 0.2, 10, kThresholds);
    REQUIRE(quad.growth);
    CHECK(*quad.growth == Growth::superlinear);
    CHECK(quad.projections[0].basis == "power"); // the linear fit would flatter it
    CHECK(*quad.projections[0].pages == Approx(std::sqrt(20e9 / 0.01)).epsilon(0.01));

    // Two sizes cannot be classified; the reason says so.
    auto few = op_from("allocate", [](double x) { return 100 * x; });
    few.samples.resize(2);
    fit_op(few, 0.2, 10, kThresholds);
    CHECK_FALSE(few.growth);
    CHECK(few.growth_reason.find("at least 3 sizes") != std::string::npos);
    // Nor fitted: two points always lie on a line, and a slope or a
    // projection through them would be made up.
    CHECK_FALSE(few.linear);
    CHECK_FALSE(few.power);
    CHECK(few.projections.empty());
    // Three sizes spanning 4x: fitted, not classified, not projected.
    auto narrow = op_from("allocate", [](double x) { return 100 * x; });
    narrow.samples.resize(3);
    fit_op(narrow, 0.2, 10, kThresholds);
    CHECK(narrow.linear);
    CHECK_FALSE(narrow.growth);
    CHECK(narrow.growth_reason.find("spanning 4.0x") != std::string::npos);
    CHECK(narrow.projections.empty());
}

TEST_CASE("range scaling: rendered into the workload's JSON and the text summary", "[fit]") {
    using namespace gms::report;
    Report r;
    r.profile = {{"name", "range-scaling"}};
    WorkloadResult w;
    w.name = "range-scaling";
    w.ops["punch_hole"].record(1000, 4096);
    RangeScaling s;
    s.reps = 3;
    s.soft_lockup_s = 20;
    s.watchdog_thresh_s = 10;
    s.stall_s = 0.1;
    auto punch = op_from("punch_hole", [](double x) { return 20000 + 250 * x; });
    fit_op(punch, 0.2, 10, kThresholds);
    s.ops.push_back(punch);
    ScalingOp conv;
    conv.name = "convert_to_private";
    conv.skip_reason = "no KVM_X86_SW_PROTECTED_VM";
    s.ops.push_back(conv);
    s.notes.push_back("largest size 1GiB");
    w.range_scaling = s;
    r.workloads.push_back(w);

    auto j = to_json(r)["workloads"][0]["range_scaling"];
    CHECK(j["soft_lockup_s"] == 20);
    CHECK(j["ops"][0]["name"] == "punch_hole");
    CHECK(j["ops"][0]["growth"] == "linear");
    CHECK(j["ops"][0]["samples"].size() == sizes().size());
    CHECK(j["ops"][0]["samples"][0]["ns"].size() == 3);
    CHECK(j["ops"][0]["linear"]["slope_ns_per_page"].get<double>() == Approx(250).epsilon(0.02));
    CHECK(j["ops"][0]["projections"][0]["bytes"].is_number_integer());
    CHECK(j["ops"][1]["skip_reason"] == "no KVM_X86_SW_PROTECTED_VM");
    CHECK(j["ops"][1]["growth"].is_null());
    // No section on other workloads.
    r.workloads[0].range_scaling.reset();
    CHECK_FALSE(to_json(r)["workloads"][0].contains("range_scaling"));
    r.workloads[0].range_scaling = s;

    std::string text = to_text(r);
    CHECK_THAT(text, Catch::Matchers::ContainsSubstring("punch_hole"));
    CHECK_THAT(text, Catch::Matchers::ContainsSubstring(" ns/page"));
    CHECK_THAT(text, Catch::Matchers::ContainsSubstring("linear"));
    CHECK_THAT(text, Catch::Matchers::ContainsSubstring("soft_lockup at"));
    CHECK_THAT(text, Catch::Matchers::ContainsSubstring("skipped: no KVM_X86_SW_PROTECTED_VM"));
}

// ---- a fit whose intercept is negative (convex times: the largest sizes
// dominate the least squares and the line passes below the small ones) ----

namespace {
// 1.8 ms at 1 MiB, 1.0 s at 256 MiB, 5.1 s at 1 GiB: within the linear band
// (exponent 1.15 <= 1 + 0.2), as allocate measured under TCG can be.
double convex(double x) {
    return 3000 * std::pow(x, 1.15);
}
} // namespace

TEST_CASE("range scaling: with a negative intercept no ordinary repetition is an outlier",
          "[fit]") {
    using namespace gms::report;
    auto op = op_from("allocate", convex);
    fit_op(op, 0.2, 10, kThresholds);
    REQUIRE(op.linear);
    REQUIRE(op.growth);
    CHECK(*op.growth == Growth::linear);
    CHECK(op.linear->intercept < 0); // the premise: the line is below 0 at 1 MiB
    CHECK(op.linear->at(256) < 0);
    // Every repetition is within 1.3x of its size's fastest: none is an outlier.
    CHECK(op.outliers.empty());

    // A planted 500 ms repetition at 1 MiB still is, judged against something
    // that is not 0 ns.
    op.samples[0].ns[1] = 500'000'000;
    fit_op(op, 0.2, 10, kThresholds);
    REQUIRE(op.outliers.size() == 1);
    CHECK(op.outliers[0].range_bytes == 1u << 20);
    CHECK(op.outliers[0].rep == 1);
    CHECK(op.outliers[0].expected_ns >= double(op.samples[0].min_ns()));
}

TEST_CASE("range scaling: one repetition per size and a negative intercept", "[fit]") {
    using namespace gms::report;
    auto op = op_from("allocate", convex);
    for (auto& s : op.samples)
        s.ns.resize(1);
    fit_op(op, 0.2, 10, kThresholds);
    REQUIRE(op.linear);
    CHECK(op.linear->intercept < 0);
    // No sibling to compare with: the fits are the reference, and the
    // log-log one never predicts 0 ns.
    CHECK(op.outliers.empty());
}

TEST_CASE("range scaling: a convex series is not projected from the flattering line", "[fit]") {
    using namespace gms::report;
    auto op = op_from("allocate", convex);
    fit_op(op, 0.2, 10, kThresholds);
    REQUIRE(op.linear);
    REQUIRE(op.power);
    CHECK(op.linear->intercept < 0);
    REQUIRE(op.projections.size() == 2);
    // The power law is the data here: 3000 x^1.15 = 20 s at x = (20e9/3000)^(1/1.15).
    const double truth = std::pow(20e9 / 3000, 1 / 1.15);
    REQUIRE(op.projections[0].pages);
    CHECK(op.projections[0].threshold == "soft_lockup");
    // The line through these points reaches 20 s about 2x further out: a
    // projection must not be the more flattering of the two fits.
    CHECK(*op.projections[0].pages <= truth * 1.01);
    CHECK(op.projections[0].basis == "power");
    // Concave data (a fixed cost that dominates the small sizes) is projected
    // from the line: the power law's exponent < 1 would flatter it.
    auto fixed = op_from("punch_hole", [](double x) { return 2e6 + 250 * x; });
    fit_op(fixed, 0.2, 10, kThresholds);
    REQUIRE(fixed.projections.size() == 2);
    CHECK(fixed.projections[0].basis == "linear");
    CHECK(*fixed.projections[0].pages == Approx((20e9 - 2e6) / 250).epsilon(0.01));
}

TEST_CASE("range scaling: a sparse series projects the range, not the populated pages", "[fit]") {
    using namespace gms::report;
    // 1 page in 16 populated: x counts populated pages, the range is 16x that.
    auto op = op_from("punch_hole_sparse", [](double x) { return 20000 + 250 * x; });
    for (auto& s : op.samples)
        s.range_bytes = s.work_pages * 16 * 4096;
    fit_op(op, 0.2, 10, kThresholds);
    REQUIRE(op.projections.size() == 2);
    const auto& p = op.projections[0];
    REQUIRE(p.pages);
    REQUIRE(p.bytes);
    CHECK(double(*p.bytes) == Approx(*p.pages * 16 * 4096));
}

TEST_CASE("scaling fit: nothing is an outlier of an expectation of 0 ns or less", "[fit]") {
    // A line with a negative intercept predicts -5 ms at x = 256: a 2 ms
    // point there is not "10 times above" it.
    LinearFit line{-10e6, 20000, 0.99, 5};
    REQUIRE(line.at(256) < 0);
    std::vector<Point> pts = {{256, 2e6}, {1024, 3e9}};
    auto out = outliers(
        pts, [&](double x) { return line.at(x); }, 10, 1e6);
    REQUIRE(out.size() == 1);
    CHECK(out[0] == 1); // 3 s against 10.5 ms still is
    CHECK_FALSE(is_outlier(2e6, 0, 10, 1e6));
    CHECK_FALSE(is_outlier(2e6, -5e6, 10, 1e6));
    CHECK(is_outlier(2e7, 1e6, 10, 1e6));
    CHECK_FALSE(is_outlier(2e5, 1e4, 10, 1e6)); // 20x, but only 190 us above
}

TEST_CASE("range scaling: no projection below a size measured faster than the threshold", "[fit]") {
    using namespace gms::report;
    // allocate in the lab (Debian 7.3.4, TCG, 2026-12-02): each size's
    // fastest time. The line's intercept is +97.5 ms (the largest sizes pull
    // it), so the line alone says 100 ms at 161 pages, below 256 pages where
    // 6.9 ms was measured.
    const std::vector<std::pair<uint64_t, uint64_t>> mins = {
        {256, 6913073},      {512, 12687578},     {1024, 22759045},   {2048, 65679422},
        {4096, 144784356},   {8192, 184053087},   {16384, 390927392}, {32768, 999115678},
        {65536, 1224643673}, {131072, 1960447447}};
    ScalingOp op;
    op.name = "allocate";
    for (auto [x, ns] : mins)
        op.samples.push_back({x * 4096, x, false, {ns}});
    fit_op(op, 0.2, 10, kThresholds);
    REQUIRE(op.linear);
    CHECK(op.linear->intercept > 9e7);
    REQUIRE(op.projections.size() == 2);
    REQUIRE(op.projections[1].threshold == "guest_stall");
    REQUIRE(op.projections[1].pages);
    // 100 ms lies between 2048 pages (65.7 ms) and 4096 (144.8 ms).
    CHECK(*op.projections[1].pages > 2048);
    CHECK(*op.projections[1].pages < 4096);
}
