// host-fault against the real /dev/kvm, and the verification helpers it
// relies on (shown to catch real corruption, not only to pass).
#include "host_test_util.h"
#include "workloads/host_common.h"

#include <catch2/catch_test_macros.hpp>
#include <sys/mman.h>
#include <unistd.h>

using namespace gms;
using namespace host_test;
namespace host = gms::workloads::host;

namespace {

profile::Profile fault_profile(const std::string& params, unsigned vm_count = 1,
                               uint64_t seed = 1) {
    return make_profile("kind = \"host-fault\"\n" + params, "4MiB", vm_count, seed);
}

} // namespace

TEST_CASE("host-fault: every pattern verifies each page and predicts the page cache",
          "[host-fault]") {
    for (std::string pattern : {"sequential", "random", "stride"}) {
        DYNAMIC_SECTION("pattern " << pattern) {
            auto p = fault_profile(
                fmt::format("threads = 2\nops = 4000\npattern = \"{}\"\nstride = 7", pattern));
            if (auto why = skip_reason(p))
                SKIP(*why);
            RecordingObserver obs;
            auto o = run(p, obs);
            const auto& r = o.result;
            INFO(summary(r));
            REQUIRE(r.outcome == report::Outcome::pass);
            CHECK(r.name == "host-fault");
            CHECK(op_count(r, "fault_read") + op_count(r, "fault_write") == 4000);
            CHECK(op_count(r, "fault_read") > 0);
            CHECK(op_count(r, "fault_write") > 0);
            // Every touch checks its page, plus the final read-back of every touched page.
            CHECK(r.verification.pages_checked >= 4000 + r.expect.pages_added.value());
            CHECK(r.verification.mismatches == 0);
            CHECK(r.expect.gmem_files.value() == 1);
            const uint64_t pages = (4u << 20) / 4096;
            if (pattern != "random") {
                // 2000 touches per thread over 512 pages: every page gets touched.
                CHECK(r.expect.pages_added.value() == pages);
                CHECK(op_count(r, "zap") > 0);
            } else {
                CHECK(r.expect.pages_added.value() <= pages);
                CHECK(r.expect.pages_added.value() > pages / 2);
            }
            // Nothing is punched: every page added is still there at release.
            CHECK(r.expect.pages_removed.value() == r.expect.pages_added.value());
            CHECK(o.progress_ops == 4000);
            CHECK(obs.created == 1);
            CHECK(obs.released == 1);
            CHECK(obs.live.empty());
            CHECK(obs.violations.empty());
        }
    }
}

TEST_CASE("host-fault: the same seed gives the same run, another seed another", "[host-fault]") {
    auto params = "threads = 2\nops = 3000\npattern = \"random\"\nzap = false";
    auto a = fault_profile(params, 1, 42), b = fault_profile(params, 1, 42),
         c = fault_profile(params, 1, 43);
    if (auto why = skip_reason(a))
        SKIP(*why);
    RecordingObserver oa, ob, oc;
    auto ra = run(a, oa).result, rb = run(b, ob).result, rc = run(c, oc).result;
    INFO(summary(ra) << summary(rc));
    REQUIRE(ra.outcome == report::Outcome::pass);
    REQUIRE(rb.outcome == report::Outcome::pass);
    REQUIRE(rc.outcome == report::Outcome::pass);
    CHECK(op_count(ra, "fault_read") == op_count(rb, "fault_read"));
    CHECK(ra.expect.pages_added.value() == rb.expect.pages_added.value());
    CHECK((op_count(ra, "fault_read") != op_count(rc, "fault_read") ||
           ra.expect.pages_added.value() != rc.expect.pages_added.value()));
    CHECK(op_count(ra, "zap") == 0);
}

TEST_CASE("host-fault: several VMs, more threads than files", "[host-fault]") {
    auto p = fault_profile("threads = 3\nops = 3000\npattern = \"sequential\"", 2);
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto r = run(p, obs).result;
    INFO(summary(r));
    REQUIRE(r.outcome == report::Outcome::pass);
    CHECK(r.expect.gmem_files.value() == 2);
    CHECK(obs.created == 2);
    CHECK(obs.released == 2);
    CHECK(obs.violations.empty());
    // File 0 (1024 pages) is split between threads 0 and 2 (512 pages each),
    // file 1 belongs to thread 1: 1000 sequential touches each.
    CHECK(r.expect.pages_added.value() == 512 + 512 + 1000);
}

TEST_CASE("host-fault: stops on its time budget", "[host-fault]") {
    auto p = fault_profile("threads = 2\nops = 0\npattern = \"random\"");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs, 0.5);
    INFO(summary(o.result));
    REQUIRE(o.result.outcome == report::Outcome::pass);
    CHECK(o.wall_s < 5);
    CHECK(o.progress_ops > 0);
    CHECK(obs.released == 1);
}

