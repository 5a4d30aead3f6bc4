// The run engine: detect -> attach -> run -> finish -> write, once, for every
// command that runs or observes something (run, watch, probe-cost; the lab's
// guest through run). Commands map their flags to a Profile and an Output and
// call these passes in order; none of them re-implements one.
#pragma once

#include "core/caps.h"
#include "core/kmsg.h"
#include "core/profile.h"
#include "core/run_control.h"
#include "engine/exit_codes.h"
#include "engine/watchdog.h"
#include "probes/session.h"
#include "reports/cost.h"
#include "reports/kcidb.h"
#include "reports/lava.h"
#include "reports/model.h"
#include "workloads/workload.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace gms::engine {

// ---- detect -----------------------------------------------------------------

// Fails early (UsageError) if a report could not be written at the end.
void check_output_paths(const std::vector<std::string>& paths);
// This machine and the series its kernel carries; the profile then takes the
// flag bits and conversion ABI from that fingerprint where it set none itself
// (profile::apply_series_abi: UsageError for a flag whose bit is unknown here).
Caps detect(profile::Profile& p);
// Can this machine's KVM run workloads: a usable /dev/kvm with guest_memfd?
bool host_can_run(const Caps& caps);
// Why not, in words (empty when it can).
std::string kvm_unusable_reason(const Caps& caps);
// EnvError if /dev/kvm or guest_memfd is missing.
void require_kvm(const Caps& caps);

// The most memory one workload of the profile needs at once.
struct PeakMemory {
    uint64_t bytes = 0;
    std::string label; // of that workload
};
PeakMemory peak_memory(const profile::Profile& p);
// EnvError if the profile's peak memory exceeds MemAvailable or memory_limit.
void check_memory(const profile::Profile& p, const Caps& caps);

// Every report's envelope: this tool, now, this host.
void stamp(report::Envelope& e, const std::string& command, const Caps& caps);
report::Report new_report(const std::string& command, const Caps& caps);

// ---- attach -----------------------------------------------------------------

// Probes are optional in `auto` mode: a failure to attach is recorded.
class ProbeAttachment {
  public:
    std::unique_ptr<probes::Session> session;
    kvm::GmemObserver& observer() { return session ? *session : null_; }

  private:
    kvm::GmemObserver null_;
};
// As the profile's [probes] say; `record`: keep the decoded event stream
// for finish_probes() to save.
ProbeAttachment attach_probes(const profile::Profile& p, const Caps& caps, report::Report& rep,
                              bool record = false);
// Exactly these options, required (`watch`: observing is all it does).
ProbeAttachment attach_probes(const probes::Options& opts, const Caps& caps);

// ---- run --------------------------------------------------------------------

// Progress on stderr while workloads run: on a terminal one line redrawn in
// place; otherwise (a CI log, a file, the lab's guest) plain lines without
// carriage returns, one when a workload starts and every kLineInterval.
class ProgressPrinter {
  public:
    static constexpr double kLineIntervalS = 5;
    explicit ProgressPrinter(bool enabled);
    ~ProgressPrinter();
    void set_current(const std::string& label, workloads::Progress* progress);

  private:
    void loop();
    bool enabled_;
    bool live_ = false; // stderr is a terminal
    std::atomic<bool> done_{false};
    std::atomic<workloads::Progress*> progress_{nullptr};
    std::string label_;
    uint64_t generation_ = 0; // set_current() calls: a new workload started
    std::mutex mu_;
    uint64_t start_ns_;
    std::thread thread_;
};

// What the watchdog's abandon callback reads of a run still in progress:
// results are added to the report and the current workload named under `mu`.
struct RunBoard {
    std::mutex mu;
    std::string current; // label of the workload running ("" between them)
    Watchdog* watchdog = nullptr;
};

void run_workloads(const profile::Profile& p, const Caps& caps, RunControl& control,
                   kvm::GmemObserver& observer, ProgressPrinter& progress, report::Report& rep,
                   RunBoard* board = nullptr);

// ---- finish -----------------------------------------------------------------

// Detaches, then records the probes' description and invariant verdicts;
// with `record_path`, also saves the event stream with the workloads'
// expectations (JSON lines, replayable through the checkers), its header
// naming the command, kernel and profile, plus `record_meta`. A recording
// that cannot be saved is a report error ("recording not saved: ..."): the
// report is still written.
void finish_probes(ProbeAttachment& probes, report::Report& rep,
                   const std::string& record_path = "",
                   const nlohmann::json& record_meta = nlohmann::json::object());
// The kernel log's findings since `kmsg` opened, into any report; those a
// waiver matches go to the waived list instead (and fail nothing).
void collect_kernel_log(KmsgWatcher& kmsg, report::Envelope& rep,
                        const std::vector<KmsgWaiver>& waivers = {});
// A stop by signal marks the report (exit 130); a deadline does not.
void mark_interrupted(const RunControl& control, report::Envelope& rep);

// ---- the passes of one run --------------------------------------------------

// What goes to stdout once the report files are written.
enum class Summary { text, json, none };
struct Output {
    std::string json_path; // empty: no JSON file
    std::string junit_path;
    Summary summary = Summary::text;
    // KTAP v1 (reports/ktap.h); "-": on stdout, and the text summary on stderr.
    std::string ktap_path;
    // KCIDB v5.3 tests (reports/kcidb.h), with their origin, build and run ids.
    std::string kcidb_path;
    report::KcidbOptions kcidb;
    // LAVA (reports/lava.h): its helpers run, or its signal lines on stdout,
    // after the summary; a failed helper call makes a pass a tool error.
    bool lava = false;
    // The LAVA calls as JSON instead, for `gmemstress lab` to make on the host.
    std::string lava_json_path;
    std::string html_path; // self-contained HTML (reports/html.h); run reports only
};

struct RunSpec {
    std::string command = "run";
    std::string record_path; // also save the probes' event stream here
    bool progress = false;   // progress on stderr (ProgressPrinter)
    // Scan the kernel log over this run; off when the command scans it over
    // several runs itself (probe-cost).
    bool kernel_log = true;
    // Where the watchdog writes the report if the run has to be abandoned
    // (a call still stuck run.grace after the duration), and how it maps the
    // exit code (--exit-codes) before it exits. Without it a stuck run waits.
    std::optional<Output> abandon_output;
    std::function<int(int)> map_exit_code;
};
// attach -> run -> finish for a detected host: the probes as the profile
// says, the workloads within its duration (attaching is not charged to it),
// then the checkers, the recording and the kernel log.
report::Report run_profile(const profile::Profile& p, const Caps& caps, const RunSpec& spec);

// ---- write ------------------------------------------------------------------

// Makes the LAVA calls (reports/lava.h), says on stderr which failed;
// returns `code`, or a tool error instead of a pass when one failed.
int emit_lava(const std::vector<report::LavaSet>& sets, int code);

// Writes the report files, prints the summary, returns the exit code.
int write_reports(const report::Report& rep, const Output& out);
int write_reports(const report::CostReport& rep, const Output& out);

// The exit code of a verdict (README "Exit codes"); interrupted wins.
int exit_code_for(report::Outcome verdict, bool interrupted);

} // namespace gms::engine
