// Reads a JSON report (reports/schema/report.schema.json, version 2) back
// into the typed model, for `gmemstress compare` and `report html`. The
// inverse of to_json(): to_json(parse_report(to_json(r))) == to_json(r).
#pragma once

#include "reports/model.h"

#include <nlohmann/json.hpp>
#include <string>

namespace gms::report {

// UsageError naming `origin` (the file) and the field for anything that is
// not a version-2 report: another schema version (version 1 has no latency
// buckets or timelines: it is refused, with what to do), a missing or
// mistyped field, a histogram whose buckets do not add up.
Report parse_report(const nlohmann::json& j, const std::string& origin);
// The file at `path`: UsageError naming it when it cannot be read or parsed.
Report read_report(const std::string& path);

} // namespace gms::report
