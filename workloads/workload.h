// The workload interface and the one registry of workloads. Each entry says
// what it needs from the kernel and why it skips.
#pragma once

#include "core/caps.h"
#include "core/profile.h"
#include "core/run_control.h"
#include "kvm/kvm.h"
#include "kvm/observed_gmem.h"
#include "reports/model.h"

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace gms::workloads {

struct Progress {
    std::atomic<uint64_t> ops{0};
    std::atomic<uint64_t> bytes{0};
};

struct Context {
    const kvm::Kvm& kvm;
    const Caps& caps;
    const profile::Profile& profile;
    const profile::WorkloadSpec& spec;
    uint64_t seed;
    RunControl& control;
    kvm::GmemObserver& observer; // every guest_memfd goes through kvm::ObservedGmem
    Progress& progress;
    double time_budget_s; // this workload's share of the run

    // True once the run must stop or this workload's budget is spent.
    bool should_stop() const;
    uint64_t started_ns = 0;
};

struct WorkloadInfo {
    std::string name;
    std::string description;
    std::string needs; // what it needs from the kernel, in words (for docs and `profiles`)
    std::vector<profile::ParamSpec> params; // beyond the common ones
    // nullopt if it can run here, else the reason it skips.
    std::function<std::optional<std::string>(const Caps&, const profile::Profile&,
                                             const profile::WorkloadSpec&)>
        skip_reason;
    // Upper bound of memory it will allocate, to refuse runs beyond MemAvailable.
    std::function<uint64_t(const profile::Profile&, const profile::WorkloadSpec&)> memory_estimate;
    std::function<report::WorkloadResult(Context&)> run;
};

// ---- skip reasons (the building blocks of WorkloadInfo::skip_reason) ----------

// Why no guest_memfd can be created here at all (no usable /dev/kvm, no
// KVM_CAP_GUEST_MEMFD), or nullopt.
std::optional<std::string> kvm_skip_reason(const Caps& caps);
// kvm_skip_reason(), then why a guest_memfd with `flags` cannot be created on
// a VM of the profile's type (VM type, flags this kernel lacks), or nullopt.
std::optional<std::string> gmem_skip_reason(const Caps& caps, const profile::Profile& p,
                                            uint64_t flags);
// "MMAP|INIT_SHARED" for messages.
std::string flag_names(uint64_t flags, const kvm::FlagBits& bits);

// Parameters every workload accepts: label, ops, duration, threads.
const std::vector<profile::ParamSpec>& common_params();

const std::vector<WorkloadInfo>& registry();
const WorkloadInfo* find(const std::string& name);
// Each kind's parameters (common_params(), then its own): what profiles
// are checked against when they load.
profile::WorkloadSchemas schemas();

// Registry entries, one per workload source file.
WorkloadInfo host_fault_workload();
WorkloadInfo guest_fault_workload();
WorkloadInfo punch_hole_workload();
WorkloadInfo populate_workload();
WorkloadInfo convert_workload();
WorkloadInfo lifecycle_workload();
WorkloadInfo range_scaling_workload();
WorkloadInfo conformance_workload();
WorkloadInfo fault_inject_workload();
WorkloadInfo pin_convert_workload();

} // namespace gms::workloads
