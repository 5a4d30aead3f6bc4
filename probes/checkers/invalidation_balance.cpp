// invalidation_balance: every range that leaves a guest_memfd while a memslot
// binds it (punch hole, release) is invalidated in KVM's MMU by guest_memfd
// itself, with kvm_mmu_invalidate_start/end balanced per kvm (see checkers.h).
#include "probes/checkers.h"
#include "probes/checkers/common.h"
#include "probes/events.h"
#include "probes/point_names.h"

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <vector>

namespace gms::probes {

namespace {

using namespace detail;

using Range = std::pair<uint64_t, uint64_t>; // file page indices [first, second)

// The part of [r.first, r.second) that `have` does not cover (first gap), or
// an empty range.
Range first_gap(Range r, std::vector<Range> have) {
    std::sort(have.begin(), have.end());
    uint64_t at = r.first;
    for (const auto& h : have) {
        if (h.first > at)
            break;
        at = std::max(at, h.second);
        if (at >= r.second)
            return {0, 0};
    }
    if (at >= r.second)
        return {0, 0};
    uint64_t gap_end = r.second;
    for (const auto& h : have)
        if (h.first > at)
            gap_end = std::min(gap_end, h.first);
    return {at, gap_end};
}

std::string range_str(Range r) {
    return r.second == ~0ull ? fmt::format("[{}, end)", r.first)
                             : fmt::format("[{}, {})", r.first, r.second);
}

const char* op_name(uint32_t op) {
    return op == GMS_OP_PUNCH ? "punch hole" : op == GMS_OP_RELEASE ? "release" : "operation";
}

class InvalidationBalance final : public Checker {
  public:
    void feed(const Event& e) override {
        if (e.type != EventType::inval)
            return;
        const Key file = key_of(e);
        switch (e.kind) {
        case GMS_INV_BIND:
            bindings_[file].push_back({e.kvm, {e.index, e.end}});
            ++binds_;
            break;
        case GMS_INV_UNBIND: {
            auto& b = bindings_[file];
            std::erase_if(b, [&](const Binding& x) { return x.range == Range{e.index, e.end}; });
            break;
        }
        case GMS_INV_OP_BEGIN:
            ops_[e.tid] = Op{e, {}, {}};
            break;
        case GMS_INV_MMU_START:
        case GMS_INV_MMU_END:
        case GMS_INV_UNMAP:
            mmu_call(e);
            break;
        case GMS_INV_OP_END:
            op_end(e);
            break;
        default:
            break;
        }
    }

    report::InvariantResult result(const Coverage& cov, const Expectations&) const override {
        report::InvariantResult r;
        r.name = "invalidation_balance";
        const std::vector<std::string> need = {point::inval_punch,   point::inval_release,
                                               point::inval_bind,    point::mmu_inval_start,
                                               point::mmu_inval_end, point::mmu_unmap};
        const std::vector<std::string> notifier = {point::notifier_start, point::notifier_end};
        r.backend = summarize_backends(cov, need);
        r.evidence = {{"bindings", binds_},
                      {"punches_of_bound_ranges", punches_},
                      {"releases_of_bound_ranges", releases_},
                      {"mmu_invalidate_start", starts_},
                      {"mmu_invalidate_end", ends_},
                      {"mmu_unmap_gfn_range", unmaps_},
                      {"by_mmu_notifier", by_notifier_},
                      {"operations_unfinished", ops_.size()},
                      {"lost_events", cov.losses()}};
        put_violations(r, violations_);
        bool all = true;
        for (const auto& p : need)
            all &= cov.has(p);
        if (!all) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "needs guest_memfd's operations, bindings and KVM's MMU invalidation "
                       "functions: " +
                       cov.why_missing(need);
        } else if (cov.losses()) {
            r.verdict = report::Verdict::incomplete;
            r.reason = loss_reason(cov);
        } else if (violations_.total) {
            r.verdict = report::Verdict::violated;
            r.reason = fmt::format("{} violation(s)", violations_.total);
        } else if (!punches_ && !releases_) {
            r.verdict = report::Verdict::unverifiable;
            r.reason = "no punch hole or release of a range bound to a memslot was observed";
        } else {
            r.verdict = report::Verdict::verified;
            r.reason = fmt::format(
                "{} punch(es) and {} release(s) of bound ranges, each invalidated in KVM's MMU "
                "by guest_memfd ({} invalidate_start/end pairs, balanced per kvm)",
                punches_, releases_, starts_);
            if (!cov.has(point::notifier_start) || !cov.has(point::notifier_end))
                r.reason += "; KVM's MMU notifier not observed, its invalidations (by host "
                            "address) may have been counted as guest_memfd's: " +
                            cov.why_missing(notifier);
        }
        return r;
    }

