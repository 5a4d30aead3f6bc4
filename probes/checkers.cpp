// Pure invariant checkers (see checkers.h). No BPF, no system calls except
// the recorded-stream file I/O at the bottom.
#include "probes/checkers.h"

#include "core/util.h"
#include "probes/events.h"
#include "reports/render.h"

#include <algorithm>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <set>
#include <stdexcept>

namespace gms::probes {

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------
namespace {

const std::vector<std::pair<EventType, std::string>>& type_names() {
    static const std::vector<std::pair<EventType, std::string>> names = {
        {EventType::pc_add, "pc_add"},
        {EventType::pc_del, "pc_del"},
        {EventType::add_folio, "add_folio"},
        {EventType::remove_folio, "remove_folio"},
        {EventType::free_folio, "free_folio"},
        {EventType::direct_map, "direct_map"},
        {EventType::get_pfn, "get_pfn"},
        {EventType::user_fault, "user_fault"},
        {EventType::fallocate, "fallocate"},
        {EventType::populate, "populate"},
        {EventType::release, "release"},
        {EventType::split, "split"},
        {EventType::gmem_created, "gmem_created"},
        {EventType::gmem_released, "gmem_released"},
    };
    return names;
}

const std::vector<std::string>& src_names() {
    // Index = enum gms_src.
    static const std::vector<std::string> names = {
        "unknown",
        "tp_pc_add",
        "tp_pc_del",
        "filemap_add_folio",
        "__filemap_add_folio",
        "__filemap_remove_folio",
        "filemap_free_folio",
        "kvm_gmem_free_folio",
        "set_direct_map_invalid_noflush",
        "set_direct_map_default_noflush",
        "set_direct_map_valid_noflush",
        "folio_zap_direct_map",
        "folio_restore_direct_map",
        "kvm_gmem_get_pfn",
        "kvm_gmem_fault_user_mapping",
        "kvm_gmem_fallocate",
        "kvm_gmem_populate",
        "kvm_gmem_release",
        "folio_split",
    };
    return names;
}

std::string dev_str(uint32_t dev) {
    return fmt::format("{}:{}", dev >> 20, dev & 0xfffff);
}

struct Key {
    uint32_t dev = 0;
    uint64_t ino = 0;
    auto operator<=>(const Key&) const = default;
};
Key key_of(const Event& e) {
    return Key{e.dev, e.ino};
}
std::string key_str(const Key& k) {
    return fmt::format("dev={} ino={}", dev_str(k.dev), k.ino);
}

// Bounded list of violations plus the total.
struct Violations {
    uint64_t total = 0;
    std::vector<std::string> first;
    void add(std::string what) {
        ++total;
        if (first.size() < kMaxViolations)
            first.push_back(std::move(what));
    }
};

void put_violations(report::InvariantResult& r, const Violations& v) {
    r.violations = v.first;
    r.evidence["violations"] = v.total;
}

std::string summarize_backends(const Coverage& cov, const std::vector<std::string>& points) {
    std::set<std::string> b;
    for (const auto& p : points) {
        auto it = cov.attached.find(p);
        if (it != cov.attached.end())
            b.insert(it->second);
    }
    std::string s;
    for (const auto& x : b)
        s += (s.empty() ? "" : "+") + x;
    return s.empty() ? "none" : s;
}

std::string loss_reason(const Coverage& cov) {
    return fmt::format("events were lost ({} ring buffer reserve failures, {} undecodable records, "
                       "{} kprobe entry/return pairs lost, {} files unwatched because the BPF "
                       "inode filter was full): the stream is not complete",
                       cov.lost_events, cov.parse_errors, cov.stash_lost, cov.filter_full);
}

bool is_direct_map_page_level(uint16_t src) {
    return src == GMS_SRC_SET_DM_INVALID || src == GMS_SRC_SET_DM_DEFAULT ||
           src == GMS_SRC_SET_DM_VALID;
}

const std::vector<std::string> kPageLevelDm = {"dm_invalid", "dm_default", "dm_valid"};
const std::vector<std::string> kFolioLevelDm = {"folio_zap", "folio_restore"};

} // namespace

std::string to_string(EventType t) {
    for (const auto& [v, n] : type_names())
        if (v == t)
            return n;
    return fmt::format("type#{}", static_cast<uint32_t>(t));
}

std::optional<EventType> event_type_from_string(std::string_view s) {
    for (const auto& [v, n] : type_names())
        if (n == s)
            return v;
    return std::nullopt;
}

std::string src_name(uint16_t src) {
    return src < src_names().size() ? src_names()[src] : fmt::format("src#{}", src);
}

std::optional<uint16_t> src_from_name(std::string_view s) {
    const auto& n = src_names();
    for (size_t i = 0; i < n.size(); ++i)
        if (n[i] == s)
            return static_cast<uint16_t>(i);
    return std::nullopt;
}

std::string describe_folio(const Event& e) {
    return fmt::format("pfn={:#x} {} index={} order={} seq={}", e.pfn, key_str(Key{e.dev, e.ino}),
                       e.index, e.order, e.seq);
}

// ---------------------------------------------------------------------------
// JSON (recorded streams)
// ---------------------------------------------------------------------------
nlohmann::json to_json(const Event& e) {
    nlohmann::json j;
    j["type"] = to_string(e.type);
    j["seq"] = e.seq;
    j["ts"] = e.ts_ns;
    if (e.src)
        j["src"] = src_name(e.src);
    if (e.flags)
        j["flags"] = e.flags;
    if (e.cpu)
        j["cpu"] = e.cpu;
    if (e.tgid)
        j["tgid"] = e.tgid;
    auto put = [&j](const char* k, auto v) {
        if (v)
            j[k] = v;
    };
    put("pfn", e.pfn);
    put("dev", e.dev);
    put("ino", e.ino);
    put("index", e.index);
    put("order", e.order);
    put("nr", e.nr);
    put("ret", e.ret);
    put("mode", e.mode);
    put("offset", e.offset);
    put("len", e.len);
    if (e.type == EventType::gmem_created) {
        j["gmem_flags"] = e.gmem_flags;
        j["flags_known"] = e.flags_known;
        j["no_direct_map"] = e.no_direct_map;
        j["preexisting"] = e.preexisting;
    }
    return j;
}

Event event_from_json(const nlohmann::json& j) {
    if (!j.is_object())
        throw std::invalid_argument("event is not a JSON object");
    Event e;
    auto type = j.value("type", std::string());
    auto t = event_type_from_string(type);
    if (!t)
        throw std::invalid_argument(fmt::format("unknown event type '{}'", type));
    e.type = *t;
    auto get_u = [&j](const char* k, auto& out) {
        auto it = j.find(k);
        if (it == j.end())
            return;
        if (!it->is_number_integer())
            throw std::invalid_argument(fmt::format("field '{}' is not an integer", k));
        out = it->get<std::remove_reference_t<decltype(out)>>();
    };
    get_u("seq", e.seq);
    get_u("ts", e.ts_ns);
    if (auto it = j.find("src"); it != j.end()) {
        auto s = src_from_name(it->get<std::string>());
        if (!s)
            throw std::invalid_argument(fmt::format("unknown src '{}'", it->get<std::string>()));
        e.src = *s;
    }
    get_u("flags", e.flags);
    get_u("cpu", e.cpu);
    get_u("tgid", e.tgid);
    get_u("pfn", e.pfn);
    get_u("dev", e.dev);
    get_u("ino", e.ino);
    get_u("index", e.index);
    get_u("order", e.order);
    get_u("nr", e.nr);
    get_u("ret", e.ret);
    get_u("mode", e.mode);
    get_u("offset", e.offset);
    get_u("len", e.len);
    get_u("gmem_flags", e.gmem_flags);
    e.flags_known = j.value("flags_known", true);
    e.no_direct_map = j.value("no_direct_map", false);
    e.preexisting = j.value("preexisting", false);
    return e;
}

bool Coverage::has_any(const std::vector<std::string>& points) const {
    return std::any_of(points.begin(), points.end(), [this](const auto& p) { return has(p); });
}

std::string Coverage::why_missing(const std::vector<std::string>& points) const {
    std::vector<std::pair<std::string, std::string>> why;
    bool only_excluded = true; // left out on purpose: the lockdown is not why
    for (const auto& p : points) {
        if (has(p))
            continue;
        auto it = missing.find(p);
        why.push_back({p, it == missing.end() ? "not attached" : it->second});
        only_excluded &= why.back().second == kExcludedReason;
    }
    std::string s = group_by_reason(why, "; ");
    if (!only_excluded && !lockdown.empty() && lockdown != "none" && lockdown != "unknown" &&
        s.find("lockdown") == std::string::npos)
        s += fmt::format(" (kernel lockdown={})", lockdown);
    return s;
}

nlohmann::json Coverage::to_json() const {
    return {{"attached", attached},
            {"missing", missing},
            {"lost_events", lost_events},
            {"filter_full", filter_full},
            {"parse_errors", parse_errors},
            {"stash_lost", stash_lost},
            {"calibration_ran", calibration_ran},
            {"calibration_ok", calibration_ok},
            {"calibration_reason", calibration_reason},
            {"lockdown", lockdown},
            {"pfn_correction", pfn_correction},
            {"handouts_judged_in_bpf",
             {{"enabled", bpf_judges_handouts},
              {"get_pfn", judged_get_pfn},
              {"user_fault", judged_user_fault}}}};
}

Coverage Coverage::from_json(const nlohmann::json& j) {
    Coverage c;
    c.attached = j.value("attached", std::map<std::string, std::string>{});
    c.missing = j.value("missing", std::map<std::string, std::string>{});
    c.lost_events = j.value("lost_events", uint64_t(0));
    c.filter_full = j.value("filter_full", uint64_t(0));
    c.parse_errors = j.value("parse_errors", uint64_t(0));
    c.stash_lost = j.value("stash_lost", uint64_t(0));
    c.calibration_ran = j.value("calibration_ran", false);
    c.calibration_ok = j.value("calibration_ok", false);
    c.calibration_reason = j.value("calibration_reason", std::string());
    c.lockdown = j.value("lockdown", std::string());
    c.pfn_correction = j.value("pfn_correction", int64_t(0));
    // Absent in streams recorded before hand-outs were judged in BPF.
    if (j.contains("handouts_judged_in_bpf")) {
        const auto& h = j.at("handouts_judged_in_bpf");
        if (!h.is_object())
            throw std::invalid_argument("coverage.handouts_judged_in_bpf: not an object");
        c.bpf_judges_handouts = h.value("enabled", true);
        c.judged_get_pfn = h.value("get_pfn", uint64_t(0));
        c.judged_user_fault = h.value("user_fault", uint64_t(0));
    }
    return c;
}

Expectations Expectations::from_workloads(const std::vector<report::WorkloadResult>& w) {
    Expectations x;
    auto add = [](std::optional<uint64_t>& into, const std::optional<uint64_t>& v) {
        if (v)
            into = into.value_or(0) + *v;
    };
    // A sum is only comparable when every workload that touched guest_memfd
    // files knows its count: one that does not (racing threads) voids it.
    bool files_known = true, added_known = true, removed_known = true;
    for (const auto& r : w) {
        const report::ProbeExpectations& e = r.expect;
        bool touched = !e.gmem_files || *e.gmem_files > 0;
        if (r.outcome == report::Outcome::skip && !e.gmem_files)
            touched = false; // never ran
        files_known &= e.gmem_files || !touched;
        added_known &= e.pages_added || !touched;
        removed_known &= e.pages_removed || !touched;
        add(x.gmem_files, e.gmem_files);
        add(x.pages_added, e.pages_added);
        add(x.pages_removed, e.pages_removed);
        x.min_handouts_user += e.min_handouts_to_user.value_or(0);
        x.min_handouts_guest += e.min_handouts_to_guest.value_or(0);
        x.pages_verified += r.verification.pages_checked;
        x.verify_mismatches += r.verification.mismatches;
        for (const auto& m : r.verification.first_mismatches)
            if (x.mismatch_examples.size() < kMaxViolations)
                x.mismatch_examples.push_back(
                    fmt::format("{}: {}", r.label.empty() ? r.name : r.label, m));
    }
    if (!files_known)
        x.gmem_files.reset();
    if (!added_known)
        x.pages_added.reset();
    if (!removed_known)
        x.pages_removed.reset();
    return x;
}

nlohmann::json Expectations::to_json() const {
    nlohmann::json j = nlohmann::json::object();
    if (gmem_files)
        j["gmem_files"] = *gmem_files;
    if (pages_added)
        j["expected_pages_added"] = *pages_added;
    if (pages_removed)
        j["expected_pages_removed"] = *pages_removed;
    j["min_handouts_to_user"] = min_handouts_user;
    j["min_handouts_to_guest"] = min_handouts_guest;
    j["pages_verified"] = pages_verified;
    j["verify_mismatches"] = verify_mismatches;
    j["mismatch_examples"] = mismatch_examples;
    return j;
}

Expectations Expectations::from_json(const nlohmann::json& j) {
    Expectations x;
    if (j.contains("gmem_files"))
        x.gmem_files = j["gmem_files"].get<uint64_t>();
    if (j.contains("expected_pages_added"))
        x.pages_added = j["expected_pages_added"].get<uint64_t>();
    if (j.contains("expected_pages_removed"))
        x.pages_removed = j["expected_pages_removed"].get<uint64_t>();
    x.min_handouts_user = j.value("min_handouts_to_user", uint64_t(0));
    x.min_handouts_guest = j.value("min_handouts_to_guest", uint64_t(0));
    x.pages_verified = j.value("pages_verified", uint64_t(0));
    x.verify_mismatches = j.value("verify_mismatches", uint64_t(0));
    x.mismatch_examples = j.value("mismatch_examples", std::vector<std::string>{});
    return x;
}

// ---------------------------------------------------------------------------
// Page-cache balance
// ---------------------------------------------------------------------------
namespace {

class PageCacheBalance final : public Checker {
  public:
    void feed(const Event& e) override {
        switch (e.type) {
        case EventType::gmem_created: {
            auto& f = files_[key_of(e)];
            f.announced = true;
            f.preexisting = e.preexisting;
            break;
        }
        case EventType::gmem_released:
        case EventType::release:
            files_[key_of(e)].released = true;
            break;
        case EventType::pc_add:
            add(e);
            break;
        case EventType::pc_del:
            del(e);
            break;
        default:
            break;
        }
    }

