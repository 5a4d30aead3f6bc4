#include "reports/cost.h"

#include "reports/render.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <set>

namespace gms::report {

namespace {

using nlohmann::json;

double median_of(std::vector<double> v) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// [x_(k), x_(n-k+1)] of the sorted sample (1-based) covers the median with
// probability 1 - 2 P(B <= k-1), B ~ Binomial(n, 1/2): the largest k whose
// coverage is still >= 95%.
std::optional<std::pair<double, double>> median_ci95_of(std::vector<double> v) {
    const size_t n = v.size();
    if (n == 0)
        return std::nullopt;
    std::sort(v.begin(), v.end());
    std::vector<double> pmf(n + 1);
    pmf[0] = std::pow(0.5, double(n));
    for (size_t i = 1; i <= n; ++i)
        pmf[i] = pmf[i - 1] * double(n - i + 1) / double(i);
    size_t best = 0;
    double tail = 0; // P(B <= k-1)
    for (size_t k = 1; 2 * k <= n; ++k) {
        tail += pmf[k - 1];
        if (1 - 2 * tail < 0.95)
            break;
        best = k;
    }
    if (!best)
        return std::nullopt;
    return std::make_pair(v[best - 1], v[n - best]);
}

// Workload labels in first-seen order over every run.
std::vector<std::string> labels_of(const std::vector<CostPair>& pairs) {
    std::vector<std::string> out;
    auto see = [&](const CostRun& run) {
        auto add = [&](const std::string& l) {
            if (std::find(out.begin(), out.end(), l) == out.end())
                out.push_back(l);
        };
        for (const auto& [l, _] : run.ops_per_s)
            add(l);
        for (const auto& [l, _] : run.not_measured)
            add(l);
    };
    for (const auto& p : pairs) {
        see(p.off);
        see(p.on);
    }
    return out;
}

CostWorkload summarize_workload(const std::string& label, const std::vector<CostPair>& pairs) {
    CostWorkload w;
    w.label = label;
    std::vector<double> off, on;
    for (const auto& p : pairs) {
        auto a = p.off.ops_per_s.find(label), b = p.on.ops_per_s.find(label);
        if (a == p.off.ops_per_s.end() || b == p.on.ops_per_s.end() || a->second <= 0) {
            if (w.not_measured.empty()) {
                auto why = p.off.not_measured.count(label) ? p.off.not_measured.at(label)
                           : p.on.not_measured.count(label)
                               ? "probes on: " + p.on.not_measured.at(label)
                               : std::string("no operations with the probes off");
                w.not_measured = fmt::format("rep {}: {}", p.rep, why);
            }
            continue;
        }
        off.push_back(a->second);
        on.push_back(b->second);
        w.ratios.push_back(b->second / a->second);
    }
    // A workload measured in some pairs but not all is not measured: a
    // median over the pairs that happened to succeed would hide the others.
    if (!w.not_measured.empty()) {
        w.ratios.clear();
        return w;
    }
    w.median = median_of(w.ratios);
    w.median_ci95 = median_ci95_of(w.ratios);
    w.min = *std::min_element(w.ratios.begin(), w.ratios.end());
    w.max = *std::max_element(w.ratios.begin(), w.ratios.end());
    w.off_median = median_of(off);
    w.on_median = median_of(on);
    return w;
}

std::string pct(double x) {
    return fmt::format("{:.1f}%", 100 * x);
}

} // namespace

CostRun cost_run_from(const Report& rep) {
    CostRun run;
    run.duration_s = rep.duration_s;
    for (const auto& e : rep.errors)
        run.failures.push_back("tool error: " + e);
    for (const auto& w : rep.workloads) {
        const std::string& label = w.label.empty() ? w.name : w.label;
        if (w.outcome == Outcome::fail || w.outcome == Outcome::error)
            run.failures.push_back(
                fmt::format("workload {} {}: {}", label, to_string(w.outcome), w.reason));
        if (w.outcome != Outcome::pass) {
            run.not_measured[label] = fmt::format("{}: {}", to_string(w.outcome), w.reason);
            continue;
        }
        uint64_t ops = 0;
        for (const auto& [_, s] : w.ops)
            ops += s.count;
        if (w.duration_s > 0)
            run.ops_per_s[label] = double(ops) / w.duration_s;
        else
            run.not_measured[label] = "ran for no measurable time";
    }
    if (rep.probes.attached()) {
        const auto& s = *rep.probes.summary;
        run.backends.assign(s.backends_in_use.begin(), s.backends_in_use.end());
        run.events = s.events_decoded;
        run.losses = s.losses;
    }
    run.invariants = rep.invariants;
    return run;
}

void summarize(CostReport& r) {
    r.workloads.clear();
    if (r.pairs.empty()) {
        r.verdict = Outcome::skip;
        r.verdict_reason = r.interrupted ? "interrupted before a pair of runs completed"
                                         : "no pair of runs completed";
        return;
    }
    for (const auto& label : labels_of(r.pairs))
        r.workloads.push_back(summarize_workload(label, r.pairs));

    std::vector<std::string> failures;
    if (!r.kernel_log.empty())
        failures.push_back(fmt::format("{} kernel log findings (first: {} {})", r.kernel_log.size(),
                                       r.kernel_log[0].kind, r.kernel_log[0].line));
    for (const auto& p : r.pairs) {
        for (const auto* run : {&p.off, &p.on})
            for (const auto& f : run->failures)
                failures.push_back(
                    fmt::format("rep {} (probes {}): {}", p.rep, run == &p.off ? "off" : "on", f));
        if (p.on.losses)
            failures.push_back(fmt::format("rep {}: {} events lost", p.rep, p.on.losses));
        for (const auto& inv : p.on.invariants)
            if (inv.verdict == Verdict::violated)
                failures.push_back(fmt::format("rep {}: invariant {} violated", p.rep, inv.name));
    }
    std::vector<std::string> measured;
    for (const auto& w : r.workloads) {
        if (!w.not_measured.empty())
            continue;
        double cost = 1 - w.median;
        std::string line = fmt::format("{}: on/off {:.3f} (cost {}, {} pairs)", w.label, w.median,
                                       pct(cost), w.ratios.size());
        // The median decides; an interval on both sides of the target says
        // the decision is within the noise and more pairs would firm it up.
        if (w.median_ci95 && w.median_ci95->first < 1 - r.max_cost &&
            w.median_ci95->second >= 1 - r.max_cost)
            line += fmt::format(" [95% CI {:.3f}-{:.3f} straddles the target: within the noise, "
                                "more pairs would decide]",
                                w.median_ci95->first, w.median_ci95->second);
        if (cost > r.max_cost)
            failures.push_back(fmt::format("{} > target {}", line, pct(r.max_cost)));
        else
            measured.push_back(line);
    }
    if (!failures.empty()) {
        r.verdict = Outcome::fail;
        r.verdict_reason = fmt::format("{}", fmt::join(failures, "; "));
        return;
    }
    if (!r.errors.empty()) {
        r.verdict = Outcome::error;
        r.verdict_reason = fmt::format("{}", fmt::join(r.errors, "; "));
        return;
    }
    if (measured.empty()) {
        r.verdict = Outcome::skip;
        std::vector<std::string> why;
        for (const auto& w : r.workloads)
            why.push_back(w.label + ": " + w.not_measured);
        r.verdict_reason = "no workload measured" +
                           (why.empty() ? "" : fmt::format(" ({})", fmt::join(why, "; ")));
        return;
    }
    r.verdict = Outcome::pass;
    r.verdict_reason = fmt::format("{}; within target {}; no events lost",
                                   fmt::join(measured, "; "), pct(r.max_cost));
}

namespace {

json run_json(const CostRun& run, bool probes_on) {
    json j = {{"duration_s", run.duration_s},
              {"ops_per_s", run.ops_per_s},
              {"not_measured", run.not_measured},
              {"failures", run.failures}};
    if (probes_on) {
        j["backends"] = run.backends;
        j["events"] = run.events;
        j["losses"] = run.losses;
        j["invariants"] = json::array();
        for (const auto& i : run.invariants)
            j["invariants"].push_back(invariant_json(i));
    }
    return j;
}

} // namespace

json to_json(const CostReport& r) {
    json j = envelope_json(r);
    j["backend_requested"] = r.backend_requested;
    j["reps_requested"] = r.reps_requested;
    j["warmup_pairs"] = r.warmup_pairs;
    j["max_cost"] = r.max_cost;
    j["pairs"] = json::array();
    for (const auto& p : r.pairs)
        j["pairs"].push_back({{"rep", p.rep},
                              {"order", p.off_first ? "off,on" : "on,off"},
                              {"off", run_json(p.off, false)},
                              {"on", run_json(p.on, true)}});
    j["workloads"] = json::array();
    for (const auto& w : r.workloads) {
        json wj = {{"label", w.label}, {"measured", w.not_measured.empty()}};
        if (w.not_measured.empty())
            wj.update({{"ratios", w.ratios},
                       {"median_ratio", w.median},
                       {"min_ratio", w.min},
                       {"max_ratio", w.max},
                       {"median_ratio_ci95", w.median_ci95 ? json::array({w.median_ci95->first,
                                                                          w.median_ci95->second})
                                                           : json(nullptr)},
                       {"cost", 1 - w.median},
                       {"off_median_ops_per_s", w.off_median},
                       {"on_median_ops_per_s", w.on_median}});
        else
            wj["reason"] = w.not_measured;
        j["workloads"].push_back(wj);
    }
    j["probes"] = to_json(r.probes);
    if (r.program_stats)
        j["program_stats"] = to_json(*r.program_stats);
    j["verdict"] = to_string(r.verdict);
    j["verdict_reason"] = r.verdict_reason;
    return j;
}

// The programs that took the most time in the attribution run.
static std::string program_stats_text(const ProgramStats& s, size_t top = 10) {
    if (!s.enabled)
        return fmt::format("program run times: not measured: {}\n", s.reason);
    uint64_t total = 0;
    for (const auto& p : s.programs)
        total += p.run_time_ns;
    std::string out = fmt::format(
        "program run times (one more probes-on run, kernel BPF stats, {:.1f} s): {:.1f} ms in "
        "all, {:.2f}% of the span; trampolines and kprobes not included\n",
        s.span_s, double(total) / 1e6, s.span_s > 0 ? 100.0 * double(total) / (s.span_s * 1e9) : 0);
    out += fmt::format("  {:<24} {:<28} {:>10} {:>10} {:>8}\n", "point", "program", "runs",
                       "ms", "ns/run");
    for (size_t i = 0; i < s.programs.size() && i < top; ++i) {
        const auto& p = s.programs[i];
        out += fmt::format("  {:<24} {:<28} {:>10} {:>10.2f} {:>8.0f}\n", p.point, p.program,
                           p.runs, double(p.run_time_ns) / 1e6,
                           p.runs ? double(p.run_time_ns) / double(p.runs) : 0.0);
    }
    return out;
}

std::string to_text(const CostReport& r) {
    std::string out;
    std::set<std::string> backends;
    for (const auto& p : r.pairs)
        backends.insert(p.on.backends.begin(), p.on.backends.end());
    out += fmt::format("probe-cost: {} pairs of runs (probes off / on), backend {} (in use: {})\n",
                       r.pairs.size(), r.backend_requested,
                       backends.empty() ? "-" : fmt::format("{}", fmt::join(backends, ", ")));
    out += fmt::format("{:<4} {:<7} {:<16} {:>13} {:>13} {:>7} {:>9} {:>5}\n", "rep", "order",
                       "workload", "off ops/s", "on ops/s", "on/off", "events", "lost");
    for (const auto& p : r.pairs) {
        for (const auto& label : labels_of({p})) {
            auto a = p.off.ops_per_s.find(label), b = p.on.ops_per_s.find(label);
            bool both = a != p.off.ops_per_s.end() && b != p.on.ops_per_s.end() && a->second > 0;
            out += fmt::format("{:<4} {:<7} {:<16} {:>13} {:>13} {:>7} {:>9} {:>5}\n", p.rep,
                               p.off_first ? "off,on" : "on,off", label,
                               a != p.off.ops_per_s.end() ? fmt::format("{:.0f}", a->second) : "-",
                               b != p.on.ops_per_s.end() ? fmt::format("{:.0f}", b->second) : "-",
                               both ? fmt::format("{:.3f}", b->second / a->second) : "-",
                               p.on.events, p.on.losses);
        }
    }
    for (const auto& w : r.workloads) {
        if (w.not_measured.empty())
            out += fmt::format("  {}: median on/off {:.3f} ({}min {:.3f}, max {:.3f}), cost {}\n",
                               w.label, w.median,
                               w.median_ci95 ? fmt::format("95% CI {:.3f}-{:.3f}, ",
                                                           w.median_ci95->first,
                                                           w.median_ci95->second)
                                             : std::string("no 95% CI below 6 pairs, "),
                               w.min, w.max, pct(1 - w.median));
        else
            out += fmt::format("  {}: not measured: {}\n", w.label, w.not_measured);
    }
    if (r.program_stats)
        out += program_stats_text(*r.program_stats);
    if (r.interrupted)
        out += fmt::format("interrupted: {}\n", r.interrupt_reason);
    out += fmt::format("verdict: {} ({})\n", to_string(r.verdict), r.verdict_reason);
    return out;
}

} // namespace gms::report
