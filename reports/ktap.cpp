#include "reports/ktap.h"

#include "core/util.h"
#include "reports/render.h"

#include <algorithm>
#include <fmt/format.h>

namespace gms::report {

namespace {

// One test result of KTAP: a leaf, or a subtest with leaves.
struct Leaf {
    std::string name;
    Outcome outcome = Outcome::pass;
    std::string reason;            // SKIP directive, or first diagnostic of a failure
    std::vector<std::string> diag; // more diagnostic lines, before the result line
    bool xfail = false;            // an expected failure (a waived kernel finding): ok # XFAIL
};
struct Suite {
    std::string name;
    std::vector<Leaf> leaves;
    std::string skip_reason; // when every leaf skipped (default: the first leaf's)
};

// One line: no line breaks. Test names also carry no '#' (a result line's
// name ends at the first '#', where the directive starts).
std::string one_line(std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    std::replace(s.begin(), s.end(), '\r', ' ');
    while (!s.empty() && s.back() == ' ')
        s.pop_back();
    return s;
}
std::string test_name(const std::string& s) {
    std::string n = one_line(s);
    std::replace(n.begin(), n.end(), '#', '_');
    n.erase(0, n.find_first_not_of(' '));
    return n.empty() ? "unnamed" : n;
}

Outcome of(Verdict v) {
    switch (v) {
    case Verdict::verified:
        return Outcome::pass;
    case Verdict::violated:
        return Outcome::fail;
    case Verdict::incomplete:
    case Verdict::unverifiable:
        return Outcome::skip;
    }
    return Outcome::skip;
}

struct Totals {
    size_t pass = 0, fail = 0, xfail = 0, skip = 0, error = 0;
    void add(Outcome o, bool expected_failure = false) {
        if (expected_failure) {
            ++xfail;
            return;
        }
        pass += o == Outcome::pass;
        fail += o == Outcome::fail;
        skip += o == Outcome::skip;
        error += o == Outcome::error;
    }
};

// "ok N name", "ok N name # SKIP reason" or "not ok N name", with the
// failure's diagnostics before it.
void result(std::string& out, const std::string& indent, size_t n, const Leaf& l) {
    if (l.outcome == Outcome::fail || l.outcome == Outcome::error) {
        if (!l.reason.empty())
            out += fmt::format("{}# {}{}\n", indent, l.outcome == Outcome::error ? "error: " : "",
                               one_line(l.reason));
    }
    for (const auto& d : l.diag)
        out += fmt::format("{}# {}\n", indent, one_line(d));
    if (l.xfail) {
        out += fmt::format("{}ok {} {} # XFAIL {}\n", indent, n, test_name(l.name),
                           one_line(l.reason));
        return;
    }
    switch (l.outcome) {
    case Outcome::pass:
        out += fmt::format("{}ok {} {}\n", indent, n, test_name(l.name));
        break;
    case Outcome::skip:
        out += fmt::format("{}ok {} {} # SKIP {}\n", indent, n, test_name(l.name),
                           l.reason.empty() ? "no reason given" : one_line(l.reason));
        break;
    case Outcome::fail:
    case Outcome::error:
        out += fmt::format("{}not ok {} {}\n", indent, n, test_name(l.name));
        break;
    }
}

std::string totals_line(const Totals& t) {
    return fmt::format("# Totals: pass:{} fail:{} xfail:{} xpass:0 skip:{} error:{}\n", t.pass,
                       t.fail, t.xfail, t.skip, t.error);
}

std::vector<Suite> suites_of(const Report& r) {
    std::vector<Suite> suites;
    for (const auto& w : r.workloads) {
        std::string label = w.label.empty() ? w.name : w.label;
        Suite s{"workload." + label, {}, w.reason};
        uint64_t ops = 0;
        for (const auto& [_, st] : w.ops)
            ops += st.count;
        Leaf run{"run", w.outcome, w.reason, {}};
        run.diag.push_back(fmt::format("{} ops, {} pages verified, {} mismatches", ops,
                                       w.verification.pages_checked, w.verification.mismatches));
        for (const auto& m : w.verification.first_mismatches)
            run.diag.push_back("mismatch: " + m);
        s.leaves.push_back(std::move(run));
        for (const auto& c : w.checks) {
            Leaf l{c.name, c.outcome, c.reason, {}};
            if (c.outcome == Outcome::fail || c.outcome == Outcome::error)
                l.diag.push_back(fmt::format("expected {}, observed {}", c.expected, c.observed));
            s.leaves.push_back(std::move(l));
        }
        suites.push_back(std::move(s));
    }
    if (!r.conformance.empty()) {
        Suite s{"conformance", {}, {}};
        for (const auto& c : r.conformance) {
            Leaf l{c.name, c.outcome, c.reason, {}};
            if (c.outcome == Outcome::fail || c.outcome == Outcome::error)
                l.diag.push_back(fmt::format("expected {}, observed {}", c.expected, c.observed));
            s.leaves.push_back(std::move(l));
        }
        suites.push_back(std::move(s));
    }
    if (!r.invariants.empty()) {
        Suite s{"invariants", {}, {}};
        for (const auto& i : r.invariants) {
            Outcome o = of(i.verdict);
            std::string reason = i.reason;
            if (o == Outcome::skip)
                reason = to_string(i.verdict) + (i.reason.empty() ? "" : ": " + i.reason);
            Leaf l{i.name, o, reason, {}};
            if (!i.backend.empty() && o != Outcome::skip)
                l.diag.push_back(fmt::format("{} [{}]", to_string(i.verdict), i.backend));
            for (const auto& v : i.violations)
                l.diag.push_back("violation: " + v);
            s.leaves.push_back(std::move(l));
        }
        suites.push_back(std::move(s));
    }
    if (!r.errors.empty()) {
        Suite s{"tool_errors", {}, {}};
        for (size_t k = 0; k < r.errors.size(); ++k)
            s.leaves.push_back({fmt::format("error_{}", k + 1), Outcome::error, r.errors[k], {}});
        suites.push_back(std::move(s));
    }
    if (!r.stalls.empty()) {
        Suite s{"stalls", {}, {}};
        for (size_t k = 0; k < r.stalls.size(); ++k) {
            const auto& st = r.stalls[k];
            Leaf l{fmt::format("stall_{}", k + 1), Outcome::fail, stall_line(st), {}};
            for (const auto& line : st.kernel_stack)
                l.diag.push_back(line);
            s.leaves.push_back(std::move(l));
        }
        suites.push_back(std::move(s));
    }
    if (r.incomplete) {
        Suite s{"run", {}, {}};
        s.leaves.push_back({"complete", Outcome::fail, r.incomplete_reason, {}});
        suites.push_back(std::move(s));
    }
    Suite klog{"kernel_log", {}, {}};
    if (!r.kernel_log.empty()) {
        for (const auto& f : r.kernel_log)
            klog.leaves.push_back({f.kind, Outcome::fail, f.line, {}});
    } else if (!r.kernel_log_available) {
        klog.leaves.push_back(
            {"scan",
             Outcome::skip,
             "not scanned: " + (r.kernel_log_reason.empty() ? std::string("no reason given")
                                                            : r.kernel_log_reason),
             {}});
    } else {
        klog.leaves.push_back({"clean", Outcome::pass, "", {}});
    }
    for (const auto& w : r.kernel_log_waived) {
        const auto& by = r.waiver_of(w);
        klog.leaves.push_back(
            {w.finding.kind,
             Outcome::pass,
             fmt::format("waived by /{}/ ({}): {}", by.regex, by.origin, w.finding.line),
             {},
             true});
    }
    suites.push_back(std::move(klog));
    return suites;
}

// Why nothing ran: each workload's skip reason, grouped.
std::string nothing_ran_reason(const Report& r) {
    std::vector<std::pair<std::string, std::string>> why;
    for (const auto& w : r.workloads)
        why.push_back(
            {w.label.empty() ? w.name : w.label, w.reason.empty() ? "no reason given" : w.reason});
    if (why.empty())
        return "nothing ran: the profile has no workload";
    return "nothing ran: " + group_by_reason(why, "; ");
}

} // namespace

std::string to_ktap(const Report& r) {
    std::string out = "KTAP version 1\n";
    std::string header = fmt::format("# gmemstress {} {}: profile {}, seed {}", r.tool_version,
                                     r.command, r.profile.value("name", std::string("?")), r.seed);
    if (r.interrupted)
        header += ", INTERRUPTED (" + one_line(r.interrupt_reason) + ")";
    if (r.series)
        header += "\n# series: " + one_line(series_line(*r.series));

    if (r.verdict() == Outcome::skip) {
        out += "1..1\n" + header + "\n";
        Leaf l{"gmemstress", Outcome::skip, nothing_ran_reason(r), {}};
        result(out, "", 1, l);
        Totals t;
        t.add(Outcome::skip);
        return out + totals_line(t);
    }

    std::vector<Suite> suites = suites_of(r);
    out += fmt::format("1..{}\n", suites.size());
    out += header + "\n";
    Totals total;
    for (size_t k = 0; k < suites.size(); ++k) {
        const Suite& s = suites[k];
        std::string name = test_name(s.name);
        out += "  KTAP version 1\n";
        out += fmt::format("  # Subtest: {}\n", name);
        out += fmt::format("  1..{}\n", s.leaves.size());
        Totals t;
        for (size_t i = 0; i < s.leaves.size(); ++i) {
            result(out, "  ", i + 1, s.leaves[i]);
            t.add(s.leaves[i].outcome, s.leaves[i].xfail);
        }
        Leaf whole{name, Outcome::pass, "", {}};
        if (t.fail || t.error)
            whole.outcome = Outcome::fail;
        else if (t.skip == s.leaves.size()) {
            whole.outcome = Outcome::skip;
            whole.reason = s.skip_reason.empty() ? s.leaves.front().reason : s.skip_reason;
        }
        result(out, "", k + 1, whole);
        total.pass += t.pass;
        total.fail += t.fail;
        total.xfail += t.xfail;
        total.skip += t.skip;
        total.error += t.error;
    }
    return out + totals_line(total);
}

std::string ktap_single(Outcome outcome, const std::string& reason,
                        const std::vector<std::string>& diagnostics) {
    std::string out = "KTAP version 1\n1..1\n";
    Leaf l{"gmemstress", outcome, reason, diagnostics};
    result(out, "", 1, l);
    Totals t;
    t.add(outcome);
    return out + totals_line(t);
}

} // namespace gms::report
