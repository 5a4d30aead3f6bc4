// guest-fault against the real /dev/kvm: guest code in 32-bit protected mode
// reads and writes guest_memfd pages; the checks are shown to catch real
// corruption (a byte flipped through the mapping at the right moment) and the
// page counts are cross-checked with mincore() on the guest_memfd mapping.
#include "host_test_util.h"
#include "workloads/guest_common.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cstring>
#include <set>
#include <sys/mman.h>

using namespace gms;
using namespace host_test;
namespace guest = gms::workloads::guest;

namespace {

profile::Profile guest_profile(const std::string& params, unsigned vm_count, unsigned vcpus,
                               const std::string& size = "1MiB", uint64_t seed = 7) {
    std::string text = fmt::format(
        "name = \"test\"\nseed = {}\nduration = \"30s\"\n"
        "[vm]\ncount = {}\nvcpus = {}\n[guest_memfd]\nsize = \"{}\"\n"
        "flags = [\"mmap\", \"init_shared\"]\n[[workload]]\nkind = \"guest-fault\"\n{}\n",
        seed, vm_count, vcpus, size, params);
    return profile::parse_profile(text, "test", {}, workloads::schemas());
}

// Resets the test hooks on every exit path.
struct HookScope {
    explicit HookScope(guest::GuestFaultHooks h) { guest::set_guest_fault_hooks(std::move(h)); }
    ~HookScope() { guest::set_guest_fault_hooks({}); }
};

// Pages of [p, p+len) present in the file's page cache, as the kernel says.
uint64_t resident_pages(const uint8_t* p, uint64_t len) {
    std::vector<unsigned char> v(len / 4096);
    if (::mincore(const_cast<uint8_t*>(p), len, v.data()) != 0)
        return ~0ull;
    uint64_t n = 0;
    for (auto c : v)
        n += c & 1;
    return n;
}

} // namespace

TEST_CASE("guest-fault: vCPUs on several VMs check and write their regions", "[guest-fault]") {
    // 2 VMs x 2 vCPUs, 1 MiB each: 128 pages per vCPU; 1200 page ops = 300 per vCPU.
    // Exact counts: without the punch step (its own test below).
    auto p = guest_profile("ops = 1200\nbatch_pages = 32\npunch_pages = 0", 2, 2);
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    // The kernel's own count: pages the guest_memfd holds must be exactly the
    // pages the batches touched so far (checked each round, before the host reads).
    std::mutex mu;
    std::map<std::pair<unsigned, unsigned>, std::set<uint64_t>> touched;
    std::vector<std::string> count_errors;
    guest::GuestFaultHooks h;
    h.before_host_verify = [&](unsigned vm, unsigned vcpu, uint64_t round, uint8_t* region,
                               const std::vector<uint64_t>& batch) {
        std::lock_guard lock(mu);
        auto& t = touched[{vm, vcpu}];
        t.insert(batch.begin(), batch.end());
        uint64_t res = resident_pages(region, 128 * 4096);
        if (res != t.size())
            count_errors.push_back(
                fmt::format("vm{} vcpu{} round {}: mincore {} pages, expected {}", vm, vcpu, round,
                            res, t.size()));
    };
    HookScope hooks(h);
    auto o = run(p, obs);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(count_errors.empty());
    for (const auto& e : count_errors)
        UNSCOPED_INFO(e);
    CHECK(r.verification.mismatches == 0);
    CHECK(o.progress_ops == 1200);
    // Every page is checked by the guest and again by the host.
    CHECK(r.verification.pages_checked == 2 * 1200);
    CHECK(op_count(r, "guest_round") == 4 * ((300 + 31) / 32));
    CHECK(op_count(r, "host_verify") == op_count(r, "guest_round"));
    CHECK(op_count(r, "KVM_RUN") >= op_count(r, "guest_round"));
    CHECK(op_count(r, "host_prefill") > 0);
    CHECK(r.expect.gmem_files.value() == 2);
    // 300 ops over 128 pages: every page of every region was touched.
    CHECK(r.expect.pages_added.value() == 2 * 256);
    CHECK(r.expect.pages_removed.value() == 2 * 256);
    CHECK(obs.created == 2);
    CHECK(obs.released == 2);
    CHECK(obs.live.empty());
    CHECK(obs.violations.empty());
}

TEST_CASE("guest-fault: a partial first pass predicts exactly the pages touched", "[guest-fault]") {
    // One vCPU, 256 pages, 100 ops: pages 0..99 only.
    auto p =
        guest_profile("ops = 100\nbatch_pages = 16\nprefill_percent = 50\npunch_pages = 0", 1, 1);
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    uint64_t last_resident = 0;
    guest::GuestFaultHooks h;
    h.before_host_verify = [&](unsigned, unsigned, uint64_t, uint8_t* region,
                               const std::vector<uint64_t>&) {
        last_resident = resident_pages(region, 256 * 4096);
    };
    HookScope hooks(h);
    auto o = run(p, obs);
    INFO(summary(o.result));
    REQUIRE(o.result.outcome == report::Outcome::pass);
    CHECK(o.result.expect.pages_added.value() == 100);
    CHECK(last_resident == 100);
}