TEST_CASE("host-fault: a stop request (SIGINT) ends the run early", "[host-fault]") {
    auto p = fault_profile("threads = 2\nops = 0");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    RunControl rc;
    rc.request_stop(SIGINT);
    auto o = run(p, obs, 0, 0, &rc);
    INFO(summary(o.result));
    CHECK(o.result.outcome == report::Outcome::pass);
    CHECK(o.wall_s < 5);
    CHECK(obs.released == 1);
}

TEST_CASE("host-fault: skips with the reason when the flags are missing", "[host-fault]") {
    auto p = fault_profile("threads = 1");
    Caps c;
    c.kvm_accessible = true;
    c.guest_memfd = true;
    c.guest_memfd_flags = 0;
    auto why = workloads::find("host-fault")->skip_reason(c, p, p.workloads[0]);
    REQUIRE(why);
    CHECK(why->find("MMAP|INIT_SHARED") != std::string::npos);
    CHECK(why->find("KVM_CAP_GUEST_MEMFD_FLAGS=0x0") != std::string::npos);
    c.guest_memfd_flags = host::kMmapFlags;
    CHECK_FALSE(workloads::find("host-fault")->skip_reason(c, p, p.workloads[0]));
    c.guest_memfd = false;
    CHECK(workloads::find("host-fault")->skip_reason(c, p, p.workloads[0]));
}

// The checks read the real data: corruption and a punch are both caught, at
// the right offset, on a real guest_memfd mapping.
TEST_CASE("host-fault verification catches corrupted and vanished data", "[host-fault]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    if (!caps().has_gmem_flag(host::kMmapFlags))
        SKIP("guest_memfd MMAP|INIT_SHARED not supported by this kernel");
    auto vm = kvm::Vm::create(kvm::Kvm::open());
    auto g = vm.create_guest_memfd(4 * host::kPage, host::kMmapFlags);
    auto m = g.map_shared();
    uint8_t* page = m.data() + host::kPage;
    const uint64_t seed = 5, off = host::kPage;

    CHECK_FALSE(host::check_page(page, seed, 0, off, 0)); // first touch: zero
    host::fill_page(page, seed, 0, off, 3);
    CHECK_FALSE(host::check_page(page, seed, 0, off, 3));
    // The wrong generation, file or offset does not pass.
    CHECK(host::check_page(page, seed, 0, off, 4));
    CHECK(host::check_page(page, seed, 1, off, 3));
    CHECK(host::check_page(page, seed, 0, 2 * off, 3));

    page[2049] ^= 0x40; // one flipped bit in the middle of the page
    auto bad = host::check_page(page, seed, 0, off, 3);
    REQUIRE(bad);
    CHECK(bad->byte == 2048);
    CHECK(bad->expected == host::pattern_word(seed, 0, off, 256, 3));
    CHECK(bad->got == (bad->expected ^ (0x40ull << 8)));
    CHECK(host::describe(0, off, *bad, "test").find("offset 0x1800") != std::string::npos);
    page[2049] ^= 0x40;

    g.punch_hole(off, host::kPage);
    bad = host::check_page(page, seed, 0, off, 3);
    REQUIRE(bad); // the data is gone: the page reads zero now
    CHECK(bad->byte == 0);
    CHECK(bad->got == 0);
    CHECK_FALSE(host::check_page(page, seed, 0, off, 0));
    CHECK_FALSE(host::check_page_zero_or(page, seed, 0, off, 3));
    page[8] = 1;
    CHECK(host::check_page(page, seed, 0, off, 0)->byte == 8);
    CHECK(host::check_page_zero_or(page, seed, 0, off, 3));
}

TEST_CASE("SIGBUS guard turns a bad access into a result", "[host-fault]") {
    workloads::SigbusGuard sigbus;
    // A shared mapping past the end of an empty memfd raises SIGBUS on any access.
    int fd = memfd_create("gms-sigbus", MFD_CLOEXEC);
    REQUIRE(fd >= 0);
    void* p = mmap(nullptr, host::kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(p != MAP_FAILED);
    void* addr = nullptr;
    bool ok = workloads::sigbus_guarded([&] { *static_cast<volatile uint8_t*>(p) = 1; }, &addr);
    CHECK_FALSE(ok);
    CHECK(addr == p);
    // The guard is reusable and a good access passes.
    REQUIRE(ftruncate(fd, host::kPage) == 0);
    ok = workloads::sigbus_guarded([&] { *static_cast<volatile uint8_t*>(p) = 1; }, &addr);
    CHECK(ok);
    munmap(p, host::kPage);
    close(fd);
}
