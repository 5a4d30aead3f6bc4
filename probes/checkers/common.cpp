#include "probes/checkers/common.h"

#include <fmt/format.h>
#include <set>

namespace gms::probes::detail {

void put_violations(report::InvariantResult& r, const Violations& v) {
    r.violations = v.first;
    r.evidence["violations"] = v.total;
}

std::string summarize_backends(const Coverage& cov, const std::vector<std::string>& points) {
    std::set<std::string> b;
    for (const auto& p : points) {
        auto it = cov.attached.find(p);
        if (it != cov.attached.end())
            b.insert(it->second);
    }
    std::string s;
    for (const auto& x : b)
        s += (s.empty() ? "" : "+") + x;
    return s.empty() ? "none" : s;
}

std::string loss_reason(const Coverage& cov) {
    return fmt::format("events were lost ({} ring buffer reserve failures, {} undecodable records, "
                       "{} kprobe entry/return pairs lost, {} files unwatched because the BPF "
                       "inode filter was full): the stream is not complete",
                       cov.lost_events, cov.parse_errors, cov.stash_lost, cov.filter_full);
}

} // namespace gms::probes::detail
