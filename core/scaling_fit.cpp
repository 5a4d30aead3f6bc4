#include "core/scaling_fit.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace gms::fit {

namespace {

size_t distinct_x(const std::vector<Point>& pts) {
    std::set<double> xs;
    for (const auto& p : pts)
        xs.insert(p.x);
    return xs.size();
}

// Ordinary least squares y = a + b x with its r^2 (1 when y has no variance
// and the fit is exact, as for a constant).
std::optional<LinearFit> ols(const std::vector<Point>& pts) {
    if (distinct_x(pts) < 2)
        return std::nullopt;
    const double n = double(pts.size());
    double mx = 0, my = 0;
    for (const auto& p : pts) {
        mx += p.x;
        my += p.y;
    }
    mx /= n;
    my /= n;
    double sxx = 0, sxy = 0, syy = 0;
    for (const auto& p : pts) {
        sxx += (p.x - mx) * (p.x - mx);
        sxy += (p.x - mx) * (p.y - my);
        syy += (p.y - my) * (p.y - my);
    }
    LinearFit f;
    f.slope = sxy / sxx;
    f.intercept = my - f.slope * mx;
    f.points = pts.size();
    double ss_res = 0;
    for (const auto& p : pts) {
        double r = p.y - f.at(p.x);
        ss_res += r * r;
    }
    f.r2 = syy > 0 ? 1 - ss_res / syy : (ss_res == 0 ? 1 : 0);
    return f;
}

} // namespace

double PowerFit::at(double x) const {
    return coefficient * std::pow(x, exponent);
}

std::optional<LinearFit> linear(const std::vector<Point>& pts) {
    return ols(pts);
}

std::optional<PowerFit> power(const std::vector<Point>& pts) {
    std::vector<Point> logs;
    for (const auto& p : pts)
        if (p.x > 0 && p.y > 0)
            logs.push_back({std::log(p.x), std::log(p.y)});
    auto f = ols(logs);
    if (!f)
        return std::nullopt;
    return PowerFit{std::exp(f->intercept), f->slope, f->r2, f->points};
}

std::string to_string(Growth g) {
    switch (g) {
    case Growth::constant:
        return "constant";
    case Growth::linear:
        return "linear";
    case Growth::n_log_n:
        return "n log n";
    case Growth::superlinear:
        return "superlinear";
    }
    return "?";
}

double n_log_n_exponent(const std::vector<double>& xs) {
    std::vector<Point> pts;
    for (double x : xs)
        if (x > 1)
            pts.push_back({x, x * std::log(x)});
    auto f = power(pts);
    if (!f) {
        // One size: the local exponent there.
        double x = xs.empty() ? 2 : std::max(2.0, xs.front());
        return 1 + 1 / std::log(x);
    }
    return f->exponent;
}

Growth classify(double k, double n_log_n_k, double tol) {
    if (k < tol)
        return Growth::constant;
    if (k <= 1 + tol)
        return Growth::linear;
    if (k <= std::max(n_log_n_k, 1.0) + tol)
        return Growth::n_log_n;
    return Growth::superlinear;
}

std::optional<double> reach(const LinearFit& f, double y) {
    if (f.slope <= 0)
        return std::nullopt;
    double x = (y - f.intercept) / f.slope;
    if (!std::isfinite(x))
        return std::nullopt;
    return std::max(0.0, x);
}

std::optional<double> reach(const PowerFit& f, double y) {
    if (f.exponent <= 0 || f.coefficient <= 0 || y <= 0)
        return std::nullopt;
    double x = std::exp((std::log(y) - std::log(f.coefficient)) / f.exponent);
    if (!std::isfinite(x))
        return std::nullopt;
    return x;
}

} // namespace gms::fit
