#include "workloads/workload.h"

#include <algorithm>

namespace gms::workloads {

bool Context::should_stop() const {
    if (control.should_stop())
        return true;
    return time_budget_s > 0 && now_ns() - started_ns >= static_cast<uint64_t>(time_budget_s * 1e9);
}

const std::vector<profile::ParamSpec>& common_params() {
    using profile::ParamType;
    static const std::vector<profile::ParamSpec> params = {
        {"label", ParamType::string, std::string(),
         "name of this instance in the report (default: kind)"},
        {"ops", ParamType::integer, int64_t(0), "operations to perform; 0 = until the time budget",
         0, 1e15},
        {"duration", ParamType::duration, 0.0,
         "time budget in seconds; 0 = an equal share of the run's remaining duration", 0,
         86400 * 7},
        {"threads", ParamType::integer, int64_t(1), "worker threads", 1, 256},
    };
    return params;
}

// The one registry. Order is the order `profiles` lists them in.
const std::vector<WorkloadInfo>& registry() {
    static const std::vector<WorkloadInfo> all = {
        host_fault_workload(),  guest_fault_workload(),   punch_hole_workload(),
        populate_workload(),    convert_workload(),       lifecycle_workload(),
        conformance_workload(), range_scaling_workload(), fault_inject_workload(),
        pin_convert_workload(),
    };
    return all;
}

const WorkloadInfo* find(const std::string& name) {
    for (const auto& w : registry())
        if (w.name == name)
            return &w;
    return nullptr;
}

profile::WorkloadSchemas schemas() {
    profile::WorkloadSchemas out;
    for (const auto& w : registry()) {
        // A workload's own spec of a common key (fault-inject's single thread) replaces it.
        auto params = common_params();
        for (const auto& own : w.params) {
            auto same = std::find_if(params.begin(), params.end(),
                                     [&](const profile::ParamSpec& c) { return c.key == own.key; });
            if (same != params.end())
                *same = own;
            else
                params.push_back(own);
        }
        out[w.name] = params;
    }
    return out;
}

} // namespace gms::workloads
