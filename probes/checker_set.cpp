// CheckerSet: every checker, in report order, fed the same events.
#include "probes/checkers.h"

#include <algorithm>

namespace gms::probes {

CheckerSet::CheckerSet() {
    checkers_.push_back(make_page_cache_balance_checker());
    checkers_.push_back(make_direct_map_checker());
    checkers_.push_back(make_uptodate_checker());
    checkers_.push_back(make_invalidation_balance_checker());
    checkers_.push_back(make_folio_release_checker());
}

void CheckerSet::feed(const Event& e) {
    ++fed_;
    ++counts_[std::min<size_t>(static_cast<size_t>(e.type), counts_.size() - 1)];
    for (auto& c : checkers_)
        c->feed(e);
}

std::map<std::string, uint64_t> CheckerSet::counts() const {
    std::map<std::string, uint64_t> out;
    for (size_t t = 0; t < counts_.size(); ++t)
        if (counts_[t])
            out[to_string(static_cast<EventType>(t))] = counts_[t];
    return out;
}

std::vector<report::InvariantResult> CheckerSet::results(const Coverage& cov,
                                                         const Expectations& exp) const {
    std::vector<report::InvariantResult> out;
    for (const auto& c : checkers_)
        out.push_back(c->result(cov, exp));
    return out;
}

} // namespace gms::probes
