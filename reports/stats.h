// Statistics for `gmemstress compare`: is a change between two sets of runs
// real, or run-to-run noise? Pure functions, unit-tested against textbook
// values (tests/unit/test_stats.cpp).
#pragma once

#include <string>
#include <vector>

namespace gms::report::stats {

struct Summary {
    size_t n = 0;
    double mean = 0, sd = 0; // sample standard deviation (n - 1); 0 when n < 2
    double min = 0, max = 0;
    // Half-width of the 95% confidence interval of the mean (Student's t,
    // n - 1 degrees of freedom); 0 when n < 2.
    double ci95 = 0;
};
Summary summarize(const std::vector<double>& xs);

// Regularized incomplete beta function I_x(a, b), 0 <= x <= 1.
double incomplete_beta(double x, double a, double b);
// Student's t distribution with `df` degrees of freedom: P(T <= t).
double student_t_cdf(double t, double df);
// The t with P(T <= t) = p (0 < p < 1), by bisection on the CDF.
double student_t_quantile(double p, double df);

// Welch's unequal-variance t-test (two-sided). n >= 2 on both sides; when
// both variances are 0, t is +-infinity (p 0) for different means, 0 (p 1)
// for equal ones.
struct Welch {
    double t = 0, df = 0, p = 1;
};
Welch welch(const Summary& a, const Summary& b);

// The verdict on one metric, base side against new side.
enum class Change {
    not_enough_samples, // fewer than Rules::min_samples on a side: not judged
    noise,              // within the run-to-run spread
    better,
    worse,
};
std::string to_string(Change c);

// When a change is significant: all of LKP's, mmtests' and hyperfine's tests.
struct Rules {
    size_t min_samples = 3;   // per side (LKP)
    double alpha = 0.05;      // Welch's t-test p below this (hyperfine)
    double min_change = 0.05; // |new/base - 1| at least this (LKP's ratio)
    // and: |mean difference| above the sum of the 95% CI half-widths
    // (mmtests), and the two sides' [min, max] ranges disjoint (LKP).
};

struct Judgement {
    Change change = Change::not_enough_samples;
    Summary base, next;
    double ratio = 0; // next.mean / base.mean - 1 (0 when base.mean is 0)
    Welch welch;      // when both sides have 2 samples or more
    bool tested = false;
    std::string why; // in words: the rule that decided
};
// `higher_is_better`: throughput (true) or latency (false).
Judgement judge(const std::vector<double>& base, const std::vector<double>& next,
                bool higher_is_better, const Rules& rules = {});

} // namespace gms::report::stats
