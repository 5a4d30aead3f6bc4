// Log-linear latency histogram (HdrHistogram-like, 3 significant bits):
// constant memory, mergeable, percentiles within ~12%.
#pragma once

#include <array>
#include <cstdint>

namespace gms {

class Histogram {
  public:
    static constexpr unsigned kSubBits = 3;
    static constexpr unsigned kSub = 1u << kSubBits;
    // Values below kSub get a bucket each; above, kSub buckets per power of two.
    static constexpr unsigned kBuckets = (64 - kSubBits + 1) * kSub;

    void add(uint64_t v) {
        ++counts_[index(v)];
        ++total_;
        if (v > max_)
            max_ = v;
        if (total_ == 1 || v < min_)
            min_ = v;
        sum_ += v;
    }
    void merge(const Histogram& o);
    uint64_t count() const { return total_; }
    uint64_t max() const { return max_; }
    uint64_t min() const { return total_ ? min_ : 0; }
    double mean() const { return total_ ? double(sum_) / double(total_) : 0; }
    // Upper bound of the bucket holding the q-quantile (0 < q <= 1).
    uint64_t percentile(double q) const;

    static unsigned index(uint64_t v);
    static uint64_t upper_bound(unsigned idx);

  private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t total_ = 0, max_ = 0, min_ = 0, sum_ = 0;
};

} // namespace gms
