// Fits of operation time against size, for the range-scaling workload: pure
// arithmetic over (x, y) points, no I/O, so it is unit-tested on known data.
//
// Two fits per operation: least squares on log-log for the growth exponent
// (y = c * x^k), and a plain linear least squares (y = a + b * x) whose slope
// is the cost per unit of x (ns per page). The growth class comes from the
// exponent, with a tolerance; projections say at which x a fit reaches a time.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace gms::fit {

struct Point {
    double x = 0;
    double y = 0;
};

// y = intercept + slope * x. r2: coefficient of determination (1 = exact).
struct LinearFit {
    double intercept = 0;
    double slope = 0;
    double r2 = 0;
    size_t points = 0;
    double at(double x) const { return intercept + slope * x; }
};

// y = coefficient * x^exponent, fitted as ln y = ln c + k ln x.
// r2 is that of the log-log fit.
struct PowerFit {
    double coefficient = 0;
    double exponent = 0;
    double r2 = 0;
    size_t points = 0;
    double at(double x) const;
};

// Least squares over the points; nullopt with fewer than two distinct x.
std::optional<LinearFit> linear(const std::vector<Point>& pts);
// Least squares on log-log over the points with x > 0 and y > 0; nullopt
// with fewer than two distinct such x.
std::optional<PowerFit> power(const std::vector<Point>& pts);

enum class Growth { constant, linear, n_log_n, superlinear };
std::string to_string(Growth g);

// The exponent a log-log fit would find for y = x ln x at these x (x > 1):
// n log n is not a power law, its local exponent is 1 + 1/ln x, so the band
// that tells it from linear depends on the sizes measured.
double n_log_n_exponent(const std::vector<double>& xs);

// The class of a fitted exponent k, with tolerance `tol`:
//   k <  tol                       constant
//   k <= 1 + tol                   linear (fixed costs that dominate the
//                                  small sizes pull k below 1: still linear)
//   k <= n_log_n_exponent + tol    n log n
//   otherwise                      superlinear
Growth classify(double exponent, double n_log_n_k, double tol);

// The x at which the fit reaches y; nullopt when it never does (slope or
// exponent <= 0 while y is above the fit at x = 0, or a non-finite answer).
std::optional<double> reach(const LinearFit& f, double y);
std::optional<double> reach(const PowerFit& f, double y);

// Whether y is more than `factor` times `expected` and more than `floor` above
// it in absolute terms (so that noise on microsecond operations is not an
// outlier). An expectation <= 0 (a linear fit with a negative intercept, at
// a small x) is no reference: nothing is `factor` times above 0 ns in a
// meaningful sense, so nothing is judged against it.
inline bool is_outlier(double y, double expected, double factor, double floor) {
    return expected > 0 && y > expected * factor && y - expected > floor;
}

// Indices of the points that are outliers (is_outlier) against `expected(x)`.
template <class F>
std::vector<size_t> outliers(const std::vector<Point>& pts, F&& expected, double factor,
                             double floor) {
    std::vector<size_t> out;
    for (size_t i = 0; i < pts.size(); ++i)
        if (is_outlier(pts[i].y, expected(pts[i].x), factor, floor))
            out.push_back(i);
    return out;
}

} // namespace gms::fit
