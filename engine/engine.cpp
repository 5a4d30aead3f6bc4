#include "engine/engine.h"

#include "core/call_scope.h"
#include "core/error.h"
#include "core/util.h"
#include "probes/checkers.h"
#include "probes/lock_pairer.h"
#include "reports/html.h"
#include "reports/ktap.h"
#include "reports/lava.h"
#include "reports/render.h"

#include <algorithm>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <fmt/format.h>
#include <unistd.h>
#include <version.h>

namespace gms::engine {

void check_output_paths(const std::vector<std::string>& paths) {
    for (const auto& p : paths) {
        if (p.empty())
            continue;
        auto dir = std::filesystem::path(p).parent_path();
        if (dir.empty())
            dir = ".";
        if (::access(dir.c_str(), W_OK) != 0)
            throw UsageError(fmt::format("cannot write {}: directory {} is not writable ({})", p,
                                         dir.string(), errno_name(errno)));
    }
}

Caps detect(profile::Profile& p) {
    Caps caps = detect_caps(p.abi_overrides);
    profile::apply_series_abi(p, caps.series.abi);
    return caps;
}

bool host_can_run(const Caps& caps) {
    return kvm_unusable_reason(caps).empty();
}

std::string kvm_unusable_reason(const Caps& caps) {
    if (!caps.kvm_accessible)
        return caps.kvm_error;
    if (!caps.guest_memfd)
        return fmt::format("kernel {} has no guest_memfd (KVM_CAP_GUEST_MEMFD=0; needs Linux 6.8+)",
                           caps.kernel_release);
    return "";
}

void require_kvm(const Caps& caps) {
    if (auto why = kvm_unusable_reason(caps); !why.empty())
        throw EnvError(why);
}

PeakMemory peak_memory(const profile::Profile& p) {
    PeakMemory peak;
    for (const auto& spec : p.workloads) {
        const auto* info = workloads::find(spec.kind);
        uint64_t need = info && info->memory_estimate ? info->memory_estimate(p, spec) : 0;
        if (need > peak.bytes)
            peak = {need, spec.label};
    }
    return peak;
}

void check_memory(const profile::Profile& p, const Caps& caps) {
    auto [peak, peak_label] = peak_memory(p);
    // Leave headroom for the rest of the machine: at most 80% of MemAvailable.
    uint64_t allowed = caps.mem_available / 10 * 8;
    if (caps.mem_available && peak > allowed)
        throw EnvError(
            fmt::format("profile {} needs up to {} (workload '{}') but only {} may be used "
                        "(80% of MemAvailable {}); lower guest_memfd.size, vm.count or threads",
                        p.name, format_size(peak), peak_label, format_size(allowed),
                        format_size(caps.mem_available)));
    if (p.memory_limit && peak > p.memory_limit)
        throw EnvError(
            fmt::format("profile {} needs up to {} (workload '{}'), above its memory_limit {}",
                        p.name, format_size(peak), peak_label, format_size(p.memory_limit)));
}

void stamp(report::Envelope& e, const std::string& command, const Caps& caps) {
    e.tool_version = GMS_VERSION;
    e.timestamp = utc_timestamp();
    e.command = command;
    e.host = caps.to_json();
    e.series = caps.series;
}

report::Report new_report(const std::string& command, const Caps& caps) {
    report::Report r;
    stamp(r, command, caps);
    return r;
}

ProbeAttachment attach_probes(const profile::Profile& p, const Caps& caps, report::Report& rep,
                              bool record) {
    ProbeAttachment a;
    if (p.probes.mode == profile::ProbesMode::off) {
        rep.probes.status = report::ProbesSection::Status::off;
        rep.probes.reason = "probes.mode = off";
        return a;
    }
    probes::Options opts;
    opts.backend = p.probes.backend;
    opts.all_guest_memfds = p.probes.all_guest_memfds;
    opts.ringbuf_size = p.probes.ringbuf_size;
    opts.record = record;
    opts.exclude = {p.probes.exclude.begin(), p.probes.exclude.end()};
    opts.locks = p.probes.locks;
    opts.lock_threshold_ns = uint64_t(p.probes.lock_threshold_s * 1e9);
    opts.program_stats = p.probes.program_stats;
    try {
        a.session = probes::Session::attach(opts, caps);
    } catch (const EnvError& e) {
        if (p.probes.mode == profile::ProbesMode::on)
            throw;
        rep.probes.status = report::ProbesSection::Status::unavailable;
        rep.probes.reason = e.what();
    }
    return a;
}

ProbeAttachment attach_probes(const probes::Options& opts, const Caps& caps) {
    ProbeAttachment a;
    a.session = probes::Session::attach(opts, caps);
    return a;
}

void finish_probes(ProbeAttachment& a, report::Report& rep, const std::string& record_path,
                   const nlohmann::json& record_meta) {
    if (!a.session) {
        std::string why = rep.probes.reason.empty() ? "probes not attached" : rep.probes.reason;
        // Every invariant the checkers judge (names from the checkers themselves),
        // each unverifiable without events.
        for (const auto& named : probes::CheckerSet().results({}, {})) {
            report::InvariantResult inv;
            inv.name = named.name;
            inv.verdict = report::Verdict::unverifiable;
            inv.reason = "no probes: " + why;
            rep.invariants.push_back(inv);
        }
        report::LocksSection locks;
        locks.reason = "no probes: " + why;
        auto inv = probes::judge_lock_holds(locks);
        inv.reason = locks.reason;
        rep.invariants.push_back(inv);
        return;
    }
    a.session->finish();
    rep.probes.status = report::ProbesSection::Status::attached;
    rep.probes.summary = a.session->summary();
    rep.locks = a.session->locks();
    rep.invariants = a.session->check(rep.workloads);
    if (!record_path.empty()) {
        nlohmann::json meta = {{"command", rep.command},
                               {"kernel", rep.host.value("kernel_release", "")}};
        if (rep.profile.contains("name"))
            meta["profile"] = rep.profile["name"];
        meta.update(record_meta);
        try {
            a.session->save_recording(record_path, rep.workloads, meta);
        } catch (const std::exception& e) { // the report must still be written
            rep.errors.push_back(fmt::format("recording not saved: {}", e.what()));
        }
    }
    a.session.reset(); // detach every link before the report is written
}

// ---- progress ---------------------------------------------------------------

ProgressPrinter::ProgressPrinter(bool enabled)
    : enabled_(enabled), live_(isatty(STDERR_FILENO)), start_ns_(now_ns()) {
    if (enabled_)
        thread_ = std::thread([this] { loop(); });
}

ProgressPrinter::~ProgressPrinter() {
    done_ = true;
    if (thread_.joinable()) {
        thread_.join();
        if (live_)
            fmt::print(stderr, "\r\033[K");
    }
}

void ProgressPrinter::set_current(const std::string& label, workloads::Progress* progress) {
    std::lock_guard lk(mu_);
    label_ = label;
    ++generation_;
    progress_ = progress;
}

void ProgressPrinter::loop() {
    uint64_t last_shown = 0; // generation_ of the last plain line
    uint64_t last_line_ns = 0;
    while (!done_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        std::string label;
        uint64_t generation;
        {
            std::lock_guard lk(mu_);
            label = label_;
            generation = generation_;
        }
        workloads::Progress* p = progress_;
        if (!p)
            continue;
        uint64_t now = now_ns();
        std::string what = fmt::format("[{:5.1f}s] {}: {} ops, {}", double(now - start_ns_) / 1e9,
                                       label, p->ops.load(), format_size(p->bytes.load()));
        if (live_) {
            fmt::print(stderr, "\r\033[K{}", what);
        } else {
            if (generation == last_shown && double(now - last_line_ns) / 1e9 < kLineIntervalS)
                continue;
            last_shown = generation;
            last_line_ns = now;
            fmt::print(stderr, "{}{}\n", kProgressLinePrefix, what);
        }
        std::fflush(stderr);
    }
}

// ---- workloads --------------------------------------------------------------

namespace {

report::WorkloadResult skipped(const profile::WorkloadSpec& spec, std::string reason) {
    report::WorkloadResult r;
    r.name = spec.kind;
    r.label = spec.label;
    r.outcome = report::Outcome::skip;
    r.reason = std::move(reason);
    return r;
}

nlohmann::json params_json(const profile::WorkloadSpec& spec) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : spec.params)
        j[k] = std::visit([](auto&& x) { return nlohmann::json(x); }, v);
    return j;
}

