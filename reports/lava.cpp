#include "reports/lava.h"

#include "core/error.h"
#include "reports/measurements.h"
#include "reports/render.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <functional>
#include <set>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace gms::report {

namespace {

const char* result_of(Outcome o) {
    switch (o) {
    case Outcome::pass:
        return "pass";
    case Outcome::fail:
        return "fail";
    case Outcome::skip:
        return "skip";
    case Outcome::error: // the tool failed: the kernel's status is unknown
        return "unknown";
    }
    return "unknown";
}

const char* result_of(Verdict v) {
    switch (v) {
    case Verdict::verified:
        return "pass";
    case Verdict::violated:
        return "fail";
    case Verdict::unverifiable:
        return "skip";
    case Verdict::incomplete:
        return "unknown";
    }
    return "unknown";
}

// LAVA splits a signal's parameters at blanks and each at '=', and ends the
// signal at '>': names keep [A-Za-z0-9_.+-] only.
std::string lava_name(const std::string& s) {
    std::string out;
    for (char c : s) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '+' || c == '-';
        out += ok ? c : '_';
    }
    return out.empty() ? "unnamed" : out;
}

// Units may hold '/' ("ops/s"), not what ends a signal's parameter.
std::string lava_units(std::string s) {
    for (char& c : s)
        if (c == ' ' || c == '\t' || c == '=' || c == '<' || c == '>' || c == '\n')
            c = '_';
    return s;
}

// A log line that cannot be read as a signal, on one line.
std::string log_line(std::string s) {
    for (char& c : s)
        if (c == '\n' || c == '\r')
            c = ' ';
    for (size_t at; (at = s.find("<LAVA_")) != std::string::npos;)
        s[at + 5] = '-';
    return s;
}

std::string number(double v) {
    return fmt::format("{}", std::round(v * 1000) / 1000);
}

class Builder {
  public:
    LavaSet& set(const std::string& name) {
        sets_.push_back({name.empty() ? "" : lava_name(name), {}});
        return sets_.back();
    }
    LavaCase& add(LavaSet& s, const std::string& name, const char* result,
                  std::vector<std::string> log = {}) {
        std::string base = lava_name(name), unique = base;
        for (int k = 2; !used_.insert(unique).second; ++k)
            unique = fmt::format("{}_{}", base, k);
        s.cases.push_back({unique, result, std::nullopt, "", std::move(log)});
        return s.cases.back();
    }
    std::vector<LavaSet> done() {
        std::erase_if(sets_, [](const LavaSet& s) { return s.cases.empty(); });
        return std::move(sets_);
    }

  private:
    std::vector<LavaSet> sets_;
    std::set<std::string> used_;
};

std::vector<std::string> check_log(Outcome o, const std::string& expected,
                                   const std::string& observed, const std::string& reason) {
    std::vector<std::string> log;
    if (o == Outcome::fail || o == Outcome::error)
        log.push_back(fmt::format("expected {}, observed {}", expected, observed));
    if (!reason.empty())
        log.push_back(reason);
    return log;
}

// PATH lookup, as the shell would.
std::optional<std::string> on_path(const std::string& prog) {
    const char* path = std::getenv("PATH");
    std::string p = path ? path : "/usr/bin:/bin";
    size_t start = 0;
    while (start <= p.size()) {
        size_t colon = p.find(':', start);
        std::string dir =
            p.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
        std::string full = (dir.empty() ? "." : dir) + "/" + prog;
        if (::access(full.c_str(), X_OK) == 0)
            return full;
        if (colon == std::string::npos)
            break;
        start = colon + 1;
    }
    return std::nullopt;
}

