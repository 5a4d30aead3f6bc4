#include "reports/measurements.h"

namespace gms::report {

std::string label_of(const WorkloadResult& w) {
    return w.label.empty() ? w.name : w.label;
}

std::vector<Measurement> measurements(const Report& r) {
    std::vector<Measurement> out;
    for (const auto& w : r.workloads) {
        // A skipped workload or one that did nothing measured nothing.
        if (w.outcome == Outcome::skip || !did_run(w) || w.duration_s <= 0)
            continue;
        std::string label = label_of(w);
        for (const auto& [op, st] : w.ops) {
            uint64_t done = st.latency_ns.count();
            if (done == 0)
                continue;
            auto add = [&](const char* metric, double v, const char* unit) {
                out.push_back({label, op, metric, v, unit});
            };
            add("throughput", double(done) / w.duration_s, "ops/s");
            if (st.bytes)
                add("bandwidth", double(st.bytes) / w.duration_s, "B/s");
            add("latency_p50", double(st.latency_ns.percentile(0.50)), "ns");
            add("latency_p99", double(st.latency_ns.percentile(0.99)), "ns");
            add("latency_max", double(st.latency_ns.max()), "ns");
        }
    }
    return out;
}

} // namespace gms::report