report::WorkloadResult run_one(const workloads::WorkloadInfo& info, const profile::Profile& p,
                               const profile::WorkloadSpec& spec, size_t index, const Caps& caps,
                               RunControl& control, kvm::GmemObserver& observer, double budget,
                               ProgressPrinter& progress, const kvm::Kvm& kvm) {
    workloads::Progress prog;
    progress.set_current(spec.label, &prog);
    workloads::Context ctx{kvm,     caps,     p,    spec,  Rng::derive(p.seed, index),
                           control, observer, prog, budget};
    ctx.started_ns = now_ns();
    Timeline::restart_clock(); // its operations' throughput timelines count from here
    report::WorkloadResult r;
    set_thread_role("main");
    try {
        r = info.run(ctx);
    } catch (const Interrupted&) {
        r.outcome = report::Outcome::error;
        r.reason = "interrupted";
    } catch (const Error& e) {
        r.outcome = report::Outcome::error;
        r.reason = e.what();
    }
    report::settle_outcome(r); // a workload that did nothing did not pass
    set_thread_role("main");   // a one-thread workload ran its body here
    progress.set_current(spec.label, nullptr);
    r.name = spec.kind;
    r.label = spec.label;
    r.duration_s = double(now_ns() - ctx.started_ns) / 1e9;
    r.params = params_json(spec);
    return r;
}

} // namespace

