// Recorded event streams (JSON lines): what `run --record` saves and the
// unit tests replay through the checkers.
#pragma once

#include "probes/coverage.h"
#include "probes/event.h"

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gms::probes {

// A recorded stream: first line {"meta": {...}} (coverage, expectations,
// free-form notes), then one event per line.
struct RecordedStream {
    Coverage coverage;
    Expectations expect;
    nlohmann::json meta = nlohmann::json::object();
    std::vector<Event> events;
};
// Throws std::runtime_error naming the file and line on bad input.
RecordedStream load_stream(const std::string& path);
void save_stream(const std::string& path, const RecordedStream& s);

} // namespace gms::probes
