// Renderers of the report model, and the atomic writer.
#pragma once

#include "reports/model.h"

#include <nlohmann/json.hpp>
#include <string>

namespace gms::report {

nlohmann::json to_json(const Report& r);
// The fields every report starts with (schema, tool, command, time, host, profile).
nlohmann::json report_header(const std::string& tool_version, const std::string& command,
                             const std::string& timestamp, const nlohmann::json& host,
                             const nlohmann::json& profile);
// One invariant's verdict, as in the report (also used by probe-cost).
nlohmann::json invariant_json(const InvariantResult& i);
nlohmann::json kernel_log_json(const std::vector<KmsgFinding>& findings, bool available,
                               const std::string& reason);
// Concise human summary.
std::string to_text(const Report& r, bool color = false);
// JUnit XML: one test case per check, per workload and per invariant.
std::string to_junit(const Report& r);

// Writes to a temporary file in the same directory, fsyncs and renames, so
// readers see either the old file or the complete new one. Throws SysError.
void write_atomically(const std::string& path, const std::string& content);

} // namespace gms::report
