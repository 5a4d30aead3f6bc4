// Public face of the probes: attach eBPF programs, feed the events to the
// invariant checkers, detach on every exit path (RAII).
#pragma once

#include "core/caps.h"
#include "reports/model.h"
#include "workloads/workload.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sys/types.h>
#include <vector>

namespace gms::probes {

struct Options {
    std::string backend = "auto"; // auto | fentry | kprobe | tracepoint
    bool all_guest_memfds = false;  // observe every guest_memfd, not only ours
    uint64_t ringbuf_size = 8ull << 20;
    bool calibrate = true; // secretmem calibration before direct-map verdicts
};

// What attach methods this kernel allows (for `caps`): tries each for real.
nlohmann::json detect_backends();

class Session : public workloads::GmemObserver {
  public:
    // Attaches what it can; records every attach point's backend or skip
    // reason. Throws EnvError only if BPF itself is unusable.
    static std::unique_ptr<Session> attach(const Options& opts, const Caps& caps);
    ~Session() override;

    void on_created(const kvm::GuestMemfd& g) override;
    void on_released(kvm::InodeId id) override;

    // Stops collection and drains the ring buffer.
    void finish();
    // Attach results, backends, drop counters, calibration.
    nlohmann::json describe() const;
    // Verdicts of every invariant, given what the workloads say they did.
    std::vector<report::InvariantResult> check(const std::vector<report::WorkloadResult>& w) const;

  private:
    Session();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace gms::probes