    report::InvariantResult result(const Coverage& cov, const Expectations& exp) const override {
        report::InvariantResult r;
        r.name = "page_cache_balance";
        const std::vector<std::string> need = {"pc_add", "pc_del"};
        r.backend = summarize_backends(cov, need);

        Violations v = violations_;
        uint64_t files = 0, announced = 0, released = 0, open = 0, live_folios = 0, late = 0;
        uint64_t pages_added = 0, pages_removed = 0, folios_added = 0, folios_removed = 0;
        uint64_t unmatched = 0;
        for (const auto& [k, f] : files_) {
            ++files;
            if (f.preexisting || !f.announced)
                ++late;
            if (f.announced && !f.preexisting) {
                ++announced;
                pages_added += f.pages_added;
                pages_removed += f.pages_removed;
            }
            folios_added += f.folios_added;
            folios_removed += f.folios_removed;
            live_folios += f.live.size();
            if (f.released)
                ++released;
            else
                ++open;
            if (f.released) {
                for (const auto& [idx, lf] : f.live)
                    v.add(fmt::format("leaked folio: {} still in the page cache after the file was "
                                      "released ({} of {} pages not removed)",
                                      describe_folio(lf.ev), lf.remaining, lf.ev.pages()));
            }
            for (const auto& [idx, pd] : f.pending_del) {
                ++unmatched;
                if (!f.preexisting && f.announced)
                    v.add(
                        fmt::format("folio removed that was never added: {}", describe_folio(pd)));
            }
        }
        if (exp.gmem_files && *exp.gmem_files != announced)
            v.add(fmt::format(
                "the workloads created {} guest_memfd files but {} were announced to the "
                "probes",
                *exp.gmem_files, announced));
        if (exp.pages_added && *exp.pages_added != pages_added)
            v.add(fmt::format(
                "the workloads expected {} pages added to the page cache, the probes saw {}",
                *exp.pages_added, pages_added));
        if (exp.pages_removed && *exp.pages_removed != pages_removed)
            v.add(fmt::format(
                "the workloads expected {} pages removed from the page cache, the probes "
                "saw {}",
                *exp.pages_removed, pages_removed));

        r.evidence = {{"files", files},
                      {"files_announced", announced},
                      {"files_released", released},
                      {"files_open_at_end", open},
                      {"files_joined_late", late},
                      {"folios_added", folios_added},
                      {"folios_removed", folios_removed},
                      {"pages_added", pages_added},
                      {"pages_removed", pages_removed},
                      {"folios_live_at_end", live_folios},
                      {"removes_without_add", unmatched},
                      {"lost_events", cov.losses()}};
        if (exp.pages_added)
            r.evidence["expected_pages_added"] = *exp.pages_added;
        if (exp.pages_removed)
            r.evidence["expected_pages_removed"] = *exp.pages_removed;
        if (exp.gmem_files)
            r.evidence["expected_gmem_files"] = *exp.gmem_files;
        put_violations(r, v);

        if (!cov.has("pc_add") || !cov.has("pc_del")) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "page-cache tracepoints not attached: " + cov.why_missing(need);
        } else if (cov.losses()) {
            r.verdict = report::Verdict::incomplete;
            r.reason =
                loss_reason(cov) +
                (v.total ? fmt::format("; {} findings may be caused by the loss", v.total) : "");
        } else if (v.total) {
            r.verdict = report::Verdict::violated;
            r.reason = fmt::format("{} violation(s)", v.total);
        } else if (files == 0) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "no guest_memfd was observed";
        } else if (open) {
            r.verdict = report::Verdict::incomplete;
            r.reason =
                fmt::format("{} of {} guest_memfd files were still open when observation ended: "
                            "their balance cannot be closed",
                            open, files);
        } else if (late) {
            r.verdict = report::Verdict::incomplete;
            r.reason = fmt::format(
                "{} of {} guest_memfd files existed before observation began (or were not "
                "announced): folios added earlier were not seen",
                late, files);
        } else {
            r.verdict = report::Verdict::verified;
            r.reason = fmt::format("{} files released; {} pages added and {} removed", files,
                                   pages_added, pages_removed);
        }
        return r;
    }

