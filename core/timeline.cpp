#include "core/timeline.h"

#include "core/util.h"

#include <algorithm>
#include <atomic>
#include <numeric>

namespace gms {

namespace {
// 0: not started (a test recording outside a workload): the first reading starts it.
std::atomic<uint64_t> g_origin_ticks{0};
} // namespace

void Timeline::restart_clock() {
    g_origin_ticks = LatencyTimer::ticks();
}

uint64_t Timeline::clock_ns() {
    uint64_t now = LatencyTimer::ticks();
    uint64_t origin = g_origin_ticks.load(std::memory_order_relaxed);
    if (origin == 0) {
        g_origin_ticks.compare_exchange_strong(origin, now);
        origin = g_origin_ticks.load();
    }
    return now > origin ? LatencyTimer::to_ns(now - origin) : 0;
}

void Timeline::widen() {
    std::vector<uint64_t> w((counts_.size() + 1) / 2);
    for (size_t i = 0; i < counts_.size(); ++i)
        w[i / 2] += counts_[i];
    counts_ = std::move(w);
    bucket_ns_ *= 2;
}

void Timeline::add(uint64_t t_ns, uint64_t n) {
    while (t_ns / bucket_ns_ >= kMaxBuckets)
        widen();
    size_t i = t_ns / bucket_ns_;
    if (i >= counts_.size())
        counts_.resize(i + 1);
    counts_[i] += n;
}

void Timeline::merge(const Timeline& o) {
    Timeline other = o;
    while (bucket_ns_ < other.bucket_ns_)
        widen();
    while (other.bucket_ns_ < bucket_ns_)
        other.widen();
    if (other.counts_.size() > counts_.size())
        counts_.resize(other.counts_.size());
    for (size_t i = 0; i < other.counts_.size(); ++i)
        counts_[i] += other.counts_[i];
}

uint64_t Timeline::total() const {
    return std::accumulate(counts_.begin(), counts_.end(), uint64_t{0});
}

std::optional<Timeline> Timeline::restore(uint64_t bucket_ns, std::vector<uint64_t> counts) {
    if (bucket_ns < kBaseBucketNs || bucket_ns % kBaseBucketNs != 0)
        return std::nullopt;
    uint64_t k = bucket_ns / kBaseBucketNs;
    if ((k & (k - 1)) != 0 || counts.size() > kMaxBuckets)
        return std::nullopt;
    Timeline t;
    t.bucket_ns_ = bucket_ns;
    t.counts_ = std::move(counts);
    return t;
}

} // namespace gms
