// punch-hole against the real /dev/kvm, and the page bookkeeping behind the
// expected page counts (WorkloadResult::expect) checked against the kernel's
// own view (mincore).
#include "host_test_util.h"
#include "workloads/host_common.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <sys/mman.h>

using namespace gms;
using namespace host_test;
namespace host = gms::workloads::host;

namespace {

profile::Profile punch_profile(const std::string& params, unsigned vm_count = 1) {
    return make_profile("kind = \"punch-hole\"\n" + params, "4MiB", vm_count);
}

} // namespace

TEST_CASE("punch-hole race=none: punched ranges read zero, counters exact", "[punch-hole]") {
    auto p = punch_profile("race = \"none\"\nthreads = 2\nops = 300\nalign_pages = 4");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(op_count(r, "punch_hole") == 300);
    CHECK(r.counters.at("verified_punches") == 300);
    CHECK(op_count(r, "allocate") > 0);
    CHECK(op_count(r, "write") > 0);
    CHECK(r.verification.pages_checked > 300);
    CHECK(r.verification.mismatches == 0);
    CHECK(r.expect.gmem_files.value() == 1);
    // Every cycle ends with the punched range faulted back in as zero pages,
    // so pages were both added and removed.
    CHECK(r.expect.pages_added.value() > r.expect.pages_removed.value() / 2);
    CHECK(r.expect.pages_removed.value() > 0);
    CHECK(obs.created == 1);
    CHECK(obs.released == 1);
    CHECK(obs.violations.empty());
}

TEST_CASE("punch-hole race=host: racing faults see only zero or the data", "[punch-hole]") {
    auto p = punch_profile("race = \"host\"\nthreads = 2\nops = 400\nverify_every = 2", 2);
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto r = run(p, obs).result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(op_count(r, "punch_hole") == 400);
    CHECK(r.counters.at("verified_punches") == 200);
    CHECK(op_count(r, "fault_read") + op_count(r, "fault_write") > 0);
    CHECK(r.verification.mismatches == 0);
    // Racy: no exact page-cache prediction is claimed.
    CHECK(!r.expect.pages_added.has_value());
    CHECK(r.expect.gmem_files.value() == 2);
    CHECK(obs.released == 2);
    CHECK(obs.violations.empty());
}

TEST_CASE("punch-hole race=guest: a vCPU reads the guest_memfd while it is punched",
          "[punch-hole]") {
    auto p = punch_profile("race = \"guest\"\nops = 0");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver first, longer;
    auto o = run(p, first, 1.0);
    RecordingObserver* used = &first;
    if (o.result.outcome == report::Outcome::skip) {
        // Under TCG on a loaded host 1 s may end before the vCPU's first pass:
        // that run must say so, and a longer one must race.
        CHECK_THAT(o.result.reason, Catch::Matchers::ContainsSubstring("nothing raced"));
        o = run(p, longer, 8.0);
        used = &longer;
    }
    auto& obs = *used;
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(o.wall_s < 20);
    CHECK(op_count(r, "punch_hole") > 0);
    CHECK(r.counters.at("verified_punches") == op_count(r, "punch_hole"));
    CHECK(r.counters.at("guest_passes") > 0);
    CHECK(op_count(r, "guest_pass") == r.counters.at("guest_passes"));
    CHECK(obs.released == 1);
    CHECK(obs.violations.empty());
}

TEST_CASE("punch-hole race=both: host racers and a vCPU together", "[punch-hole]") {
    auto p = punch_profile("race = \"both\"\nthreads = 1\nops = 0\nverify_every = 3");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs, 1.0);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(op_count(r, "punch_hole") > 0);
    CHECK(op_count(r, "fault_read") + op_count(r, "fault_write") > 0);
    CHECK(r.counters.count("guest_passes") == 1);
    CHECK(obs.released == 1);
}