  private:
    struct LiveFolio {
        Event ev;
        uint64_t remaining = 0; // pages not yet removed (splits remove part of a folio)
    };
    struct File {
        bool announced = false;
        bool preexisting = false;
        bool released = false;
        uint64_t pages_added = 0, pages_removed = 0;
        uint64_t folios_added = 0, folios_removed = 0;
        std::map<uint64_t, LiveFolio> live;    // first index -> folio
        std::map<uint64_t, Event> pending_del; // deletes seen before their add
    };

    void add(const Event& e) {
        auto& f = files_[key_of(e)];
        // The add tracepoint fires after the xarray lock is dropped, so a
        // racing removal can be recorded first: cancel it here.
        auto pd = f.pending_del.find(e.index);
        if (pd != f.pending_del.end() && pd->second.pfn == e.pfn) {
            f.pending_del.erase(pd);
            ++f.folios_added;
            ++f.folios_removed;
            f.pages_added += e.pages();
            f.pages_removed += e.pages();
            return;
        }
        auto it = f.live.find(e.index);
        if (it != f.live.end())
            violations_.add(
                fmt::format("folio added at an index already populated: {} (present: {})",
                            describe_folio(e), describe_folio(it->second.ev)));
        f.live[e.index] = LiveFolio{e, e.pages()};
        ++f.folios_added;
        f.pages_added += e.pages();
    }

