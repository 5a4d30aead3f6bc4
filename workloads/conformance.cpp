// The `conformance` workload: checks the documented guest_memfd ABI, one
// report::Check per rule (see conformance_checks.h for the checks).
#include "kvm/flag_names.h"
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

// Each element a VM type name or "supported"; checked when the profile loads.
profile::ParamRule vm_types_rule() {
    return {
        [](const profile::ParamValue& v, const profile::ParamTable&) -> std::optional<std::string> {
            const auto& list = std::get<std::vector<std::string>>(v);
            if (list.empty())
                return "is empty (name at least one VM type, or \"supported\")";
            for (const auto& s : list)
                if (s != conformance::kAllSupported && !kvm::vm_type_from_name(s))
                    return fmt::format("has unknown VM type '{}' (supported, default, "
                                       "sw_protected, sev, sev_es, snp, tdx, or 0..63)",
                                       s);
            return std::nullopt;
        },
        {}};
}

// Each element "advertised" or flag names joined by '+'; checked when the
// profile loads (names only: bits are the kernel's, resolved at run time).
profile::ParamRule flag_sets_rule() {
    return {
        [](const profile::ParamValue& v, const profile::ParamTable&) -> std::optional<std::string> {
            const auto& list = std::get<std::vector<std::string>>(v);
            if (list.empty())
                return "is empty (name at least one flag set, or \"advertised\")";
            for (const auto& s : list)
                if (s != conformance::kAdvertised && !kvm::flag_set_from_name(s, kvm::FlagBits{}))
                    return fmt::format("has unknown flag set '{}' (\"advertised\", \"none\", "
                                       "or names joined by '+': mmap, init_shared, "
                                       "no_direct_map, write, hugetlb, bit:N)",
                                       s);
            return std::nullopt;
        },
        {}};
}

} // namespace

WorkloadInfo conformance_workload() {
    WorkloadInfo w;
    w.name = "conformance";
    w.description =
        "Checks the guest_memfd ABI as upstream's selftests assert it (guest_memfd_test.c, the "
        "guest_memfd part of set_memory_region_test.c, private_mem_kvm_exits_test.c, "
        "pre_fault_memory_test.c) and the in-flight series' own selftests: creation flags and "
        "sizes, mmap rules and SIGBUS, fallocate, read/write (write() population), fstat, "
        "memslot binding, memory attributes, KVM_EXIT_MEMORY_FAULT, KVM_PRE_FAULT_MEMORY; the "
        "file checks for every VM type and flag set, as upstream repeats them. Each rule is one "
        "check with expected vs observed; a failed check is a finding about the kernel "
        "(docs/CONFORMANCE.md maps every upstream assertion to its check).";
    w.needs = "/dev/kvm and KVM_CAP_GUEST_MEMFD. Checks of GUEST_MEMFD_FLAG_MMAP/INIT_SHARED "
              "(6.18), private memory (KVM_X86_SW_PROTECTED_VM), pre-fault (6.11, TDP) and the "
              "patch-series flags skip one by one, with the reason, when the kernel lacks them.";
    w.params = {
        {"vm_types",
         profile::ParamType::string_list,
         std::vector<std::string>{conformance::kAllSupported},
         "VM types to check: \"supported\" (every type KVM_CAP_VM_TYPES lists, as upstream's "
         "guest_memfd_test.c), or names: default, sw_protected, sev, sev_es, snp, tdx, 0..63",
         0,
         1e18,
         {},
         {vm_types_rule()}},
        {"flag_sets",
         profile::ParamType::string_list,
         std::vector<std::string>{conformance::kAdvertised},
         "guest_memfd flag sets the file checks run with: \"advertised\" (none, mmap, "
         "mmap+init_shared as far as advertised, each with every subset of the advertised "
         "series flags), or sets of flag names joined by '+' (\"none\", \"mmap+no_direct_map\")",
         0,
         1e18,
         {},
         {flag_sets_rule()}},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile&, const profile::WorkloadSpec&) {
        // VM type by VM type, flag by flag, the checks skip on their own.
        return kvm_skip_reason(caps);
    };
    // At most two files of a few pages alive at once, a 16-page memslot fixture
    // with a 64-page host range, a 2 MiB file for MADV_COLLAPSE, 2 MiB + a page
    // for pre-faulting: under 16 MiB.
    w.memory_estimate = [](const profile::Profile&, const profile::WorkloadSpec&) {
        return uint64_t(16) << 20;
    };
    w.run = [](Context& ctx) {
        report::WorkloadResult res;
        res.name = "conformance";
        res.label = ctx.spec.label.empty() ? res.name : ctx.spec.label;
        uint64_t t0 = now_ns();

        conformance::Options opt;
        opt.vm_types = ctx.spec.list("vm_types");
        opt.flag_sets = ctx.spec.list("flag_sets");
        opt.bits = ctx.profile.bits;
        opt.caps = &ctx.caps;
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
