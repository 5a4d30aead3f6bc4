// The invalidation_balance and folio_release checkers fed hand-made streams:
// what a correct kernel produces, and the same streams broken the way the
// planted bugs break them (a punch without KVM invalidation, a start without
// its end, a folio that left the page cache and was never freed).
#include "probes/checkers.h"
#include "probes/events.h"
#include "probes/point_names.h"

#include <algorithm>
#include <catch2/catch_test_macros.hpp>
#include <fmt/format.h>

using namespace gms::probes;
using gms::report::InvariantResult;
using gms::report::Verdict;

namespace {

constexpr uint32_t kDev = (0 << 20) | 15;
constexpr uint64_t kIno = 4242, kKvm = 0xffff888012340000ull;
constexpr uint32_t kTid = 777;

struct Stream {
    std::vector<Event> ev;
    uint64_t seq = 0;
    Event& add(EventType t) {
        Event e;
        e.type = t;
        e.seq = ++seq;
        e.dev = kDev;
        e.ino = kIno;
        ev.push_back(e);
        return ev.back();
    }
    Event& inval(uint32_t kind, uint64_t start = 0, uint64_t end = 0, uint32_t op = 0) {
        Event& e = add(EventType::inval);
        e.kind = kind;
        e.kvm = kKvm;
        e.tid = kTid;
        e.index = start;
        e.end = end;
        e.op = op;
        return e;
    }
    // What guest_memfd's punch of [s, e) does on Linux 7.3 for a bound file.
    void punch(uint64_t s, uint64_t e, bool invalidate = true, bool end = true) {
        inval(GMS_INV_OP_BEGIN, s, e, GMS_OP_PUNCH);
        if (invalidate) {
            inval(GMS_INV_MMU_START);
            inval(GMS_INV_UNMAP, s, e);
        }
        if (invalidate && end)
            inval(GMS_INV_MMU_END);
        inval(GMS_INV_OP_END, s, e, GMS_OP_PUNCH);
    }
    void release(uint64_t s, uint64_t e) {
        Event& b = inval(GMS_INV_OP_BEGIN, 0, ~0ull, GMS_OP_RELEASE);
        b.kvm = kKvm;
        inval(GMS_INV_MMU_START);
        inval(GMS_INV_UNMAP, s, e);
        inval(GMS_INV_MMU_END);
        inval(GMS_INV_OP_END, 0, ~0ull, GMS_OP_RELEASE);
    }
    Event& folio(EventType t, uint64_t pfn, uint64_t index) {
        Event& e = add(t);
        e.pfn = pfn;
        e.index = index;
        return e;
    }
};

Coverage all_attached() {
    Coverage c;
    for (auto p : point::all)
        c.attached[std::string(p)] = "fentry";
    return c;
}

InvariantResult judge(std::unique_ptr<Checker> c, const Stream& s, const Coverage& cov) {
    for (const auto& e : s.ev)
        c->feed(e);
    auto r = c->result(cov, {});
    std::string d = fmt::format("{}: {} ({})", r.name, gms::report::to_string(r.verdict), r.reason);
    for (const auto& v : r.violations)
        d += "\n  " + v;
    INFO(d);
    return r;
}

bool has(const InvariantResult& r, const std::string& needle) {
    return std::any_of(r.violations.begin(), r.violations.end(),
                       [&](const std::string& v) { return v.find(needle) != std::string::npos; });
}

} // namespace

TEST_CASE("invalidation_balance: punches and releases of bound ranges verify", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 1024);
    s.punch(10, 14);
    s.punch(2000, 2004); // outside the binding: nothing to invalidate
    // An invalidation by host address inside the punch does not count, but
    // does not hurt either.
    s.inval(GMS_INV_OP_BEGIN, 20, 24, GMS_OP_PUNCH);
    s.inval(GMS_INV_MMU_START);
    s.inval(GMS_INV_UNMAP, 20, 24);
    s.inval(GMS_INV_MMU_START).flags = GMS_F_NOTIFIER;
    s.inval(GMS_INV_MMU_END).flags = GMS_F_NOTIFIER;
    s.inval(GMS_INV_MMU_END);
    s.inval(GMS_INV_OP_END, 20, 24, GMS_OP_PUNCH);
    s.release(0, 1024);
    auto r = judge(make_invalidation_balance_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::verified);
    CHECK(r.evidence.at("punches_of_bound_ranges") == 2);
    CHECK(r.evidence.at("releases_of_bound_ranges") == 1);
    CHECK(r.evidence.at("by_mmu_notifier") == 2);
}