TEST_CASE("punch-hole: ranges are aligned and inside the region", "[punch-hole]") {
    Rng rng(3);
    for (int i = 0; i < 10000; ++i) {
        host::Region reg{0, 1 + rng.below(100), 1 + rng.below(300)};
        uint64_t align = 1 + rng.below(8), max = 1 + rng.below(64);
        auto r = host::pick_range(rng, reg, max, align);
        INFO("region " << reg.first_page << "+" << reg.pages << " align " << align << " max " << max
                       << " -> " << r.first << "+" << r.pages);
        REQUIRE(r.pages >= 1);
        REQUIRE(r.first >= reg.first_page);
        REQUIRE(r.first + r.pages <= reg.first_page + reg.pages);
        REQUIRE(r.pages <= std::max(max, align));
        // Aligned unless the region is too small to hold one aligned unit.
        uint64_t lo = (reg.first_page + align - 1) / align * align;
        if (lo + align <= reg.first_page + reg.pages) {
            REQUIRE(r.first % align == 0);
            REQUIRE(r.pages % align == 0);
        }
    }
}

// The page book is what expected_pages_added/removed are computed from; check
// it against the kernel's page cache after each kind of operation the
// workloads do. mincore() reports a file page only when its folio is in the
// page cache AND uptodate; guest_memfd marks a folio uptodate when it is first
// faulted (zeroed), not when fallocate allocates it. So: every page touched
// through the mapping since its last punch must be resident, and nothing the
// book calls absent may be resident.
TEST_CASE("page book matches the page cache of a real guest_memfd", "[punch-hole]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    if (!caps().has_gmem_flag(host::kMmapFlags))
        SKIP("guest_memfd MMAP|INIT_SHARED not supported by this kernel");
    workloads::SigbusGuard sigbus;
    const uint64_t pages = 64;
    auto vm = kvm::Vm::create(kvm::Kvm::open());
    auto g = vm.create_guest_memfd(pages * host::kPage, host::kMmapFlags);
    auto m = g.map_shared();
    host::PageBook book(pages);
    std::vector<bool> touched(pages, false);
    host::WorkerResult w;
    Rng rng(9);

    auto resident = [&] {
        std::vector<unsigned char> v(pages);
        REQUIRE(mincore(m.data(), pages * host::kPage, v.data()) == 0);
        return v;
    };
    for (int step = 0; step < 400; ++step) {
        host::Range r = host::pick_range(rng, host::Region{0, 0, pages}, 8, 1);
        int what = int(rng.below(5));
        switch (what) {
        case 0: // read through the mapping (faults absent pages in)
            for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg) {
                REQUIRE(host::verify_page(w, book, m.data() + pg * host::kPage, 0, pg, 1, "test"));
                touched[pg] = true;
            }
            break;
        case 1: // write through the mapping
            for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg) {
                uint32_t& st = book.state[pg];
                if (st == host::PageBook::kAbsent)
                    ++w.pages.added;
                st = host::next_gen(st);
                host::fill_page(m.data() + pg * host::kPage, 1, 0, pg * host::kPage, st);
                touched[pg] = true;
            }
            break;
        case 2:
            REQUIRE(g.try_allocate(r.offset(), r.bytes()) == 0);
            host::book_allocate(book, w.pages, r);
            break;
        case 3:
            g.punch_hole(r.offset(), r.bytes());
            host::book_punch(book, w.pages, r);
            for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg)
                touched[pg] = false;
            break;
        case 4: // zapping the mapping leaves the page cache alone
            REQUIRE(madvise(m.data() + r.offset(), r.bytes(), MADV_DONTNEED) == 0);
            break;
        }
        auto v = resident();
        for (uint64_t pg = 0; pg < pages; ++pg) {
            INFO("step " << step << " op " << what << " page " << pg);
            bool resident = v[pg] & 1, present = book.state[pg] != host::PageBook::kAbsent;
            if (resident)
                REQUIRE(present);
            if (touched[pg])
                REQUIRE(resident);
        }
    }
    CHECK(w.verification.mismatches == 0);
    CHECK(w.pages.added - w.pages.removed == book.present());
}
