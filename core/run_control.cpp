#include "core/run_control.h"

#include <cstring>
#include <fmt/format.h>

namespace gms {

namespace {
void on_stop_signal(int sig) {
    RunControl::global().request_stop(sig);
}
void on_kick(int) {}
} // namespace

RunControl& RunControl::global() {
    static RunControl rc;
    return rc;
}

void RunControl::install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: blocking calls return EINTR and see the stop
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    struct sigaction kick {};
    kick.sa_handler = on_kick;
    sigemptyset(&kick.sa_mask);
    sigaction(SIGUSR1, &kick, nullptr);
}

void RunControl::set_deadline(double s) {
    deadline_ns_ = now_ns() + static_cast<uint64_t>(s * 1e9);
}

double RunControl::remaining_s() const {
    if (!deadline_ns_)
        return 1e18;
    uint64_t n = now_ns();
    return n >= deadline_ns_ ? 0 : double(deadline_ns_ - n) / 1e9;
}

std::string RunControl::stop_reason() const {
    if (int s = signal())
        return fmt::format("SIG{} (signal {})", sigabbrev_np(s) ? sigabbrev_np(s) : "?", s);
    if (deadline_passed())
        return "duration reached";
    return "";
}

} // namespace gms
