#include "reports/probes_summary.h"

namespace gms::report {

namespace {

nlohmann::json to_json(const AttachPointSummary& p) {
    nlohmann::json e = {{"name", p.name}, {"what", p.what}, {"attached", p.attached}};
    if (p.backend) {
        e["backend"] = *p.backend;
        e["target"] = p.target;
        e["programs"] = p.programs;
    }
    if (!p.attached)
        e["reason"] = p.reason;
    if (p.optional)
        e["optional"] = true;
    if (!p.rejected.empty())
        e["rejected"] = p.rejected;
    if (!p.decoding.empty())
        e["decoding"] = p.decoding;
    return e;
}

} // namespace

nlohmann::json to_json(const ProbesSummary& s) {
    nlohmann::json j;
    j["backend_requested"] = s.backend_requested;
    j["backends"] = s.backends;
    j["lockdown"] = s.lockdown;
    j["tracefs"] = s.tracefs;
    j["kprobe_targets_from"] = s.kprobe_targets_from;
    j["load_attempts"] = s.load_attempts;
    j["attach_rounds"] = s.attach_rounds;
    j["attach_check"] = s.attach_check;
    if (!s.load_failures.empty())
        j["load_failures"] = s.load_failures;
    j["ringbuf_size"] = s.ringbuf_size;
    j["attach_points"] = nlohmann::json::array();
    for (const auto& p : s.attach_points)
        j["attach_points"].push_back(to_json(p));
    j["backends_in_use"] = s.backends_in_use;
    j["counters"] = s.counters;
    j["lock_contention_gmem_identifiable"] = s.lock_contention_gmem_identifiable;
    j["losses"] = s.losses;
    j["drops"] = {{"ringbuf_reserve_failures", s.drops.ringbuf_reserve_failures},
                  {"host_short_records", s.drops.host_short_records},
                  {"host_unknown_types", s.drops.host_unknown_types},
                  {"kprobe_stash_full", s.drops.kprobe_stash_full},
                  {"watch_map_full", s.drops.watch_map_full},
                  {"recording_dropped", s.drops.recording_dropped}};
    j["events"] = s.events;
    j["events_by_source"] = s.events_by_source;
    j["events_decoded"] = s.events_decoded;
    if (s.consumer_cpu_s)
        j["consumer_cpu_s"] = *s.consumer_cpu_s;
    j["events_of_calibration_files"] = s.events_of_calibration_files;
    j["filter"] = {{"mode", s.filter.all_guest_memfds ? "all_guest_memfds" : "watched_inodes"},
                   {"files_watched", s.filter.files_watched},
                   {"counters_tgid", s.filter.counters_tgid}};
    if (s.filter.gmem_dev)
        j["filter"]["gmem_dev"] = *s.filter.gmem_dev;
    if (!s.filter.gmem_dev_source.empty())
        j["filter"]["gmem_dev_source"] = s.filter.gmem_dev_source;
    j["calibration"] = s.calibration;
    j["pfn_correction"] = s.pfn_correction;
    j["thp_split_vmstat_delta"] = s.thp_split_vmstat_delta;
    j["finished"] = s.finished;
    if (s.program_stats)
        j["program_stats"] = to_json(*s.program_stats);
    return j;
}

nlohmann::json to_json(const ProgramStats& s) {
    nlohmann::json j = {{"enabled", s.enabled}, {"span_s", s.span_s}};
    if (!s.enabled)
        j["reason"] = s.reason;
    j["programs"] = nlohmann::json::array();
    for (const auto& p : s.programs) {
        nlohmann::json e = {{"point", p.point},       {"program", p.program},
                            {"target", p.target},     {"runs", p.runs},
                            {"run_time_ns", p.run_time_ns}};
        if (p.runs)
            e["ns_per_run"] = double(p.run_time_ns) / double(p.runs);
        if (s.span_s > 0)
            e["share_of_span"] = double(p.run_time_ns) / (s.span_s * 1e9);
        if (p.recursion_misses)
            e["recursion_misses"] = p.recursion_misses;
        j["programs"].push_back(std::move(e));
    }
    return j;
}

std::string to_string(ProbesSection::Status s) {
    switch (s) {
    case ProbesSection::Status::off:
        return "off";
    case ProbesSection::Status::unavailable:
        return "unavailable";
    case ProbesSection::Status::attached:
        return "attached";
    }
    return "?";
}

nlohmann::json to_json(const ProbesSection& s) {
    nlohmann::json j = s.summary ? to_json(*s.summary) : nlohmann::json::object();
    if (!s.summary && s.reason.empty() && s.watch.is_null() &&
        s.status == ProbesSection::Status::off)
        return j; // never set: as before, an empty object
    j["status"] = to_string(s.status);
    if (!s.reason.empty())
        j["reason"] = s.reason;
    if (!s.watch.is_null())
        j["watch"] = s.watch;
    return j;
}

} // namespace gms::report
