// `gmemstress compare`: what changed between a base set of runs and a new
// set. Outcome and verdict changes and new kernel-log findings are facts;
// throughput and latency changes are judged against the run-to-run spread
// (reports/stats.h). Typed data; to_json/to_text render it.
#pragma once

#include "reports/model.h"
#include "reports/stats.h"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gms::report {

struct RunSet {
    std::vector<std::string> paths; // where each report came from (for messages)
    std::vector<Report> reports;
};

// A check, workload outcome or invariant verdict that differs between the
// sides: each side's values over its reports ("pass", "pass x2, fail x1",
// "absent").
struct StateChange {
    std::string kind; // "conformance", "workload", "check", "invariant"
    std::string name; // "lifecycle/close_then_fault", "page_cache_balance", ...
    std::string base, next;
    bool regression = false;
};

// A kernel-log finding of the new side that no base report has (compared
// with numbers and addresses masked: a PID or a timestamp is not new).
struct NewFinding {
    KmsgFinding finding;
    std::string path; // the new report it is in
};

struct MetricChange {
    std::string workload, op;
    std::string metric; // throughput, latency_p50, latency_p99
    std::string unit;   // ops/s, ns
    stats::Judgement judgement;
    bool regression() const { return judgement.change == stats::Change::worse; }
};

struct Comparison {
    RunSet base, next;
    stats::Rules rules;
    std::vector<std::string> notes; // profiles that differ, operations on one side only
    std::vector<StateChange> states;
    std::vector<NewFinding> new_findings;
    std::vector<MetricChange> metrics;

    size_t regressions() const;
};

Comparison compare(RunSet base, RunSet next, const stats::Rules& rules = {});

// Findings keyed for "is it new": kind and line with digit runs masked.
std::string finding_key(const KmsgFinding& f);

nlohmann::json to_json(const Comparison& c);
std::string to_text(const Comparison& c, bool color = false);

} // namespace gms::report
