// Helpers the checkers (probes/checkers/*.cpp) share. Internal to the
// checkers: not part of the public probes/checkers.h.
#pragma once

#include "probes/coverage.h"
#include "probes/event.h"
#include "reports/model.h"

#include <compare>
#include <cstdint>
#include <string>
#include <vector>

namespace gms::probes::detail {

// One guest_memfd file: kernel-internal dev_t and inode number.
struct Key {
    uint32_t dev = 0;
    uint64_t ino = 0;
    auto operator<=>(const Key&) const = default;
};
inline Key key_of(const Event& e) {
    return Key{e.dev, e.ino};
}

// Bounded list of violations plus the total.
struct Violations {
    uint64_t total = 0;
    std::vector<std::string> first;
    void add(std::string what) {
        ++total;
        if (first.size() < kMaxViolations)
            first.push_back(std::move(what));
    }
};

// The first violations and their total into r (evidence "violations").
void put_violations(report::InvariantResult& r, const Violations& v);

// "fentry+tracepoint": the backends of the attached points among `points`;
// "none" when none is attached.
std::string summarize_backends(const Coverage& cov, const std::vector<std::string>& points);

// Why a stream with losses is not complete, with every kind of loss counted.
std::string loss_reason(const Coverage& cov);

} // namespace gms::probes::detail