void run_workloads(const profile::Profile& p, const Caps& caps, RunControl& control,
                   kvm::GmemObserver& observer, ProgressPrinter& progress, report::Report& rep,
                   RunBoard* board) {
    // Results go into the report under the board's lock: the watchdog may
    // copy it from its own thread to write an abandoned run's report.
    auto add = [&](report::WorkloadResult r) {
        if (!board) {
            rep.workloads.push_back(std::move(r));
            return;
        }
        std::lock_guard lk(board->mu);
        rep.workloads.push_back(std::move(r));
        board->current.clear();
    };
    kvm::Kvm kvm = kvm::Kvm::open();
    // The latency clock calibrates once (20 ms busy wait): here, not inside
    // the first workload's time.
    LatencyTimer::uses_tsc();
    // Skips are decided up front so budgets go to workloads that run.
    std::vector<std::optional<std::string>> skip(p.workloads.size());
    size_t runnable = 0;
    for (size_t i = 0; i < p.workloads.size(); ++i) {
        const auto& spec = p.workloads[i];
        const auto* info = workloads::find(spec.kind);
        skip[i] = info->skip_reason ? info->skip_reason(caps, p, spec) : std::nullopt;
        runnable += !skip[i];
    }
    for (size_t i = 0; i < p.workloads.size(); ++i) {
        const auto& spec = p.workloads[i];
        if (skip[i]) {
            add(skipped(spec, *skip[i]));
            continue;
        }
        if (control.should_stop()) {
            add(skipped(spec, "not started: " + control.stop_reason()));
            continue;
        }
        double budget = spec.number("duration");
        if (budget <= 0)
            budget = control.remaining_s() / double(std::max<size_t>(1, runnable));
        budget = std::min(budget, control.remaining_s());
        --runnable;
        if (board) {
            std::lock_guard lk(board->mu);
            board->current = spec.label;
        }
        if (board && board->watchdog)
            board->watchdog->set_workload(spec.label);
        add(run_one(*workloads::find(spec.kind), p, spec, i, caps, control, observer, budget,
                    progress, kvm));
    }
}

void collect_kernel_log(KmsgWatcher& kmsg, report::Envelope& rep,
                        const std::vector<KmsgWaiver>& waivers) {
    rep.kernel_log_available = kmsg.available();
    rep.kernel_log_reason = kmsg.reason();
    rep.kernel_log_waivers = waivers;
    auto split = apply_waivers(kmsg.collect(), waivers);
    rep.kernel_log.insert(rep.kernel_log.end(), split.findings.begin(), split.findings.end());
    rep.kernel_log_waived.insert(rep.kernel_log_waived.end(), split.waived.begin(),
                                 split.waived.end());
}

void mark_interrupted(const RunControl& control, report::Envelope& rep) {
    if (control.interrupted()) {
        rep.interrupted = true;
        rep.interrupt_reason = control.stop_reason();
    }
}

// ---- the passes of one run --------------------------------------------------

