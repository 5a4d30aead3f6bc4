// uptodate: every folio handed to the guest or to host userspace is
// uptodate at that moment; fresh memory reads zero (see checkers.h).
#include "probes/checkers.h"
#include "probes/checkers/common.h"
#include "probes/events.h"
#include "probes/point_names.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace gms::probes {

namespace {

using namespace detail;

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
        const std::vector<std::string> need = {point::get_pfn, point::user_fault};
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
            if (!cov.has_any({point::get_pfn}) || !cov.has_any({point::user_fault}))
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
        if (cov.has_any({point::get_pfn}) && guest < exp.min_handouts_guest)
            out.push_back(fmt::format("kvm_gmem_get_pfn saw {} hand-outs to the guest, the "
                                      "workloads made at least {}",
                                      guest, exp.min_handouts_guest));
        if (cov.has_any({point::user_fault}) && user < exp.min_handouts_user)
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

std::unique_ptr<Checker> make_uptodate_checker() {
    return std::make_unique<Uptodate>();
}

} // namespace gms::probes
