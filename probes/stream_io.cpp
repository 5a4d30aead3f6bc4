// Recorded streams (see stream_io.h): the only file I/O of the checkers' side.
#include "probes/stream_io.h"

#include "reports/render.h"

#include <fmt/format.h>
#include <fstream>
#include <stdexcept>

namespace gms::probes {

RecordedStream load_stream(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw std::runtime_error(fmt::format("{}: cannot open", path));
    RecordedStream s;
    std::string line;
    size_t lineno = 0;
    bool have_meta = false;
    while (std::getline(in, line)) {
        ++lineno;
        if (line.empty() || line[0] == '#')
            continue;
        try {
            auto j = nlohmann::json::parse(line);
            if (j.contains("meta")) {
                const auto& m = j["meta"];
                s.meta = m;
                s.coverage = Coverage::from_json(m.value("coverage", nlohmann::json::object()));
                s.expect = Expectations::from_json(m.value("expect", nlohmann::json::object()));
                have_meta = true;
            } else {
                s.events.push_back(event_from_json(j));
            }
        } catch (const std::exception& e) {
            throw std::runtime_error(fmt::format("{}:{}: {}", path, lineno, e.what()));
        }
    }
    if (!have_meta)
        throw std::runtime_error(fmt::format("{}: no {{\"meta\": ...}} line", path));
    return s;
}

void save_stream(const std::string& path, const RecordedStream& s) {
    nlohmann::json meta = s.meta.is_object() ? s.meta : nlohmann::json::object();
    meta["coverage"] = s.coverage.to_json();
    meta["expect"] = s.expect.to_json();
    std::string out = nlohmann::json{{"meta", meta}}.dump() + '\n';
    for (const auto& e : s.events)
        out += to_json(e).dump() + '\n';
    report::write_atomically(path, out); // like the reports: whole or not at all
}

} // namespace gms::probes
