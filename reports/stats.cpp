#include "reports/stats.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>

namespace gms::report::stats {

Summary summarize(const std::vector<double>& xs) {
    Summary s;
    s.n = xs.size();
    if (xs.empty())
        return s;
    double sum = 0;
    for (double x : xs)
        sum += x;
    s.mean = sum / double(s.n);
    s.min = *std::min_element(xs.begin(), xs.end());
    s.max = *std::max_element(xs.begin(), xs.end());
    if (s.n < 2)
        return s;
    double ss = 0;
    for (double x : xs)
        ss += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(ss / double(s.n - 1));
    s.ci95 = student_t_quantile(0.975, double(s.n - 1)) * s.sd / std::sqrt(double(s.n));
    return s;
}

namespace {
// Continued fraction of the incomplete beta (modified Lentz's method).
double beta_cf(double x, double a, double b) {
    constexpr double kTiny = 1e-300;
    double qab = a + b, qap = a + 1, qam = a - 1;
    double c = 1, d = 1 - qab * x / qap;
    d = 1 / (std::fabs(d) < kTiny ? kTiny : d);
    double h = d;
    for (int m = 1; m <= 300; ++m) {
        double m2 = 2.0 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1 + aa * d;
        d = 1 / (std::fabs(d) < kTiny ? kTiny : d);
        c = 1 + aa / c;
        c = std::fabs(c) < kTiny ? kTiny : c;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1 + aa * d;
        d = 1 / (std::fabs(d) < kTiny ? kTiny : d);
        c = 1 + aa / c;
        c = std::fabs(c) < kTiny ? kTiny : c;
        double del = d * c;
        h *= del;
        if (std::fabs(del - 1) < 1e-15)
            break;
    }
    return h;
}
} // namespace

double incomplete_beta(double x, double a, double b) {
    if (x <= 0)
        return 0;
    if (x >= 1)
        return 1;
    double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                            b * std::log1p(-x));
    // The continued fraction converges fast below the mean; use symmetry above.
    if (x < (a + 1) / (a + b + 2))
        return front * beta_cf(x, a, b) / a;
    return 1 - front * beta_cf(1 - x, b, a) / b;
}

double student_t_cdf(double t, double df) {
    if (std::isinf(t))
        return t > 0 ? 1 : 0;
    double tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2, 0.5); // P(T > |t|)
    return t >= 0 ? 1 - tail : tail;
}

double student_t_quantile(double p, double df) {
    double lo = -1e3, hi = 1e3;
    for (int i = 0; i < 200; ++i) {
        double mid = (lo + hi) / 2;
        (student_t_cdf(mid, df) < p ? lo : hi) = mid;
    }
    return (lo + hi) / 2;
}

Welch welch(const Summary& a, const Summary& b) {
    Welch w;
    double va = a.sd * a.sd / double(a.n), vb = b.sd * b.sd / double(b.n);
    double diff = b.mean - a.mean;
    if (va + vb == 0) {
        w.df = double(a.n + b.n - 2);
        w.t = diff == 0 ? 0 : std::copysign(std::numeric_limits<double>::infinity(), diff);
        w.p = diff == 0 ? 1 : 0;
        return w;
    }
    w.t = diff / std::sqrt(va + vb);
    w.df = (va + vb) * (va + vb) / (va * va / double(a.n - 1) + vb * vb / double(b.n - 1));
    w.p = 2 * (1 - student_t_cdf(std::fabs(w.t), w.df));
    return w;
}

std::string to_string(Change c) {
    switch (c) {
    case Change::not_enough_samples:
        return "not enough samples";
    case Change::noise:
        return "noise";
    case Change::better:
        return "better";
    case Change::worse:
        return "worse";
    }
    return "?";
}

Judgement judge(const std::vector<double>& base, const std::vector<double>& next,
                bool higher_is_better, const Rules& rules) {
    Judgement j;
    j.base = summarize(base);
    j.next = summarize(next);
    j.ratio = j.base.mean != 0 ? j.next.mean / j.base.mean - 1 : 0;
    if (j.base.n >= 2 && j.next.n >= 2) {
        j.welch = welch(j.base, j.next);
        j.tested = true;
    }
    if (j.base.n < rules.min_samples || j.next.n < rules.min_samples) {
        j.change = Change::not_enough_samples;
        j.why = fmt::format("not enough samples: {} base and {} new report{}, {} per side needed",
                            j.base.n, j.next.n, j.next.n == 1 ? "" : "s", rules.min_samples);
        return j;
    }
    double diff = j.next.mean - j.base.mean;
    j.change = Change::noise;
    if (j.welch.p >= rules.alpha)
        j.why =
            fmt::format("noise: Welch's t-test p = {:.3g} (not below {})", j.welch.p, rules.alpha);
    else if (std::fabs(diff) <= j.base.ci95 + j.next.ci95)
        j.why = fmt::format("noise: the difference {:.4g} is within the 95% confidence "
                            "half-widths {:.4g} + {:.4g}",
                            std::fabs(diff), j.base.ci95, j.next.ci95);
    else if (j.next.min <= j.base.max && j.base.min <= j.next.max)
        j.why = fmt::format("noise: the ranges [{:.4g}, {:.4g}] and [{:.4g}, {:.4g}] overlap",
                            j.base.min, j.base.max, j.next.min, j.next.max);
    else if (j.base.mean == 0 || std::fabs(j.ratio) < rules.min_change)
        j.why = fmt::format("noise: the change {:+.1f}% is below the {:.0f}% threshold",
                            100 * j.ratio, 100 * rules.min_change);
    else {
        j.change = (diff > 0) == higher_is_better ? Change::better : Change::worse;
        j.why = fmt::format("{:+.1f}%: p = {:.3g}, beyond the 95% confidence half-widths and "
                            "the run-to-run ranges",
                            100 * j.ratio, j.welch.p);
    }
    return j;
}

} // namespace gms::report::stats
