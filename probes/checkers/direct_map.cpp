// direct_map: folios of NO_DIRECT_MAP files leave the direct map before they
// are handed out, stay out while in the page cache and come back before they
// are freed; other files' folios are never touched (see checkers.h).
#include "probes/checkers.h"
#include "probes/checkers/common.h"
#include "probes/events.h"
#include "probes/point_names.h"

#include <fmt/format.h>
#include <iterator>
#include <map>

namespace gms::probes {

namespace {

using namespace detail;

bool is_direct_map_page_level(uint16_t src) {
    return src == GMS_SRC_SET_DM_INVALID || src == GMS_SRC_SET_DM_DEFAULT ||
           src == GMS_SRC_SET_DM_VALID;
}

const std::vector<std::string> kPageLevelDm = {point::dm_invalid, point::dm_default,
                                               point::dm_valid};
const std::vector<std::string> kFolioLevelDm = {point::folio_zap, point::folio_restore};

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
        all.insert(all.end(), {point::pc_add, point::pc_del});
        r.backend = summarize_backends(cov, all);

        Violations v = violations_;
        uint64_t unrestored = 0, never_freed_checked = 0;
        bool free_probed = cov.has_any({point::filemap_free_folio, point::kvm_gmem_free_folio});
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

        if (!cov.has(point::pc_add) || !cov.has(point::pc_del)) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "page-cache tracepoints not attached: " +
                       cov.why_missing({point::pc_add, point::pc_del});
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
        bool zapped = false;     // left the direct map at some point while owned
        bool handed_out = false; // to the guest or host userspace
        bool removed = false;    // left the page cache
    };
    struct Zap {
        uint64_t start = 0; // granularity of the zap that covered this page
        uint64_t nr = 0;
        uint64_t seq = 0;
        // Recorded from a folio-level marker before any page-level record: with
        // kprobes the marker (at entry) precedes the page-level change it makes.
        bool marker = false;
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
        // Only a folio handed out must have left the direct map (v12 zaps at
        // hand-out): one that never was may leave the page cache mapped.
        if (o.ndm && !o.zapped) {
            if (o.handed_out)
                violations_.add(fmt::format("folio of a NO_DIRECT_MAP file was handed out but "
                                            "never removed from the direct map while in the page "
                                            "cache: {}",
                                            describe_folio(o.ev)));
        } else if (o.ndm && !all_invalid(o.ev.pfn, o.ev.pages()))
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
        o->handed_out = true;
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
        const bool marker = !is_direct_map_page_level(e.src);
        uint64_t nr = e.nr ? e.nr : 1;
        bool touched_watched = false;
        for (uint64_t i = 0; i < nr; ++i) {
            uint64_t pfn = e.pfn + i;
            Owned* o = owner(pfn);
            if (o)
                touched_watched = true;
            auto z = invalid_.find(pfn);
            if (!valid) {
                // A page-level zap after the marker of the same change is not a second zap.
                const bool same_change = z != invalid_.end() && z->second.marker && !marker;
                if (z != invalid_.end() && o && !same_change)
                    violations_.add(fmt::format(
                        "double zap of pfn {:#x} (first zap seq={}, again seq={} "
                        "by {}): {}",
                        pfn, z->second.seq, e.seq, src_name(e.src), describe_folio(o->ev)));
                invalid_[pfn] = Zap{e.pfn, nr, e.seq, marker};
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

} // namespace

std::unique_ptr<Checker> make_direct_map_checker() {
    return std::make_unique<DirectMap>();
}

} // namespace gms::probes
