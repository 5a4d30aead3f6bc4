// Throughput over time: completed operations per time bucket since the
// current workload started. Buckets start at 100 ms and double in width
// (neighbours summed) whenever a run outgrows kMaxBuckets, so memory stays
// bounded on long runs and timelines of any two widths still merge.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace gms {

class Timeline {
  public:
    static constexpr uint64_t kBaseBucketNs = 100'000'000;
    static constexpr size_t kMaxBuckets = 512;

    // One or more operations that completed `t_ns` after the workload started.
    void add(uint64_t t_ns, uint64_t n = 1);
    void merge(const Timeline& o);
    uint64_t bucket_ns() const { return bucket_ns_; }
    const std::vector<uint64_t>& counts() const { return counts_; }
    uint64_t total() const;

    // A timeline as written out (reports/parse.h); nullopt unless the width
    // is kBaseBucketNs times a power of two and the buckets fit.
    static std::optional<Timeline> restore(uint64_t bucket_ns, std::vector<uint64_t> counts);

    // The clock timelines count from: restarted by the engine as each
    // workload starts (workloads run one after another), read as operations
    // complete. The cheap latency clock (TSC where constant), not
    // clock_gettime: it is read once per operation.
    static void restart_clock();
    static uint64_t clock_ns();

  private:
    void widen(); // doubles the bucket width
    uint64_t bucket_ns_ = kBaseBucketNs;
    std::vector<uint64_t> counts_;
};

} // namespace gms