TEST_CASE("guest-fault: a byte flipped after the guest wrote is a host mismatch", "[guest-fault]") {
    auto p = guest_profile("ops = 64\nbatch_pages = 16\nwrite_percent = 100", 1, 1);
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    uint64_t flipped_off = 0;
    guest::GuestFaultHooks h;
    h.before_host_verify = [&](unsigned, unsigned, uint64_t round, uint8_t* region,
                               const std::vector<uint64_t>& batch) {
        if (round == 2) {
            flipped_off = batch[5] * 4096 + 123 * 4 + 1;
            region[flipped_off] ^= 0x10;
        }
    };
    HookScope hooks(h);
    auto o = run(p, obs);
    const auto& r = o.result;
    INFO(summary(r));
    CHECK(r.outcome == report::Outcome::fail);
    REQUIRE(r.verification.mismatches == 1);
    REQUIRE(r.verification.first_mismatches.size() == 1);
    const std::string& m = r.verification.first_mismatches[0];
    CHECK_THAT(m, Catch::Matchers::ContainsSubstring("host read"));
    CHECK_THAT(
        m, Catch::Matchers::ContainsSubstring(fmt::format("offset {:#x}", flipped_off & ~3ull)));
    CHECK_THAT(r.reason, Catch::Matchers::ContainsSubstring("mismatch"));
    CHECK(obs.released == 1);
}

TEST_CASE("guest-fault: corruption before the guest runs is reported by the guest",
          "[guest-fault]") {
    for (std::string what : {"zero page", "host pattern"}) {
        DYNAMIC_SECTION(what) {
            // prefill 0%: round 0's pages are never-touched and must read zero;
            // prefill 100%: they hold the host's pattern.
            auto p = guest_profile(
                fmt::format("ops = 48\nbatch_pages = 16\nwrite_percent = 100\nprefill_percent = {}",
                            what == "zero page" ? 0 : 100),
                1, 1);
            if (auto why = skip_reason(p))
                SKIP(*why);
            RecordingObserver obs;
            uint64_t off = 0;
            guest::GuestFaultHooks h;
            h.before_guest_run = [&](unsigned, unsigned, uint64_t round, uint8_t* region,
                                     const std::vector<uint64_t>& batch) {
                if (round == 1) {
                    off = batch[3] * 4096 + 960 * 4; // a word the guest checks (stride 64)
                    region[off] ^= 0x01;
                }
            };
            HookScope hooks(h);
            auto o = run(p, obs);
            const auto& r = o.result;
            INFO(summary(r));
            CHECK(r.outcome == report::Outcome::fail);
            REQUIRE(r.verification.mismatches >= 1);
            const std::string& m = r.verification.first_mismatches[0];
            CHECK_THAT(m, Catch::Matchers::ContainsSubstring("guest read"));
            CHECK_THAT(m, Catch::Matchers::ContainsSubstring(fmt::format("offset {:#x}", off)));
            CHECK_THAT(
                m, Catch::Matchers::ContainsSubstring(what == "zero page" ? "(zero)" : "(pattern"));
            // The guest's own write then overwrites the page: the host finds no more.
            CHECK(r.verification.mismatches == 1);
        }
    }
}

TEST_CASE("guest-fault: same seed, same operations; a time budget stops it", "[guest-fault]") {
    auto p = guest_profile("batch_pages = 8", 1, 2, "4MiB");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs, 1.0);
    INFO(summary(o.result));
    REQUIRE(o.result.outcome == report::Outcome::pass);
    CHECK(o.wall_s < 3.0);
    CHECK(o.result.counters.at("guest_rounds") > 2);
    CHECK(obs.released == 1);
    CHECK(obs.violations.empty());
}

namespace {

// A guest that never exits on its own: `jmp .`
const uint8_t kSpin[] = {0xeb, 0xfe};

struct SpinVm {
    kvm::Kvm k = kvm::Kvm::open();
    guest::GuestVm gvm{k, 0, 1};
    kvm::Vcpu* v = nullptr;
    SpinVm() {
        uint64_t entry = gvm.load({kSpin, kSpin + sizeof kSpin});
        v = &gvm.add_vcpu(0, k);
        guest::GuestCall c;
        c.rip = entry;
        c.rsp = gvm.stack_top(0);
        guest::enter(*v, c);
    }
};

} // namespace

TEST_CASE("watchdog: a stuck KVM_RUN is a timeout failure with registers",
          "[guest-fault][watchdog]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    SpinVm s;
    guest::RunResult rr;
    report::OpStats stats;
    uint64_t t0 = now_ns();
    {
        guest::VcpuThreads th(0.3, 0.1);
        th.spawn(
            [&](guest::RunSlot& slot) { rr = guest::run_vcpu(*s.v, slot, stats, nullptr, 0.3); });
        th.supervise([] { return false; });
    }
    double dt = double(now_ns() - t0) / 1e9;
    INFO(rr.failure);
    CHECK(rr.kind == guest::RunResult::failed);
    CHECK_THAT(rr.failure, Catch::Matchers::ContainsSubstring("did not return within"));
    CHECK_THAT(rr.failure, Catch::Matchers::ContainsSubstring("rip=0x0"));
    CHECK(dt < 2.0);
}

