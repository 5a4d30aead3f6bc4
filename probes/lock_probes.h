// The invalidate_lock probes: probes/bpf/locks.bpf.c loaded as its own BPF
// object (fentry/fexit only: the rwsem functions run on every rwsem of the
// kernel, and a kprobe on each would cost far more than a trampoline), its
// ring buffer read on its own thread into a LockPairer, the stacks of long
// holds resolved with /proc/kallsyms, and /proc/lock_stat read for the same
// lock class where the kernel has LOCK_STAT. Owned by probes::Session.
#pragma once

#include "probes/attach_points.h"
#include "probes/bpf_util.h"
#include "probes/loader.h"
#include "probes/planner.h"
#include "reports/locks.h"
#include "reports/probes_summary.h"

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace gms::probes {

// The attach points of locks.bpf.c (names "lock_*"; probes.exclude takes them).
const std::vector<AttachPointDef>& lock_attach_points();
// Every name probes.exclude takes: attach_point_names() and the lock points.
std::vector<std::string> excludable_point_names();

struct LockProbeOptions {
    uint32_t filter_tgid = 0; // operations of this process only (0: all)
    uint64_t threshold_ns = 1000000000ull;
    std::set<std::string> exclude;
    uint64_t ringbuf_size = 1ull << 20;
};

// /proc/lock_stat's rows of one class (pure, for tests): `text` is the file.
std::vector<report::LockStatRow> parse_lock_stat(const std::string& text,
                                                 const std::string& class_name);

class LockProbes {
  public:
    // Plans (fentry only), loads, attaches. Never throws for what the kernel
    // lacks: attached() is false and the section says why.
    static std::unique_ptr<LockProbes> attach(const KernelView& kernel,
                                              const std::map<Backend, BackendStatus>& usable,
                                              const LockProbeOptions& opts);
    ~LockProbes();
    LockProbes(const LockProbes&) = delete;
    LockProbes& operator=(const LockProbes&) = delete;

    bool attached() const;
    const std::string& reason() const;
    // Every planned point, attached or why not (for the report's attach points).
    std::vector<AttachedPoint> points() const;
    // Detaches, drains the ring buffer, reads /proc/lock_stat. Idempotent.
    void finish();
    // Kernel BPF statistics of the attached programs (see program_stats.h).
    std::vector<report::ProgramStat> program_stats() const;
    // The report's locks section (stacks resolved), as of now or of finish().
    report::LocksSection section() const;

  private:
    LockProbes();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace gms::probes
