#include "workloads/sigbus.h"

#include "core/error.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <mutex>

namespace gms::workloads {

namespace {

std::mutex g_mutex;
int g_users = 0;
struct sigaction g_previous {};

// Armed (non-null) only while this thread performs a guarded access.
thread_local sigjmp_buf* t_armed = nullptr;
thread_local void* t_addr = nullptr;

void on_sigbus(int sig, siginfo_t* info, void* uctx) {
    if (sigjmp_buf* jb = t_armed) {
        t_armed = nullptr;
        t_addr = info->si_addr;
        siglongjmp(*jb, 1);
    }
    // Not a guarded access: do what the previous disposition would have done.
    if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction) {
        g_previous.sa_sigaction(sig, info, uctx);
        return;
    }
    if (!(g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_handler != SIG_DFL &&
        g_previous.sa_handler != SIG_IGN) {
        g_previous.sa_handler(sig);
        return;
    }
    // Returning re-executes the faulting access, which now takes the default action.
    ::signal(SIGBUS, SIG_DFL);
}

} // namespace

SigbusGuard::SigbusGuard() {
    std::lock_guard lock(g_mutex);
    if (g_users++ > 0)
        return;
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGBUS, &sa, &g_previous) != 0) {
        int e = errno;
        --g_users;
        throw SysError("sigaction", "SIGBUS", e);
    }
}

SigbusGuard::~SigbusGuard() {
    std::lock_guard lock(g_mutex);
    if (--g_users == 0)
        ::sigaction(SIGBUS, &g_previous, nullptr);
}

bool SigbusGuard::read_faults(const volatile uint8_t* p, uint8_t* out) {
    uint8_t v = 0;
    if (!sigbus_guarded([&] { v = *p; }))
        return true;
    if (out)
        *out = v;
    return false;
}

bool SigbusGuard::write_faults(volatile uint8_t* p, uint8_t value) {
    return !sigbus_guarded([&] { *p = value; });
}

namespace detail {
const CallOp kOpAccess{"mmap access", "guest_memfd mapping at {0:x}"};
// The signal fences keep the compiler from moving the guarded accesses
// outside the window where t_armed is set.
void arm(sigjmp_buf* jb) {
    t_armed = jb;
    std::atomic_signal_fence(std::memory_order_seq_cst);
}
void disarm() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    t_armed = nullptr;
}
void* fault_address() {
    return t_addr;
}
} // namespace detail

} // namespace gms::workloads
