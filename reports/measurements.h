// The numbers of a report, for the renderers that carry measurements (KCIDB
// `number`, LAVA `--measurement`): per operation of every workload that ran,
// its throughput (and bandwidth when it moved bytes) over the workload's
// duration and its latency percentiles. Operations that failed count in
// neither: the histogram holds only completed ones.
#pragma once

#include "reports/model.h"

#include <string>
#include <vector>

namespace gms::report {

struct Measurement {
    std::string workload; // label
    std::string op;       // "fault", "punch_hole", "KVM_RUN", ...
    std::string metric;   // throughput, bandwidth, latency_p50, latency_p99, latency_max
    double value = 0;
    std::string unit; // "ops/s", "B/s", "ns"
};

std::vector<Measurement> measurements(const Report& r);

// "label" of a workload: its instance label, else its registry name.
std::string label_of(const WorkloadResult& w);

} // namespace gms::report
