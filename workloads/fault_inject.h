// fault-inject: error-path sweeps of guest_memfd calls with fail-nth.
//
// The pieces with no KVM in them, for the workload and its unit tests: the
// calls swept, the errno each may fail with, the debugfs settings that make
// every allocation eligible (saved, written, restored on every exit path) and
// the calling thread's /proc/thread-self/fail-nth.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/fd.h"
#include "reports/model.h"

namespace gms::workloads::fault {

// The guest_memfd calls swept, in sweep order (their names in profiles and reports).
const std::vector<std::string>& call_names();

// What a call may end in when a fault was injected, besides success:
// ENOMEM (the errno an allocation failure turns into) for the ioctls and
// fallocate, SIGBUS for a first touch through the mapping.
inline constexpr const char* kSigbus = "SIGBUS";
bool clean_failure(const std::string& call, const std::string& err);

// One debugfs attribute, relative to the debugfs directory.
struct Setting {
    std::string file;  // "failslab/ignore-gfp-wait"
    std::string value; // "N"
};

// What the sweep writes (syzkaller's setup, plus what keeps the rest of the
// machine out of it): GFP_KERNEL (reclaiming) and highmem allocations and
// order-0 pages eligible; probability 0, so nothing but fail-nth injects (a
// probability without task-filter would fail every task's allocations);
// times -1, so the attributes' own count is not used up; verbose 0, so a
// sweep of thousands of faults does not flood the kernel log and push real
// WARNs out of the ring.
const std::vector<Setting>& sweep_settings();

// The check `fail-nth.CALL` of one sweep (JUnit, KTAP, KCIDB and LAVA carry it).
report::Check sweep_check(const report::FaultSweep& s);

// Applies settings under `dir` for its lifetime: reads every value first,
// writes the new ones, and puts the old ones back when destroyed (also when
// a write fails half way, before throwing EnvError naming the file).
class DebugfsSettings {
  public:
    DebugfsSettings(std::string dir, const std::vector<Setting>& settings);
    ~DebugfsSettings();
    DebugfsSettings(const DebugfsSettings&) = delete;
    DebugfsSettings& operator=(const DebugfsSettings&) = delete;

    // The values found before (file, value), in order.
    const std::vector<Setting>& previous() const { return previous_; }
    // Restores now (idempotent); the files it could not restore, with why.
    std::vector<std::string> restore();

  private:
    std::string dir_;
    std::vector<Setting> previous_;
    size_t written_ = 0; // previous_[0, written_) were overwritten
};

// The calling thread's fail-nth. try_arm(n) opens it and writes n: the n-th
// eligible failslab/fail_page_alloc check of this thread fails. injected()
// reads it back, disarms and closes it: true when the count reached 0, i.e.
// a fault was injected. Neither allocates in userspace, so nothing between
// them but the call itself makes system calls.
class FailNth {
  public:
    explicit FailNth(std::string path);
    int try_arm(unsigned n); // 0 or errno
    // true: injected; false: not, or *err set when it could not be read.
    bool injected(int* err);

  private:
    std::string path_;
    UniqueFd fd_;
};

// "0\n" (a fault was injected) or the count still pending.
std::optional<unsigned> parse_fail_nth(const char* buf, size_t len);

} // namespace gms::workloads::fault