namespace {

// The watchdog's way out of a run whose calls did not all return by the end
// of its duration plus run.grace: the report as far as it goes (finished
// workloads, the one in progress failed, every call still in flight a
// stall), written atomically; then fds closed (BPF links detach, VM fds go
// once the stuck calls drop their references) and _exit without joining.
[[noreturn]] void abandon_run(const profile::Profile& p, const RunSpec& spec, RunBoard& board,
                              Watchdog& wd, report::Report& rep, KmsgWatcher* kmsg,
                              bool probes_attached, uint64_t start_ns) {
    report::Report r;
    std::string current;
    {
        std::lock_guard lk(board.mu);
        r = rep;
        current = board.current;
    }
    r.stalls = wd.stalls_and_blockers();
    std::vector<std::string> stuck;
    for (const auto& st : r.stalls)
        if (!st.ended)
            stuck.push_back(
                fmt::format("thread {} in {} for {:.1f}s", st.tid, st.operation, st.duration_s));
    std::string stuck_text = stuck.empty() ? std::string("none left by now") : stuck.front();
    if (stuck.size() > 1)
        stuck_text += fmt::format(" (and {} more)", stuck.size() - 1);
    for (const auto& spec_w : p.workloads) {
        bool done = std::any_of(r.workloads.begin(), r.workloads.end(),
                                [&](const auto& w) { return w.label == spec_w.label; });
        if (done)
            continue;
        report::WorkloadResult w;
        w.name = spec_w.kind;
        w.label = spec_w.label;
        if (spec_w.label == current) {
            w.outcome = report::Outcome::fail;
            w.reason = fmt::format("did not end: {} stuck in the kernel; its results are lost",
                                   stuck_text);
        } else {
            w.outcome = report::Outcome::skip;
            w.reason = "not started: the run was abandoned";
        }
        r.workloads.push_back(std::move(w));
    }
    r.incomplete = true;
    r.incomplete_reason = fmt::format(
        "the run was abandoned {:.1f}s after it started (duration {}s + grace {}s): "
        "{} call(s) still in the kernel, first {}",
        double(now_ns() - start_ns) / 1e9, p.duration_s, p.grace_s, stuck.size(), stuck_text);
    r.duration_s = double(now_ns() - start_ns) / 1e9;
    for (const auto& named : probes::CheckerSet().results({}, {})) {
        report::InvariantResult inv;
        inv.name = named.name;
        inv.verdict = report::Verdict::incomplete;
        inv.reason = "the run was abandoned with calls stuck in the kernel: events not checked";
        r.invariants.push_back(inv);
    }
    if (probes_attached) {
        r.probes.status = report::ProbesSection::Status::unavailable;
        r.probes.reason = "attached, but never finished: the run was abandoned";
    }
    if (kmsg)
        collect_kernel_log(*kmsg, r, p.kernel_log_waivers);
    mark_interrupted(RunControl::global(), r);
    int code = kExitFailures;
    try {
        code = write_reports(r, *spec.abandon_output);
    } catch (const std::exception& e) {
        fmt::print(stderr, "gmemstress: the abandoned run's report could not be written: {}\n",
                   e.what());
        code = kExitToolError;
    }
    fmt::print(stderr, "gmemstress: {}; exiting without them\n", r.incomplete_reason);
    if (spec.map_exit_code)
        code = spec.map_exit_code(code);
    std::fflush(nullptr);
    if (const char* token = std::getenv("GMS_LAB_TOKEN"); token && *token) {
        int fd = ::open("/dev/console", O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            std::string line = fmt::format("\n{}:abandoned:{}\n", token, code);
            (void)!::write(fd, line.data(), line.size());
            ::close(fd);
        }
    }
    notify_supervisor(code);
    ::close_range(3, ~0u, 0);
    ::_exit(code);
}

} // namespace

report::Report run_profile(const profile::Profile& p, const Caps& caps, const RunSpec& spec) {
    RunControl& control = RunControl::global();
    report::Report rep = new_report(spec.command, caps);
    rep.profile = p.to_json();
    rep.seed = p.seed;
    rep.stall_threshold_s = p.stall_threshold_s;
    if (!call_scopes_enabled()) {
        rep.stall_threshold_s = 0; // not watched
        fmt::print(stderr, "gmemstress: GMS_BENCH_NO_CALLSCOPE is set: blocking calls are not "
                           "watched, no stall can be reported (for benchmarks only)\n");
    }

    // attach
    std::optional<KmsgWatcher> kmsg;
    if (spec.kernel_log)
        kmsg.emplace();
    ProbeAttachment probes = attach_probes(p, caps, rep, !spec.record_path.empty());
    // The duration is the workloads' time: attaching (slow under TCG) is not
    // charged to it.
    control.set_deadline(p.duration_s);

    // run, watched
    uint64_t start = now_ns();
    RunBoard board;
    const char* token = std::getenv("GMS_LAB_TOKEN");
    Watchdog wd({.stall_threshold_s = p.stall_threshold_s,
                 .grace_s = p.grace_s,
                 .run_start_ns = start,
                 .kick_vcpus = true,
                 .lab_token = token ? token : ""});
    board.watchdog = &wd;
    if (spec.abandon_output) {
        bool attached = bool(probes.session);
        KmsgWatcher* k = kmsg ? &*kmsg : nullptr;
        wd.arm_abandon(start + uint64_t((p.duration_s + p.grace_s) * 1e9), [&, attached, k] {
            abandon_run(p, spec, board, wd, rep, k, attached, start);
        });
    }
    {
        ProgressPrinter progress(spec.progress);
        run_workloads(p, caps, control, probes.observer(), progress, rep, &board);
    }
    // The run ended by itself: the watchdog must not write the report now
    // (if it already is, it exits the process; wait for that).
    if (!wd.disarm())
        for (;;)
            ::pause();
    rep.duration_s = double(now_ns() - start) / 1e9;
    rep.stalls = wd.stalls();

    // finish
    finish_probes(probes, rep, spec.record_path);
    if (kmsg)
        collect_kernel_log(*kmsg, rep, p.kernel_log_waivers);
    mark_interrupted(control, rep);
    return rep;
}

