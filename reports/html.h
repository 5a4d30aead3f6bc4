// A self-contained HTML report: inline CSS and SVG, no script, no network.
// Kernel-log findings first; then per operation its latency histogram (log
// axis), its percentile tail and its throughput over time; invariants with
// their evidence. A comparison overlays the two sides, coloured by whether
// the change is significant (reports/compare.h).
#pragma once

#include "reports/compare.h"
#include "reports/model.h"

#include <string>

namespace gms::report {

std::string to_html(const Report& r);
std::string to_html(const Comparison& c);

} // namespace gms::report
