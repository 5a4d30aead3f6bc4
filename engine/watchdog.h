// The run's watchdog: never hang, always say what is stuck.
//
// Every blocking kernel call of a workload runs inside a CallScope
// (core/call_scope.h). The watchdog thread scans those slots; a call running
// longer than run.stall_threshold becomes a Stall (reports/model.h) at once,
// while it lasts: thread, operation and arguments, since when, the task's
// state, wchan and kernel stack (/proc/self/task/TID/stack), and for a vCPU
// the exit KVM_RUN last returned with and, after a kick (SIGUSR1 +
// immediate_exit, with KVM_SYNC_X86_REGS asked for that exit), where the guest
// is. It says so on stderr (and, in the lab, on the console).
//
// At the run's end plus run.grace, if the engine is still waiting for its
// threads, the watchdog gives up on them: the engine's abandon callback
// writes the report (incomplete, every call still in flight a stall) and the
// process exits without joining them (see fork_supervisor() for why the exit
// status still reaches the caller in time).
#pragma once

#include "core/call_scope.h"
#include "reports/model.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace gms::engine {

struct WatchdogOptions {
    double stall_threshold_s = 5;
    // A stop by signal moves an armed abandonment to the signal + grace_s.
    double grace_s = 10;
    uint64_t run_start_ns = 0; // now_ns() when the run started (for Stall::started_s)
    // Kick a stalled KVM_RUN to learn the guest's RIP (off in tests without KVM).
    bool kick_vcpus = true;
    // In the lab: the marker token of the guest's /init ($GMS_LAB_TOKEN); a
    // stall and an abandonment are announced on /dev/console with it.
    std::string lab_token;
};

class Watchdog {
  public:
    explicit Watchdog(WatchdogOptions o);
    ~Watchdog();
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;

    // The workload now running (named in stalls seen from now on).
    void set_workload(const std::string& label);
    // The stalls so far; those still running with their duration up to now.
    std::vector<report::Stall> stalls();
    // The same, plus every call still in flight, whatever its age: what an
    // abandoned run is waiting for.
    std::vector<report::Stall> stalls_and_blockers();

    // At `at_ns` (now_ns() clock) call `fn` once, on the watchdog's thread,
    // unless disarm() came first. `fn` is expected not to return (it exits).
    void arm_abandon(uint64_t at_ns, std::function<void()> fn);
    // Returns false if the abandon callback already started (then the caller
    // must leave the report to it).
    bool disarm();
    // When the abandonment will happen (0: not armed).
    uint64_t abandon_at_ns() const { return abandon_at_.load(); }

  private:
    struct Tracked {
        uint64_t seq = 0;
        long stall = -1; // index into stalls_
        uint64_t start_ns = 0;
    };
    void loop();
    void scan(bool all_in_flight);
    report::Stall make_stall(const CallSnapshot& c, uint64_t elapsed_ns);
    void announce(const report::Stall& st);

    WatchdogOptions o_;
    uint64_t poll_ns_;
    std::mutex mu_; // stalls_, tracked_, workload_
    std::vector<report::Stall> stalls_;
    std::vector<Tracked> tracked_;
    std::string workload_;
    std::atomic<uint64_t> abandon_at_{0};
    std::function<void()> abandon_fn_;
    std::atomic<int> abandon_state_{0}; // 0 armed/none, 1 disarmed, 2 abandoning
    uint64_t interrupted_ns_ = 0;
    std::mutex wake_mu_;
    std::condition_variable wake_;
    bool stop_ = false;
    std::thread thread_;
};

// ---- pieces (pure, exposed for tests) ----------------------------------------------

// /proc/PID/task/TID/stack text -> frames ("msleep+0x2d/0x40"), the "[<0>] "
// prefix removed.
std::vector<std::string> parse_kernel_stack(const std::string& text);
// /proc/PID/task/TID/stat -> "D (disk sleep)" (the state letter and its name).
std::string parse_task_state(const std::string& stat);
// ISO 8601 UTC with milliseconds of a system_clock time in ns since the epoch.
std::string utc_ms(uint64_t epoch_ns);

// ---- process-level ---------------------------------------------------------------------

// A thread stuck in the kernel (uninterruptible) keeps its whole process, and
// the exit status its parent waits for, alive until the call returns, even
// after exit_group(). So `run` forks before any thread exists: the child runs,
// the parent waits for it and exits with its status, or at once with the
// status the child sends through notify_supervisor() when it abandons stuck
// threads. The parent forwards SIGINT/SIGTERM to the child; if the parent
// is killed outright (SIGKILL), the child gets SIGTERM (PR_SET_PDEATHSIG) and
// stops as if interrupted. Returns in the child; never returns in the
// parent. A no-op (returns) when fork fails.
void fork_supervisor();
// In the child of fork_supervisor(): hands `code` to the parent (no-op without one).
void notify_supervisor(int code);

} // namespace gms::engine
