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
    timeline.merge(o.timeline);
}

void FaultSweep::leak(std::string what) {
    ++leaks;
    if (first_leaks.size() < 8)
        first_leaks.push_back(std::move(what));
}

void FaultSweep::failure(std::string what) {
    ++failures;
    if (first_failures.size() < 8)
        first_failures.push_back(std::move(what));
}

bool did_run(const WorkloadResult& w) {
    auto op_ran = [](const auto& op) { return op.second.count > 0; };
    auto check_ran = [](const Check& c) { return c.outcome != Outcome::skip; };
    return std::any_of(w.ops.begin(), w.ops.end(), op_ran) || w.verification.pages_checked > 0 ||
           std::any_of(w.checks.begin(), w.checks.end(), check_ran);
}

void settle_outcome(WorkloadResult& w) {
    if (w.outcome != Outcome::pass || did_run(w))
        return;
    w.outcome = Outcome::skip;
    std::vector<std::pair<std::string, std::string>> why;
    for (const auto& c : w.checks)
        why.push_back({c.name, c.reason.empty() ? "no reason given" : c.reason});
    if (!why.empty())
        w.reason = "nothing ran: every check skipped (" + group_by_reason(why, "; ") + ")";
    else
        w.reason = "nothing ran: no operation, no verified page and no check" +
                   (w.reason.empty() ? std::string() : " (" + w.reason + ")");
}

std::vector<size_t> Envelope::waiver_counts() const {
    std::vector<size_t> n(kernel_log_waivers.size());
    for (const auto& w : kernel_log_waived)
        if (w.waiver < n.size())
            ++n[w.waiver];
    return n;
}

const KmsgWaiver& Envelope::waiver_of(const WaivedFinding& w) const {
    static const KmsgWaiver unknown{"?", "?", ""};
    return w.waiver < kernel_log_waivers.size() ? kernel_log_waivers[w.waiver] : unknown;
}

// Waived findings (kernel_log_waived) are known messages: they fail nothing.
Outcome Report::verdict() const {
    bool failed = !kernel_log.empty() || !stalls.empty();
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
    // Nothing ran (every workload skipped or did nothing): that is not a pass.
    bool ran =
        std::any_of(workloads.begin(), workloads.end(),
                    [](const auto& w) { return w.outcome != Outcome::skip && did_run(w); }) ||
        std::any_of(conformance.begin(), conformance.end(),
                    [](const auto& c) { return c.outcome != Outcome::skip; });
    if (!ran && command != "watch")
        return Outcome::skip;
    return Outcome::pass;
}

} // namespace gms::report