    void del(const Event& e) {
        auto& f = files_[key_of(e)];
        auto it = f.live.find(e.index);
        if (it != f.live.end() && it->second.ev.pfn == e.pfn && e.pages() >= it->second.remaining) {
            f.pages_removed += it->second.remaining;
            ++f.folios_removed;
            f.live.erase(it);
            return;
        }
        // Part of a folio that was split after it was added?
        auto up = f.live.upper_bound(e.index);
        if (up != f.live.begin()) {
            auto& [start, lf] = *std::prev(up);
            uint64_t off = e.index - start;
            if (off < lf.ev.pages() && e.pfn == lf.ev.pfn + off && lf.remaining >= e.pages()) {
                lf.remaining -= e.pages();
                f.pages_removed += e.pages();
                if (lf.remaining == 0) {
                    ++f.folios_removed;
                    f.live.erase(std::prev(up));
                }
                return;
            }
        }
        f.pending_del[e.index] = e;
    }

    std::map<Key, File> files_;
    Violations violations_;
};

// ---------------------------------------------------------------------------
// Direct map
// ---------------------------------------------------------------------------
class DirectMap final : public Checker {
  public:
    void feed(const Event& e) override {
        switch (e.type) {
        case EventType::gmem_created: {
            auto& f = files_[key_of(e)];
            f.flags_known = e.flags_known;
            f.no_direct_map = e.no_direct_map;
            break;
        }
        case EventType::pc_add:
            on_add(e);
            break;
        case EventType::pc_del:
            on_del(e);
            break;
        case EventType::free_folio:
            on_free(e);
            break;
        case EventType::direct_map:
            on_direct_map(e);
            break;
        case EventType::get_pfn:
        case EventType::user_fault:
            on_handout(e);
            break;
        default:
            break;
        }
    }

