// page_cache_balance: every folio added to a watched guest_memfd is removed
// by the time the file is released, and the page counts match the
// workloads' own (see checkers.h).
#include "probes/checkers.h"
#include "probes/checkers/common.h"
#include "probes/point_names.h"

#include <fmt/format.h>
#include <iterator>
#include <map>

namespace gms::probes {

namespace {

using namespace detail;

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
        const std::vector<std::string> need = {point::pc_add, point::pc_del};
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

        if (!cov.has(point::pc_add) || !cov.has(point::pc_del)) {
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

} // namespace

std::unique_ptr<Checker> make_page_cache_balance_checker() {
    return std::make_unique<PageCacheBalance>();
}

} // namespace gms::probes
