#include "core/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace gms {

unsigned Histogram::index(uint64_t v) {
    if (v < kSub)
        return static_cast<unsigned>(v);
    unsigned msb = 63 - std::countl_zero(v); // >= kSubBits
    unsigned shift = msb - kSubBits;
    unsigned sub = static_cast<unsigned>((v >> shift) & (kSub - 1));
    return (shift + 1) * kSub + sub;
}

uint64_t Histogram::upper_bound(unsigned idx) {
    if (idx < kSub)
        return idx;
    unsigned shift = idx / kSub - 1;
    uint64_t sub = idx % kSub;
    uint64_t base = (kSub + sub) << shift;
    return base + ((1ull << shift) - 1);
}

void Histogram::merge(const Histogram& o) {
    for (unsigned i = 0; i < kBuckets; ++i)
        counts_[i] += o.counts_[i];
    if (o.total_) {
        min_ = total_ ? std::min(min_, o.min_) : o.min_;
        max_ = std::max(max_, o.max_);
    }
    total_ += o.total_;
    sum_ += o.sum_;
}

std::optional<Histogram> Histogram::restore(const Parts& p) {
    Histogram h;
    for (auto [idx, n] : p.buckets) {
        if (idx >= kBuckets)
            return std::nullopt;
        h.counts_[idx] += n;
        h.total_ += n;
    }
    if (h.total_) {
        h.min_ = p.min;
        h.max_ = p.max;
        h.sum_ = p.sum;
    }
    return h;
}

uint64_t Histogram::percentile(double q) const {
    if (total_ == 0)
        return 0;
    uint64_t rank = static_cast<uint64_t>(std::ceil(q * double(total_)));
    rank = std::clamp<uint64_t>(rank, 1, total_);
    uint64_t seen = 0;
    for (unsigned i = 0; i < kBuckets; ++i) {
        seen += counts_[i];
        if (seen >= rank)
            return std::min(upper_bound(i), max_);
    }
    return max_;
}

} // namespace gms
