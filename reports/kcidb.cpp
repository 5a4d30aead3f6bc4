#include "reports/kcidb.h"

#include "core/error.h"
#include "reports/measurements.h"
#include "reports/render.h"

#include <fmt/format.h>
#include <random>
#include <regex>
#include <set>
#include <version.h>

namespace gms::report {

namespace {

using nlohmann::json;

const char* status_of(Outcome o) {
    switch (o) {
    case Outcome::pass:
        return "PASS";
    case Outcome::fail:
        return "FAIL";
    case Outcome::error:
        return "ERROR";
    case Outcome::skip:
        return "SKIP";
    }
    return "ERROR";
}

const char* status_of(Verdict v) {
    switch (v) {
    case Verdict::verified:
        return "PASS";
    case Verdict::violated:
        return "FAIL";
    case Verdict::incomplete: // events were lost: the check did not complete
        return "ERROR";
    case Verdict::unverifiable:
        return "SKIP";
    }
    return "ERROR";
}

// A name as path components: each character outside [A-Za-z0-9_-] becomes
// '_' (a dot separates components), empty components are dropped.
std::vector<std::string> components(const std::string& name) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : name) {
        if (c == '.') {
            if (!cur.empty())
                out.push_back(std::move(cur));
            cur.clear();
        } else {
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-';
            cur += ok ? c : '_';
        }
    }
    if (!cur.empty())
        out.push_back(std::move(cur));
    if (out.empty())
        out.push_back("unnamed");
    return out;
}

// The schema bounds a log excerpt (16 KiB) and forbids NUL.
std::string excerpt(std::string s) {
    std::erase(s, '\0');
    constexpr size_t kMax = 16384;
    if (s.size() > kMax)
        s = s.substr(0, kMax - 20) + "\n... (truncated)";
    return s;
}

class Builder {
  public:
    Builder(const KcidbOptions& o, std::string build_id, std::string start_time, json env)
        : o_(o), build_id_(std::move(build_id)), start_time_(std::move(start_time)),
          env_(std::move(env)) {}

    // A test at `path` (names, each split into components) with `status`.
    json& add(const std::vector<std::string>& names, const char* status) {
        std::string path;
        for (const auto& n : names)
            for (const auto& c : components(n))
                path += (path.empty() ? "" : ".") + c;
        std::string unique = path;
        for (int k = 2; !used_.insert(unique).second; ++k)
            unique = fmt::format("{}_{}", path, k);
        json t = {{"id", fmt::format("{}:gms-{}.{}", o_.origin, o_.run_id, unique)},
                  {"origin", o_.origin},
                  {"build_id", build_id_},
                  {"path", unique},
                  {"status", status},
                  {"environment", env_}};
        if (!start_time_.empty())
            t["start_time"] = start_time_;
        tests_.push_back(std::move(t));
        return tests_.back();
    }
    json done() {
        return {{"version", {{"major", 5}, {"minor", 3}}}, {"tests", std::move(tests_)}};
    }

  private:
    const KcidbOptions& o_;
    std::string build_id_, start_time_;
    json env_;
    std::set<std::string> used_;
    json tests_ = json::array();
};

std::string build_id_for(const KcidbOptions& o, const std::string& kernel_release) {
    if (!o.build_id.empty())
        return o.build_id;
    return fmt::format("{}:{}", o.origin, kernel_release.empty() ? "unknown" : kernel_release);
}

json environment(const std::string& tool_version, const json& host,
                 const std::optional<json>& lab) {
    std::string kernel = host.value("kernel_release", std::string("?"));
    bool guest = lab.has_value() || host.value("lab_guest", false);
    json misc = {{"caps", host}};
    if (lab)
        misc["lab"] = *lab;
    return {{"comment", fmt::format("gmemstress {}, kernel {} ({})", tool_version, kernel,
                                    guest ? "a QEMU lab guest" : "this host's KVM")},
            {"misc", misc}};
}

void check_test(const std::string& what, Outcome o, const std::string& expected,
                const std::string& observed, const std::string& reason, json& t) {
    std::string log = reason;
    if (o == Outcome::fail || o == Outcome::error)
        log = fmt::format("expected {}, observed {}{}", expected, observed,
                          reason.empty() ? "" : "\n" + reason);
    if (!log.empty())
        t["log_excerpt"] = excerpt(log);
    t["misc"] = {{"check", what}, {"expected", expected}, {"observed", observed}};
}

} // namespace

KcidbOptions kcidb_options(const std::string& origin, const std::string& build_id) {
    static const std::regex origin_re("^[a-z0-9_]+$");
    static const std::regex build_re("^[a-z0-9_]+:[^\\0]*$");
    if (!std::regex_match(origin, origin_re))
        throw UsageError(fmt::format("--kcidb-origin '{}': a KCIDB origin names the CI system in "
                                     "lowercase letters, digits and '_' (^[a-z0-9_]+$)",
                                     origin));
    KcidbOptions o{origin, build_id, ""};
    if (build_id.find('\0') != std::string::npos)
        throw UsageError("--kcidb-build-id: contains a NUL character");
    if (!build_id.empty() && build_id.find(':') == std::string::npos)
        o.build_id = origin + ":" + build_id;
    else if (!build_id.empty() && !std::regex_match(build_id, build_re))
        throw UsageError(fmt::format(
            "--kcidb-build-id '{}': a KCIDB build id is ORIGIN:ID with ORIGIN in lowercase "
            "letters, digits and '_' (or give ID alone: it is prefixed with '{}:')",
            build_id, origin));
    std::random_device rd;
    o.run_id = fmt::format("{:08x}{:08x}", rd(), rd());
    return o;
}

