// KTAP v1 (the kernel's Documentation/dev-tools/ktap.rst) renderer of the
// report model, for kselftest-style runners and the kernel's own KTAP tools
// (tools/testing/kunit/kunit.py parse).
//
// Layout: one subtest per workload ("workload.LABEL": a leaf "run" for the
// workload itself, its operations and data verification, then one leaf per
// check), one for the report-level conformance checks (when there are any),
// one for the invariants ("invariants": verified ok, violated not ok,
// incomplete and unverifiable ok # SKIP), one for the tool's own errors (when
// there are any) and one for the kernel log ("kernel_log": each finding a
// not ok leaf; none, one ok leaf "clean"; each waived finding an
// "ok N KIND # XFAIL waived by /REGEX/ (ORIGIN): line" leaf). The last line is
// kselftest's "# Totals: pass:N fail:N xfail:N xpass:0 skip:N error:N",
// counting leaves (an error leaf is `not ok` and counted under error, not
// fail; a waived finding under xfail).
// A report in which nothing ran (verdict skip) is one skipped test:
// "1..1" / "ok 1 gmemstress # SKIP reason", never "1..0".
#pragma once

#include "reports/model.h"

#include <string>
#include <vector>

namespace gms::report {

std::string to_ktap(const Report& r);

// A run that produced no report to render (a lab kernel that did not boot,
// crashed, or lost the results): one test "gmemstress" with this outcome;
// `reason` goes into the SKIP directive (skip) or a diagnostic line, and
// each of `diagnostics` into a diagnostic line.
std::string ktap_single(Outcome outcome, const std::string& reason,
                        const std::vector<std::string>& diagnostics = {});

} // namespace gms::report
