// The conformance workload against the real /dev/kvm.
//
// Policy for kernel findings: a check that fails is a finding about the
// kernel. It fails this test, except when the check's expectation is marked
// kernel-version dependent (conformance::is_version_dependent: it comes from
// a patch series or differs between releases); such findings are listed in
// the output as warnings. A check that errors (the tool could not do it)
// always fails the test.
#include "core/caps.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/run_control.h"
#include "kvm/kvm.h"
#include "workloads/conformance_checks.h"
#include "workloads/sigbus.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fmt/format.h>
#include <map>
#include <set>
#include <sys/mman.h>
#include <thread>

using namespace gms;
namespace conf = gms::workloads::conformance;

namespace {

std::optional<std::string> kvm_missing() {
    kvm::Kvm k;
    if (int e = kvm::Kvm::try_open(k))
        return std::string("/dev/kvm not usable: ") + std::strerror(e);
    if (k.check_extension(uapi::kCapGuestMemfd) <= 0)
        return std::string("kernel has no guest_memfd (KVM_CAP_GUEST_MEMFD=0)");
    return std::nullopt;
}

// Records what the workload reports, to check that every file it creates is released.
struct RecordingObserver : kvm::GmemObserver {
    std::map<std::pair<uint64_t, uint64_t>, int> live;
    int created = 0, released = 0;
    void on_created(const kvm::GuestMemfd& g) override {
        ++created;
        ++live[{g.inode().dev, g.inode().ino}];
    }
    void on_released(kvm::InodeId id) override {
        ++released;
        if (--live[{id.dev, id.ino}] == 0)
            live.erase({id.dev, id.ino});
    }
};

std::string describe(const report::Check& c) {
    return fmt::format("{} [{}]\n    expected: {}\n    observed: {}{}", c.name,
                       report::to_string(c.outcome), c.expected, c.observed,
                       c.reason.empty() ? "" : "\n    reason: " + c.reason);
}

} // namespace

TEST_CASE("conformance workload on this kernel: every check judged, none errors", "[conformance]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    profile::Profile prof = profile::load_profile("conformance", {}, workloads::schemas());
    REQUIRE(prof.workloads.size() == 1);
    const profile::WorkloadSpec& spec = prof.workloads[0];
    REQUIRE(spec.kind == "conformance");
    const workloads::WorkloadInfo* info = workloads::find("conformance");
    REQUIRE(info != nullptr);
    Caps caps = detect_caps(prof.abi_overrides);
    profile::apply_series_abi(prof, caps.series.abi);
    if (auto why = info->skip_reason(caps, prof, spec))
        SKIP("conformance skips here: " + *why);

    kvm::Kvm k = kvm::Kvm::open();
    RunControl control;
    RecordingObserver observer;
    workloads::Progress progress;
    workloads::Context ctx{k, caps, prof, spec, prof.seed, control, observer, progress, 30.0};
    ctx.started_ns = now_ns();
    report::WorkloadResult res = info->run(ctx);

    REQUIRE(res.name == "conformance");
    REQUIRE_FALSE(res.checks.empty());
    CHECK(res.outcome == conf::overall_outcome(res.checks));
    CHECK(res.counters.at("checks") == res.checks.size());

    std::set<std::string> names;
    std::vector<const report::Check*> findings, tolerated;
    size_t n[4] = {};
    for (const auto& c : res.checks) {
        INFO(describe(c));
        ++n[static_cast<int>(c.outcome)];
        CHECK(names.insert(c.name).second); // names are unique
        CHECK(c.name.find('.') != std::string::npos);
        CHECK(c.name.find(' ') == std::string::npos);
        CHECK_FALSE(c.expected.empty());
        CHECK_FALSE(c.observed.empty());
        CHECK(c.expected != "(not stated)");
        CHECK(c.outcome != report::Outcome::error);
        if (c.outcome == report::Outcome::skip)
            CHECK_FALSE(c.reason.empty());
        if (c.outcome == report::Outcome::fail)
            (conf::is_version_dependent(c) ? tolerated : findings).push_back(&c);
    }
    std::printf("conformance on %s: %zu checks, %zu pass, %zu fail, %zu skip, %zu error\n",
                caps.kernel_release.c_str(), res.checks.size(), n[0], n[1], n[2], n[3]);
    for (const auto* c : tolerated)
        WARN("kernel finding (expectation is kernel-version dependent, tolerated): " +
             describe(*c));
    for (const auto* c : findings)
        std::printf("kernel finding: %s\n", describe(*c).c_str());
    // A finding whose expectation does not depend on the kernel version fails the test.
    CHECK(findings.empty());

    // The checks this kernel has the features for actually ran.
    auto outcome_of = [&](const std::string& name) {
        for (const auto& c : res.checks)
            if (c.name == name)
                return c.outcome;
        FAIL("no check named " << name);
        return report::Outcome::error;
    };
    CHECK(outcome_of("default.memslot.bind_valid") != report::Outcome::skip);
    CHECK(outcome_of("default.flags.reject.unadvertised_bits") != report::Outcome::skip);
    CHECK(outcome_of("default.none.fallocate.sequence") != report::Outcome::skip);
    if (caps.has_gmem_flag(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared)) {
        // The file checks ran once per advertised flag set, as upstream's.
        CHECK(outcome_of("default.mmap-init_shared.mmap.fault_overflow") != report::Outcome::skip);
        CHECK(outcome_of("default.mmap-init_shared.mmap.supported") != report::Outcome::skip);
        CHECK(outcome_of("default.mmap.mmap.fault_private") != report::Outcome::skip);
        CHECK(outcome_of("default.none.mmap.refused") != report::Outcome::skip);
        CHECK(outcome_of("kvm.default_vm.guest_memfd_flags") == report::Outcome::pass);
    }
    if (!(caps.memory_attributes & uapi::kMemoryAttributePrivate))
        CHECK(outcome_of("default.attributes.misaligned") == report::Outcome::skip);
    if (caps.vm_type_supported(uapi::kX86SwProtectedVm)) {
        // KVM_X86_SW_PROTECTED_VM: private accesses exit to userspace for real.
        CHECK(outcome_of("sw_protected.exits.private_access_not_private_slot") ==
              report::Outcome::pass);
        CHECK(outcome_of("sw_protected.exits.private_access_slot_deleted") ==
              report::Outcome::pass);
    }

    // Every guest_memfd the checks created was reported released.
    CHECK(observer.created > 0);
    CHECK(observer.created == observer.released);
    CHECK(observer.live.empty());
}