TEST_CASE("invalidation_balance: a punch without KVM invalidation is a violation", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 1024);
    s.punch(10, 14, /*invalidate=*/false); // the stale-guest plant
    auto r = judge(make_invalidation_balance_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::violated);
    CHECK(has(r, "punch hole of file 0:15 ino 4242 pages [10, 14) returned without invalidating"));
    CHECK(has(r, "pages [10, 14)"));
}

TEST_CASE("invalidation_balance: only the MMU notifier invalidating is a violation", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 1024);
    s.inval(GMS_INV_OP_BEGIN, 10, 14, GMS_OP_PUNCH);
    for (uint32_t k : {GMS_INV_MMU_START, GMS_INV_UNMAP, GMS_INV_MMU_END}) {
        Event& e = s.inval(k, 10, 14);
        e.flags = GMS_F_NOTIFIER;
    }
    s.inval(GMS_INV_OP_END, 10, 14, GMS_OP_PUNCH);
    auto r = judge(make_invalidation_balance_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::violated);
}

TEST_CASE("invalidation_balance: a partly invalidated range names the gap", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 1024);
    s.inval(GMS_INV_OP_BEGIN, 10, 20, GMS_OP_PUNCH);
    s.inval(GMS_INV_MMU_START);
    s.inval(GMS_INV_UNMAP, 10, 15);
    s.inval(GMS_INV_MMU_END);
    s.inval(GMS_INV_OP_END, 10, 20, GMS_OP_PUNCH);
    auto r = judge(make_invalidation_balance_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::violated);
    CHECK(has(r, "mappings of pages [15, 20)"));
}

TEST_CASE("invalidation_balance: unbalanced start/end is a violation", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 1024);
    s.punch(10, 14, true, /*end=*/false);
    auto r = judge(make_invalidation_balance_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::violated);
    CHECK(has(r, "unbalanced: 1 kvm_mmu_invalidate_start not ended"));

    Stream t;
    t.inval(GMS_INV_BIND, 0, 1024);
    t.inval(GMS_INV_OP_BEGIN, 10, 14, GMS_OP_PUNCH);
    t.inval(GMS_INV_MMU_END);
    t.inval(GMS_INV_UNMAP, 10, 14);
    t.inval(GMS_INV_OP_END, 10, 14, GMS_OP_PUNCH);
    auto r2 = judge(make_invalidation_balance_checker(), t, all_attached());
    CHECK(r2.verdict == Verdict::violated);
    CHECK(has(r2, "without a matching kvm_mmu_invalidate_start"));
    CHECK(has(r2, "outside kvm_mmu_invalidate_start/end"));
}

TEST_CASE("invalidation_balance: unbound files and unbound ranges need nothing", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 16);
    s.inval(GMS_INV_UNBIND, 0, 16);
    s.punch(2, 4, false); // the memslot is gone: nothing maps the range
    auto r = judge(make_invalidation_balance_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::unverifiable); // nothing bound was punched
    CHECK(r.violations.empty());
}

TEST_CASE("invalidation_balance: missing points, losses", "[checkers]") {
    Stream s;
    s.inval(GMS_INV_BIND, 0, 1024);
    s.punch(10, 14, false);
    auto cov = all_attached();
    cov.attached.erase(point::mmu_unmap);
    cov.missing[point::mmu_unmap] = "kvm_mmu_unmap_gfn_range not in kernel BTF";
    auto r = judge(make_invalidation_balance_checker(), s, cov);
    CHECK(r.verdict == Verdict::unverifiable);
    CHECK(r.reason.find("kvm_mmu_unmap_gfn_range not in kernel BTF") != std::string::npos);
    auto lossy = all_attached();
    lossy.lost_events = 3;
    CHECK(judge(make_invalidation_balance_checker(), s, lossy).verdict == Verdict::incomplete);
}