    report::InvariantResult result(const Coverage& cov, const Expectations&) const override {
        report::InvariantResult r;
        r.name = "direct_map";
        std::vector<std::string> dm_points = kPageLevelDm;
        dm_points.insert(dm_points.end(), kFolioLevelDm.begin(), kFolioLevelDm.end());
        std::vector<std::string> all = dm_points;
        all.insert(all.end(), {"pc_add", "pc_del"});
        r.backend = summarize_backends(cov, all);

        Violations v = violations_;
        uint64_t unrestored = 0, never_freed_checked = 0;
        bool free_probed = cov.has_any({"filemap_free_folio", "kvm_gmem_free_folio"});
        for (const auto& [pfn, o] : owned_) {
            if (!o.removed || !o.ndm)
                continue;
            // Removed but no free event seen: at the end every page must be back.
            ++never_freed_checked;
            for (uint64_t i = 0; i < o.ev.pages(); ++i)
                if (invalid_.count(pfn + i)) {
                    ++unrestored;
                    v.add(fmt::format("never restored to the direct map after removal{}: {}",
                                      free_probed ? " (no free seen)" : "", describe_folio(o.ev)));
                    break;
                }
        }
        uint64_t ndm_files = 0, plain_files = 0, unknown_files = 0;
        for (const auto& [k, f] : files_) {
            if (!f.flags_known)
                ++unknown_files;
            else if (f.no_direct_map)
                ++ndm_files;
            else
                ++plain_files;
        }
        r.evidence = {{"files_no_direct_map", ndm_files},
                      {"files_plain", plain_files},
                      {"files_flags_unknown", unknown_files},
                      {"folios_watched", folios_watched_},
                      {"folios_no_direct_map", folios_ndm_},
                      {"zaps_on_watched", zaps_watched_},
                      {"restores_on_watched", restores_watched_},
                      {"direct_map_changes_total", dm_total_},
                      {"direct_map_changes_foreign", dm_foreign_},
                      {"frees_seen", frees_},
                      {"handouts_checked", handouts_checked_},
                      {"removed_without_free_event", never_freed_checked},
                      {"unrestored_at_end", unrestored},
                      {"lost_events", cov.losses()}};
        put_violations(r, v);

        if (!cov.has("pc_add") || !cov.has("pc_del")) {
            r.verdict = report::Verdict::unverifiable;
            r.reason =
                "page-cache tracepoints not attached: " + cov.why_missing({"pc_add", "pc_del"});
        } else if (!cov.has_any(dm_points)) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "no direct-map change can be observed (there is no tracepoint for it; needs "
                       "fentry or kprobe): " +
                       cov.why_missing(dm_points);
        } else if (!cov.calibration_ok) {
            r.verdict = report::Verdict::unverifiable;
            r.reason =
                "secretmem calibration did not prove that direct-map changes are seen: " +
                (cov.calibration_reason.empty() ? std::string("not run") : cov.calibration_reason);
        } else if (cov.losses()) {
            r.verdict = report::Verdict::incomplete;
            r.reason = loss_reason(cov);
        } else if (v.total) {
            r.verdict = report::Verdict::violated;
            r.reason = fmt::format("{} violation(s)", v.total);
        } else if (folios_watched_ == 0) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "no guest_memfd folio was observed";
        } else {
            r.verdict = report::Verdict::verified;
            r.reason =
                fmt::format("{} folios ({} of NO_DIRECT_MAP files) checked against {} direct-map "
                            "changes",
                            folios_watched_, folios_ndm_, dm_total_);
        }
        return r;
    }

  private:
    struct File {
        bool flags_known = false;
        bool no_direct_map = false;
    };
    struct Owned {
        Event ev; // the pc_add
        bool ndm = false;
        bool flags_known = false;
        bool zapped = false;  // left the direct map at some point while owned
        bool removed = false; // left the page cache
    };
    struct Zap {
        uint64_t start = 0; // granularity of the zap that covered this page
        uint64_t nr = 0;
        uint64_t seq = 0;
    };

    // Owner folio of a pfn (watched folios only).
    Owned* owner(uint64_t pfn) {
        auto up = owned_.upper_bound(pfn);
        if (up == owned_.begin())
            return nullptr;
        auto& [start, o] = *std::prev(up);
        return pfn < start + o.ev.pages() ? &o : nullptr;
    }

    bool all_invalid(uint64_t pfn, uint64_t n) const {
        for (uint64_t i = 0; i < n; ++i)
            if (!invalid_.count(pfn + i))
                return false;
        return true;
    }

    void on_add(const Event& e) {
        auto fit = files_.find(key_of(e));
        Owned o;
        o.ev = e;
        if (fit != files_.end()) {
            o.flags_known = fit->second.flags_known;
            o.ndm = fit->second.flags_known && fit->second.no_direct_map;
        }
        o.zapped = all_invalid(e.pfn, e.pages());
        if (!o.ndm && o.flags_known && o.zapped)
            violations_.add(
                fmt::format("folio added to a file without NO_DIRECT_MAP while out of the "
                            "direct map: {}",
                            describe_folio(e)));
        ++folios_watched_;
        if (o.ndm)
            ++folios_ndm_;
        owned_[e.pfn] = o;
    }

    void on_del(const Event& e) {
        auto it = owned_.find(e.pfn);
        if (it == owned_.end())
            return;
        Owned& o = it->second;
        if (o.ndm && !o.zapped)
            violations_.add(fmt::format("folio of a NO_DIRECT_MAP file was never removed from the "
                                        "direct map while in the page cache: {}",
                                        describe_folio(o.ev)));
        else if (o.ndm && !all_invalid(o.ev.pfn, o.ev.pages()))
            violations_.add(fmt::format("folio of a NO_DIRECT_MAP file was back in the direct map "
                                        "before leaving the page cache: {}",
                                        describe_folio(o.ev)));
        o.removed = true;
        if (!o.ndm)
            owned_.erase(it); // nothing more to check for plain folios
    }

    void on_free(const Event& e) {
        ++frees_;
        auto it = owned_.find(e.pfn);
        if (it == owned_.end() || !it->second.removed)
            return;
        const Owned& o = it->second;
        if (o.ndm && !all_valid(o.ev.pfn, o.ev.pages()))
            violations_.add(
                fmt::format("folio freed while still out of the direct map (not restored "
                            "before free, seen at {}): {}",
                            src_name(e.src), describe_folio(o.ev)));
        owned_.erase(it);
    }

    bool all_valid(uint64_t pfn, uint64_t n) const {
        for (uint64_t i = 0; i < n; ++i)
            if (invalid_.count(pfn + i))
                return false;
        return true;
    }

    void on_handout(const Event& e) {
        Owned* o = owner(e.pfn);
        if (!o || !o->ndm)
            return;
        ++handouts_checked_;
        if (!invalid_.count(e.pfn))
            violations_.add(
                fmt::format("folio of a NO_DIRECT_MAP file handed out ({}) while still in "
                            "the direct map: {}",
                            to_string(e.type), describe_folio(o->ev)));
    }

    void on_direct_map(const Event& e) {
        ++dm_total_;
        // With page-level probes attached, folio-level markers only carry
        // the granularity; the page-level records drive the state.
        if (!is_direct_map_page_level(e.src)) {
            if (saw_page_level_) {
                check_folio_marker(e);
                return;
            }
        } else {
            saw_page_level_ = true;
        }
        if (e.ret != 0)
            return; // the change failed: nothing changed
        bool valid = e.has(GMS_F_VALID);
        uint64_t nr = e.nr ? e.nr : 1;
        bool touched_watched = false;
        for (uint64_t i = 0; i < nr; ++i) {
            uint64_t pfn = e.pfn + i;
            Owned* o = owner(pfn);
            if (o)
                touched_watched = true;
            auto z = invalid_.find(pfn);
            if (!valid) {
                if (z != invalid_.end() && o)
                    violations_.add(fmt::format(
                        "double zap of pfn {:#x} (first zap seq={}, again seq={} "
                        "by {}): {}",
                        pfn, z->second.seq, e.seq, src_name(e.src), describe_folio(o->ev)));
                invalid_[pfn] = Zap{e.pfn, nr, e.seq};
                if (o) {
                    o->zapped = true;
                    if (o->flags_known && !o->ndm && i == 0)
                        violations_.add(
                            fmt::format("direct map changed (zap by {}, seq={}) for a folio "
                                        "of a file without NO_DIRECT_MAP: {}",
                                        src_name(e.src), e.seq, describe_folio(o->ev)));
                }
            } else {
                if (z == invalid_.end()) {
                    if (o)
                        violations_.add(
                            fmt::format("restore without zap of pfn {:#x} (seq={} by {}): {}", pfn,
                                        e.seq, src_name(e.src), describe_folio(o->ev)));
                } else {
                    if (o && (z->second.start != e.pfn || z->second.nr != nr) && i == 0)
                        violations_.add(fmt::format(
                            "zap and restore at different granularity for pfn "
                            "{:#x}: zapped {} page(s) from {:#x}, restored {} "
                            "page(s) from {:#x}: {}",
                            pfn, z->second.nr, z->second.start, nr, e.pfn, describe_folio(o->ev)));
                    invalid_.erase(z);
                }
                if (o) {
                    if (o->ndm && !o->removed && i == 0)
                        violations_.add(
                            fmt::format("folio of a NO_DIRECT_MAP file restored to the direct "
                                        "map while still in the page cache (seq={}): {}",
                                        e.seq, describe_folio(o->ev)));
                    if (o->flags_known && !o->ndm && i == 0)
                        violations_.add(
                            fmt::format("direct map changed (restore by {}, seq={}) for a "
                                        "folio of a file without NO_DIRECT_MAP: {}",
                                        src_name(e.src), e.seq, describe_folio(o->ev)));
                }
            }
        }
        if (touched_watched)
            (valid ? restores_watched_ : zaps_watched_)++;
        else
            ++dm_foreign_;
    }

    // folio_zap_direct_map / folio_restore_direct_map next to page-level
    // records: the whole folio must change at once.
    void check_folio_marker(const Event& e) {
        Owned* o = owner(e.pfn);
        if (!o)
            return;
        if (e.pfn != o->ev.pfn || e.nr != o->ev.pages())
            violations_.add(
                fmt::format("{} covered {} page(s) from pfn {:#x}, not the whole folio: {}",
                            src_name(e.src), e.nr, e.pfn, describe_folio(o->ev)));
    }

    std::map<Key, File> files_;
    std::map<uint64_t, Owned> owned_; // first pfn -> watched folio
    std::map<uint64_t, Zap> invalid_; // pfns currently out of the direct map
    bool saw_page_level_ = false;
    uint64_t folios_watched_ = 0, folios_ndm_ = 0, zaps_watched_ = 0, restores_watched_ = 0;
    uint64_t dm_total_ = 0, dm_foreign_ = 0, frees_ = 0, handouts_checked_ = 0;
    Violations violations_;
};

