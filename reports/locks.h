// The report's "locks" section: hold and wait times of guest_memfd's
// mapping->invalidate_lock per operation and mode, as the invalidate_lock
// probes (probes/lock_probes.h) measured them, the longest hold, every hold
// over probes.lock_threshold with its stack and syscall, and /proc/lock_stat's
// numbers for the same lock class where the kernel has LOCK_STAT. Plain data;
// to_json and the text lines are the renderers'.
#pragma once

#include "core/histogram.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::report {

struct LockHold {
    std::string operation; // punch_hole, allocate, release, memslot_commit, memslot_unbind, none
    std::string mode;      // write, read
    uint32_t tid = 0;
    uint32_t tgid = 0;
    std::string comm;
    std::string syscall; // "fallocate", "ioctl KVM_SET_USER_MEMORY_REGION2", "close", ""
    uint64_t ino = 0;    // the operation's guest_memfd inode (0: unknown)
    uint64_t lock = 0;   // rw_semaphore address
    uint64_t wait_ns = 0;
    uint64_t hold_ns = 0;
    uint64_t acquired_ns = 0;       // CLOCK_MONOTONIC
    bool in_progress = false;       // still held when observation ended (hold_ns: so far)
    int32_t stack_id = -1;          // BPF stack map id (< 0: none)
    std::vector<std::string> stack; // kernel stack at acquisition, innermost first
};

struct LockOpStats {
    std::string operation;
    std::string mode;
    Histogram wait_ns;
    Histogram hold_ns;
};

// What the pairing could not match: each is a sign of lost records (or a
// lock released by another task than its holder).
struct LockAnomalies {
    uint64_t lost_events = 0;             // ring-buffer reserve failures, sequence gaps
    uint64_t unpaired_releases = 0;       // release without a hold by that task
    uint64_t acquires_without_return = 0; // a second acquire before the first returned
    uint64_t returns_without_acquire = 0; // acquired without its entry
    uint64_t nested = 0;                  // acquired again while holding it (recursive read)
    // Still held when its guest_memfd operation returned: the release record
    // never arrived (a BPF program skipped under recursion, a lost record).
    // The operation always drops the lock first, so this is no hold to judge.
    uint64_t releases_missed = 0;
};

// /proc/lock_stat's row(s) for guest_memfd's invalidate_lock class.
struct LockStatRow {
    std::string mode; // W, R, or "" (one mode only)
    uint64_t contentions = 0;
    double waittime_max_us = 0, waittime_total_us = 0;
    uint64_t acquisitions = 0;
    double holdtime_max_us = 0, holdtime_total_us = 0, holdtime_avg_us = 0;
};
struct LockStatComparison {
    bool available = false;
    std::string reason;     // why not (no LOCK_STAT, class unknown, ...)
    std::string class_name; // "mapping.invalidate_lock#5"
    std::vector<LockStatRow> rows;
};

struct LocksSection {
    bool attached = false;
    std::string reason; // why not attached
    uint64_t threshold_ns = 0;
    std::vector<std::string> functions; // attached kernel functions
    uint64_t events = 0;
    uint64_t operations = 0; // guest_memfd operations seen (begin records)
    uint64_t holds = 0;      // paired holds (completed)
    std::vector<LockOpStats> by_operation;
    std::optional<LockHold> longest;
    uint64_t over_threshold_count = 0;
    std::vector<LockHold> over_threshold; // the first few, with stacks
    std::vector<LockHold> in_progress;    // still held at the end
    LockAnomalies anomalies;
    LockStatComparison lock_stat;
};

nlohmann::json to_json(const LocksSection& s);
// A few lines for the text summary.
std::vector<std::string> text_lines(const LocksSection& s);

} // namespace gms::report
