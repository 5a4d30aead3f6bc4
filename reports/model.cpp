#include "reports/model.h"

#include "core/util.h"

#include <algorithm>

namespace gms::report {

std::string to_string(Outcome o) {
    switch (o) {
    case Outcome::pass:
        return "pass";
    case Outcome::fail:
        return "fail";
    case Outcome::skip:
        return "skip";
    case Outcome::error:
        return "error";
    }
    return "error";
}

std::string to_string(Verdict v) {
    switch (v) {
    case Verdict::verified:
        return "verified";
    case Verdict::violated:
        return "violated";
    case Verdict::incomplete:
        return "incomplete";
    case Verdict::unverifiable:
        return "unverifiable";
    }
    return "unverifiable";
}

void OpStats::record_error(int err) {
    ++count;
    ++errors[errno_name(err)];
}

void OpStats::merge(const OpStats& o) {
    count += o.count;
    bytes += o.bytes;
    for (const auto& [k, v] : o.errors)
        errors[k] += v;
    latency_ns.merge(o.latency_ns);
}

Outcome Report::verdict() const {
    bool failed = !kernel_log.empty();
    bool errored = !errors.empty();
    auto see = [&](Outcome o) {
        failed |= o == Outcome::fail;
        errored |= o == Outcome::error;
    };
    for (const auto& w : workloads) {
        see(w.outcome);
        for (const auto& c : w.checks)
            see(c.outcome);
    }
    for (const auto& c : conformance)
        see(c.outcome);
    for (const auto& i : invariants)
        failed |= i.verdict == Verdict::violated;
    if (failed)
        return Outcome::fail;
    if (errored)
        return Outcome::error;
    // Nothing ran (every workload skipped): that is not a pass.
    bool ran = workloads.empty()
                   ? !conformance.empty()
                   : std::any_of(workloads.begin(), workloads.end(),
                                 [](const auto& w) { return w.outcome != Outcome::skip; });
    if (!ran && command != "watch")
        return Outcome::skip;
    return Outcome::pass;
}

} // namespace gms::report
