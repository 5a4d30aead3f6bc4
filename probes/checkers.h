// Invariant checkers: PURE classes fed a stream of events (decoded BPF
// records plus userspace markers), with no BPF dependency, so recorded and
// deliberately broken streams can drive them in unit tests.
//
// Each checker turns what it saw, what the session could observe (Coverage)
// and what the workloads say they did (Expectations) into one
// report::InvariantResult. A run that lost events or could not attach a needed
// probe never yields `verified`.
#pragma once

#include "reports/model.h"

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gms::probes {

// Kernel record types (values of enum gms_ev_type in probes/events.h) plus
// userspace markers (>= 100) the session inserts into the stream.
enum class EventType : uint32_t {
    pc_add = 1,
    pc_del = 2,
    add_folio = 3,
    remove_folio = 4,
    free_folio = 5,
    direct_map = 6,
    get_pfn = 7,
    user_fault = 8,
    fallocate = 9,
    populate = 10,
    release = 11,
    split = 12,
    gmem_created = 100,  // a guest_memfd to watch (ours, or found in /proc)
    gmem_released = 101, // userspace dropped its last reference
};
std::string to_string(EventType t);
std::optional<EventType> event_type_from_string(std::string_view s);

// Names of enum gms_src values ("tp_pc_add", "set_direct_map_invalid_noflush", ...).
std::string src_name(uint16_t src);
std::optional<uint16_t> src_from_name(std::string_view s);

// Coverage::missing reason of an attach point left out by probes.exclude.
inline constexpr const char* kExcludedReason = "excluded by probes.exclude";

struct Event {
    EventType type = EventType::pc_add;
    uint64_t seq = 0;
    uint64_t ts_ns = 0; // CLOCK_MONOTONIC
    uint16_t src = 0;   // enum gms_src
    uint16_t flags = 0; // GMS_F_*
    uint32_t cpu = 0;
    uint32_t tgid = 0;
    uint64_t pfn = 0;
    uint64_t ino = 0;
    uint32_t dev = 0; // kernel-internal dev_t (MAJOR << 20 | MINOR)
    uint64_t index = 0;
    uint32_t order = 0;
    uint64_t nr = 0; // direct map: pages changed
    int64_t ret = 0;
    uint32_t mode = 0;   // fallocate mode
    uint64_t offset = 0; // fallocate offset / populate gfn
    uint64_t len = 0;    // fallocate length / populate npages
    // gmem_created only:
    uint64_t gmem_flags = 0;
    bool flags_known = true;    // false for files of other processes
    bool no_direct_map = false; // the file was created with NO_DIRECT_MAP
    bool preexisting = false;   // existed before observation began

    bool has(uint16_t f) const { return (flags & f) == f; }
    uint64_t pages() const { return uint64_t(1) << order; }
};

nlohmann::json to_json(const Event& e);
// Throws std::invalid_argument naming the bad field.
Event event_from_json(const nlohmann::json& j);

// "pfn=0x1234 dev=0:23 ino=42 index=7 order=0 seq=19"
std::string describe_folio(const Event& e);

// What the session could observe. Attach point names are those of
// probes/attach_points.h ("pc_add", "dm_invalid", "get_pfn", ...).
struct Coverage {
    std::map<std::string, std::string> attached; // point -> backend
    std::map<std::string, std::string> missing;  // point -> why not attached
    uint64_t lost_events = 0;                    // BPF ring buffer reserve failures
    uint64_t parse_errors = 0;                   // host: short records, unknown types
    uint64_t stash_lost = 0;                     // kprobe entry->return pairs lost
    uint64_t filter_full = 0; // files never watched: the BPF inode filter map was full
    bool calibration_ran = false;
    bool calibration_ok = false;
    std::string calibration_reason;
    std::string lockdown;       // none | integrity | confidentiality | unknown
    int64_t pfn_correction = 0; // added to pointer-derived pfns (learned by calibration)
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

inline constexpr size_t kMaxViolations = 16;

class Checker {
  public:
    virtual ~Checker() = default;
    virtual void feed(const Event& e) = 0;
    virtual report::InvariantResult result(const Coverage& cov, const Expectations& exp) const = 0;
};

// Every folio added to a watched guest_memfd is removed by the time the file
// is released, and page counts match the workloads' own counts.
std::unique_ptr<Checker> make_page_cache_balance_checker();
// NO_DIRECT_MAP files: each folio out of the direct map while in the page
// cache (and before being handed out), restored before freed; no double zap,
// no restore without zap, same granularity. Other files: never touched.
std::unique_ptr<Checker> make_direct_map_checker();
// Every folio handed to the guest (kvm_gmem_get_pfn) or to host userspace
// (user fault) is uptodate at that moment; fresh memory reads zero.
std::unique_ptr<Checker> make_uptodate_checker();

// All checkers, in report order; counts events by type.
class CheckerSet {
  public:
    CheckerSet();
    void feed(const Event& e);
    std::vector<report::InvariantResult> results(const Coverage& cov,
                                                 const Expectations& exp) const;
    // Events fed, by type name (types never seen are left out).
    std::map<std::string, uint64_t> counts() const;
    uint64_t fed() const { return fed_; }

  private:
    std::vector<std::unique_ptr<Checker>> checkers_;
    // By raw type, not name: feed() runs once per event on the hot path.
    std::array<uint64_t, 128> counts_{}; // kernel types and markers (>= 100) all fit
    uint64_t fed_ = 0;
};

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
