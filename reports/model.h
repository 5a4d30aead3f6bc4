// The report as plain data. Renderers (JSON, text, JUnit) read it; nothing
// here knows about output formats.
#pragma once

#include "core/histogram.h"
#include "core/kmsg.h"
#include "core/timeline.h"
#include "kvm/series.h"
#include "reports/locks.h"
#include "reports/outcome.h"
#include "reports/pin_convert.h"
#include "reports/probes_summary.h"
#include "reports/range_scaling.h"

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::report {

// 2: latency histograms keep their buckets, p99.9 and exact sum; each
// operation has a throughput timeline. Version 1 reports had neither.
inline constexpr int kSchemaVersion = 2;

// Per operation kind ("fault", "punch_hole", "KVM_RUN", ...).
struct OpStats {
    uint64_t count = 0;
    uint64_t bytes = 0;
    std::map<std::string, uint64_t> errors; // errno name -> count
    Histogram latency_ns; // completed operations only, as is the timeline
    Timeline timeline;

    void record(uint64_t ns, uint64_t nbytes = 0) {
        ++count;
        bytes += nbytes;
        latency_ns.add(ns);
        timeline.add(Timeline::clock_ns());
    }
    void record_error(int err);
    void merge(const OpStats& o);
};

// One expectation about the kernel, with what was expected and observed.
struct Check {
    std::string name;
    Outcome outcome = Outcome::pass;
    std::string expected;
    std::string observed;
    std::string reason; // why skipped / why it failed / error text
};

struct Verification {
    uint64_t pages_checked = 0;
    uint64_t mismatches = 0;
    std::vector<std::string> first_mismatches; // at most a few, human readable
    void mismatch(std::string what) {
        ++mismatches;
        if (first_mismatches.size() < 8)
            first_mismatches.push_back(std::move(what));
    }
};

// What a workload says it did, for the probes' checkers to compare against
// (probes::Expectations sums them over workloads). Unset: not known (or, for
// the lower bounds, not claimed). The JSON report writes the set ones into
// the workload's "counters" object under the names in the comments.
struct ProbeExpectations {
    // "gmem_files": guest_memfd files the workload created. Unset on a
    // workload that ran: it touched files without knowing how many.
    std::optional<uint64_t> gmem_files;
    // "expected_pages_added" / "expected_pages_removed": exact page-cache
    // adds and removals over those files; unset when not predictable (races).
    std::optional<uint64_t> pages_added;
    std::optional<uint64_t> pages_removed;
    // "min_handouts_to_user" / "min_handouts_to_guest": lower bounds of
    // folios handed to host userspace (user faults) and to the guest
    // (kvm_gmem_get_pfn).
    std::optional<uint64_t> min_handouts_to_user;
    std::optional<uint64_t> min_handouts_to_guest;
};

// One guest_memfd call swept with fail-nth (the fault-inject workload): N =
// 1.. armed around the call until an N injects no fault (or the bounds end
// the sweep), and what each injected fault did.
struct FaultSweep {
    std::string call;    // "create", "allocate", "punch", "bind", ...
    std::string syscall; // what the call is, e.g. "fallocate(KEEP_SIZE)"
    Outcome outcome = Outcome::pass;
    std::string reason;      // why it skipped, or what failed first
    uint64_t attempts = 0;   // N values armed
    uint64_t faults_injected = 0;
    uint64_t first_n = 0, last_n = 0; // N range armed (0, 0: none)
    // The sweep reached an N that injected nothing: every allocation site the
    // call reached was failed once. False: max_n, the time budget or ops ended it.
    bool exhausted = false;
    std::string bounded_by; // "max_n", "time", "ops", "stop" when not exhausted
    uint64_t succeeded_despite_fault = 0; // the call returned success with a fault injected
    std::map<std::string, uint64_t> errnos; // errno name (or SIGBUS) -> injected faults
    uint64_t leaks = 0;
    uint64_t failures = 0; // undocumented errno, retry failed, kernel log finding, ...
    std::vector<std::string> first_leaks;    // at most a few, each naming N
    std::vector<std::string> first_failures; // at most a few, each naming N
    // Memory accounting over the whole sweep, once every object was released:
    // Unevictable (guest_memfd folios sit on the unevictable LRU) before and after, in kB.
    std::optional<int64_t> unevictable_delta_kb;

    void leak(std::string what);
    void failure(std::string what);
};

struct WorkloadResult {
    std::string name;  // registry name, e.g. "host-fault"
    std::string label; // instance label from the profile (defaults to name)
    Outcome outcome = Outcome::pass;
    std::string reason;
    double duration_s = 0;
    std::map<std::string, OpStats> ops;
    Verification verification;
    std::vector<Check> checks;
    // Informational counts (e.g. "pages_first_touched", "guest_rounds").
    std::map<std::string, uint64_t> counters;
    ProbeExpectations expect; // rendered inside "counters" too
    std::vector<FaultSweep> fault_sweeps; // fault-inject only ("fault_sweeps" in JSON)
    nlohmann::json params = nlohmann::json::object();
    // The range-scaling workload's fits (reports/range_scaling.h); unset elsewhere.
    std::optional<RangeScaling> range_scaling;
    // The pin-convert workload's cases (reports/pin_convert.h); unset elsewhere.
    std::optional<PinConvert> pin_convert;
};

// Whether a workload did anything: an operation (failed ones included), a
// verified page, or a check that did not skip. One that did nothing did not
// run, whatever outcome it claims.
bool did_run(const WorkloadResult& w);

// A workload that claims `pass` but did not run becomes `skip`, its reason
// naming why its checks skipped (each reason once, with its checks). Other
// outcomes are left alone: a failure or an error stands on its own.
void settle_outcome(WorkloadResult& w);

enum class Verdict { verified, violated, incomplete, unverifiable };
std::string to_string(Verdict v);

struct InvariantResult {
    std::string name;
    Verdict verdict = Verdict::unverifiable;
    std::string reason;
    std::string backend;                      // "tracepoint", "fentry", "kprobe", ...
    std::map<std::string, uint64_t> evidence; // event counts
    std::vector<std::string> violations;      // first N
};

// A blocking kernel call that lasted longer than the run's stall threshold
// (run.stall_threshold), seen by the watchdog while it lasted
// (engine/watchdog.h): who, what, since when, where in the kernel.
struct VcpuStallState {
    unsigned id = 0;
    // The exit KVM_RUN last returned with before this call (kvm_run's
    // exit_reason, left from the previous exit; "none" for a first entry).
    std::string last_exit;
    // The watchdog kicked the thread (signal + immediate_exit) to learn where
    // the guest is: whether KVM_RUN returned, and the guest's registers then.
    bool kicked = false;
    bool left_kvm_run = false;
    std::optional<uint64_t> guest_rip; // at the kick's exit (sync regs)
    std::string note;                  // why no RIP, what the kick did
};

struct Stall {
    uint64_t tid = 0;
    std::string thread;     // role: "vcpu", "worker", ...
    std::string workload;   // label of the workload running when it was seen
    std::string operation;  // "fallocate(PUNCH_HOLE)", "KVM_RUN", "mmap access", ...
    std::string args;       // "guest_memfd fd=7 offset=0x0 len=0x40000"
    std::string started_at; // ISO 8601 UTC (ms)
    double started_s = 0;   // since the run started
    double duration_s = 0;  // so far, or in all when ended
    bool ended = false;     // the call returned (while the run still went on)
    std::string task_state; // /proc/self/task/TID/stat: "D (disk sleep)", ...
    std::string wchan;
    std::vector<std::string> kernel_stack; // /proc/self/task/TID/stack, first sample
    std::string stack_error;               // why there is no stack
    std::optional<VcpuStallState> vcpu;
};

// The kernel log scanner's finding (core/kmsg.h), as reports carry it, and
// the known messages waived (reported, not counted as findings).
using KmsgFinding = gms::KmsgFinding;
using KmsgWaiver = gms::KmsgWaiver;
using WaivedFinding = gms::WaivedFinding;

// What every report starts with, whatever the command (run, watch,
// probe-cost): who wrote it, when, on which host, with which profile,
// whether it was cut short, the kernel log over the whole command and the
// tool's own errors. One struct so the engine fills it once for every report
// type and the renderers write it once (envelope_json()).
struct Envelope {
    std::string tool_version;
    std::string timestamp; // ISO 8601 UTC
    std::string command;   // "run", "watch", "probe-cost"
    nlohmann::json host = nlohmann::json::object();
    nlohmann::json profile = nlohmann::json::object();
    bool interrupted = false;
    std::string interrupt_reason;
    std::optional<nlohmann::json> lab; // set when run inside `gmemstress lab`
    // The in-flight guest_memfd series the kernel carries and the ABI used
    // (kvm/series.h); unset only in reports made without detecting the host.
    std::optional<kvm::SeriesInfo> series;
    std::vector<KmsgFinding> kernel_log; // findings: each fails the verdict
    bool kernel_log_available = true;
    std::string kernel_log_reason;
    std::vector<KmsgWaiver> kernel_log_waivers;   // every waiver of the run
    std::vector<WaivedFinding> kernel_log_waived; // matched one: not in kernel_log
    // How many findings each of kernel_log_waivers waived.
    std::vector<size_t> waiver_counts() const;
    // The waiver of a waived finding.
    const KmsgWaiver& waiver_of(const WaivedFinding& w) const;
    std::vector<std::string> errors; // tool-level errors that did not abort the run
};

struct Report : Envelope {
    uint64_t seed = 0;
    double duration_s = 0;
    std::vector<WorkloadResult> workloads;
    std::vector<Check> conformance;
    std::vector<InvariantResult> invariants;
    ProbesSection probes; // attach results, counters
    // invalidate_lock hold and wait times; unset without probes.
    std::optional<LocksSection> locks;

    // Calls that lasted longer than stall_threshold_s: each fails the verdict.
    std::vector<Stall> stalls;
    double stall_threshold_s = 0; // 0: not watched (reports from before the watchdog)
    // The run did not end by itself: a call never returned, and the report
    // was written by the watchdog at the run's end plus its grace, without
    // waiting for the stuck threads (the process then exited).
    bool incomplete = false;
    std::string incomplete_reason;

    // fail: a check, workload, invariant, kernel log finding or stall failed;
    // error: the tool could not do what was asked; skip: nothing ran (no
    // workload did anything, see did_run(), and no conformance check ran;
    // `watch` runs no workloads and is exempt); pass: something ran and
    // nothing failed.
    Outcome verdict() const;
};

} // namespace gms::report
