// folio_release: every folio that leaves a watched guest_memfd's page cache
// is freed (see checkers.h). A folio with a leaked reference leaves the file
// and stays allocated forever: invisible to page-cache balance.
#include "core/util.h"
#include "probes/checkers.h"
#include "probes/checkers/common.h"
#include "probes/point_names.h"

#include <fmt/format.h>
#include <map>

namespace gms::probes {

namespace {

using namespace detail;

class FolioRelease final : public Checker {
  public:
    void feed(const Event& e) override {
        switch (e.type) {
        case EventType::pc_del:
            pending_[e.pfn] = e;
            ++departed_;
            break;
        case EventType::page_free:
            // A free of order n frees the pages [pfn, pfn + 2^n).
            for (auto it = pending_.lower_bound(e.pfn);
                 it != pending_.end() && it->first < e.pfn + e.pages();) {
                it = pending_.erase(it);
                ++freed_;
            }
            break;
        case EventType::pc_add:
            // A pfn back in a page cache was freed first; its free went unseen.
            if (pending_.erase(e.pfn))
                ++freed_unseen_;
            break;
        case EventType::leak_drain:
            drained_ = true;
            drain_ret_ = e.ret;
            drain_ms_ = e.nr;
            break;
        case EventType::folio_refcount:
            refcount_[e.pfn] = e.ret;
            refcount_from_ =
                e.mode == 2 ? "struct page _refcount, read by BPF" : "/proc/kpagecount";
            break;
        default:
            break;
        }
    }

    report::InvariantResult result(const Coverage& cov, const Expectations&) const override {
        report::InvariantResult r;
        r.name = "folio_release";
        const std::vector<std::string> need = {point::pc_del, point::page_free};
        r.backend = summarize_backends(cov, need);
        Violations v;
        uint64_t still_held = 0, freed_late = 0, unknown = 0;
        for (const auto& [pfn, ev] : pending_) {
            auto rc = refcount_.find(pfn);
            if (rc != refcount_.end() && rc->second == 0) {
                ++freed_late; // free after the drain's read, or its event unseen
                continue;
            }
            if (rc == refcount_.end() || rc->second < 0)
                ++unknown;
            else
                ++still_held;
            v.add(fmt::format(
                "folio never freed after leaving the page cache: pfn={:#x} file {}:{} ino {} "
                "index {} order {}; refcount {} after the drain ({})",
                pfn, ev.dev >> 20, ev.dev & 0xfffff, ev.ino, ev.index, ev.order,
                rc == refcount_.end() ? std::string("not read")
                : rc->second < 0      ? fmt::format("unreadable ({})", errno_name(int(-rc->second)))
                                      : std::to_string(rc->second),
                refcount_from_));
        }
        r.evidence = {{"folios_departed", departed_},
                      {"freed", freed_},
                      {"freed_unseen", freed_unseen_ + freed_late},
                      {"not_freed", v.total},
                      {"not_freed_with_refcount", still_held},
                      {"not_freed_refcount_unknown", unknown},
                      {"drained", drained_},
                      {"drain_ms", drain_ms_},
                      {"departed_map_full", cov.departed_full},
                      {"lost_events", cov.losses()}};
        put_violations(r, v);
        if (!cov.has(point::pc_del) || !cov.has(point::page_free)) {
            r.verdict = report::Verdict::unverifiable;
            r.reason =
                "needs the page-cache deletion and page-free tracepoints: " + cov.why_missing(need);
        } else if (cov.losses() || cov.departed_full) {
            r.verdict = report::Verdict::incomplete;
            r.reason = cov.losses() ? loss_reason(cov)
                                    : fmt::format("{} departed pfns did not fit the BPF map "
                                                  "`departed`: their frees cannot be matched",
                                                  cov.departed_full);
        } else if (v.total && !drained_) {
            r.verdict = report::Verdict::incomplete;
            r.reason = fmt::format("{} folio(s) not freed yet and no drain ran (per-CPU LRU "
                                   "batches may still hold them)",
                                   v.total);
        } else if (v.total && drain_ret_ < 0) {
            r.verdict = report::Verdict::incomplete;
            r.reason = fmt::format("{} folio(s) not freed, but the drain failed ({}): per-CPU "
                                   "LRU batches may still hold them",
                                   v.total, errno_name(int(-drain_ret_)));
        } else if (v.total) {
            r.verdict = report::Verdict::violated;
            r.reason = fmt::format("{} of {} folio(s) that left guest_memfd page caches were "
                                   "never freed ({} with a reference count above 0): an extra "
                                   "reference leaked",
                                   v.total, departed_, still_held);
        } else if (!departed_) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "no folio left a watched guest_memfd's page cache while observed";
        } else {
            r.verdict = report::Verdict::verified;
            r.reason =
                fmt::format("{} folio(s) left guest_memfd page caches, each was freed", departed_);
        }
        return r;
    }

  private:
    std::map<uint64_t, Event> pending_; // pfn -> its pc_del
    std::map<uint64_t, int64_t> refcount_;
    std::string refcount_from_ = "/proc/kpagecount";
    uint64_t departed_ = 0, freed_ = 0, freed_unseen_ = 0, drain_ms_ = 0;
    bool drained_ = false;
    int64_t drain_ret_ = 0;
};

} // namespace

std::unique_ptr<Checker> make_folio_release_checker() {
    return std::make_unique<FolioRelease>();
}

} // namespace gms::probes
