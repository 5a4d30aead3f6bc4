#include "reports/compare.h"

#include "reports/measurements.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <set>

namespace gms::report {

namespace {

// "pass", or "pass x2, fail x1": one side's values in first-seen order.
std::string describe(const std::vector<std::string>& values, size_t reports) {
    if (values.empty())
        return "absent";
    std::vector<std::pair<std::string, size_t>> counts;
    for (const auto& v : values) {
        auto it = std::find_if(counts.begin(), counts.end(), [&](auto& c) { return c.first == v; });
        if (it == counts.end())
            counts.push_back({v, 1});
        else
            ++it->second;
    }
    if (values.size() < reports)
        counts.push_back({"absent", reports - values.size()});
    if (counts.size() == 1)
        return counts[0].first;
    std::vector<std::string> parts;
    for (const auto& [v, n] : counts)
        parts.push_back(fmt::format("{} x{}", v, n));
    return fmt::format("{}", fmt::join(parts, ", "));
}

int outcome_rank(const std::string& o) {
    return o == "fail" ? 3 : o == "error" ? 2 : o == "pass" ? 1 : 0;
}

// Values of one state per side, keyed by (kind, name).
using States = std::map<std::pair<std::string, std::string>, std::vector<std::string>>;

States states_of(const RunSet& s) {
    States out;
    for (const auto& r : s.reports) {
        for (const auto& c : r.conformance)
            out[{"conformance", c.name}].push_back(to_string(c.outcome));
        for (const auto& w : r.workloads) {
            out[{"workload", label_of(w)}].push_back(to_string(w.outcome));
            for (const auto& c : w.checks)
                out[{"check", label_of(w) + "/" + c.name}].push_back(to_string(c.outcome));
        }
        for (const auto& i : r.invariants)
            out[{"invariant", i.name}].push_back(to_string(i.verdict));
    }
    return out;
}

void compare_states(Comparison& c) {
    States b = states_of(c.base), n = states_of(c.next);
    std::set<std::pair<std::string, std::string>> keys;
    for (const auto& [k, _] : b)
        keys.insert(k);
    for (const auto& [k, _] : n)
        keys.insert(k);
    for (const auto& key : keys) {
        auto bv = b[key], nv = n[key];
        std::set<std::string> bs(bv.begin(), bv.end()), ns(nv.begin(), nv.end());
        bool b_all = bv.size() == c.base.reports.size(), n_all = nv.size() == c.next.reports.size();
        if (bs == ns && b_all == n_all)
            continue;
        StateChange s{key.first, key.second, describe(bv, c.base.reports.size()),
                      describe(nv, c.next.reports.size())};
        if (key.first == "invariant") {
            s.regression = ns.count("violated") && !bs.count("violated");
        } else {
            int bw = 0, nw = 0;
            for (const auto& v : bv)
                bw = std::max(bw, outcome_rank(v));
            for (const auto& v : nv)
                nw = std::max(nw, outcome_rank(v));
            s.regression = nw > bw && nw >= outcome_rank("error");
        }
        c.states.push_back(std::move(s));
    }
}

void compare_findings(Comparison& c) {
    std::set<std::string> known;
    for (const auto& r : c.base.reports)
        for (const auto& f : r.kernel_log)
            known.insert(finding_key(f));
    std::set<std::string> seen;
    for (size_t i = 0; i < c.next.reports.size(); ++i)
        for (const auto& f : c.next.reports[i].kernel_log) {
            std::string k = finding_key(f);
            if (!known.count(k) && seen.insert(k).second)
                c.new_findings.push_back({f, c.next.paths[i]});
        }
}

// Per (workload, op, metric): one sample per report that measured it, and
// the fewest completed operations behind one of them.
struct Samples {
    std::string unit;
    std::vector<double> values;
    uint64_t min_ops = UINT64_MAX;
};
using SampleMap = std::map<std::tuple<std::string, std::string, std::string>, Samples>;

SampleMap samples_of(const RunSet& s) {
    SampleMap out;
    for (const auto& r : s.reports) {
        std::map<std::pair<std::string, std::string>, uint64_t> done;
        for (const auto& w : r.workloads)
            for (const auto& [op, st] : w.ops)
                done[{label_of(w), op}] = st.latency_ns.count();
        for (const auto& m : measurements(r)) {
            if (m.metric != "throughput" && m.metric != "latency_p50" && m.metric != "latency_p99")
                continue;
            auto& e = out[{m.workload, m.op, m.metric}];
            e.unit = m.unit;
            e.values.push_back(m.value);
            e.min_ops = std::min(e.min_ops, done[{m.workload, m.op}]);
        }
    }
    return out;
}

// A report's number is only a sample of its run when enough operations are
// behind it: a rate of a handful of operations, or the median of five
// (which flips between the modes of a bimodal operation), is not. A
// percentile needs 10 operations beyond it (p50: 20, p99: 1000).
uint64_t ops_needed(const std::string& metric) {
    return metric == "latency_p50" ? 20 : metric == "latency_p99" ? 1000 : 10;
}

void compare_metrics(Comparison& c) {
    SampleMap b = samples_of(c.base), n = samples_of(c.next);
    std::set<std::string> one_sided;
    for (const auto& [key, bs] : b) {
        auto it = n.find(key);
        const auto& [w, op, metric] = key;
        if (it == n.end()) {
            one_sided.insert(fmt::format("{}/{} measured in base reports only", w, op));
            continue;
        }
        const Samples& ns = it->second;
        MetricChange m{w, op, metric, bs.unit,
                       stats::judge(bs.values, ns.values, metric == "throughput", c.rules)};
        uint64_t fewest = std::min(bs.min_ops, ns.min_ops);
        if (fewest < ops_needed(metric)) {
            m.judgement.change = stats::Change::not_enough_samples;
            m.judgement.why =
                fmt::format("not enough samples: a report has {} operation{}, {} "
                            "needs {} per report",
                            fewest, fewest == 1 ? "" : "s", metric, ops_needed(metric));
        }
        c.metrics.push_back(std::move(m));
    }
    for (const auto& [key, _] : n)
        if (!b.count(key))
            one_sided.insert(fmt::format("{}/{} measured in new reports only", std::get<0>(key),
                                         std::get<1>(key)));
    c.notes.insert(c.notes.end(), one_sided.begin(), one_sided.end());
}

std::string profile_name(const Report& r) {
    return r.profile.is_object() ? r.profile.value("name", std::string("?")) : "?";
}

void note_profiles(Comparison& c) {
    std::set<std::string> names;
    for (const auto* s : {&c.base, &c.next})
        for (const auto& r : s->reports)
            names.insert(profile_name(r));
    if (names.size() > 1)
        c.notes.push_back(fmt::format("the reports ran different profiles ({}): their numbers may "
                                      "not be comparable",
                                      fmt::join(names, ", ")));
}

} // namespace

std::string finding_key(const KmsgFinding& f) {
    std::string k = f.kind + ":";
    bool in_digits = false;
    for (char ch : f.line) {
        bool d = std::isdigit(static_cast<unsigned char>(ch));
        if (d && !in_digits)
            k += '#';
        else if (!d)
            k += ch;
        in_digits = d;
    }
    return k;
}

size_t Comparison::regressions() const {
    size_t n = new_findings.size();
    for (const auto& s : states)
        n += s.regression;
    for (const auto& m : metrics)
        n += m.regression();
    return n;
}

Comparison compare(RunSet base, RunSet next, const stats::Rules& rules) {
    Comparison c;
    c.base = std::move(base);
    c.next = std::move(next);
    c.rules = rules;
    note_profiles(c);
    compare_states(c);
    compare_findings(c);
    compare_metrics(c);
    return c;
}

namespace {

nlohmann::json summary_json(const stats::Summary& s) {
    return {{"n", s.n},     {"mean", s.mean}, {"sd", s.sd},
            {"min", s.min}, {"max", s.max},   {"ci95_half_width", s.ci95}};
}

std::string fmt_value(double v, const std::string& unit) {
    if (unit == "ns") {
        if (v >= 1e6)
            return fmt::format("{:.3g} ms", v / 1e6);
        if (v >= 1e3)
            return fmt::format("{:.3g} us", v / 1e3);
        return fmt::format("{:.3g} ns", v);
    }
    return fmt::format("{:.4g} {}", v, unit);
}

} // namespace

nlohmann::json to_json(const Comparison& c) {
    using nlohmann::json;
    json j;
    j["base"] = c.base.paths;
    j["new"] = c.next.paths;
    j["rules"] = {{"min_samples", c.rules.min_samples},
                  {"alpha", c.rules.alpha},
                  {"min_change", c.rules.min_change}};
    j["notes"] = c.notes;
    j["state_changes"] = json::array();
    for (const auto& s : c.states)
        j["state_changes"].push_back({{"kind", s.kind},
                                      {"name", s.name},
                                      {"base", s.base},
                                      {"new", s.next},
                                      {"regression", s.regression}});
    j["new_kernel_log_findings"] = json::array();
    for (const auto& f : c.new_findings)
        j["new_kernel_log_findings"].push_back(
            {{"kind", f.finding.kind}, {"line", f.finding.line}, {"report", f.path}});
    j["metrics"] = json::array();
    for (const auto& m : c.metrics) {
        const auto& g = m.judgement;
        json e = {{"workload", m.workload},
                  {"op", m.op},
                  {"metric", m.metric},
                  {"unit", m.unit},
                  {"change", stats::to_string(g.change)},
                  {"ratio", g.ratio},
                  {"why", g.why},
                  {"base", summary_json(g.base)},
                  {"new", summary_json(g.next)},
                  {"regression", m.regression()}};
        if (g.tested)
            e["welch"] = {{"t", std::isfinite(g.welch.t) ? json(g.welch.t) : json(nullptr)},
                          {"df", g.welch.df},
                          {"p", g.welch.p}};
        j["metrics"].push_back(e);
    }
    j["regressions"] = c.regressions();
    j["verdict"] = c.regressions() ? "regression" : "no regression";
    return j;
}

std::string to_text(const Comparison& c, bool color) {
    auto paint = [&](const std::string& s, const char* code) {
        return color ? fmt::format("\033[{}m{}\033[0m", code, s) : s;
    };
    std::string out = fmt::format("gmemstress compare: {} base report{}, {} new report{}\n",
                                  c.base.paths.size(), c.base.paths.size() == 1 ? "" : "s",
                                  c.next.paths.size(), c.next.paths.size() == 1 ? "" : "s");
    out += fmt::format("  base: {}\n  new:  {}\n", fmt::join(c.base.paths, " "),
                       fmt::join(c.next.paths, " "));
    out += fmt::format("  significant: {}+ reports per side, Welch's t-test p < {}, beyond both "
                       "95% confidence half-widths, disjoint ranges, change >= {:.0f}%\n",
                       c.rules.min_samples, c.rules.alpha, 100 * c.rules.min_change);
    for (const auto& n : c.notes)
        out += fmt::format("  note: {}\n", n);

    out += fmt::format("kernel log: {} new finding{}\n", c.new_findings.size(),
                       c.new_findings.size() == 1 ? "" : "s");
    for (const auto& f : c.new_findings)
        out += fmt::format("  {} [{}] {} ({})\n", paint("NEW", "31"), f.finding.kind,
                           f.finding.line, f.path);

    out += fmt::format("outcomes and verdicts: {} change{}\n", c.states.size(),
                       c.states.size() == 1 ? "" : "s");
    for (const auto& s : c.states)
        out += fmt::format("  {:<10} {} {}: {} -> {}\n",
                           s.regression ? paint("REGRESSION", "31") : "changed", s.kind, s.name,
                           s.base, s.next);

    out += "throughput and latency (base mean -> new mean):\n";
    size_t judged = 0;
    for (const auto& m : c.metrics) {
        const auto& g = m.judgement;
        judged += g.change != stats::Change::not_enough_samples;
        std::string mark = g.change == stats::Change::worse    ? paint("WORSE", "31")
                           : g.change == stats::Change::better ? paint("better", "32")
                           : g.change == stats::Change::noise  ? "~"
                                                               : "?";
        out += fmt::format("  {:<7} {}/{} {}: {} -> {} ({:+.1f}%); {}\n", mark, m.workload, m.op,
                           m.metric, fmt_value(g.base.mean, m.unit), fmt_value(g.next.mean, m.unit),
                           100 * g.ratio, g.why);
    }
    if (!c.metrics.empty() && judged == 0)
        out += fmt::format("  not judged: not enough samples ({} per side needed)\n",
                           c.rules.min_samples);
    size_t n = c.regressions();
    out += n ? paint(fmt::format("verdict: regression ({})", n), "31") + "\n"
             : "verdict: no regression\n";
    return out;
}

} // namespace gms::report
