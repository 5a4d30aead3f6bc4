#include "core/histogram.h"
#include "core/kmsg.h"
#include "core/util.h"
#include "kvm/kvm.h"

#include <catch2/catch_test_macros.hpp>
#include <set>

using namespace gms;

TEST_CASE("sizes and durations parse strictly", "[util]") {
    CHECK(parse_size("4096") == 4096u);
    CHECK(parse_size("4k") == 4096u);
    CHECK(parse_size("16MiB") == 16u << 20);
    CHECK(parse_size("1 GiB") == 1ull << 30);
    CHECK_FALSE(parse_size("12 parsecs"));
    CHECK_FALSE(parse_size(""));
    CHECK_FALSE(parse_size("-1"));
    CHECK_FALSE(parse_size("0.5")); // not a whole number of bytes
    CHECK(parse_duration("10s") == 10.0);
    CHECK(parse_duration("500ms") == 0.5);
    CHECK(parse_duration("2m") == 120.0);
    CHECK(parse_duration("3") == 3.0);
    CHECK_FALSE(parse_duration("soon"));
}

TEST_CASE("names sharing a reason are grouped, in first-seen order", "[util]") {
    CHECK(group_by_reason({{"a", "x"}, {"b", "y"}, {"c", "x"}}, "; ") == "a, c: x; b: y");
    CHECK(group_by_reason({{"a", "x"}}, " | ") == "a: x");
    CHECK(group_by_reason({}, "; ").empty());
}

TEST_CASE("the RNG is deterministic per seed and streams differ", "[util]") {
    Rng a(42), b(42), c(43);
    for (int i = 0; i < 100; ++i) {
        uint64_t x = a.next();
        CHECK(x == b.next());
        (void)c.next();
    }
    CHECK(Rng(42).next() != Rng(43).next());
    CHECK(Rng::derive(1, 0) != Rng::derive(1, 1));
    Rng r(7);
    for (int i = 0; i < 1000; ++i)
        CHECK(r.below(10) < 10);
}

TEST_CASE("histogram percentiles bound the true values", "[histogram]") {
    Histogram h;
    for (uint64_t v = 1; v <= 1000; ++v)
        h.add(v);
    CHECK(h.count() == 1000);
    CHECK(h.max() == 1000);
    CHECK(h.min() == 1);
    // Log-linear with 3 sub-bits: within 12.5% above the true quantile.
    CHECK(h.percentile(0.5) >= 500);
    CHECK(h.percentile(0.5) <= 563);
    CHECK(h.percentile(0.99) >= 990);
    CHECK(h.percentile(0.99) <= 1000);
    Histogram g;
    g.add(5000);
    h.merge(g);
    CHECK(h.max() == 5000);
    CHECK(h.count() == 1001);
    for (unsigned i = 1; i < Histogram::kBuckets; ++i)
        CHECK(Histogram::upper_bound(i) > Histogram::upper_bound(i - 1));
    CHECK(Histogram::index(~0ull) == Histogram::kBuckets - 1);
    for (uint64_t v : {0ull, 7ull, 8ull, 9ull, 1023ull, 1ull << 40, ~0ull})
        CHECK(Histogram::upper_bound(Histogram::index(v)) >= v);
}

TEST_CASE("kernel log messages are classified", "[kmsg]") {
    CHECK(classify_kernel_message("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [qemu:123]") ==
          "soft_lockup");
    CHECK(classify_kernel_message("rcu: INFO: rcu_preempt self-detected stall on CPU") ==
          "rcu_stall");
    CHECK(classify_kernel_message("BUG: Bad page state in process x  pfn:12345") ==
          "bad_page_state");
    CHECK(classify_kernel_message(
              "WARNING: CPU: 0 PID: 1 at virt/kvm/guest_memfd.c:100 kvm_gmem_x") == "WARNING");
    CHECK(classify_kernel_message("kernel BUG at mm/filemap.c:1234!") == "BUG");
    CHECK(classify_kernel_message("BUG: unable to handle page fault for address") == "oops");
    CHECK(classify_kernel_message("WARNING: possible circular locking dependency detected") ==
          "lockdep");
    CHECK(classify_kernel_message("WARNING: possible recursive locking detected") == "lockdep");
    CHECK(classify_kernel_message(
              "BUG: KASAN: use-after-free in kvm_gmem_punch_hole+0x2f1/0x3a0") == "sanitizer");
    CHECK(classify_kernel_message(
              "BUG: sleeping function called from invalid context at mm/filemap.c:1") == "BUG");
    CHECK_FALSE(classify_kernel_message("kvm: loaded"));
    CHECK_FALSE(classify_kernel_message("EXT4-fs (vda): mounted filesystem"));
}

TEST_CASE("guest_memfd flag names round-trip", "[kvm]") {
    kvm::FlagBits bits;
    CHECK(kvm::flag_from_name("mmap", bits) == 1u);
    CHECK(kvm::flag_from_name("init_shared", bits) == 2u);
    CHECK(kvm::flag_from_name("no_direct_map", bits) == (1u << bits.no_direct_map));
    CHECK(kvm::flag_from_name("bit:9", bits) == (1u << 9));
    CHECK_FALSE(kvm::flag_from_name("bit:64", bits));
    CHECK_FALSE(kvm::flag_from_name("bit:", bits));
    CHECK_FALSE(kvm::flag_from_name("nope", bits));
    bits.no_direct_map = 5;
    CHECK(kvm::flags_to_string(3 | (1u << 5) | (1u << 9), bits) ==
          "mmap|init_shared|no_direct_map|bit:9");
    CHECK(kvm::flags_to_string(0, bits) == "0");
}
