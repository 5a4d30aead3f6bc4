// `gmemstress probe-cost`: what observation costs on this machine. Runs one
// profile repeatedly with the probes off and on, alternately, in one
// invocation, and compares the workloads' throughput pair by pair.
#include "cli/commands.h"
#include "core/error.h"
#include "engine/engine.h"
#include "probes/attach_points.h"
#include "probes/lock_probes.h"
#include "reports/cost.h"
#include "workloads/workload.h"

#include <cmath>
#include <fmt/format.h>

namespace gms::cli {

namespace {

struct CostOptions {
    std::string profile = "probe-cost";
    std::string report_path = "gmemstress-probe-cost.json";
    int reps = 5;
    int warmup = 0;
    std::string max_cost = "10%";
    std::optional<std::string> probe_backend;
    std::vector<std::string> sets;
    bool quiet = false;
};

// "10%" or "0.1" -> 0.1; the fraction of throughput observation may cost.
double parse_max_cost(const std::string& s) {
    std::string num = s;
    bool percent = !num.empty() && num.back() == '%';
    if (percent)
        num.pop_back();
    size_t used = 0;
    double v = NAN;
    try {
        v = std::stod(num, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != num.size() || num.empty() || !std::isfinite(v))
        throw UsageError(
            fmt::format("--max-cost {}: expected a fraction (0.1) or a percentage (10%)", s));
    if (percent)
        v /= 100;
    if (v < 0 || v >= 1)
        throw UsageError(fmt::format("--max-cost {}: must be at least 0 and below 100%", s));
    return v;
}

// One run of the profile with the probes `on` or off, as `run` does it; the
// kernel log is scanned over the whole command instead.
report::Report run_once(const profile::Profile& base, const Caps& caps, bool on) {
    profile::Profile p = base;
    p.probes.mode =
        on ? profile::ProbesMode::on
           : profile::ProbesMode::off; // on: a failure to attach is an error, not a silent off
    engine::RunSpec spec;
    spec.kernel_log = false;
    return engine::run_profile(p, caps, spec);
}

// One more probes-on run with the kernel's BPF statistics on: each program's
// runs and run time. Its failure is no verdict: the pairs decide.
report::ProgramStats attribution_run(const profile::Profile& base, const Caps& caps, bool quiet) {
    profile::Profile p = base;
    p.probes.program_stats = true;
    report::ProgramStats none;
    try {
        auto run = run_once(p, caps, true);
        if (run.probes.attached() && run.probes.summary->program_stats)
            return *run.probes.summary->program_stats;
        none.reason = "the probes were not attached";
    } catch (const Interrupted&) {
        none.reason = "interrupted";
    } catch (const Error& e) {
        none.reason = e.what();
    }
    if (!quiet)
        fmt::print(stderr, "probe-cost: attribution run: {}\n", none.reason);
    return none;
}

int probe_cost(const CostOptions& o) {
    RunControl& control = RunControl::global();

    // parse
    if (o.reps < 1 || o.reps > 1000)
        throw UsageError(fmt::format("--reps {}: expected 1..1000", o.reps));
    if (o.warmup < 0 || o.warmup > 100)
        throw UsageError(fmt::format("--warmup {}: expected 0..100", o.warmup));
    double max_cost = parse_max_cost(o.max_cost);
    std::vector<profile::Override> overrides;
    if (o.probe_backend)
        overrides.push_back({"probes.backend", fmt::format("\"{}\"", *o.probe_backend),
                             "--probe-backend " + *o.probe_backend});
    for (const auto& s : o.sets)
        overrides.push_back(profile::parse_set_flag(s));
    profile::Profile prof = profile::load_profile(o.profile, overrides, workloads::schemas(),
                                                  probes::excludable_point_names());
    engine::check_output_paths({o.report_path});

    // detect
    Caps caps = engine::detect(prof);
    engine::require_kvm(caps);
    engine::check_memory(prof, caps);

    report::CostReport rep;
    engine::stamp(rep, "probe-cost", caps);
    rep.profile = prof.to_json();
    rep.backend_requested = profile::to_string(prof.probes.backend);
    rep.reps_requested = o.reps;
    rep.warmup_pairs = o.warmup;
    rep.max_cost = max_cost;
    if (!o.quiet)
        fmt::print(stderr, "probe-cost: {} pairs of runs of profile {}, up to {:.0f} s each\n",
                   o.reps, prof.name, prof.duration_s);

    // warm up (asked for): runs that pay for memory and caches the later ones
    // find ready. Run, not kept; a failure here shows again below. Off by
    // default: in the lab one warm-up pair did not narrow the ratios
    // (docs/PROBES.md, 2026-12-02).
    for (int i = 0; i < o.warmup && !control.interrupted(); ++i)
        for (bool on : {true, false})
            try {
                run_once(prof, caps, on);
            } catch (const Interrupted&) {
                break;
            } catch (const Error&) {
            }
    if (!o.quiet && o.warmup)
        fmt::print(stderr, "probe-cost: {} warm-up pair(s) done\n", o.warmup);

    // run: rep 1 starts with the probes on, so a kernel that cannot attach
    // them is found before any time is spent; then the order alternates.
    KmsgWatcher kmsg;
    for (int rep_no = 1; rep_no <= o.reps && !control.interrupted(); ++rep_no) {
        report::CostPair pair;
        pair.rep = rep_no;
        pair.off_first = rep_no % 2 == 0;
        bool failed = false; // this pair is incomplete
        for (bool on : {!pair.off_first, pair.off_first}) {
            report::Report run;
            try {
                run = run_once(prof, caps, on);
            } catch (const Interrupted&) {
                failed = true; // the pair is dropped below; the report is marked
                break;
            } catch (const Error& e) {
                if (rep.pairs.empty())
                    throw; // nothing measured yet: exit as `run` would
                // Keep the pairs already measured: the report says what broke.
                rep.errors.push_back(
                    fmt::format("rep {} (probes {}): {}", rep_no, on ? "on" : "off", e.what()));
                failed = true;
                break;
            }
            if (!rep.probes.attached() && on)
                rep.probes = run.probes;
            (on ? pair.on : pair.off) = report::cost_run_from(run);
            if (control.interrupted())
                break;
        }
        if (control.interrupted() || failed)
            break; // a pair cut short would compare unlike runs
        if (!o.quiet)
            fmt::print(stderr, "probe-cost: rep {}/{} done\n", rep_no, o.reps);
        rep.pairs.push_back(std::move(pair));
    }

    // attribute: where the probes' time goes (not a pair: BPF stats cost clock reads)
    if (!control.interrupted() && !rep.pairs.empty())
        rep.program_stats = attribution_run(prof, caps, o.quiet);

    // finish
    engine::collect_kernel_log(kmsg, rep, prof.kernel_log_waivers);
    engine::mark_interrupted(control, rep);
    report::summarize(rep);

    // write
    return engine::write_reports(
        rep, {o.report_path, "", o.quiet ? engine::Summary::none : engine::Summary::text});
}

} // namespace

void add_probe_cost_command(CLI::App& app, Action& action) {
    static CostOptions o;
    auto* cmd = app.add_subcommand(
        "probe-cost", "Measure what the eBPF probes cost: a profile's throughput with the probes "
                      "off and on, alternately, in one invocation");
    cmd->add_option("-p,--profile", o.profile,
                    "built-in profile name or TOML file (default: probe-cost)");
    cmd->add_option("-r,--report", o.report_path, "JSON report path (written atomically)");
    cmd->add_option("--reps", o.reps, "pairs of runs (default 5)");
    cmd->add_option("--warmup", o.warmup,
                    "pairs of runs before the measured ones, not counted (default 0)");
    cmd->add_option("--max-cost", o.max_cost,
                    "largest acceptable throughput loss with the probes on (default 10%)");
    add_probe_backend_flag(cmd, o.probe_backend);
    cmd->add_option("--set", o.sets, "override any profile key: KEY=VALUE");
    cmd->add_flag("-q,--quiet", o.quiet, "no table on stdout, no progress on stderr");
    cmd->callback([&action] { action = [] { return probe_cost(o); }; });
}

} // namespace gms::cli
