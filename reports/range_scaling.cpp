#include "reports/range_scaling.h"

#include "core/util.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

namespace gms::report {

using nlohmann::json;

uint64_t ScalingSample::min_ns() const {
    return ns.empty() ? 0 : *std::min_element(ns.begin(), ns.end());
}

uint64_t ScalingSample::max_ns() const {
    return ns.empty() ? 0 : *std::max_element(ns.begin(), ns.end());
}

uint64_t ScalingSample::median_ns() const {
    if (ns.empty())
        return 0;
    std::vector<uint64_t> v = ns;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

namespace {

// The range of `pages` of x at the bytes per page of x measured; beyond 2^63
// bytes the answer is "never" in practice.
std::optional<uint64_t> range_of(const std::optional<double>& pages, double bytes_per_x) {
    if (!pages || *pages * bytes_per_x >= 9.2e18)
        return std::nullopt;
    return static_cast<uint64_t>(std::llround(*pages * bytes_per_x));
}

} // namespace

void fit_op(ScalingOp& op, double tolerance, double outlier_factor,
            const std::vector<std::pair<std::string, double>>& thresholds) {
    std::vector<fit::Point> mins;
    std::vector<double> xs;
    double lo = 0, hi = 0;
    for (const auto& s : op.samples) {
        if (s.ns.empty())
            continue;
        mins.push_back({double(s.work_pages), double(s.min_ns())});
        xs.push_back(double(s.work_pages));
        lo = lo == 0 ? double(s.work_pages) : std::min(lo, double(s.work_pages));
        hi = std::max(hi, double(s.work_pages));
    }
    op.linear.reset();
    op.power.reset();
    op.growth.reset();
    op.growth_reason.clear();
    op.projections.clear();
    op.outliers.clear();
    op.n_log_n_exponent = xs.empty() ? 0 : fit::n_log_n_exponent(xs);
    const std::string counted = fmt::format("{} size{}", mins.size(), mins.size() == 1 ? "" : "s");
    if (mins.size() < 3) {
        // Two points always lie on a line: a slope, a class or a projection
        // from them would be made up.
        op.growth_reason =
            fmt::format("{}: a fit needs at least 3 sizes, a class 3 spanning 8x", counted);
    } else {
        op.linear = fit::linear(mins);
        op.power = fit::power(mins);
        if (lo <= 0 || hi < 8 * lo || !op.power)
            op.growth_reason = fmt::format("{} spanning {:.1f}x: a class needs at least 3 sizes "
                                           "spanning 8x",
                                           counted, lo > 0 ? hi / lo : 0.0);
        else
            op.growth = fit::classify(op.power->exponent, op.n_log_n_exponent, tolerance);
    }

    // Projections, for a classified operation: both fits extrapolated, the
    // smaller size kept. Convex times (exponent > 1: the line's intercept is
    // negative) would be flattered by the line, concave ones (a fixed cost,
    // exponent < 1) by the power law.
    if (op.growth) {
        // Bytes of range per page of x (4096, or sparse_stride pages of range
        // per populated page for the sparse series), from the largest size.
        double bytes_per_x = 4096;
        for (const auto& s : op.samples)
            if (s.work_pages && !s.ns.empty())
                bytes_per_x = double(s.range_bytes) / double(s.work_pages);
        for (const auto& [name, seconds] : thresholds) {
            ScalingProjection p;
            p.threshold = name;
            p.threshold_s = seconds;
            auto lin = op.linear ? fit::reach(*op.linear, seconds * 1e9) : std::nullopt;
            auto pow = fit::reach(*op.power, seconds * 1e9);
            // A fit that reaches the threshold at or below a size measured
            // faster than it is contradicted by the data (a line with a large
            // intercept, at the small sizes): not used.
            double below = 0;
            for (const auto& m : mins)
                if (m.y < seconds * 1e9)
                    below = std::max(below, m.x);
            if (lin && *lin <= below && !(pow && *pow <= below))
                lin.reset();
            if (pow && *pow <= below && lin)
                pow.reset();
            if (pow && (!lin || *pow < *lin)) {
                p.basis = "power";
                p.pages = pow;
            } else {
                p.basis = "linear";
                p.pages = lin;
            }
            p.bytes = range_of(p.pages, bytes_per_x);
            op.projections.push_back(p);
        }
    }

    // Outliers: a repetition against the largest of what the fits predict at
    // its size and the fastest other repetition there. The line alone is no
    // reference where its intercept is negative (it predicts <= 0 ns at the
    // small sizes); a size whose repetitions are all slow is no one-off.
    for (const auto& s : op.samples)
        for (size_t r = 0; r < s.ns.size(); ++r) {
            const double x = double(s.work_pages);
            double expected = 0;
            if (op.linear)
                expected = std::max(expected, op.linear->at(x));
            if (op.power)
                expected = std::max(expected, op.power->at(x));
            bool other = false;
            uint64_t fastest_other = 0;
            for (size_t q = 0; q < s.ns.size(); ++q)
                if (q != r && (!other || s.ns[q] < fastest_other)) {
                    fastest_other = s.ns[q];
                    other = true;
                }
            if (other)
                expected = std::max(expected, double(fastest_other));
            if (fit::is_outlier(double(s.ns[r]), expected, outlier_factor, 1e6))
                op.outliers.push_back({s.range_bytes, unsigned(r), s.ns[r], expected});
        }
}

namespace {

json opt(const std::optional<double>& v) {
    return v ? json(*v) : json(nullptr);
}

json op_json(const ScalingOp& o) {
    json samples = json::array();
    for (const auto& s : o.samples)
        samples.push_back({{"range_bytes", s.range_bytes},
                           {"work_pages", s.work_pages},
                           {"sparse", s.sparse},
                           {"ns", s.ns},
                           {"min_ns", s.min_ns()},
                           {"median_ns", s.median_ns()},
                           {"max_ns", s.max_ns()}});
    json lin = nullptr, pow = nullptr;
    if (o.linear)
        lin = {{"intercept_ns", o.linear->intercept},
               {"slope_ns_per_page", o.linear->slope},
               {"r2", o.linear->r2},
               {"points", o.linear->points}};
    if (o.power)
        pow = {{"coefficient", o.power->coefficient},
               {"exponent", o.power->exponent},
               {"r2", o.power->r2},
               {"points", o.power->points}};
    json proj = json::array();
    for (const auto& p : o.projections) {
        const auto& b = p.bytes;
        proj.push_back({{"threshold", p.threshold},
                        {"threshold_s", p.threshold_s},
                        {"pages", opt(p.pages)},
                        {"bytes", b ? json(*b) : json(nullptr)},
                        {"basis", p.basis}});
    }
    json outl = json::array();
    for (const auto& x : o.outliers)
        outl.push_back({{"range_bytes", x.range_bytes},
                        {"rep", x.rep},
                        {"ns", x.ns},
                        {"expected_ns", x.expected_ns}});
    return {{"name", o.name},
            {"x", o.x},
            {"skip_reason", o.skip_reason},
            {"samples", samples},
            {"linear", lin},
            {"power", pow},
            {"growth", o.growth ? json(fit::to_string(*o.growth)) : json(nullptr)},
            {"n_log_n_exponent", o.n_log_n_exponent},
            {"growth_reason", o.growth_reason},
            {"projections", proj},
            {"outliers", outl}};
}

std::string ns_str(double ns) {
    if (ns >= 1e9)
        return fmt::format("{:.2f}s", ns / 1e9);
    if (ns >= 1e6)
        return fmt::format("{:.1f}ms", ns / 1e6);
    if (ns >= 1e3)
        return fmt::format("{:.1f}us", ns / 1e3);
    return fmt::format("{:.0f}ns", ns);
}

std::string size_str(const ScalingProjection& p) {
    if (!p.pages)
        return "never";
    return p.bytes ? format_size(*p.bytes) : std::string("beyond 2^63 bytes");
}

} // namespace

json to_json(const RangeScaling& s) {
    json ops = json::array();
    for (const auto& o : s.ops)
        ops.push_back(op_json(o));
    return {{"mem_available", s.mem_available},
            {"memory_budget", s.memory_budget},
            {"min_size", s.min_size},
            {"max_size", s.max_size},
            {"dense_limit", s.dense_limit},
            {"sparse_stride", s.sparse_stride},
            {"growth_factor", s.growth_factor},
            {"reps", s.reps},
            {"tolerance", s.tolerance},
            {"watchdog_thresh_s", s.watchdog_thresh_s},
            {"watchdog_source", s.watchdog_source},
            {"soft_lockup_s", s.soft_lockup_s},
            {"stall_s", s.stall_s},
            {"notes", s.notes},
            {"ops", ops}};
}

std::vector<std::string> to_text_lines(const RangeScaling& s, const std::string& in) {
    std::vector<std::string> out;
    out.push_back(fmt::format("{}range scaling: soft lockup at {:g}s (2 x watchdog_thresh), guest "
                              "stall at {}; {} reps per size",
                              in, s.soft_lockup_s, ns_str(s.stall_s * 1e9), s.reps));
    for (const auto& o : s.ops) {
        if (!o.skip_reason.empty()) {
            out.push_back(fmt::format("{}  {:<20} skipped: {}", in, o.name, o.skip_reason));
            continue;
        }
        std::string sizes = "no size";
        if (!o.samples.empty())
            sizes = fmt::format("{}..{} ({} sizes)", format_size(o.samples.front().range_bytes),
                                format_size(o.samples.back().range_bytes), o.samples.size());
        std::string line = fmt::format("{}  {:<20} {}", in, o.name, sizes);
        if (o.linear)
            line += fmt::format(", {:.1f} ns/page", o.linear->slope);
        if (o.power)
            line += fmt::format(", exponent {:.2f}", o.power->exponent);
        line += o.growth ? ": " + fit::to_string(*o.growth)
                         : ": unclassified (" + o.growth_reason + ")";
        out.push_back(line);
        if (!o.projections.empty()) {
            std::string p = fmt::format("{}  {:<20} one operation reaches", in, "");
            for (size_t i = 0; i < o.projections.size(); ++i)
                p += fmt::format("{} {} at {} ({} fit)", i ? "," : "", o.projections[i].threshold,
                                 size_str(o.projections[i]), o.projections[i].basis);
            out.push_back(p);
        }
        for (const auto& x : o.outliers)
            out.push_back(fmt::format("{}  {:<20} outlier: {} repetition {}: {} (fit: {})", in, "",
                                      format_size(x.range_bytes), x.rep + 1, ns_str(double(x.ns)),
                                      ns_str(x.expected_ns)));
    }
    for (const auto& n : s.notes)
        out.push_back(fmt::format("{}  note: {}", in, n));
    return out;
}

} // namespace gms::report
