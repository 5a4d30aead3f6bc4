// Kernel BPF statistics of the probes' own programs (run count, run time):
// where the cost of observation goes. The kernel counts only while a process
// holds a BPF_ENABLE_STATS fd (or kernel.bpf_stats_enabled is 1), and then
// reads the clock twice per program run, so this is asked for, never default.
// Program time excludes the trampoline's or kprobe's own entry and exit.
#pragma once

#include "core/fd.h"
#include "probes/loader.h"
#include "reports/probes_summary.h"

#include <string>
#include <vector>

struct bpf_object;

namespace gms::probes {

// Move-only: BPF run-time statistics are on while it lives.
class BpfStatsScope {
  public:
    BpfStatsScope() = default;
    // 0, or the errno of BPF_ENABLE_STATS (EPERM, EINVAL before Linux 5.8).
    int try_enable();
    bool enabled() const { return fd_.valid(); }
    void disable() { fd_.reset(); }

  private:
    UniqueFd fd_;
};

// One row per program of every attached point of `obj`, as of now.
std::vector<report::ProgramStat> read_program_stats(bpf_object* obj,
                                                    const std::vector<AttachedPoint>& points);

} // namespace gms::probes
