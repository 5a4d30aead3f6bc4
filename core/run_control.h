// Stop requests (SIGINT/SIGTERM, --duration) shared by every workload thread.
// Signal handlers only store to an atomic; threads poll should_stop().
#pragma once

#include "core/util.h"

#include <atomic>
#include <csignal>
#include <string>

namespace gms {

class RunControl {
  public:
    // Installs SIGINT/SIGTERM handlers that request a stop, and a no-op
    // SIGUSR1 handler (no SA_RESTART) used to kick vCPU threads out of KVM_RUN.
    static void install_signal_handlers();
    static RunControl& global();

    void set_deadline(double seconds_from_now);
    bool deadline_passed() const { return deadline_ns_ && now_ns() >= deadline_ns_; }
    bool interrupted() const { return signal_.load(std::memory_order_relaxed) != 0; }
    int signal() const { return signal_.load(); }
    bool should_stop() const { return interrupted() || deadline_passed(); }
    // Seconds left before the deadline (huge if none).
    double remaining_s() const;
    void request_stop(int sig) { signal_.store(sig); }
    std::string stop_reason() const;

  private:
    std::atomic<int> signal_{0};
    uint64_t deadline_ns_ = 0;
};

} // namespace gms
