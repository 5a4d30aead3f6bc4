// `gmemstress probe-cost`: the cost of observation as plain data. The same
// profile runs with the probes off and on, alternately, in one invocation;
// ratios are taken per pair (adjacent runs) so slow drift of the machine
// cancels. summarize() is pure; renderers only read.
#pragma once

#include "reports/model.h"

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::report {

// One run of the profile, probes off or on.
struct CostRun {
    double duration_s = 0;
    std::map<std::string, double> ops_per_s;         // workload label -> ops/s (passed only)
    std::map<std::string, std::string> not_measured; // workload label -> why not
    std::vector<std::string> failures;               // workloads that failed or erred
    // Probes on only.
    std::vector<std::string> backends; // backends in use
    uint64_t events = 0;               // records decoded
    uint64_t losses = 0;               // lost events, as the verdicts count them
    std::vector<InvariantResult> invariants;
};

// Two adjacent runs; odd reps run off first, even reps on first.
struct CostPair {
    int rep = 0;
    bool off_first = true;
    CostRun off, on;
};

// Per workload, over every pair that measured it.
struct CostWorkload {
    std::string label;
    std::vector<double> ratios; // on/off per pair
    double median = 0, min = 0, max = 0;
    // Distribution-free 95% confidence interval of the median ratio (order
    // statistics of the pairs, binomial coverage >= 95%); unset below 6 pairs,
    // where no such interval exists. It says whether more pairs are needed:
    // an interval that straddles the target does not decide it.
    std::optional<std::pair<double, double>> median_ci95;
    double off_median = 0, on_median = 0; // ops/s
    std::string not_measured;             // why there is no ratio (empty: measured)
};

struct CostReport : Envelope {
    CostReport() { command = "probe-cost"; }

    std::string backend_requested = "auto";
    int reps_requested = 0;
    int warmup_pairs = 0; // run before the pairs, not counted
    double max_cost = 0.10; // target: on/off >= 1 - max_cost
    std::vector<CostPair> pairs;
    // The probes of the first probes-on run: attach points, backends, reasons.
    ProbesSection probes;
    // One more probes-on run after the pairs, with kernel BPF statistics on
    // (not in the ratios: the statistics cost clock reads): where the time goes.
    std::optional<ProgramStats> program_stats;
    // The envelope's kernel_log covers the whole command; its errors are
    // what the tool could not do as asked (the pairs measured are kept).

    // Filled by summarize().
    std::vector<CostWorkload> workloads;
    Outcome verdict = Outcome::skip;
    std::string verdict_reason;
};

// The figures of one run's report: ops/s of each workload that passed (all
// its operations over its duration), why the others have none, and the
// probes' backends, records and losses.
CostRun cost_run_from(const Report& rep);

// Ratios, medians and the verdict: fail when a measured workload's median
// on/off ratio is below 1 - max_cost, when any probes-on run lost events, an
// invariant was violated, a workload failed or the kernel log has findings;
// error when the tool itself failed (errors); skip when nothing could be
// measured.
void summarize(CostReport& r);

nlohmann::json to_json(const CostReport& r);
std::string to_text(const CostReport& r);

} // namespace gms::report
