#include "reports/html.h"

#include "core/util.h"
#include "reports/measurements.h"
#include "reports/render.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <functional>
#include <map>
#include <optional>

namespace gms::report {

namespace {

std::string esc(const std::string& s) {
    return xml_escape(s);
}

std::string ns_text(double ns) {
    if (ns >= 1e9)
        return fmt::format("{:.3g} s", ns / 1e9);
    if (ns >= 1e6)
        return fmt::format("{:.3g} ms", ns / 1e6);
    if (ns >= 1e3)
        return fmt::format("{:.3g} µs", ns / 1e3);
    return fmt::format("{:.3g} ns", ns);
}

const char* kStyle = R"CSS(
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;font-size:.9em;vertical-align:top}
.pass,.verified,.better{color:#18794e}.fail,.violated,.worse,.regression{color:#c62828;font-weight:bold}
.skip,.unverifiable,.incomplete,.noise,.not-enough-samples{color:#8a6d00}.error{color:#b23c17}
.banner{padding:.5em .8em;border-radius:4px;background:#f3f3f3;font-weight:bold}
.banner.fail,.banner.regression{background:#fde8e8}.banner.pass,.banner.no-regression{background:#e6f4ea}
.finding{font-family:monospace;white-space:pre-wrap}
.plots{display:flex;flex-wrap:wrap;gap:8px}
svg{background:#fcfcfc;border:1px solid #e4e4e4}
svg text{font-size:10px;fill:#555}svg .title{font-size:11px;fill:#222}
svg .axis{stroke:#999;stroke-width:1}svg .grid{stroke:#eee;stroke-width:1}
.bar.base,.bar.run{fill:#5b8def;fill-opacity:.55}.bar.new{fill-opacity:.55}
.line{fill:none;stroke-width:1.5}.line.base,.line.run{stroke:#5b8def}
.sig-worse .bar.new{fill:#d93025}.sig-worse .line.new{stroke:#d93025}
.sig-better .bar.new{fill:#188038}.sig-better .line.new{stroke:#188038}
.sig-noise .bar.new,.sig-none .bar.new{fill:#9aa0a6}.sig-noise .line.new,.sig-none .line.new{stroke:#70757a}
.legend{font-size:.85em}.swatch{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px}
)CSS";

// ---- plots ------------------------------------------------------------------

constexpr double kW = 340, kH = 190, kL = 52, kR = 10, kT = 18, kB = 30;

struct Axis {
    double lo, hi;
    bool log;
    double at(double v, double from, double to) const {
        double f =
            log ? (std::log10(std::max(v, lo)) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                : (v - lo) / (hi - lo);
        return from + std::clamp(f, 0.0, 1.0) * (to - from);
    }
    double x(double v) const { return at(v, kL, kW - kR); }
    double y(double v) const { return at(v, kH - kB, kT); }
};

Axis log_axis(double lo, double hi) {
    lo = std::pow(10, std::floor(std::log10(std::max(lo, 1.0))));
    hi = std::pow(10, std::ceil(std::log10(std::max(hi, lo * 10))));
    return {lo, hi, true};
}

Axis linear_axis(double hi) {
    return {0, hi > 0 ? hi * 1.05 : 1, false};
}

std::string svg_open(const std::string& cls, const std::string& title) {
    return fmt::format("<svg class=\"{}\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
                       "xmlns=\"http://www.w3.org/2000/svg\"><text class=\"title\" x=\"{}\" "
                       "y=\"12\">{}</text>",
                       cls, kW, kH, kW, kH, kL, esc(title));
}

// Ticks: every power of ten on a log axis, five steps on a linear one.
std::string axes(const Axis& x, const Axis& y, const std::function<std::string(double)>& xl,
                 const std::function<std::string(double)>& yl) {
    std::string s;
    auto ticks = [](const Axis& a) {
        std::vector<double> t;
        if (a.log)
            for (double v = a.lo; v <= a.hi * 1.0001; v *= 10)
                t.push_back(v);
        else
            for (int i = 0; i <= 4; ++i)
                t.push_back(a.lo + (a.hi - a.lo) * i / 4);
        return t;
    };
    for (double v : ticks(x))
        s +=
            fmt::format("<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/>"
                        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
                        x.x(v), kT, kH - kB, kH - kB + 12, esc(xl(v)));
    for (double v : ticks(y))
        s +=
            fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\"/>"
                        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>",
                        kL, kW - kR, y.y(v), kL - 3, y.y(v) + 3, esc(yl(v)));
    s += fmt::format("<line class=\"axis\" x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>"
                     "<line class=\"axis\" x1=\"{0}\" x2=\"{0}\" y1=\"{3}\" y2=\"{2}\"/>",
                     kL, kW - kR, kH - kB, kT);
    return s;
}

std::string count_text(double v) {
    return v >= 1e6   ? fmt::format("{:.2g}M", v / 1e6)
           : v >= 1e3 ? fmt::format("{:.3g}k", v / 1e3)
                      : fmt::format("{:.3g}", v);
}

std::string pct_text(double v) {
    return fmt::format("{:.3g}%", 100 * v);
}

// One side of a plot: a histogram or a set of runs, and its CSS class.
struct Series {
    std::string cls; // "run", "base", "new"
    std::string name;
    std::vector<const OpStats*> ops; // one per report (a side merges them)
};

Histogram merged(const Series& s) {
    Histogram h;
    for (const auto* o : s.ops)
        h.merge(o->latency_ns);
    return h;
}

// Latency histogram: one bar per non-empty bucket, x on a log axis, height
// the bucket's share of the side's operations (so sides of different run
// counts overlay).
std::string histogram_svg(const std::vector<Series>& series) {
    std::vector<Histogram> hs;
    double lo = 1e18, hi = 1, top = 0;
    for (const auto& s : series) {
        hs.push_back(merged(s));
        const auto& h = hs.back();
        if (!h.count())
            continue;
        lo = std::min(lo, double(std::max<uint64_t>(h.min(), 1)));
        hi = std::max(hi, double(h.max()) + 1);
        for (unsigned i = 0; i < Histogram::kBuckets; ++i)
            top = std::max(top, double(h.bucket(i)) / double(h.count()));
    }
    Axis x = log_axis(lo > hi ? 1 : lo, hi), y = linear_axis(top);
    std::string s = svg_open("histogram", "latency histogram (share of operations)");
    s += axes(
        x, y, [](double v) { return ns_text(v); }, pct_text);
    for (size_t k = 0; k < series.size(); ++k) {
        const auto& h = hs[k];
        for (unsigned i = 0; i < Histogram::kBuckets && h.count(); ++i) {
            uint64_t n = h.bucket(i);
            if (!n)
                continue;
            double share = double(n) / double(h.count());
            double x0 = x.x(double(std::max<uint64_t>(Histogram::lower_bound(i), 1)));
            double x1 = x.x(double(Histogram::upper_bound(i) + 1));
            double y0 = y.y(share);
            s += fmt::format("<rect class=\"bar {}\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" "
                             "height=\"{:.1f}\"><title>{}: {}–{}: {} ({})</title></rect>",
                             series[k].cls, x0, y0, std::max(x1 - x0, 0.8), kH - kB - y0,
                             esc(series[k].name), ns_text(double(Histogram::lower_bound(i))),
                             ns_text(double(Histogram::upper_bound(i))), n, pct_text(share));
        }
    }
    return s + "</svg>";
}

// The tail: latency at each percentile from p50 to p99.99, the x axis in
// "nines" (-log10(1 - q)), the y axis log.
const std::vector<double> kTail = {0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999};

std::string tail_svg(const std::vector<Series>& series) {
    std::vector<Histogram> hs;
    double lo = 1e18, hi = 1;
    for (const auto& s : series) {
        hs.push_back(merged(s));
        if (hs.back().count()) {
            lo = std::min(lo, double(std::max<uint64_t>(hs.back().percentile(0.5), 1)));
            hi = std::max(hi, double(hs.back().max()) + 1);
        }
    }
    Axis x{std::log10(2), 4, false}, y = log_axis(lo > hi ? 1 : lo, hi);
    auto nines = [](double q) { return -std::log10(1 - q); };
    std::string s = svg_open("tail", "percentile tail");
    // Linear in nines: label the ticks as percentiles.
    for (double q : {0.5, 0.9, 0.99, 0.999, 0.9999})
        s += fmt::format("<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" "
                         "y2=\"{2}\"/><text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">p{4}"
                         "</text>",
                         x.x(nines(q)), kT, kH - kB, kH - kB + 12, fmt::format("{:g}", 100 * q));
    s += axes(
        {x.lo, x.hi, false}, y, [](double) { return std::string(); },
        [](double v) { return ns_text(v); });
    for (size_t k = 0; k < series.size(); ++k) {
        const auto& h = hs[k];
        if (!h.count())
            continue;
        std::string pts;
        for (double q : kTail)
            pts += fmt::format("{:.1f},{:.1f} ", x.x(nines(q)), y.y(double(h.percentile(q))));
        s += fmt::format("<polyline class=\"line tail {}\" points=\"{}\"><title>{}</title>"
                         "</polyline>",
                         series[k].cls, pts, esc(series[k].name));
    }
    return s + "</svg>";
}

// Throughput over time: one line per report, ops/s per timeline bucket.
std::string timeline_svg(const std::vector<Series>& series) {
    double t_max = 0, top = 0;
    for (const auto& s : series)
        for (const auto* o : s.ops) {
            const auto& t = o->timeline;
            double width = double(t.bucket_ns()) / 1e9;
            t_max = std::max(t_max, width * double(t.counts().size()));
            for (uint64_t c : t.counts())
                top = std::max(top, double(c) / width);
        }
    Axis x = linear_axis(t_max), y = linear_axis(top);
    std::string s = svg_open("timeline", "throughput over time (ops/s)");
    s += axes(
        x, y, [](double v) { return fmt::format("{:.3g}s", v); }, count_text);
    for (const auto& se : series)
        for (size_t r = 0; r < se.ops.size(); ++r) {
            const auto& t = se.ops[r]->timeline;
            if (t.counts().empty())
                continue;
            double width = double(t.bucket_ns()) / 1e9;
            std::string pts;
            for (size_t i = 0; i < t.counts().size(); ++i)
                pts += fmt::format("{:.1f},{:.1f} ", x.x((double(i) + 0.5) * width),
                                   y.y(double(t.counts()[i]) / width));
            s += fmt::format("<polyline class=\"line timeline {}\" points=\"{}\"><title>{} "
                             "run {}</title></polyline>",
                             se.cls, pts, esc(se.name), r + 1);
        }
    return s + "</svg>";
}

std::string percentile_table(const std::vector<Series>& series) {
    std::string s = "<table class=\"percentiles\"><tr><th></th><th>ops</th><th>mean</th>"
                    "<th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>";
    for (const auto& se : series) {
        Histogram h = merged(se);
        s += fmt::format("<tr class=\"{}\"><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                         "<td>{}</td><td>{}</td><td>{}</td></tr>",
                         se.cls, esc(se.name), h.count(), ns_text(h.mean()),
                         ns_text(double(h.percentile(0.5))), ns_text(double(h.percentile(0.9))),
                         ns_text(double(h.percentile(0.99))), ns_text(double(h.percentile(0.999))),
                         ns_text(double(h.max())));
    }
    return s + "</table>";
}

std::string op_section(const std::string& workload, const std::string& op,
                       const std::vector<Series>& series, const std::string& cls,
                       const std::string& extra) {
    // The id is a link target ("#op-host-fault-fault_write").
    std::string id = "op-" + workload + "-" + op;
    for (char& ch : id)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_')
            ch = '-';
    std::string s = fmt::format("<section class=\"op {}\" id=\"{}\" data-op=\"{}/{}\"><h3>{} / "
                                "{}</h3>",
                                cls, id, esc(workload), esc(op), esc(workload), esc(op));
    s += extra + percentile_table(series);
    s += "<div class=\"plots\">" + histogram_svg(series) + tail_svg(series) + timeline_svg(series) +
         "</div></section>\n";
    return s;
}

// ---- sections ---------------------------------------------------------------

std::string page(const std::string& title, const std::string& body) {
    return fmt::format("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                       "<title>{}</title><style>{}</style></head><body>\n{}</body></html>\n",
                       esc(title), kStyle, body);
}

std::string kernel_log_section(const std::vector<std::pair<const Report*, std::string>>& reps) {
    size_t n = 0;
    std::string items;
    for (const auto& [r, name] : reps) {
        if (!r->kernel_log_available)
            items += fmt::format("<li class=\"skip\">{}not scanned: {}</li>",
                                 name.empty() ? "" : esc(name) + ": ", esc(r->kernel_log_reason));
        for (const auto& f : r->kernel_log) {
            ++n;
            items += fmt::format("<li class=\"finding fail\">[{}] {}{}</li>", esc(f.kind),
                                 esc(f.line), name.empty() ? "" : " (" + esc(name) + ")");
        }
        for (const auto& w : r->kernel_log_waived)
            items += fmt::format("<li class=\"finding waived\">waived [{}] {} (by /{}/, {})</li>",
                                 esc(w.finding.kind), esc(w.finding.line),
                                 esc(r->waiver_of(w).regex), esc(r->waiver_of(w).origin));
    }
    return fmt::format("<section id=\"kernel-log\"><h2>Kernel log: {} finding{}</h2><ul>{}</ul>"
                       "</section>\n",
                       n, n == 1 ? "" : "s", items);
}

// The watchdog's stalls (docs/STALLS.md); nothing when there are none.
std::string stalls_section(const Report& r) {
    if (r.stalls.empty() && !r.incomplete)
        return "";
    std::string s = fmt::format("<section id=\"stalls\"><h2>Stalls: {}</h2>", r.stalls.size());
    if (r.incomplete)
        s += fmt::format("<p class=\"banner fail\">incomplete: {}</p>", esc(r.incomplete_reason));
    s += "<ul>";
    for (const auto& st : r.stalls) {
        std::string stack;
        for (const auto& f : st.kernel_stack)
            stack += esc(f) + "\n";
        s += fmt::format("<li class=\"finding fail\">{}{}<pre>{}{}</pre></li>", esc(stall_line(st)),
                         st.task_state.empty() ? "" : ", state " + esc(st.task_state),
                         stack.empty() ? esc(st.stack_error) : stack,
                         st.vcpu ? esc(fmt::format("vcpu{}: last exit {}; {}", st.vcpu->id,
                                                   st.vcpu->last_exit, st.vcpu->note))
                                 : "");
    }
    return s + "</ul></section>\n";
}

std::string invariants_section(const Report& r) {
    std::string s = "<section id=\"invariants\"><h2>Invariants</h2>";
    if (r.invariants.empty())
        return s + "<p>none checked (no probes)</p></section>\n";
    s += "<table><tr><th>invariant</th><th>verdict</th><th>backend</th><th>evidence</th>"
         "<th>reason / violations</th></tr>";
    for (const auto& i : r.invariants) {
        std::string ev;
        for (const auto& [k, v] : i.evidence)
            ev += fmt::format("{}={} ", esc(k), v);
        std::string why = esc(i.reason);
        for (const auto& v : i.violations)
            why += "<br>" + esc(v);
        s += fmt::format("<tr class=\"invariant\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td>"
                         "<td class=\"evidence\">{}</td><td>{}</td></tr>",
                         esc(i.name), to_string(i.verdict), to_string(i.verdict), esc(i.backend),
                         ev, why);
    }
    return s + "</table></section>\n";
}

std::string workloads_section(const Report& r) {
    std::string s = "<section id=\"workloads\"><h2>Workloads</h2><table><tr><th>workload</th>"
                    "<th>outcome</th><th>s</th><th>ops</th><th>pages verified</th>"
                    "<th>checks (failed)</th><th>reason</th></tr>";
    for (const auto& w : r.workloads) {
        uint64_t ops = 0;
        for (const auto& [_, o] : w.ops)
            ops += o.count;
        std::string failed;
        for (const auto& c : w.checks)
            if (c.outcome == Outcome::fail || c.outcome == Outcome::error)
                failed += fmt::format("<br><span class=\"{}\">{}</span>: expected {}, observed {}",
                                      to_string(c.outcome), esc(c.name), esc(c.expected),
                                      esc(c.observed));
        s += fmt::format("<tr class=\"workload\"><td>{}</td><td class=\"{}\">{}</td><td>{:.2f}</td>"
                         "<td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                         esc(label_of(w)), to_string(w.outcome), to_string(w.outcome), w.duration_s,
                         ops, w.verification.pages_checked, w.checks.size(), failed, esc(w.reason));
    }
    s += "</table>";
    if (!r.conformance.empty()) {
        s += "<h3>Conformance checks</h3><table><tr><th>check</th><th>outcome</th><th>expected"
             "</th><th>observed</th><th>reason</th></tr>";
        for (const auto& c : r.conformance)
            s += fmt::format("<tr class=\"check\"><td>{}</td><td class=\"{}\">{}</td><td>{}</td>"
                             "<td>{}</td><td>{}</td></tr>",
                             esc(c.name), to_string(c.outcome), to_string(c.outcome),
                             esc(c.expected), esc(c.observed), esc(c.reason));
        s += "</table>";
    }
    for (const auto& e : r.errors)
        s += fmt::format("<p class=\"error\">error: {}</p>", esc(e));
    return s + "</section>\n";
}

// Range scaling (reports/range_scaling.h): per operation its fits, class,
// projections and outliers, and a log-log plot of each size's fastest time.
const char* kScalingColors[] = {"#5b8def", "#d93025", "#188038", "#e37400",
                                "#9334e6", "#12a4af", "#b06000", "#5f6368"};

std::string scaling_svg(const RangeScaling& rs) {
    double xlo = 1e30, xhi = 1, ylo = 1e30, yhi = 1;
    for (const auto& o : rs.ops)
        for (const auto& sm : o.samples)
            if (!sm.ns.empty()) {
                xlo = std::min(xlo, double(sm.range_bytes));
                xhi = std::max(xhi, double(sm.range_bytes));
                ylo = std::min(ylo, double(std::max<uint64_t>(sm.min_ns(), 1)));
                yhi = std::max(yhi, double(sm.min_ns()));
            }
    if (xlo > xhi)
        return "";
    Axis x = log_axis(xlo, xhi), y = log_axis(ylo, yhi);
    std::string s = svg_open("scaling", "fastest time per size (log-log)");
    s += axes(
        x, y, [](double v) { return format_size(uint64_t(v)); },
        [](double v) { return ns_text(v); });
    size_t k = 0;
    for (const auto& o : rs.ops) {
        if (o.samples.empty())
            continue;
        const char* color = kScalingColors[k++ % std::size(kScalingColors)];
        std::string pts;
        for (const auto& sm : o.samples)
            if (!sm.ns.empty())
                pts += fmt::format("{:.1f},{:.1f} ", x.x(double(sm.range_bytes)),
                                   y.y(double(std::max<uint64_t>(sm.min_ns(), 1))));
        s += fmt::format("<polyline class=\"line scaling\" style=\"stroke:{}\" points=\"{}\">"
                         "<title>{}</title></polyline>",
                         color, pts, esc(o.name));
        const auto& last = o.samples.back();
        s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" style=\"fill:{}\">"
                         "{}</text>",
                         x.x(double(last.range_bytes)) - 2,
                         y.y(double(std::max<uint64_t>(last.min_ns(), 1))) - 3, color, esc(o.name));
    }
    return s + "</svg>";
}

std::string projection_text(const ScalingOp& o, const std::string& threshold) {
    for (const auto& p : o.projections)
        if (p.threshold == threshold)
            return p.bytes   ? fmt::format("{} ({})", format_size(*p.bytes), p.basis)
                   : p.pages ? "beyond 2^63 bytes"
                             : "never (" + p.basis + " fit)";
    return "–";
}

// Pin-convert (reports/pin_convert.h): per pin method, the answers while
// pinned and after unpinning, and the judge's evidence.
std::string pin_convert_section(const WorkloadResult& w) {
    const auto& pc = *w.pin_convert;
    std::string id = "pin-convert-" + label_of(w);
    for (char& ch : id)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_')
            ch = '-';
    std::string s = fmt::format("<section class=\"pin-convert\" id=\"{}\"><h2>Pinned pages and "
                                "in-place conversion: {}</h2>",
                                id, esc(label_of(w)));
    if (!pc.skip_reason.empty())
        return s + fmt::format("<p class=\"skip\">not run here: {}</p></section>\n",
                               esc(pc.skip_reason));
    s += fmt::format("<p>{} VM, guest_memfd flags {:#x}, {} pages, KVM_SET_MEMORY_ATTRIBUTES2 "
                     "{:#x} (layout: {})</p>",
                     esc(pc.vm_type), pc.gmem_flags, pc.pages, pc.attrs2_request,
                     esc(pc.attrs2_source));
    s += "<table><tr><th>method</th><th>outcome</th><th>pinned</th><th>while pinned</th>"
         "<th>error_offset (expected)</th><th>after unpinning</th><th>evidence</th></tr>";
    auto hex = [](const std::optional<uint64_t>& v) {
        return v ? fmt::format("{:#x}", *v) : std::string("–");
    };
    for (const auto& c : pc.cases) {
        std::string pinned;
        for (uint64_t o : c.pinned_offsets)
            pinned += (pinned.empty() ? "" : ", ") + fmt::format("{:#x}", o);
        std::string evidence;
        for (const auto& e : c.evidence)
            evidence += esc(e) + "<br>";
        if (!c.reason.empty())
            evidence += "<b>" + esc(c.reason) + "</b>";
        s += fmt::format("<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>"
                         "<td>{} ({})</td><td>{}</td><td>{}</td></tr>",
                         esc(c.method), to_string(c.outcome), to_string(c.outcome), pinned,
                         esc(c.while_pinned.empty() ? "–" : c.while_pinned), hex(c.error_offset),
                         hex(c.expected_error_offset),
                         esc(c.after_unpin.empty() ? "–" : c.after_unpin), evidence);
    }
    return s + "</table></section>\n";
}

std::string range_scaling_section(const WorkloadResult& w) {
    const auto& rs = *w.range_scaling;
    std::string id = "range-scaling-" + label_of(w);
    for (char& ch : id)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_')
            ch = '-';
    std::string s = fmt::format(
        "<section class=\"range-scaling\" id=\"{}\"><h2>Range scaling: {}</h2><p>soft lockup "
        "at {:g} s (2 × watchdog_thresh, {}), guest stall at {}; {} repetitions per size, "
        "fitted over each size's fastest</p>",
        id, esc(label_of(w)), rs.soft_lockup_s, esc(rs.watchdog_source), ns_text(rs.stall_s * 1e9),
        rs.reps);
    s += "<table><tr><th>operation</th><th>sizes</th><th>x</th><th>ns/page (r²)</th>"
         "<th>exponent (r²)</th><th>class</th><th>guest stall at</th><th>soft lockup at</th>"
         "<th>outliers</th></tr>";
    for (const auto& o : rs.ops) {
        if (!o.skip_reason.empty()) {
            s += fmt::format("<tr class=\"scaling-op\"><td>{}</td><td class=\"skip\" colspan=\"8\">"
                             "skipped: {}</td></tr>",
                             esc(o.name), esc(o.skip_reason));
            continue;
        }
        std::string sizes =
            o.samples.empty()
                ? "none"
                : fmt::format("{}–{} ({})", format_size(o.samples.front().range_bytes),
                              format_size(o.samples.back().range_bytes), o.samples.size());
        std::string cls = !o.growth                               ? "skip"
                          : *o.growth == fit::Growth::superlinear ? "fail"
                                                                  : "pass";
        std::string growth =
            o.growth ? fit::to_string(*o.growth) : "unclassified: " + o.growth_reason;
        std::string outl;
        for (const auto& x : o.outliers)
            outl += fmt::format("{}{} rep {}: {} (expected {})", outl.empty() ? "" : "<br>",
                                format_size(x.range_bytes), x.rep + 1, ns_text(double(x.ns)),
                                ns_text(x.expected_ns));
        s += fmt::format(
            "<tr class=\"scaling-op\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(o.name), sizes, esc(o.x),
            o.linear ? fmt::format("{:.1f} ({:.3f})", o.linear->slope, o.linear->r2) : "–",
            o.power ? fmt::format("{:.2f} ({:.3f})", o.power->exponent, o.power->r2) : "–", cls,
            esc(growth), esc(projection_text(o, "guest_stall")),
            esc(projection_text(o, "soft_lockup")), outl.empty() ? "none" : outl);
    }
    s += "</table><div class=\"plots\">" + scaling_svg(rs) + "</div>";
    for (const auto& n : rs.notes)
        s += fmt::format("<p class=\"note\">note: {}</p>", esc(n));
    return s + "</section>\n";
}

std::string kernel_of(const Report& r) {
    return r.host.is_object() ? r.host.value("kernel_release", std::string("?")) : "?";
}

std::string profile_of(const Report& r) {
    return r.profile.is_object() ? r.profile.value("name", std::string("?")) : "?";
}

// Workload/op pairs in report order, with each report's stats.
using OpKey = std::pair<std::string, std::string>;
std::vector<OpKey> ops_in(const std::vector<const Report*>& reps) {
    std::vector<OpKey> keys;
    for (const auto* r : reps)
        for (const auto& w : r->workloads)
            for (const auto& [op, st] : w.ops)
                if (st.latency_ns.count() &&
                    std::find(keys.begin(), keys.end(), OpKey{label_of(w), op}) == keys.end())
                    keys.push_back({label_of(w), op});
    return keys;
}

std::vector<const OpStats*> stats_of(const std::vector<const Report*>& reps, const OpKey& k) {
    std::vector<const OpStats*> out;
    for (const auto* r : reps)
        for (const auto& w : r->workloads)
            if (label_of(w) == k.first)
                if (auto it = w.ops.find(k.second); it != w.ops.end())
                    out.push_back(&it->second);
    return out;
}

std::vector<const Report*> pointers(const std::vector<Report>& v) {
    std::vector<const Report*> out;
    for (const auto& r : v)
        out.push_back(&r);
    return out;
}

} // namespace

std::string to_html(const Report& r) {
    std::string verdict = to_string(r.verdict());
    std::string body = fmt::format(
        "<h1>gmemstress report: profile {}</h1><p>{} {} on kernel {}, {}, seed {}, {:.1f} s{}</p>"
        "<p class=\"banner {}\" id=\"verdict\">verdict: {}</p>\n",
        esc(profile_of(r)), esc(r.command), esc(r.timestamp), esc(kernel_of(r)),
        r.lab ? "in the QEMU lab" : "on this host's KVM", r.seed, r.duration_s,
        r.interrupted ? ", interrupted (" + esc(r.interrupt_reason) + ")" : "", verdict, verdict);
    body += kernel_log_section({{&r, ""}});
    body += stalls_section(r);
    body += workloads_section(r);
    for (const auto& w : r.workloads)
        if (w.range_scaling)
            body += range_scaling_section(w);
    for (const auto& w : r.workloads)
        if (w.pin_convert)
            body += pin_convert_section(w);
    body += invariants_section(r);
    body += "<section id=\"operations\"><h2>Operations</h2>";
    std::vector<const Report*> one{&r};
    for (const auto& k : ops_in(one))
        body += op_section(k.first, k.second, {{"run", "this run", stats_of(one, k)}}, "", "");
    body += "</section>\n";
    return page("gmemstress: " + profile_of(r), body);
}

std::string to_html(const Comparison& c) {
    size_t n = c.regressions();
    std::string verdict = n ? "regression" : "no regression";
    std::string body = fmt::format(
        "<h1>gmemstress comparison: {} base, {} new report{}</h1><p class=\"banner {}\" "
        "id=\"verdict\">verdict: {}{}</p>\n",
        c.base.paths.size(), c.next.paths.size(), c.next.paths.size() == 1 ? "" : "s",
        n ? "regression" : "no-regression", verdict, n ? fmt::format(" ({})", n) : "");
    body += "<p class=\"legend\">base<span class=\"swatch\" style=\"background:#5b8def\"></span>"
            "new: worse<span class=\"swatch\" style=\"background:#d93025\"></span>better"
            "<span class=\"swatch\" style=\"background:#188038\"></span>within noise or not "
            "judged<span class=\"swatch\" style=\"background:#9aa0a6\"></span></p>";
    // New findings first: nothing else matters as much.
    body += fmt::format("<section id=\"kernel-log\"><h2>Kernel log: {} new finding{}</h2><ul>",
                        c.new_findings.size(), c.new_findings.size() == 1 ? "" : "s");
    for (const auto& f : c.new_findings)
        body += fmt::format("<li class=\"finding fail\">[{}] {} ({})</li>", esc(f.finding.kind),
                            esc(f.finding.line), esc(f.path));
    body += "</ul></section>\n";
    body += "<section id=\"reports\"><h2>Reports</h2><table><tr><th>side</th><th>report</th>"
            "<th>profile</th><th>kernel</th><th>verdict</th></tr>";
    for (const auto* side : {&c.base, &c.next})
        for (size_t i = 0; i < side->reports.size(); ++i) {
            const auto& r = side->reports[i];
            body += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">"
                                "{}</td></tr>",
                                side == &c.base ? "base" : "new", esc(side->paths[i]),
                                esc(profile_of(r)), esc(kernel_of(r)), to_string(r.verdict()),
                                to_string(r.verdict()));
        }
    body += "</table>";
    for (const auto& note : c.notes)
        body += fmt::format("<p class=\"note\">note: {}</p>", esc(note));
    body += "</section>\n";

    body += "<section id=\"changes\"><h2>Outcome and verdict changes</h2><table><tr><th></th>"
            "<th>kind</th><th>name</th><th>base</th><th>new</th></tr>";
    for (const auto& s : c.states)
        body += fmt::format("<tr class=\"change {}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                            "<td>{}</td></tr>",
                            s.regression ? "regression" : "changed",
                            s.regression ? "regression" : "changed", esc(s.kind), esc(s.name),
                            esc(s.base), esc(s.next));
    body += "</table></section>\n";

    body += "<section id=\"metrics\"><h2>Throughput and latency</h2><table><tr><th>operation"
            "</th><th>metric</th><th>base</th><th>new</th><th>change</th><th>judgement</th>"
            "</tr>";
    // The worst judgement of each operation colours its plots.
    std::map<OpKey, stats::Change> worst;
    auto rank = [](stats::Change ch) {
        return ch == stats::Change::worse    ? 3
               : ch == stats::Change::better ? 2
               : ch == stats::Change::noise  ? 1
                                             : 0;
    };
    for (const auto& m : c.metrics) {
        const auto& g = m.judgement;
        std::string cls = stats::to_string(g.change);
        std::replace(cls.begin(), cls.end(), ' ', '-');
        auto fmtv = [&](double v) {
            return m.unit == "ns" ? ns_text(v) : fmt::format("{:.4g} {}", v, m.unit);
        };
        body += fmt::format("<tr class=\"metric {}\"><td>{}/{}</td><td>{}</td><td>{}</td><td>{}"
                            "</td><td>{:+.1f}%</td><td class=\"{}\">{}</td></tr>",
                            cls, esc(m.workload), esc(m.op), esc(m.metric), fmtv(g.base.mean),
                            fmtv(g.next.mean), 100 * g.ratio, cls, esc(g.why));
        auto& w = worst.try_emplace({m.workload, m.op}, g.change).first->second;
        if (rank(g.change) > rank(w))
            w = g.change;
    }
    body += "</table></section>\n";

    body += "<section id=\"operations\"><h2>Operations: base and new overlaid</h2>";
    auto base = pointers(c.base.reports), next = pointers(c.next.reports);
    auto keys = ops_in(base);
    for (const auto& k : ops_in(next))
        if (std::find(keys.begin(), keys.end(), k) == keys.end())
            keys.push_back(k);
    for (const auto& k : keys) {
        auto it = worst.find(k);
        std::string cls = it == worst.end()                     ? "sig-none"
                          : it->second == stats::Change::worse  ? "sig-worse"
                          : it->second == stats::Change::better ? "sig-better"
                          : it->second == stats::Change::noise  ? "sig-noise"
                                                                : "sig-none";
        body += op_section(k.first, k.second,
                           {{"base", "base", stats_of(base, k)}, {"new", "new", stats_of(next, k)}},
                           cls, "");
    }
    body += "</section>\n";
    return page("gmemstress comparison", body);
}

} // namespace gms::report
