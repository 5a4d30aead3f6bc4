// Log-linear latency histogram (HdrHistogram-like, 3 significant bits):
// constant memory, mergeable, percentiles within ~12%. Each power of two (a
// log2 bin) is split into kSub equal buckets; reports keep the non-empty
// buckets with their bounds so runs can be merged and drawn later.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

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
    uint64_t sum() const { return sum_; }
    uint64_t bucket(unsigned idx) const { return idx < kBuckets ? counts_[idx] : 0; }
    // Upper bound of the bucket holding the q-quantile (0 < q <= 1).
    uint64_t percentile(double q) const;

    static unsigned index(uint64_t v);
    static uint64_t upper_bound(unsigned idx);
    static uint64_t lower_bound(unsigned idx) { return idx ? upper_bound(idx - 1) + 1 : 0; }

    // A histogram as written out (reports/parse.h): its buckets by index,
    // and the exact min, max and sum the buckets cannot give back.
    struct Parts {
        std::vector<std::pair<unsigned, uint64_t>> buckets;
        uint64_t min = 0, max = 0, sum = 0;
    };
    // nullopt when a bucket index is out of range.
    static std::optional<Histogram> restore(const Parts& p);

  private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t total_ = 0, max_ = 0, min_ = 0, sum_ = 0;
};

} // namespace gms