TEST_CASE("conformance: a WRITE bit the kernel does not implement fails, it does not pass",
          "[conformance]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    kvm::Kvm k = kvm::Kvm::open();
    kvm::Vm vm = kvm::Vm::create(k);
    long sup = vm.check_extension(uapi::kCapGuestMemfdFlags);
    const long upstream = long(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared);
    if (sup != upstream)
        SKIP(fmt::format("needs KVM_CAP_GUEST_MEMFD_FLAGS exactly mmap|init_shared (no write() "
                         "support), have {:#x}",
                         sup));
    // Pretend the WRITE flag is bit 0: the kernel advertises it (as MMAP), but
    // guest_memfd write() does not exist upstream, so write() validation on
    // every flag set with that bit must fail, and without it the refusal is
    // judged as on a write() series kernel (ENODEV), which fails too.
    conf::Options opt;
    opt.vm_types = {"default"};
    opt.bits.write = 0;
    auto checks = conf::run_checks(k, opt);
    const report::Check* validation = nullptr;
    const report::Check* write_refused = nullptr;
    for (const auto& c : checks) {
        if (c.name == "default.mmap.io.write_validation")
            validation = &c;
        if (c.name == "default.none.io.write_refused")
            write_refused = &c;
    }
    REQUIRE(validation != nullptr);
    INFO(describe(*validation));
    CHECK(validation->outcome == report::Outcome::fail);
    CHECK(conf::is_version_dependent(*validation));
    CHECK(validation->observed.find("pwrite") != std::string::npos);
    REQUIRE(write_refused != nullptr);
    CHECK(conf::is_version_dependent(*write_refused));
    CHECK(conf::overall_outcome(checks) == report::Outcome::fail);
}

TEST_CASE("conformance: an unusable VM type is an environment error, not a crash",
          "[conformance]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    kvm::Kvm k = kvm::Kvm::open();
    conf::Options opt;
    opt.vm_types = {"63"}; // no architecture defines it
    CHECK_THROWS_AS(conf::run_checks(k, opt), EnvError);
}

TEST_CASE("SIGBUS guard: catches guarded faults, per thread, restores the handler",
          "[conformance]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    kvm::Kvm k = kvm::Kvm::open();
    kvm::Vm vm = kvm::Vm::create(k);
    if ((vm.check_extension(uapi::kCapGuestMemfdFlags) & long(uapi::kGuestMemfdFlagMmap)) == 0)
        SKIP("guest_memfd MMAP not supported: no private mapping to fault on");
    // Without INIT_SHARED the pages are private: every access raises SIGBUS.
    kvm::GuestMemfd g = vm.create_guest_memfd(4 * 4096, uapi::kGuestMemfdFlagMmap);
    kvm::Mapping priv = g.map_shared();
    kvm::Mapping anon = kvm::Mapping::anonymous(4096);

    struct sigaction before {};
    REQUIRE(::sigaction(SIGBUS, nullptr, &before) == 0);
    {
        workloads::SigbusGuard guard;
        CHECK(guard.read_faults(priv.data()));
        CHECK(guard.write_faults(priv.data() + 4096, 1));
        uint8_t v = 0xff;
        CHECK_FALSE(guard.read_faults(anon.data(), &v));
        CHECK(v == 0);
        CHECK_FALSE(guard.write_faults(anon.data(), 7));
        CHECK(anon.data()[0] == 7);
        {
            workloads::SigbusGuard nested; // reference counted, handler stays ours
            CHECK(nested.read_faults(priv.data() + 2 * 4096));
        }
        CHECK(guard.read_faults(priv.data() + 3 * 4096));
        // A second thread faulting at the same time has its own jump buffer.
        bool other = false;
        std::thread t([&] {
            workloads::SigbusGuard g2;
            other = g2.read_faults(priv.data());
        });
        t.join();
        CHECK(other);
        // SIGBUS stays unblocked after a caught fault (the mask is restored).
        sigset_t mask;
        REQUIRE(::sigprocmask(SIG_BLOCK, nullptr, &mask) == 0);
        CHECK_FALSE(sigismember(&mask, SIGBUS));
    }
    struct sigaction after {};
    REQUIRE(::sigaction(SIGBUS, nullptr, &after) == 0);
    CHECK(after.sa_handler == before.sa_handler);
    // glibc adds SA_RESTORER to any handler it installs, SIG_DFL included.
    constexpr int kSaRestorer = 0x04000000;
    CHECK((after.sa_flags & ~kSaRestorer) == (before.sa_flags & ~kSaRestorer));
}