json to_kcidb(const Report& r, const KcidbOptions& o) {
    Builder b(o, build_id_for(o, r.host.value("kernel_release", std::string())), r.timestamp,
              environment(r.tool_version, r.host, r.lab));

    Outcome verdict = r.verdict();
    const char* overall = r.interrupted && verdict != Outcome::fail ? "ERROR" : status_of(verdict);
    json& root = b.add({"gmemstress"}, overall);
    root["duration"] = r.duration_s;
    root["log_excerpt"] = excerpt(to_text(r));
    root["misc"] = {{"verdict", to_string(verdict)},
                    {"command", r.command},
                    {"profile", r.profile.value("name", std::string())},
                    {"seed", r.seed},
                    {"interrupted", r.interrupted},
                    {"interrupt_reason", r.interrupt_reason}};

    for (const auto& w : r.workloads) {
        std::string label = label_of(w);
        json& t = b.add({"gmemstress", "workload", label}, status_of(w.outcome));
        t["duration"] = w.duration_s;
        std::string log = w.reason;
        for (const auto& m : w.verification.first_mismatches)
            log += (log.empty() ? "" : "\n") + ("mismatch: " + m);
        if (!log.empty())
            t["log_excerpt"] = excerpt(log);
        uint64_t ops = 0;
        for (const auto& [_, st] : w.ops)
            ops += st.count;
        t["misc"] = {{"workload", w.name},
                     {"ops", ops},
                     {"pages_verified", w.verification.pages_checked},
                     {"mismatches", w.verification.mismatches},
                     {"params", w.params}};
        for (const auto& c : w.checks)
            check_test(
                c.name, c.outcome, c.expected, c.observed, c.reason,
                b.add({"gmemstress", "workload", label, "checks", c.name}, status_of(c.outcome)));
    }
    for (const auto& m : measurements(r)) {
        json& t = b.add({"gmemstress", "workload", m.workload, "ops", m.op, m.metric}, "DONE");
        t["number"] = {{"value", m.value}, {"unit", m.unit}};
        if (m.unit == "B/s")
            t["number"]["prefix"] = "binary";
    }
    for (const auto& c : r.conformance)
        check_test(c.name, c.outcome, c.expected, c.observed, c.reason,
                   b.add({"gmemstress", "conformance", c.name}, status_of(c.outcome)));
    for (const auto& i : r.invariants) {
        json& t = b.add({"gmemstress", "invariants", i.name}, status_of(i.verdict));
        std::string log = to_string(i.verdict) + (i.reason.empty() ? "" : ": " + i.reason);
        for (const auto& v : i.violations)
            log += "\nviolation: " + v;
        t["log_excerpt"] = excerpt(log);
        t["misc"] = {
            {"verdict", to_string(i.verdict)}, {"backend", i.backend}, {"evidence", i.evidence}};
    }
    for (size_t k = 0; k < r.errors.size(); ++k)
        b.add({"gmemstress", "tool_errors", fmt::format("error_{}", k + 1)},
              "ERROR")["log_excerpt"] = excerpt(r.errors[k]);

    for (size_t k = 0; k < r.stalls.size(); ++k) {
        const auto& st = r.stalls[k];
        std::string log = stall_line(st);
        for (const auto& line : st.kernel_stack)
            log += "\n" + line;
        json& t = b.add({"gmemstress", "stalls", fmt::format("stall_{}", k + 1)}, "FAIL");
        t["log_excerpt"] = excerpt(log);
        t["misc"] = {{"operation", st.operation},   {"args", st.args},   {"tid", st.tid},
                     {"duration_s", st.duration_s}, {"ended", st.ended}, {"thread", st.thread}};
    }
    if (r.incomplete)
        b.add({"gmemstress", "run", "complete"}, "FAIL")["log_excerpt"] =
            excerpt(r.incomplete_reason);

    const char* klog = !r.kernel_log.empty() ? "FAIL" : !r.kernel_log_available ? "SKIP" : "PASS";
    json& kt = b.add({"gmemstress", "kernel_log"}, klog);
    if (!r.kernel_log_available)
        kt["log_excerpt"] = excerpt("not scanned: " + r.kernel_log_reason);
    kt["misc"] = {{"findings", r.kernel_log.size()}, {"waived", r.kernel_log_waived.size()}};
    for (const auto& f : r.kernel_log)
        b.add({"gmemstress", "kernel_log", "findings", f.kind}, "FAIL")["log_excerpt"] =
            excerpt(f.line);
    for (const auto& w : r.kernel_log_waived) {
        const auto& by = r.waiver_of(w);
        json& t = b.add({"gmemstress", "kernel_log", "waived", w.finding.kind}, "DONE");
        t["log_excerpt"] = excerpt(w.finding.line);
        t["misc"] = {
            {"waived_by", by.regex}, {"waiver_origin", by.origin}, {"waiver_reason", by.reason}};
    }
    return b.done();
}

json kcidb_single(Outcome outcome, const std::string& reason,
                  const std::vector<std::string>& diagnostics, const KcidbOptions& o,
                  const std::string& kernel_release, const std::optional<json>& lab) {
    json host = {{"kernel_release", kernel_release}};
    Builder b(o, build_id_for(o, kernel_release), "", environment(GMS_VERSION, host, lab));
    std::string log = reason;
    for (const auto& d : diagnostics)
        log += "\n" + d;
    b.add({"gmemstress"}, status_of(outcome))["log_excerpt"] = excerpt(log);
    return b.done();
}

} // namespace gms::report
