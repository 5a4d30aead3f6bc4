// Pairs the invalidate_lock probes' records (probes/lock_events.h) into
// holds, klockstat style, per {task, lock}: ACQUIRE (entry of down_*) ->
// ACQUIRED (its return) -> RELEASE (entry of up_*); wait = ACQUIRED -
// ACQUIRE, hold = RELEASE - ACQUIRED, attributed to the guest_memfd
// operation in flight on the task at ACQUIRED. Pure (no BPF, no clock): the
// session feeds it decoded records and the unit tests feed it streams.
#pragma once

#include "reports/locks.h"
#include "reports/model.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gms::probes {

struct LockEvent {
    uint32_t type = 0; // enum gms_lock_ev_type
    uint16_t mode = 0; // enum gms_lock_mode
    uint16_t op = 0;   // enum gms_lock_op
    uint64_t ts_ns = 0;
    uint64_t seq = 0;
    uint64_t lock = 0;
    uint32_t tid = 0;
    uint32_t tgid = 0;
    int64_t ret = 0;
    int32_t stack_id = -1;
    uint32_t syscall = ~0u;
    uint64_t sys_arg1 = 0;
    uint64_t ino = 0;
    int32_t class_version = 0;
    std::string comm;
};

// A ring-buffer record -> LockEvent; nullopt when too short or of an unknown type.
std::optional<LockEvent> decode_lock_record(const void* data, size_t size);

std::string lock_op_name(uint16_t op);
std::string lock_mode_name(uint16_t mode);
// "fallocate", "ioctl KVM_SET_USER_MEMORY_REGION2", "close", "syscall 123", ""
std::string syscall_name(uint32_t nr, uint64_t arg1);

class LockPairer {
  public:
    // Holds longer than `threshold_ns` are kept (the first `keep` of them)
    // with what is needed to name them.
    explicit LockPairer(uint64_t threshold_ns, size_t keep = 16);

    void feed(const LockEvent& e);
    // Records the probes could not deliver (ring-buffer reserve failures).
    void add_lost(uint64_t n) { anomalies_.lost_events += n; }

    // The section as of `now_ns` (CLOCK_MONOTONIC): holds still open then
    // are in progress, their hold so far counted against the threshold.
    // Stacks are not resolved here (stack_id only).
    report::LocksSection result(uint64_t now_ns) const;

    // The lockdep name_version of the watched locks' class (0: unknown).
    int32_t class_version() const { return class_version_; }

  private:
    struct Entry {
        uint16_t mode = 0;
        bool held = false;
        uint64_t start_ns = 0; // acquire entry
        uint64_t acquired_ns = 0;
        LockEvent at; // the ACQUIRED record (op, syscall, stack, comm)
    };
    using Key = std::pair<uint32_t, uint64_t>; // tid, lock

    void on_acquire(const LockEvent& e);
    void on_acquired(const LockEvent& e);
    void on_release(const LockEvent& e);
    void on_op_end(const LockEvent& e);
    void record_hold(report::LockHold h);
    report::LockHold hold_of(const Entry& en, uint64_t end_ns, bool in_progress) const;

    uint64_t threshold_ns_;
    size_t keep_;
    std::map<Key, std::vector<Entry>> open_; // innermost last
    std::map<std::pair<std::string, std::string>, report::LockOpStats> stats_;
    std::optional<report::LockHold> longest_;
    std::vector<report::LockHold> over_;
    uint64_t over_count_ = 0;
    uint64_t holds_ = 0, operations_ = 0, events_ = 0;
    uint64_t max_seq_ = 0;
    bool any_seq_ = false;
    int32_t class_version_ = 0;
    report::LockAnomalies anomalies_;
};

inline constexpr char kLockHoldInvariant[] = "invalidate_lock_hold";

// The invariant: no hold of a guest_memfd invalidate_lock lasts longer than
// the threshold (violated even when the kernel printed nothing: a
// preemptible holder trips no lockup detector); unverifiable without the
// probes, incomplete with lost records or when no hold was seen.
report::InvariantResult judge_lock_holds(const report::LocksSection& s);

} // namespace gms::probes
