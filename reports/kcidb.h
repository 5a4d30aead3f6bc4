// KCIDB v5.3 (KernelCI's common report database) renderer of the report
// model: {"version": {"major": 5, "minor": 3}, "tests": [...]}, validated by
// tests/e2e/test_kcidb.py against reports/schema/kcidb-v5.3.schema.json.
//
// Test paths (dot-separated, components [A-Za-z0-9_-]+; other characters of
// labels and names become '_', a repeated path gets a _2, _3 suffix):
//   gmemstress                                  the verdict, text summary as log_excerpt
//   gmemstress.workload.LABEL                   the workload's outcome
//   gmemstress.workload.LABEL.checks.NAME       each check
//   gmemstress.workload.LABEL.ops.OP.METRIC     DONE, number {value, unit}: throughput
//                                               (ops/s), bandwidth (B/s), latency_p50,
//                                               latency_p99, latency_max (ns)
//   gmemstress.conformance.NAME                 report-level checks
//   gmemstress.invariants.NAME                  verified PASS, violated FAIL, incomplete
//                                               ERROR, unverifiable SKIP
//   gmemstress.tool_errors.error_N              ERROR
//   gmemstress.kernel_log                       PASS, FAIL (findings), SKIP (not scanned)
//   gmemstress.kernel_log.findings.KIND         FAIL, the message as log_excerpt
//   gmemstress.kernel_log.waived.KIND           DONE (reported, not judged), misc names
//                                               the waiver's regex and origin
// Outcomes: pass PASS, fail FAIL, error ERROR, skip SKIP (a missing feature,
// nothing ran); an interrupted run's verdict is ERROR unless something failed.
// Every test has id "ORIGIN:gms-RUNID.PATH", the origin, the build id, the
// run's start time and `environment` {comment, misc: {caps, lab}}.
#pragma once

#include "reports/model.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::report {

struct KcidbOptions {
    std::string origin;   // the CI system: ^[a-z0-9_]+$
    std::string build_id; // "ORIGIN:..."; empty: ORIGIN:KERNEL_RELEASE of the report
    std::string run_id;   // unique per run, part of every test id
};

// Checks --kcidb-origin and --kcidb-build-id (UsageError naming the flag),
// prefixes a build id without an origin with ORIGIN:, and draws a run id.
KcidbOptions kcidb_options(const std::string& origin, const std::string& build_id);

nlohmann::json to_kcidb(const Report& r, const KcidbOptions& o);

// A run that produced no report (a lab kernel that did not boot, crashed, or
// lost the results): one test "gmemstress" with this outcome, `reason` and
// `diagnostics` as its log excerpt.
nlohmann::json kcidb_single(Outcome outcome, const std::string& reason,
                            const std::vector<std::string>& diagnostics, const KcidbOptions& o,
                            const std::string& kernel_release,
                            const std::optional<nlohmann::json>& lab = std::nullopt);

} // namespace gms::report
