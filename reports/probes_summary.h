// What the probes attached and saw, as the report carries it: a typed model
// that probes::Session fills and reports/ renders (to_json). Sub-documents
// produced by the probes' own detectors (the attach-method test of each
// backend, the secretmem calibration) stay JSON.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace gms::report {

struct AttachPointSummary {
    std::string name; // "pc_add", "get_pfn", ...
    std::string what;
    bool attached = false;
    std::optional<std::string> backend; // chosen variant (also when its attach failed)
    std::string target;                 // function or tracepoint (with backend)
    std::vector<std::string> programs;  // (with backend)
    std::string reason;                 // why not attached
    bool optional = false;              // only where the kernel has the feature
    std::vector<std::string> rejected;  // better variants that could not be used
    // How the programs read arguments that changed across kernels
    // ("direct-map address", "5 arguments: ..."); empty for the others.
    std::string decoding;
};

// Kernel BPF statistics of one program over the session (probes.program_stats).
struct ProgramStat {
    std::string point;   // attach point ("pc_add", "lock_down_read", ...)
    std::string program; // BPF program name
    std::string target;  // function or tracepoint
    uint64_t runs = 0;
    uint64_t run_time_ns = 0; // the program only, not its trampoline or kprobe
    uint64_t recursion_misses = 0;
};

struct ProgramStats {
    bool enabled = false;
    std::string reason;                // why not enabled
    double span_s = 0;                 // attach to finish: the time the runs fell in
    std::vector<ProgramStat> programs; // by run time, longest first
};

struct ProbeDrops {
    uint64_t ringbuf_reserve_failures = 0;
    uint64_t host_short_records = 0;
    uint64_t host_unknown_types = 0;
    uint64_t kprobe_stash_full = 0;
    uint64_t watch_map_full = 0;
    uint64_t recording_dropped = 0;
};

struct ProbeFilter {
    bool all_guest_memfds = false; // else: this run's files only
    uint64_t files_watched = 0;
    uint32_t counters_tgid = 0;
    std::optional<std::string> gmem_dev; // "major:minor"
    std::string gmem_dev_source;
};

struct ProbesSummary {
    std::string backend_requested = "auto";
    nlohmann::json backends = nlohmann::json::object(); // detect_backends()
    std::string lockdown;
    std::string tracefs;
    std::string kprobe_targets_from;
    int load_attempts = 0;
    int attach_rounds = 0;
    std::string attach_check;
    nlohmann::json load_failures = nlohmann::json::array();
    uint64_t ringbuf_size = 0;
    std::vector<AttachPointSummary> attach_points;
    std::set<std::string> backends_in_use;
    std::map<std::string, uint64_t> counters; // BPF per-CPU counters, summed
    bool lock_contention_gmem_identifiable = false;
    uint64_t losses = 0; // the sum the verdicts use (not recording_dropped)
    ProbeDrops drops;
    std::map<std::string, uint64_t> events;           // fed to the checkers, by type
    std::map<std::string, uint64_t> events_by_source; // decoded, by BPF source
    uint64_t events_decoded = 0;
    std::optional<double> consumer_cpu_s; // once finished
    uint64_t events_of_calibration_files = 0;
    ProbeFilter filter;
    nlohmann::json calibration = nlohmann::json::object();
    int64_t pfn_correction = 0;
    std::map<std::string, int64_t> thp_split_vmstat_delta;
    bool finished = false;
    std::optional<ProgramStats> program_stats; // asked for (probes.program_stats)
};

nlohmann::json to_json(const ProbesSummary& s);
nlohmann::json to_json(const ProgramStats& s);

// The report's "probes" section: whether the probes were attached, and what
// they attached and saw if so.
struct ProbesSection {
    enum class Status { off, unavailable, attached };
    Status status = Status::off;
    std::string reason;                   // off, unavailable: why
    std::optional<ProbesSummary> summary; // attached
    // `watch`: the files it followed and why it ended (null for other commands).
    nlohmann::json watch;

    bool attached() const { return status == Status::attached && summary.has_value(); }
};

std::string to_string(ProbesSection::Status s);
// The summary's JSON with "status", "reason" and "watch" added; an empty
// object when nothing was recorded (a default-constructed section).
nlohmann::json to_json(const ProbesSection& s);

} // namespace gms::report
