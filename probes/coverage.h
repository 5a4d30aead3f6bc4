// What the session could observe (Coverage) and what the workloads say they
// did (Expectations): the two inputs every checker judges its events against.
#pragma once

#include "reports/model.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::probes {

// Coverage::missing reason of an attach point left out by probes.exclude.
inline constexpr const char* kExcludedReason = "excluded by probes.exclude";

// At most this many examples are listed (violations, read-back mismatches).
inline constexpr size_t kMaxViolations = 16;

// What the session could observe. Attach point names are those of
// probes/attach_points.h ("pc_add", "dm_invalid", "get_pfn", ...).
struct Coverage {
    std::map<std::string, std::string> attached; // point -> backend
    std::map<std::string, std::string> missing;  // point -> why not attached
    uint64_t lost_events = 0;                    // BPF ring buffer reserve failures
    uint64_t parse_errors = 0;                   // host: short records, unknown types
    uint64_t stash_lost = 0;                     // kprobe entry->return pairs lost
    uint64_t filter_full = 0; // files never watched: the BPF inode filter map was full
    // Departed pfns (folio_release) the BPF map could not hold: their frees
    // cannot be matched. A loss for folio_release only.
    uint64_t departed_full = 0;
    bool calibration_ran = false;
    bool calibration_ok = false;
    std::string calibration_reason;
    std::string lockdown;            // none | integrity | confidentiality | unknown
    int64_t pfn_correction = 0;      // added to pointer-derived pfns (learned by calibration)
    int64_t addr_pfn_correction = 0; // added to address-derived pfns (likewise)
    // Hand-outs judged uptodate-or-not inside BPF (per-CPU counters). Such a
    // hand-out yields a record only when it was not uptodate (or its file is
    // NO_DIRECT_MAP); those records carry GMS_F_COUNTED. Older streams: false/0,
    // every hand-out was a record.
    bool bpf_judges_handouts = false;
    uint64_t judged_get_pfn = 0;
    uint64_t judged_user_fault = 0;

    bool has(const std::string& point) const { return attached.count(point) != 0; }
    bool has_any(const std::vector<std::string>& points) const;
    // "dm_invalid: EPERM (lockdown=confidentiality); ..." for the points not attached.
    std::string why_missing(const std::vector<std::string>& points) const;
    uint64_t losses() const { return lost_events + parse_errors + stash_lost + filter_full; }

    nlohmann::json to_json() const;
    static Coverage from_json(const nlohmann::json& j);
};

// What the workloads say they did (summed over workloads, from each
// report::WorkloadResult::expect and its verification).
struct Expectations {
    std::optional<uint64_t> gmem_files;
    std::optional<uint64_t> pages_added;
    std::optional<uint64_t> pages_removed;
    // Lower bounds of hand-outs (report::ProbeExpectations::min_handouts_to_*):
    // a page first touched through the mapping faults at least once, a page a
    // fresh guest touches goes through kvm_gmem_get_pfn at least once. Sums of
    // what was reported stay lower bounds, so no workload voids them.
    uint64_t min_handouts_user = 0;
    uint64_t min_handouts_guest = 0;
    uint64_t pages_verified = 0;    // fresh pages the workloads read back
    uint64_t verify_mismatches = 0; // of those, not as expected (non-zero)
    std::vector<std::string> mismatch_examples;

    static Expectations from_workloads(const std::vector<report::WorkloadResult>& w);
    nlohmann::json to_json() const;
    static Expectations from_json(const nlohmann::json& j);
};

} // namespace gms::probes