TEST_CASE("folio_release: every departed folio freed verifies", "[checkers]") {
    Stream s;
    s.folio(EventType::pc_add, 0x1000, 0);
    s.folio(EventType::pc_add, 0x1001, 1);
    s.folio(EventType::pc_del, 0x1000, 0);
    s.folio(EventType::pc_del, 0x1001, 1);
    s.folio(EventType::page_free, 0x1000, 0);
    s.folio(EventType::page_free, 0x1001, 1);
    s.add(EventType::leak_drain);
    auto r = judge(make_folio_release_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::verified);
    CHECK(r.evidence.at("folios_departed") == 2);
    CHECK(r.evidence.at("freed") == 2);
}

TEST_CASE("folio_release: a folio never freed is a leak with its refcount", "[checkers]") {
    Stream s;
    s.folio(EventType::pc_add, 0x2000, 64);
    s.folio(EventType::pc_add, 0x2001, 65);
    s.folio(EventType::pc_del, 0x2000, 64);
    s.folio(EventType::pc_del, 0x2001, 65);
    s.folio(EventType::page_free, 0x2001, 65);
    s.add(EventType::leak_drain).nr = 120;
    s.folio(EventType::folio_refcount, 0x2000, 0).ret = 1;
    auto r = judge(make_folio_release_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::violated);
    CHECK(has(r, "pfn=0x2000 file 0:15 ino 4242 index 64 order 0; refcount 1 after the drain"));
    CHECK(r.evidence.at("not_freed_with_refcount") == 1);
}

TEST_CASE("folio_release: not freed before a drain, or refcount 0, is no leak", "[checkers]") {
    Stream s;
    s.folio(EventType::pc_del, 0x3000, 0);
    auto r = judge(make_folio_release_checker(), s, all_attached());
    CHECK(r.verdict == Verdict::incomplete); // no drain: an LRU batch may hold it

    Stream t;
    t.folio(EventType::pc_del, 0x3000, 0);
    t.add(EventType::leak_drain);
    t.folio(EventType::folio_refcount, 0x3000, 0).ret = 0; // freed, its event not seen
    auto r2 = judge(make_folio_release_checker(), t, all_attached());
    CHECK(r2.verdict == Verdict::verified);
    CHECK(r2.evidence.at("freed_unseen") == 1);

    Stream u; // freed and reused by another file: the reuse proves the free
    u.folio(EventType::pc_del, 0x3000, 0);
    u.folio(EventType::pc_add, 0x3000, 7);
    u.add(EventType::leak_drain);
    CHECK(judge(make_folio_release_checker(), u, all_attached()).verdict == Verdict::verified);

    Stream v; // a failed drain cannot convict
    v.folio(EventType::pc_del, 0x3000, 0);
    v.add(EventType::leak_drain).ret = -13;
    v.folio(EventType::folio_refcount, 0x3000, 0).ret = 1;
    CHECK(judge(make_folio_release_checker(), v, all_attached()).verdict == Verdict::incomplete);
}

TEST_CASE("folio_release: a free of a higher order covers its pages; missing points",
          "[checkers]") {
    Stream s;
    s.folio(EventType::pc_del, 0x4000, 0);
    s.folio(EventType::pc_del, 0x4001, 1);
    s.folio(EventType::page_free, 0x4000, 0).order = 1;
    s.add(EventType::leak_drain);
    CHECK(judge(make_folio_release_checker(), s, all_attached()).verdict == Verdict::verified);

    auto cov = all_attached();
    cov.attached.erase(point::page_free);
    cov.missing[point::page_free] = "tracepoint kmem/mm_page_free not in this kernel";
    auto r = judge(make_folio_release_checker(), s, cov);
    CHECK(r.verdict == Verdict::unverifiable);
    auto full = all_attached();
    full.departed_full = 5;
    CHECK(judge(make_folio_release_checker(), s, full).verdict == Verdict::incomplete);
}