// Runs a helper with our stdout; its exit status, or why it could not run.
std::optional<std::string> run_helper(const std::string& path,
                                      const std::vector<std::string>& args) {
    std::fflush(stdout);
    std::vector<char*> argv;
    for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (int e = ::posix_spawn(&pid, path.c_str(), nullptr, nullptr, argv.data(), environ))
        return fmt::format("cannot run {}: {}", path, std::strerror(e));
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return fmt::format("waitpid {}: {}", path, std::strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return std::nullopt;
    return fmt::format("{} exited with status {}", fmt::join(args, " "),
                       WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

std::string testcase_signal(const LavaCase& c) {
    std::string s =
        fmt::format("<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={} RESULT={}", c.name, c.result);
    if (c.measurement) {
        s += " MEASUREMENT=" + number(*c.measurement);
        if (!c.units.empty())
            s += " UNITS=" + c.units;
    }
    return s + ">";
}

// Where the calls go: lines printed (signals, logs), and the helpers when
// they are to be run (else their signal lines are printed).
struct Sink {
    std::function<void(const std::string&)> line;
    std::optional<std::string> test_set, test_case; // helper paths
    std::vector<std::string> failed;
    void run(const std::string& path, const std::vector<std::string>& args) {
        if (auto why = run_helper(path, args))
            failed.push_back(*why);
    }
};

void emit(const std::vector<LavaSet>& sets, Sink& out) {
    for (const auto& s : sets) {
        if (!s.name.empty()) {
            if (out.test_set)
                out.run(*out.test_set, {"lava-test-set", "start", s.name});
            else
                out.line(fmt::format("<LAVA_SIGNAL_TESTSET START {}>", s.name));
        }
        for (const auto& c : s.cases) {
            if (!c.log.empty()) {
                out.line(fmt::format("<LAVA_SIGNAL_STARTTC {}>", c.name));
                for (const auto& l : c.log)
                    out.line(log_line(l));
                out.line(fmt::format("<LAVA_SIGNAL_ENDTC {}>", c.name));
            }
            if (!out.test_case) {
                out.line(testcase_signal(c));
                continue;
            }
            std::vector<std::string> args{"lava-test-case", c.name, "--result", c.result};
            if (c.measurement) {
                args.insert(args.end(), {"--measurement", number(*c.measurement)});
                if (!c.units.empty())
                    args.insert(args.end(), {"--units", c.units});
            }
            out.run(*out.test_case, args);
        }
        if (!s.name.empty()) {
            if (out.test_set)
                out.run(*out.test_set, {"lava-test-set", "stop", s.name});
            else
                out.line("<LAVA_SIGNAL_TESTSET STOP>");
        }
    }
}

} // namespace

std::vector<LavaSet> to_lava(const Report& r) {
    Builder b;
    for (const auto& w : r.workloads) {
        std::string label = label_of(w);
        LavaSet& s = b.set("workload." + label);
        std::string pre = "workload." + label + ".";
        std::vector<std::string> log;
        if (!w.reason.empty())
            log.push_back(w.reason);
        for (const auto& m : w.verification.first_mismatches)
            log.push_back("mismatch: " + m);
        b.add(s, pre + "run", result_of(w.outcome), log);
        for (const auto& c : w.checks)
            b.add(s, pre + c.name, result_of(c.outcome),
                  check_log(c.outcome, c.expected, c.observed, c.reason));
        for (const auto& m : measurements(r)) {
            if (m.workload != label)
                continue;
            LavaCase& c = b.add(s, pre + m.op + "." + m.metric, "pass");
            c.measurement = m.value;
            c.units = m.unit;
        }
    }
    if (!r.conformance.empty()) {
        LavaSet& s = b.set("conformance");
        for (const auto& c : r.conformance)
            b.add(s, "conformance." + c.name, result_of(c.outcome),
                  check_log(c.outcome, c.expected, c.observed, c.reason));
    }
    if (!r.invariants.empty()) {
        LavaSet& s = b.set("invariants");
        for (const auto& i : r.invariants) {
            std::vector<std::string> log{to_string(i.verdict) +
                                         (i.backend.empty() ? "" : " [" + i.backend + "]") +
                                         (i.reason.empty() ? "" : ": " + i.reason)};
            for (const auto& v : i.violations)
                log.push_back("violation: " + v);
            b.add(s, "invariants." + i.name, result_of(i.verdict), log);
        }
    }
    if (!r.errors.empty()) {
        LavaSet& s = b.set("tool_errors");
        for (size_t k = 0; k < r.errors.size(); ++k)
            b.add(s, fmt::format("tool_errors.error_{}", k + 1), "unknown", {r.errors[k]});
    }
    if (!r.stalls.empty() || r.incomplete) {
        LavaSet& s = b.set("stalls");
        for (size_t k = 0; k < r.stalls.size(); ++k) {
            std::vector<std::string> log{stall_line(r.stalls[k])};
            log.insert(log.end(), r.stalls[k].kernel_stack.begin(), r.stalls[k].kernel_stack.end());
            b.add(s, fmt::format("stalls.stall_{}", k + 1), "fail", log);
        }
        if (r.incomplete)
            b.add(s, "stalls.run_incomplete", "fail", {r.incomplete_reason});
    }
    LavaSet& k = b.set("kernel_log");
    if (!r.kernel_log_available)
        b.add(k, "kernel_log.scan", "skip", {"not scanned: " + r.kernel_log_reason});
    else if (r.kernel_log.empty())
        b.add(k, "kernel_log.clean", "pass");
    for (const auto& f : r.kernel_log)
        b.add(k, "kernel_log." + f.kind, "fail", {f.line});
    for (const auto& w : r.kernel_log_waived) {
        const auto& by = r.waiver_of(w);
        b.add(k, "kernel_log.waived." + w.finding.kind, "pass",
              {w.finding.line, fmt::format("waived by /{}/ ({}){}", by.regex, by.origin,
                                           by.reason.empty() ? "" : ": " + by.reason)});
    }
    Outcome v = r.verdict();
    std::vector<std::string> log{fmt::format("verdict {}", to_string(v))};
    if (r.interrupted)
        log.push_back("interrupted: " + r.interrupt_reason);
    b.add(b.set(""), "gmemstress", r.interrupted && v != Outcome::fail ? "unknown" : result_of(v),
          log);
    return b.done();
}

std::vector<LavaSet> lava_single(Outcome outcome, const std::string& reason,
                                 const std::vector<std::string>& diagnostics) {
    Builder b;
    std::vector<std::string> log{reason};
    log.insert(log.end(), diagnostics.begin(), diagnostics.end());
    b.add(b.set(""), "gmemstress", result_of(outcome), log);
    return b.done();
}

std::string lava_signal_lines(const std::vector<LavaSet>& sets) {
    std::string text;
    Sink sink{[&](const std::string& l) { text += l + "\n"; }, std::nullopt, std::nullopt, {}};
    emit(sets, sink);
    return text;
}

nlohmann::json lava_to_json(const std::vector<LavaSet>& sets) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : sets) {
        nlohmann::json cases = nlohmann::json::array();
        for (const auto& c : s.cases) {
            nlohmann::json j = {{"name", c.name}, {"result", c.result}, {"log", c.log}};
            if (c.measurement) {
                j["measurement"] = *c.measurement;
                j["units"] = c.units;
            }
            cases.push_back(j);
        }
        out.push_back({{"name", s.name}, {"cases", cases}});
    }
    return {{"lava_sets", out}};
}

