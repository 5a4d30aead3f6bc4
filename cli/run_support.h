// The passes of `gmemstress run` (and pieces `watch` shares), each small.
#pragma once

#include "core/caps.h"
#include "core/kmsg.h"
#include "core/profile.h"
#include "core/run_control.h"
#include "probes/session.h"
#include "reports/model.h"
#include "workloads/workload.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace gms::cli {

profile::WorkloadSchemas workload_schemas();

// Fails early (UsageError) if a report could not be written at the end.
void check_output_paths(const std::vector<std::string>& paths);
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

report::Report new_report(const std::string& command, const Caps& caps);

// Probes are optional in `auto` mode: a failure to attach is recorded.
class ProbeAttachment {
  public:
    std::unique_ptr<probes::Session> session;
    workloads::GmemObserver& observer() { return session ? *session : null_; }

  private:
    workloads::GmemObserver null_;
};
// `record`: keep the decoded event stream for finish_probes() to save.
ProbeAttachment attach_probes(const profile::Profile& p, const Caps& caps, report::Report& rep,
                              bool record = false);
// Detaches, then records the probes' description and invariant verdicts;
// with `record_path`, also saves the event stream with the workloads'
// expectations (JSON lines, replayable through the checkers), its header
// naming the command, kernel and profile, plus `record_meta`. A recording
// that cannot be saved is a report error ("recording not saved: ..."): the
// report is still written.
void finish_probes(ProbeAttachment& probes, report::Report& rep,
                   const std::string& record_path = "",
                   const nlohmann::json& record_meta = nlohmann::json::object());

// A live progress line on stderr while workloads run.
class ProgressPrinter {
  public:
    explicit ProgressPrinter(bool enabled);
    ~ProgressPrinter();
    void set_current(const std::string& label, workloads::Progress* progress);

  private:
    void loop();
    bool enabled_;
    std::atomic<bool> done_{false};
    std::atomic<workloads::Progress*> progress_{nullptr};
    std::string label_;
    std::mutex mu_;
    uint64_t start_ns_;
    std::thread thread_;
};

void run_workloads(const profile::Profile& p, const Caps& caps, RunControl& control,
                   workloads::GmemObserver& observer, ProgressPrinter& progress,
                   report::Report& rep);

void collect_kernel_log(KmsgWatcher& kmsg, report::Report& rep);

// The exit code of a verdict (README "Exit codes"); interrupted wins.
int exit_code_for(report::Outcome verdict, bool interrupted);

// What goes to stdout once the report files are written.
enum class Summary { text, json, none };

// Writes JSON (unless `json_path` is empty) and JUnit (if asked), prints the
// summary, returns the exit code.
int write_reports(const report::Report& rep, const std::string& json_path,
                  const std::string& junit_path, Summary summary);
// The same; `quiet`: no summary, else the text one.
int write_reports(const report::Report& rep, const std::string& json_path,
                  const std::string& junit_path, bool quiet);

} // namespace gms::cli