// ---------------------------------------------------------------------------
// Uptodate at hand-out
// ---------------------------------------------------------------------------
// The BPF side judges most hand-outs itself (Coverage::judged_*) and sends a
// record only for the folios that were not uptodate (and for NO_DIRECT_MAP
// files); records flagged GMS_F_COUNTED are already in those counters.
class Uptodate final : public Checker {
  public:
    void feed(const Event& e) override {
        if (e.type != EventType::get_pfn && e.type != EventType::user_fault)
            return;
        bool guest = e.type == EventType::get_pfn;
        ++records_;
        if (e.has(GMS_F_COUNTED))
            (guest ? counted_guest_ : counted_user_)++;
        else
            (guest ? to_guest_ : to_user_)++;
        if (!e.has(GMS_F_UPTODATE))
            violations_.add(fmt::format("folio handed out by {} while not uptodate: {}",
                                        e.type == EventType::get_pfn
                                            ? "kvm_gmem_get_pfn (to the guest)"
                                            : "the user fault (to host userspace)",
                                        describe_folio(e)));
    }

    report::InvariantResult result(const Coverage& cov, const Expectations& exp) const override {
        report::InvariantResult r;
        r.name = "uptodate";
        const std::vector<std::string> need = {"get_pfn", "user_fault"};
        r.backend = summarize_backends(cov, need);
        Violations v = violations_;
        for (const auto& m : exp.mismatch_examples)
            v.add("fresh memory did not read as zero: " + m);
        if (exp.verify_mismatches > exp.mismatch_examples.size())
            v.total += exp.verify_mismatches - exp.mismatch_examples.size();
        // Judged in BPF (counters) plus judged here (records without GMS_F_COUNTED).
        const uint64_t bpf_guest = cov.bpf_judges_handouts ? cov.judged_get_pfn : 0;
        const uint64_t bpf_user = cov.bpf_judges_handouts ? cov.judged_user_fault : 0;
        const uint64_t guest = bpf_guest + to_guest_, user = bpf_user + to_user_;
        // A counted record the counters do not account for: counters unread
        // or from another run; the totals cannot be trusted.
        const bool inconsistent = counted_guest_ > bpf_guest || counted_user_ > bpf_user;
        r.evidence = {{"handed_to_guest", guest},
                      {"handed_to_user", user},
                      {"judged_in_bpf_guest", bpf_guest},
                      {"judged_in_bpf_user", bpf_user},
                      {"handout_records", records_},
                      {"not_uptodate", violations_.total},
                      {"min_handouts_to_guest", exp.min_handouts_guest},
                      {"min_handouts_to_user", exp.min_handouts_user},
                      {"pages_verified_by_workloads", exp.pages_verified},
                      {"verify_mismatches", exp.verify_mismatches},
                      {"lost_events", cov.losses()}};
        put_violations(r, v);

        if (exp.verify_mismatches) {
            // The workloads' own read-back is conclusive even without probes.
            r.verdict = report::Verdict::violated;
            r.reason = fmt::format("{} violation(s)", v.total);
        } else if (!cov.has_any(need)) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "hand-out points not attached: " + cov.why_missing(need);
            if (exp.pages_verified)
                r.reason += fmt::format("; the workloads read back {} fresh pages as zero",
                                        exp.pages_verified);
        } else if (cov.losses()) {
            r.verdict = report::Verdict::incomplete;
            r.reason = loss_reason(cov);
        } else if (v.total) {
            r.verdict = report::Verdict::violated;
            r.reason = fmt::format("{} violation(s)", v.total);
        } else if (inconsistent) {
            r.verdict = report::Verdict::incomplete;
            r.reason = fmt::format("hand-out counters judged in BPF ({} to the guest, {} to host "
                                   "userspace) do not cover the {} + {} counted records",
                                   bpf_guest, bpf_user, counted_guest_, counted_user_);
        } else if (std::string missed = missed_handouts(cov, exp, guest, user); !missed.empty()) {
            // A probe that sees fewer hand-outs than certainly happened does
            // not see what it claims (a broken program, a wrong filter).
            r.verdict = report::Verdict::incomplete;
            r.reason = missed;
        } else if (guest + user == 0) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "no folio was handed out while observed";
        } else {
            r.verdict = report::Verdict::verified;
            r.reason = fmt::format(
                "{} hand-outs to the guest and {} to host userspace were uptodate", guest, user);
            if (bpf_guest + bpf_user)
                r.reason += fmt::format(" ({} judged in BPF)", bpf_guest + bpf_user);
            if (!cov.has_any({"get_pfn"}) || !cov.has_any({"user_fault"}))
                r.reason += "; only partly observed: " + cov.why_missing(need);
        }
        return r;
    }

  private:
    // Empty when each attached hand-out point saw at least the workloads'
    // lower bound.
    static std::string missed_handouts(const Coverage& cov, const Expectations& exp, uint64_t guest,
                                       uint64_t user) {
        std::vector<std::string> out;
        if (cov.has_any({"get_pfn"}) && guest < exp.min_handouts_guest)
            out.push_back(fmt::format("kvm_gmem_get_pfn saw {} hand-outs to the guest, the "
                                      "workloads made at least {}",
                                      guest, exp.min_handouts_guest));
        if (cov.has_any({"user_fault"}) && user < exp.min_handouts_user)
            out.push_back(fmt::format("the user-fault probe saw {} hand-outs to host userspace, "
                                      "the workloads made at least {}",
                                      user, exp.min_handouts_user));
        return out.empty() ? "" : fmt::format("{}", fmt::join(out, "; "));
    }

    uint64_t to_guest_ = 0, to_user_ = 0;           // records not in the BPF counters
    uint64_t counted_guest_ = 0, counted_user_ = 0; // records also in the BPF counters
    uint64_t records_ = 0;
    Violations violations_;
};

} // namespace