std::vector<LavaSet> lava_from_json(const nlohmann::json& j) {
    static const std::set<std::string> results = {"pass", "fail", "skip", "unknown"};
    std::vector<LavaSet> out;
    try {
        for (const auto& s : j.at("lava_sets")) {
            LavaSet set{lava_name(s.at("name").get<std::string>()), {}};
            if (s.at("name").get<std::string>().empty())
                set.name.clear();
            for (const auto& c : s.at("cases")) {
                LavaCase lc{lava_name(c.at("name").get<std::string>()),
                            c.at("result").get<std::string>(), std::nullopt, "",
                            c.at("log").get<std::vector<std::string>>()};
                if (!results.count(lc.result))
                    throw Error("result '" + lc.result + "'");
                if (c.contains("measurement")) {
                    lc.measurement = c.at("measurement").get<double>();
                    lc.units = lava_units(c.at("units").get<std::string>());
                }
                set.cases.push_back(std::move(lc));
            }
            out.push_back(std::move(set));
        }
    } catch (const std::exception& e) {
        throw Error(fmt::format("malformed LAVA results: {}", e.what()));
    }
    return out;
}

std::vector<std::string> emit_lava(const std::vector<LavaSet>& sets) {
    Sink sink{[](const std::string& l) { fmt::print("{}\n", l); },
              on_path("lava-test-set"),
              on_path("lava-test-case"),
              {}};
    emit(sets, sink);
    std::fflush(stdout);
    return sink.failed;
}

} // namespace gms::report
