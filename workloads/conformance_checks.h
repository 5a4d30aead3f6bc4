// The guest_memfd ABI checks behind the `conformance` workload.
//
// Each check is one report::Check with a stable dotted name, what was
// expected (with where the expectation comes from) and what was observed.
// A failed check is a finding about the kernel; a gms::Error thrown inside a
// check makes that check `error`. Every check closes what it opened.
//
// Expectations come from upstream virt/kvm/guest_memfd.c, virt/kvm/kvm_main.c,
// the KVM selftests (guest_memfd_test.c, set_memory_region_test.c,
// private_mem_kvm_exits_test.c, pre_fault_memory_test.c), the in-flight
// series' own selftests and Documentation/virt/kvm/api.rst; docs/CONFORMANCE.md
// maps every upstream assertion to its check. An expectation that depends on
// the kernel version or on a patch series starts with kVersionDependentTag.
//
// Names: "<vm type>.<group>.<check>" for checks made once per VM type
// ("sw_protected.memslot.overlapping_file_range"), "<vm type>.<flag
// set>.<group>.<check>" for the file checks the selftest repeats per flag set
// ("default.mmap-init_shared.mmap.fault_overflow"), "kvm.<check>" for the rest.
#pragma once

#include "core/caps.h"
#include "kvm/observed_gmem.h"
#include "reports/model.h"

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gms::workloads::conformance {

inline constexpr std::string_view kVersionDependentTag = "[version-dependent] ";

// The workload's parameters (declared and validated in conformance.cpp).
inline constexpr const char* kAllSupported = "supported"; // vm_types: every KVM_CAP_VM_TYPES bit
inline constexpr const char* kAdvertised = "advertised";  // flag_sets: see expand_flag_sets()

struct Options {
    // VM type names (kvm::vm_type_from_name) or kAllSupported.
    std::vector<std::string> vm_types{kAllSupported};
    // Flag sets ("none", "mmap+init_shared", kvm::flag_set_from_name) or kAdvertised.
    std::vector<std::string> flag_sets{kAdvertised};
    kvm::FlagBits bits;                    // where the patch-series flags (WRITE) live
    const Caps* caps = nullptr;            // kernel release and series fingerprint (may be null)
    kvm::GmemObserver* observer = nullptr; // told about every guest_memfd created/released
    std::function<bool()> should_stop;     // polled between groups of checks
};

// Runs every check on VMs of each type in opt.vm_types. Throws only if no VM
// of a type named explicitly can be created at all (EnvError); everything else
// is reported per check (a type the kernel does not list is a skipped check).
std::vector<report::Check> run_checks(const kvm::Kvm& kvm, const Options& opt);

// The flag sets the file checks run with on a VM type that advertises
// `supported`: each of `specs` (kAdvertised: 0, MMAP, MMAP|INIT_SHARED as
// upstream's guest_memfd_test.c, then each of those combined with every
// subset of the advertised series flags, NO_DIRECT_MAP, WRITE and HUGETLB, as
// the series' selftests do), deduplicated, in order. Pure.
std::vector<uint64_t> expand_flag_sets(const std::vector<std::string>& specs, uint64_t supported,
                                       const kvm::FlagBits& bits);

// True if the check's expectation depends on the kernel version or a patch series.
inline bool is_version_dependent(const report::Check& c) {
    return std::string_view(c.expected).substr(0, kVersionDependentTag.size()) ==
           kVersionDependentTag;
}

// fail if any check failed, else error if any errored, else pass (skips allowed).
report::Outcome overall_outcome(const std::vector<report::Check>& checks);

} // namespace gms::workloads::conformance