  private:
    struct Binding {
        uint64_t kvm = 0;
        Range range;
    };
    struct Op {
        Event begin;
        std::map<uint64_t, int64_t> depth;            // per kvm: starts - ends
        std::map<uint64_t, std::vector<Range>> unmap; // per kvm: ranges unmapped
    };

    void mmu_call(const Event& e) {
        auto it = ops_.find(e.tid);
        if (it == ops_.end())
            return;
        if (e.has(GMS_F_NOTIFIER)) {
            ++by_notifier_; // by host address: not guest_memfd's own invalidation
            return;
        }
        Op& op = it->second;
        const char* what = op_name(op.begin.op);
        if (e.kind == GMS_INV_MMU_START) {
            ++starts_;
            ++op.depth[e.kvm];
        } else if (e.kind == GMS_INV_MMU_END) {
            ++ends_;
            if (op.depth[e.kvm] <= 0)
                violations_.add(fmt::format(
                    "{} of file {}:{} ino {}: kvm_mmu_invalidate_end(kvm {:#x}) without a "
                    "matching kvm_mmu_invalidate_start (seq {})",
                    what, e.dev >> 20, e.dev & 0xfffff, e.ino, e.kvm, e.seq));
            else
                --op.depth[e.kvm];
        } else {
            ++unmaps_;
            if (op.depth[e.kvm] <= 0)
                violations_.add(fmt::format(
                    "{} of file {}:{} ino {}: kvm_mmu_unmap_gfn_range(kvm {:#x}, pages {}) "
                    "outside kvm_mmu_invalidate_start/end (seq {})",
                    what, e.dev >> 20, e.dev & 0xfffff, e.ino, e.kvm, range_str({e.index, e.end}),
                    e.seq));
            op.unmap[e.kvm].push_back({e.index, e.end});
        }
    }

    void op_end(const Event& e) {
        auto it = ops_.find(e.tid);
        if (it == ops_.end())
            return;
        Op op = std::move(it->second);
        ops_.erase(it);
        const Event& b = op.begin;
        const char* what = op_name(b.op);
        const Key file = key_of(b);
        for (const auto& [kvm, d] : op.depth)
            if (d != 0)
                violations_.add(fmt::format(
                    "{} of file {}:{} ino {} returned with kvm {:#x}'s invalidation unbalanced: "
                    "{} kvm_mmu_invalidate_start not ended (seq {})",
                    what, b.dev >> 20, b.dev & 0xfffff, b.ino, kvm, d, e.seq));
        auto bit = bindings_.find(file);
        if (bit == bindings_.end())
            return;
        bool bound = false;
        if (e.ret == 0) {
            for (const auto& bd : bit->second) {
                if (b.op == GMS_OP_RELEASE && b.kvm && bd.kvm != b.kvm)
                    continue;
                Range left{std::max(b.index, bd.range.first), std::min(b.end, bd.range.second)};
                if (left.first >= left.second)
                    continue;
                bound = true;
                auto u = op.unmap.find(bd.kvm);
                Range gap = first_gap(left, u == op.unmap.end() ? std::vector<Range>{} : u->second);
                if (gap.first < gap.second)
                    violations_.add(fmt::format(
                        "{} of file {}:{} ino {} pages {} returned without invalidating kvm "
                        "{:#x}'s mappings of pages {} (bound by a memslot to pages {}); "
                        "guest_memfd's own unmaps for that kvm: {} (seq {})",
                        what, b.dev >> 20, b.dev & 0xfffff, b.ino, range_str({b.index, b.end}),
                        bd.kvm, range_str(gap), range_str(bd.range),
                        u == op.unmap.end() ? 0 : u->second.size(), e.seq));
            }
        }
        if (bound)
            ++(b.op == GMS_OP_RELEASE ? releases_ : punches_);
        if (b.op == GMS_OP_RELEASE) // release ends the file's bindings (of its kvm)
            std::erase_if(bit->second, [&](const Binding& x) { return !b.kvm || x.kvm == b.kvm; });
    }

    std::map<Key, std::vector<Binding>> bindings_;
    std::map<uint32_t, Op> ops_; // by thread
    Violations violations_;
    uint64_t binds_ = 0, punches_ = 0, releases_ = 0, starts_ = 0, ends_ = 0, unmaps_ = 0,
             by_notifier_ = 0;
};

} // namespace

std::unique_ptr<Checker> make_invalidation_balance_checker() {
    return std::make_unique<InvalidationBalance>();
}

} // namespace gms::probes
