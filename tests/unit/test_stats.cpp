#include "reports/stats.h"

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cmath>

using namespace gms::report::stats;
using Catch::Approx;
using Catch::Matchers::ContainsSubstring;

// The example of Wikipedia's "Welch's t-test" (Examples, A1 vs A2): t = -2.46,
// nu = 24.99, p = 0.021. The digits below were checked independently: the
// mean and variance by hand, p by integrating the t density numerically.
TEST_CASE("Welch's t-test: the textbook example", "[stats]") {
    Summary a1 = summarize(
        {27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4});
    Summary a2 = summarize(
        {27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4});
    CHECK(a1.mean == Approx(20.82));
    CHECK(a1.sd * a1.sd == Approx(7.867428571));
    CHECK(a2.mean == Approx(22.98666667));
    CHECK(a2.sd * a2.sd == Approx(3.812666667));
    Welch w = welch(a2, a1); // t of a1 - a2, as the example writes it
    CHECK(w.t == Approx(-2.455356398).epsilon(1e-8));
    CHECK(w.df == Approx(24.98852929).epsilon(1e-8));
    CHECK(w.p == Approx(0.0213780015).epsilon(1e-6));
}

TEST_CASE("Welch's t-test: small samples with unequal variances", "[stats]") {
    // 23,21,25,20,27 vs 18,19,17,20,16: t 3.5546, df 6.2316, p 0.011267.
    Welch w = welch(summarize({18, 19, 17, 20, 16}), summarize({23, 21, 25, 20, 27}));
    CHECK(w.t == Approx(3.554646821).epsilon(1e-8));
    CHECK(w.df == Approx(6.231596136).epsilon(1e-8));
    CHECK(w.p == Approx(0.0112673493).epsilon(1e-5));
}

TEST_CASE("Student's t distribution: CDF and quantiles", "[stats]") {
    CHECK(student_t_cdf(0, 5) == Approx(0.5));
    // Table values of t(0.975): 12.706 (1 df), 2.571 (5), 2.228 (10), 1.960 (inf).
    CHECK(student_t_quantile(0.975, 1) == Approx(12.7062).epsilon(1e-4));
    CHECK(student_t_quantile(0.975, 5) == Approx(2.5706).epsilon(1e-4));
    CHECK(student_t_quantile(0.975, 10) == Approx(2.2281).epsilon(1e-4));
    CHECK(student_t_quantile(0.975, 1e6) == Approx(1.95996).epsilon(1e-4));
    CHECK(student_t_cdf(-2.5706, 5) == Approx(0.025).epsilon(1e-3));
    CHECK(incomplete_beta(0.5, 2, 2) == Approx(0.5));
    CHECK(incomplete_beta(0.2, 1, 1) == Approx(0.2));
}

TEST_CASE("summary: the 95% confidence half-width", "[stats]") {
    Summary s = summarize({10, 12, 14});
    CHECK(s.n == 3);
    CHECK(s.mean == Approx(12));
    CHECK(s.sd == Approx(2));
    CHECK(s.ci95 == Approx(4.302653 * 2 / std::sqrt(3.0)).epsilon(1e-5));
    CHECK(summarize({5}).ci95 == 0);
    CHECK(summarize({}).n == 0);
}

TEST_CASE("judge: one report per side is not enough to judge", "[stats]") {
    Judgement j = judge({100}, {50}, true);
    CHECK(j.change == Change::not_enough_samples);
    CHECK_THAT(j.why, ContainsSubstring("not enough samples"));
    CHECK(j.ratio == Approx(-0.5));
    CHECK(judge({100, 101}, {50, 51}, true).change == Change::not_enough_samples); // LKP: 3
    Rules two;
    two.min_samples = 2;
    CHECK(judge({100, 101}, {50, 51}, true, two).change == Change::worse);
}

TEST_CASE("judge: a change beyond the run-to-run spread is significant", "[stats]") {
    // Throughput down 20% with 1% noise: worse; latency up the same: worse.
    CHECK(judge({1000, 1010, 990, 1005}, {800, 805, 795, 810}, true).change == Change::worse);
    CHECK(judge({1000, 1010, 990, 1005}, {800, 805, 795, 810}, false).change == Change::better);
    CHECK(judge({1000, 1010, 990}, {1200, 1210, 1190}, true).change == Change::better);
}

TEST_CASE("judge: changes within the noise are not significant", "[stats]") {
    // Big spread: the means differ by 10% but the ranges overlap, p is large.
    Judgement j = judge({1000, 1300, 800}, {900, 1150, 700}, true);
    CHECK(j.change == Change::noise);
    CHECK_THAT(j.why, ContainsSubstring("noise"));
    // Tiny noise, tiny change: significant by the t-test, below the 5% ratio.
    Judgement k = judge({1000, 1001, 1000.5}, {1010, 1011, 1010.5}, true);
    CHECK(k.welch.p < 0.05);
    CHECK(k.change == Change::noise);
    CHECK_THAT(k.why, ContainsSubstring("below the 5% threshold"));
    // Identical values: no change at all.
    Judgement z = judge({7, 7, 7}, {7, 7, 7}, true);
    CHECK(z.change == Change::noise);
    CHECK(z.welch.p == 1);
    // Zero variance on both sides but different values: a clean shift.
    CHECK(judge({7, 7, 7}, {9, 9, 9}, false).change == Change::worse);
}

TEST_CASE("judge: one outlier run keeps the ranges overlapping (LKP)", "[stats]") {
    // Means 20% apart and p < 0.05 ... but one new run is inside the base range.
    Judgement j = judge({100, 101, 99, 100, 100, 101}, {80, 81, 79, 80, 80, 99.5}, true);
    CHECK(j.change == Change::noise);
}