std::unique_ptr<Checker> make_page_cache_balance_checker() {
    return std::make_unique<PageCacheBalance>();
}
std::unique_ptr<Checker> make_direct_map_checker() {
    return std::make_unique<DirectMap>();
}
std::unique_ptr<Checker> make_uptodate_checker() {
    return std::make_unique<Uptodate>();
}

CheckerSet::CheckerSet() {
    checkers_.push_back(make_page_cache_balance_checker());
    checkers_.push_back(make_direct_map_checker());
    checkers_.push_back(make_uptodate_checker());
}

void CheckerSet::feed(const Event& e) {
    ++fed_;
    ++counts_[std::min<size_t>(static_cast<size_t>(e.type), counts_.size() - 1)];
    for (auto& c : checkers_)
        c->feed(e);
}

std::map<std::string, uint64_t> CheckerSet::counts() const {
    std::map<std::string, uint64_t> out;
    for (size_t t = 0; t < counts_.size(); ++t)
        if (counts_[t])
            out[to_string(static_cast<EventType>(t))] = counts_[t];
    return out;
}

std::vector<report::InvariantResult> CheckerSet::results(const Coverage& cov,
                                                         const Expectations& exp) const {
    std::vector<report::InvariantResult> out;
    for (const auto& c : checkers_)
        out.push_back(c->result(cov, exp));
    return out;
}

// ---------------------------------------------------------------------------
// Recorded streams
// ---------------------------------------------------------------------------
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