TEST_CASE("watchdog: a stop request kicks a vCPU out of KVM_RUN", "[guest-fault][watchdog]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    SpinVm s;
    guest::RunResult rr;
    report::OpStats stats;
    uint64_t t0 = now_ns();
    {
        guest::VcpuThreads th(60, 0.05);
        th.spawn(
            [&](guest::RunSlot& slot) { rr = guest::run_vcpu(*s.v, slot, stats, nullptr, 60); });
        th.supervise([&] { return now_ns() - t0 > 200'000'000; });
    }
    double dt = double(now_ns() - t0) / 1e9;
    CHECK(rr.kind == guest::RunResult::stopped);
    CHECK(dt < 2.0);
    CHECK(stats.errors.count("EINTR") == 1);
}

TEST_CASE("watchdog: the destructor stops threads still in KVM_RUN", "[guest-fault][watchdog]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    SpinVm s;
    guest::RunResult rr;
    report::OpStats stats;
    uint64_t t0 = now_ns();
    {
        guest::VcpuThreads th(60, 60);
        th.spawn(
            [&](guest::RunSlot& slot) { rr = guest::run_vcpu(*s.v, slot, stats, nullptr, 60); });
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        // No supervise(): as on an exception path.
    }
    CHECK(rr.kind == guest::RunResult::stopped);
    CHECK(double(now_ns() - t0) / 1e9 < 2.0);
}

TEST_CASE("guest pattern: host and guest compute the same words", "[guest-fault]") {
    std::vector<uint8_t> page(4096);
    guest::fill_page(page.data(), 0x12345678);
    CHECK(guest::first_bad_word(page.data(), true, 0x12345678) == -1);
    CHECK(guest::first_bad_word(page.data(), false, 0) == 0);
    page[4095] ^= 0x80;
    CHECK(guest::first_bad_word(page.data(), true, 0x12345678) == 1023);
    CHECK(guest::page_key(1, 2, 3, 4, 5) == guest::page_key(1, 2, 3, 4, 5));
    CHECK(guest::page_key(1, 2, 3, 4, 5) != guest::page_key(1, 2, 3, 4, 6));
}

TEST_CASE("guest-fault: after a punch returned the guest reads zero, and a non-zero word fails",
          "[guest-fault]") {
    // One vCPU, 256 pages, 4 rounds of 16 pages, 4 punched per round.
    auto p = guest_profile("ops = 64\nbatch_pages = 16\npunch_pages = 4", 1, 1);
    if (auto why = skip_reason(p))
        SKIP(*why);
    {
        RecordingObserver obs;
        uint64_t resident_after = 0;
        guest::GuestFaultHooks h;
        h.after_punch = [&](unsigned, unsigned, uint64_t, uint8_t* region,
                            const std::vector<uint64_t>& punched) {
            // The punch took them out of the page cache (mincore faults nothing in).
            resident_after +=
                resident_pages(region + punched.front() * 4096, punched.size() * 4096);
        };
        HookScope hooks(h);
        auto o = run(p, obs);
        const auto& r = o.result;
        INFO(summary(r));
        REQUIRE(r.outcome == report::Outcome::pass);
        CHECK(resident_after == 0);
        CHECK(r.counters.at("pages_punched") == 16);
        CHECK(r.counters.at("pages_checked_after_punch") == 16);
        CHECK(op_count(r, "punch_hole") == 4);
        // Each punched page left once and came back on the guest's read.
        CHECK(r.expect.pages_added.value() == 64 + 16);
        CHECK(r.expect.pages_removed.value() == 64 + 16);
        CHECK(obs.violations.empty());
        CHECK(obs.live.empty());
    }
    // A word the guest must not see: written through the host mapping after
    // the punch (a new page), read by the guest as a stale value would be.
    RecordingObserver obs;
    guest::GuestFaultHooks h;
    h.after_punch = [&](unsigned, unsigned, uint64_t round, uint8_t* region,
                        const std::vector<uint64_t>& punched) {
        if (round == 1) {
            uint32_t bad = 0xdeadbeef;
            std::memcpy(region + punched.front() * 4096, &bad, 4);
        }
    };
    HookScope hooks(h);
    auto o = run(p, obs);
    const auto& r = o.result;
    INFO(summary(r));
    CHECK(r.outcome == report::Outcome::fail);
    REQUIRE(r.verification.mismatches >= 1);
    CHECK_THAT(r.verification.first_mismatches.front(),
               Catch::Matchers::ContainsSubstring(
                   "round 1: after punch hole returned the guest read 0xdeadbeef"));
    CHECK_THAT(r.verification.first_mismatches.front(),
               Catch::Matchers::ContainsSubstring("expected zero"));
}
