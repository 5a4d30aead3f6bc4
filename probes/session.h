// Public face of the probes: attach eBPF programs, feed the events to the
// invariant checkers, detach on every exit path (RAII).
#pragma once

#include "core/caps.h"
#include "core/profile.h"
#include "kvm/observed_gmem.h"
#include "reports/model.h"
#include "reports/locks.h"
#include "reports/probes_summary.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace gms::probes {

struct Options {
    profile::ProbeBackendRequest backend = profile::ProbeBackendRequest::automatic;
    bool all_guest_memfds = false; // observe every guest_memfd, not only ours
    uint64_t ringbuf_size = 8ull << 20;
    // Pending bytes at which BPF wakes the consumer; 0: ringbuf_size / 8.
    // Above ringbuf_size the consumer drains only on its poll timeout.
    uint64_t wakeup_bytes = 0;
    bool calibrate = true; // secretmem calibration before direct-map verdicts
    // Counters (KVM faults, SPTEs, lock contention) count this process only:
    // -1 = the calling process, 0 = every process, N = pid N.
    pid_t filter_pid = -1;
    // Keep the decoded stream (bounded) for save_recording().
    bool record = false;
    uint64_t record_max_events = 200000;
    // Attach points left out on purpose (names as in attach_points() and
    // lock_attach_points()); the checkers then say what they could not see.
    std::set<std::string> exclude;
    // The invalidate_lock probes (probes/lock_probes.h) and the hold that is
    // a finding (invariant invalidate_lock_hold).
    bool locks = true;
    uint64_t lock_threshold_ns = 1000000000ull;
    // Kernel BPF stats (run count and time of every program) while attached:
    // where the probes' cost goes (ProbesSummary::program_stats).
    bool program_stats = false;
};

// What attach methods this kernel allows (for `caps`): tries each for real
// (load + attach a trivial program) and reports usable/unusable with the
// errno and reason.
nlohmann::json detect_backends();

class Session : public kvm::GmemObserver {
  public:
    // Attaches what it can; records every attach point's backend or skip
    // reason. Throws EnvError only if BPF itself is unusable.
    static std::unique_ptr<Session> attach(const Options& opts, const Caps& caps);
    ~Session() override;
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void on_created(const kvm::GuestMemfd& g) override;
    void on_released(kvm::InodeId id) override;

    // A guest_memfd this tool did not create (`watch`): `flags` when known.
    // `preexisting`: it existed before observation began, so its earlier
    // folios were not seen.
    void watch_inode(kvm::InodeId id, std::optional<uint64_t> flags, bool preexisting);
    // The guest_memfd superblock's dev_t as userspace sees it (st_dev), for
    // all_guest_memfds when the session could not learn it itself.
    void set_gmem_dev(uint64_t st_dev);
    std::optional<uint64_t> gmem_dev() const;

    // Stops collection and drains the ring buffer. Idempotent.
    void finish();
    // Attach results, backends, drop counters, calibration.
    report::ProbesSummary summary() const;
    nlohmann::json describe() const; // report::to_json(summary())
    // The invalidate_lock hold and wait times (the report's "locks").
    report::LocksSection locks() const;
    // Verdicts of every invariant, given what the workloads say they did.
    std::vector<report::InvariantResult> check(const std::vector<report::WorkloadResult>& w) const;
    // Writes the recorded stream (Options.record) as JSON lines with the
    // coverage and the workloads' expectations in the first line.
    void save_recording(const std::string& path, const std::vector<report::WorkloadResult>& w,
                        const nlohmann::json& notes = nlohmann::json::object()) const;

  private:
    Session();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace gms::probes