// ---- write ------------------------------------------------------------------

namespace {

// The JSON file (unless `out` has none), the JUnit and KTAP files (when
// asked and the report type has them), then the summary on stdout (on
// stderr when the KTAP goes to stdout).
void emit(const nlohmann::json& json, const std::string& junit, const std::string& ktap,
          const std::string& text, const Output& out) {
    if (!out.json_path.empty())
        report::write_atomically(out.json_path, json.dump(2) + "\n");
    if (!out.junit_path.empty())
        report::write_atomically(out.junit_path, junit);
    bool ktap_on_stdout = out.ktap_path == "-";
    if (!out.ktap_path.empty() && !ktap_on_stdout)
        report::write_atomically(out.ktap_path, ktap);
    FILE* summary = ktap_on_stdout ? stderr : stdout;
    if (out.summary == Summary::json)
        fmt::print(summary, "{}\n", json.dump(2));
    if (out.summary == Summary::text) {
        fmt::print(summary, "{}", text);
        if (!out.json_path.empty())
            fmt::print(summary, "report: {}\n", out.json_path);
    }
    if (ktap_on_stdout) {
        std::fflush(stderr);
        fmt::print("{}", ktap);
        std::fflush(stdout);
    }
}

} // namespace

int write_reports(const report::Report& rep, const Output& out) {
    if (!out.html_path.empty())
        report::write_atomically(out.html_path, report::to_html(rep));
    if (!out.kcidb_path.empty())
        report::write_atomically(out.kcidb_path, report::to_kcidb(rep, out.kcidb).dump(2) + "\n");
    if (!out.lava_json_path.empty())
        report::write_atomically(out.lava_json_path,
                                 report::lava_to_json(report::to_lava(rep)).dump(2) + "\n");
    emit(report::to_json(rep), out.junit_path.empty() ? "" : report::to_junit(rep),
         out.ktap_path.empty() ? "" : report::to_ktap(rep),
         report::to_text(rep, isatty(out.ktap_path == "-" ? STDERR_FILENO : STDOUT_FILENO)), out);
    int code = exit_code_for(rep.verdict(), rep.interrupted);
    if (out.lava)
        code = emit_lava(report::to_lava(rep), code);
    return code;
}

int emit_lava(const std::vector<report::LavaSet>& sets, int code) {
    auto failed = report::emit_lava(sets);
    for (const auto& f : failed)
        fmt::print(stderr, "gmemstress: LAVA: {}\n", f);
    // Results LAVA did not record are lost results: never a pass.
    return !failed.empty() && code == kExitPass ? kExitToolError : code;
}

// probe-cost has no JUnit or KTAP form: its commands never ask for one.
int write_reports(const report::CostReport& rep, const Output& out) {
    emit(report::to_json(rep), "", "", report::to_text(rep), out);
    return exit_code_for(rep.verdict, rep.interrupted);
}

int exit_code_for(report::Outcome verdict, bool interrupted) {
    if (interrupted)
        return kExitInterrupted;
    switch (verdict) {
    case report::Outcome::fail:
        return kExitFailures;
    case report::Outcome::error:
        return kExitToolError;
    case report::Outcome::skip:
        return kExitEnvironment; // nothing ran, or nothing could be measured
    case report::Outcome::pass:
        return kExitPass;
    }
    return kExitToolError;
}

} // namespace gms::engine
