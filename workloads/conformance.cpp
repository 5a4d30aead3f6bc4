// The `conformance` workload: checks the documented guest_memfd ABI, one
// report::Check per rule (see conformance_checks.h for the checks).
#include "workloads/conformance_checks.h"
#include "workloads/workload.h"

#include <fmt/format.h>

namespace gms::workloads {

namespace {

// Passes notifications on and counts the guest_memfds the checks create, so
// the page-cache checker knows how many files to expect released.
class CountingObserver : public kvm::GmemObserver {
  public:
    explicit CountingObserver(kvm::GmemObserver& next) : next_(next) {}
    void on_created(const kvm::GuestMemfd& g) override {
        ++created;
        next_.on_created(g);
    }
    void on_released(kvm::InodeId id) override { next_.on_released(id); }
    uint64_t created = 0;

  private:
    kvm::GmemObserver& next_;
};

} // namespace

WorkloadInfo conformance_workload() {
    WorkloadInfo w;
    w.name = "conformance";
    w.description =
        "Checks the documented guest_memfd ABI: creation flags and sizes, mmap rules and "
        "SIGBUS, fallocate modes, read/write refusal, file size, memslot binding validation "
        "(KVM_SET_USER_MEMORY_REGION2) and memory attributes. Each rule is one check with "
        "expected vs observed; a failed check is a finding about the kernel.";
    w.needs = "/dev/kvm and KVM_CAP_GUEST_MEMFD on the profile's VM type. Checks of "
              "GUEST_MEMFD_FLAG_MMAP/INIT_SHARED (6.18), memory attributes and the patch-series "
              "WRITE flag skip one by one, with the reason, when the kernel lacks them.";
    w.skip_reason = [](const Caps& caps, const profile::Profile& prof,
                       const profile::WorkloadSpec&) {
        // Flag by flag, the checks skip on their own.
        return gmem_skip_reason(caps, prof, 0);
    };
    // Files of a few pages, one 16-page memslot fixture with a 64-page anonymous
    // host range, at most two files alive at once: well under 4 MiB.
    w.memory_estimate = [](const profile::Profile&, const profile::WorkloadSpec&) {
        return uint64_t(4) << 20;
    };
    w.run = [](Context& ctx) {
        report::WorkloadResult res;
        res.name = "conformance";
        res.label = ctx.spec.label.empty() ? res.name : ctx.spec.label;
        uint64_t t0 = now_ns();

        conformance::Options opt;
        opt.vm_type = ctx.profile.vm_type;
        opt.bits = ctx.profile.bits;
        CountingObserver files(ctx.observer);
        opt.observer = &files;
        // Only a real stop (signal, run deadline) cuts the checks short: they are
        // a fixed, quick set, and a share of the time budget is not a reason to drop some.
        bool stopped = false;
        opt.should_stop = [&ctx, &stopped] { return stopped = ctx.control.should_stop(); };
        res.checks = conformance::run_checks(ctx.kvm, opt);

        size_t n[4] = {};
        for (const auto& c : res.checks)
            ++n[static_cast<int>(c.outcome)];
        res.outcome = conformance::overall_outcome(res.checks);
        res.reason = fmt::format("{} checks: {} pass, {} fail, {} skip, {} error",
                                 res.checks.size(), n[0], n[1], n[2], n[3]);
        if (stopped)
            res.reason += " (stopped before every group ran)";
        res.expect.gmem_files = files.created;
        res.counters["checks"] = res.checks.size();
        res.counters["checks_failed"] = n[static_cast<int>(report::Outcome::fail)];
        res.counters["checks_skipped"] = n[static_cast<int>(report::Outcome::skip)];
        res.duration_s = static_cast<double>(now_ns() - t0) / 1e9;
        return res;
    };
    return w;
}

} // namespace gms::workloads
