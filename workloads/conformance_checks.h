// The guest_memfd ABI checks behind the `conformance` workload.
//
// Each check is one report::Check with a stable dotted name, what was
// expected (with where the expectation comes from) and what was observed.
// A failed check is a finding about the kernel; a gms::Error thrown inside a
// check makes that check `error`. Every check closes what it opened.
//
// Expectations come from upstream virt/kvm/guest_memfd.c, virt/kvm/kvm_main.c,
// tools/testing/selftests/kvm/guest_memfd_test.c and
// Documentation/virt/kvm/api.rst. An expectation that depends on the kernel
// version or on a patch series starts with kVersionDependentTag.
#pragma once

#include "kvm/observed_gmem.h"
#include "reports/model.h"

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gms::workloads::conformance {

inline constexpr std::string_view kVersionDependentTag = "[version-dependent] ";

struct Options {
    unsigned long vm_type = 0;
    kvm::FlagBits bits;                    // where the patch-series flags (WRITE) live
    kvm::GmemObserver* observer = nullptr; // told about every guest_memfd created/released
    std::function<bool()> should_stop;     // polled between groups of checks
};

// Runs every check on VMs of opt.vm_type. Throws only if no VM can be created
// at all (EnvError); everything else is reported per check.
std::vector<report::Check> run_checks(const kvm::Kvm& kvm, const Options& opt);

// True if the check's expectation depends on the kernel version or a patch series.
inline bool is_version_dependent(const report::Check& c) {
    return std::string_view(c.expected).substr(0, kVersionDependentTag.size()) ==
           kVersionDependentTag;
}

// fail if any check failed, else error if any errored, else pass (skips allowed).
report::Outcome overall_outcome(const std::vector<report::Check>& checks);

} // namespace gms::workloads::conformance
