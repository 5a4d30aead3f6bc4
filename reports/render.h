// Renderers of the report model, and the atomic writer.
#pragma once

#include "reports/model.h"

#include <nlohmann/json.hpp>
#include <string>

namespace gms::report {

nlohmann::json to_json(const Report& r);
// The envelope every report starts with (schema, tool, command, time, host,
// profile, interruption, lab, kernel log, errors); each report type adds its own.
nlohmann::json envelope_json(const Envelope& e);
// One invariant's verdict, as in the report (also used by probe-cost).
nlohmann::json invariant_json(const InvariantResult& i);
// One stall (a call over the stall threshold), as in the report, and in one
// line for people: "thread 123 (worker) in fallocate(PUNCH_HOLE) ... for 12.0s".
nlohmann::json stall_json(const Stall& st);
std::string stall_line(const Stall& st);
// The series fingerprint and the ABI taken from it ("series" in reports and
// in `caps --json`), and the same in one line for people.
nlohmann::json series_json(const kvm::SeriesInfo& s);
std::string series_line(const kvm::SeriesInfo& s);
// Concise human summary.
std::string to_text(const Report& r, bool color = false);
// JUnit XML: one test case per check, per workload and per invariant.
std::string to_junit(const Report& r);
// & < > " ' escaped: for XML and for HTML text and attributes alike.
std::string xml_escape(const std::string& s);

// Writes to a temporary file in the same directory, fsyncs and renames, so
// readers see either the old file or the complete new one. Throws SysError.
void write_atomically(const std::string& path, const std::string& content);

} // namespace gms::report
