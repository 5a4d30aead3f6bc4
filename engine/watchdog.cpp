#include "engine/watchdog.h"

#include "core/call_scope.h"
#include "core/run_control.h"
#include "core/util.h"
#include "kvm/kvm.h"
#include "workloads/guest_common.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace gms::engine {

// ---- pieces ------------------------------------------------------------------

std::vector<std::string> parse_kernel_stack(const std::string& text) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        // "[<0>] msleep+0x2d/0x40": the address is hidden ("<0>") without kptr access.
        if (line.size() > 1 && line[0] == '[') {
            size_t close = line.find("] ");
            if (close != std::string::npos)
                line = line.substr(close + 2);
        }
        while (!line.empty() && (line.back() == ' ' || line.back() == '\r'))
            line.pop_back();
        if (!line.empty())
            out.push_back(line);
    }
    return out;
}

std::string parse_task_state(const std::string& stat) {
    // "123 (comm with) spaces) S 1 ...": the comm may hold ')' — the state
    // follows the last one.
    size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size())
        return "";
    char c = stat[close + 2];
    const char* name = c == 'R'   ? "running"
                       : c == 'S' ? "sleeping"
                       : c == 'D' ? "disk sleep"
                       : c == 'T' ? "stopped"
                       : c == 't' ? "tracing stop"
                       : c == 'Z' ? "zombie"
                       : c == 'X' ? "dead"
                       : c == 'I' ? "idle"
                                  : "?";
    return fmt::format("{} ({})", c, name);
}

std::string utc_ms(uint64_t epoch_ns) {
    std::time_t t = static_cast<std::time_t>(epoch_ns / 1'000'000'000ull);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:03}Z", buf, (epoch_ns / 1'000'000ull) % 1000);
}

namespace {

uint64_t epoch_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
}

// A procfs file, or the errno of the failure.
std::pair<std::string, int> read_proc(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return {"", errno};
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            ::close(fd);
            return {out, e};
        }
        if (n == 0)
            break;
        out.append(buf, size_t(n));
    }
    ::close(fd);
    return {out, 0};
}

bool is_kvm_run(const CallOp* op) {
    return op && op->pinnable && std::strcmp(op->name, "KVM_RUN") == 0;
}

// Where the guest of a stalled KVM_RUN is. The vCPU mutex is held for the
// whole KVM_RUN, so KVM_GET_REGS would block as long; instead: the exit
// reason the previous exit left in kvm_run, then a kick that asks KVM to
// store the registers into kvm_run at the exit (KVM_SYNC_X86_REGS). Pinned
// throughout: the vCPU's thread waits in its scope's exit, so kvm_run stays
// mapped and KVM_RUN is not entered again until the fields are restored.
report::VcpuStallState inspect_vcpu(const CallSnapshot& c, bool kick) {
    report::VcpuStallState v;
    v.id = static_cast<unsigned>(c.args[1]);
    if (!pin_call(c)) {
        v.note = "KVM_RUN returned before the vCPU could be inspected";
        return v;
    }
    auto* run = reinterpret_cast<kvm_run*>(c.args[0]);
    uint32_t reason = __atomic_load_n(&run->exit_reason, __ATOMIC_RELAXED);
    v.last_exit = reason == 0 ? "none (first entry, or UNKNOWN)" : kvm::exit_reason_name(reason);
    if (!kick) {
        unpin_call(c);
        v.note = "not kicked";
        return v;
    }
    uint64_t old_valid = __atomic_load_n(&run->kvm_valid_regs, __ATOMIC_RELAXED);
    uint8_t old_immediate = __atomic_load_n(&run->immediate_exit, __ATOMIC_RELAXED);
    __atomic_store_n(&run->kvm_valid_regs, uint64_t(old_valid | KVM_SYNC_X86_REGS),
                     __ATOMIC_SEQ_CST);
    __atomic_store_n(&run->immediate_exit, uint8_t(1), __ATOMIC_SEQ_CST);
    ::syscall(SYS_tgkill, ::getpid(), c.tid, SIGUSR1);
    v.kicked = true;
    uint64_t until = now_ns() + 300'000'000ull;
    auto& slot = call_slots()[c.index];
    while (now_ns() < until && slot.seq.load(std::memory_order_seq_cst) == c.seq)
        ::usleep(1000);
    v.left_kvm_run = slot.seq.load(std::memory_order_seq_cst) != c.seq;
    if (v.left_kvm_run) {
        const kvm_regs& r = run->s.regs.regs;
        if (r.rip || r.rsp || r.rflags) {
            v.guest_rip = r.rip;
            v.note = fmt::format("KVM_RUN returned when kicked (exit {}): the guest was running; "
                                 "rsp={:#x} rflags={:#x}",
                                 kvm::exit_reason_name(run->exit_reason), r.rsp, r.rflags);
        } else {
            v.note = "KVM_RUN returned when kicked, but KVM stored no registers (protected "
                     "guest state?)";
        }
    } else {
        v.note = "KVM_RUN did not return within 0.3 s of a kick (signal + immediate_exit): the "
                 "thread is blocked in the kernel, see its stack";
    }
    // Restored while still pinned: the thread re-enters only after unpin.
    __atomic_store_n(&run->immediate_exit, old_immediate, __ATOMIC_SEQ_CST);
    __atomic_store_n(&run->kvm_valid_regs, uint64_t(old_valid), __ATOMIC_SEQ_CST);
    unpin_call(c);
    return v;
}

// The lab's console, for markers the host follows (lab/lab.cpp).
void console_marker(const std::string& token, const std::string& what) {
    if (token.empty())
        return;
    int fd = ::open("/dev/console", O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    std::string line = "\n" + token + ":" + what + "\n";
    (void)!::write(fd, line.data(), line.size());
    ::close(fd);
}

} // namespace

// ---- Watchdog ------------------------------------------------------------------

Watchdog::Watchdog(WatchdogOptions o) : o_(std::move(o)), tracked_(kCallSlots) {
    double poll = std::clamp(o_.stall_threshold_s / 20, 0.01, 0.25);
    poll_ns_ = static_cast<uint64_t>(poll * 1e9);
    if (!o_.run_start_ns)
        o_.run_start_ns = now_ns();
    if (o_.kick_vcpus)
        workloads::guest::ensure_kick_handler(); // SIGUSR1 must not kill the process
    // The first scan must not count calls made before the run as stalls of it.
    thread_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
    {
        std::lock_guard lk(wake_mu_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

void Watchdog::set_workload(const std::string& label) {
    std::lock_guard lk(mu_);
    workload_ = label;
}

void Watchdog::arm_abandon(uint64_t at_ns, std::function<void()> fn) {
    {
        std::lock_guard lk(wake_mu_);
        abandon_fn_ = std::move(fn);
        abandon_at_ = at_ns;
    }
    wake_.notify_all();
}

bool Watchdog::disarm() {
    int armed = 0;
    if (abandon_state_.compare_exchange_strong(armed, 1))
        return true;
    return armed == 1;
}

void Watchdog::loop() {
    for (;;) {
        {
            std::unique_lock lk(wake_mu_);
            wake_.wait_for(lk, std::chrono::nanoseconds(poll_ns_), [this] { return stop_; });
            if (stop_)
                return;
        }
        scan(false);
        uint64_t at = abandon_at_.load();
        // SIGINT/SIGTERM: the workloads stop now, so the grace starts now.
        if (at && !interrupted_ns_ && RunControl::global().interrupted()) {
            interrupted_ns_ = now_ns();
            uint64_t sooner = interrupted_ns_ + uint64_t(o_.grace_s * 1e9);
            if (sooner < at)
                abandon_at_ = at = sooner;
        }
        if (at && now_ns() >= at) {
            int armed = 0;
            if (abandon_state_.compare_exchange_strong(armed, 2)) {
                std::function<void()> fn;
                {
                    std::lock_guard lk(wake_mu_);
                    fn = abandon_fn_;
                }
                if (fn)
                    fn(); // writes the report and exits
            }
        }
    }
}

void Watchdog::scan(bool all_in_flight) {
    const uint64_t threshold_ns = static_cast<uint64_t>(o_.stall_threshold_s * 1e9);
    const uint64_t now = now_ns();
    const uint64_t ticks = LatencyTimer::ticks();
    std::vector<report::Stall> fresh;
    std::lock_guard lk(mu_);
    for (size_t i = 0; i < kCallSlots; ++i) {
        Tracked& t = tracked_[i];
        auto c = read_call(i);
        if (t.stall >= 0 && (!c || c->seq != t.seq)) {
            // The stalled call returned (within the last poll).
            auto& st = stalls_[size_t(t.stall)];
            st.ended = true;
            st.duration_s = double(now - t.start_ns) / 1e9;
            fmt::print(stderr, "gmemstress: stall ended: thread {} {} returned after {:.1f}s\n",
                       st.tid, st.operation, st.duration_s);
            t.stall = -1;
        }
        if (!c) {
            t.seq = 0;
            continue;
        }
        uint64_t elapsed = ticks > c->start_ticks ? LatencyTimer::to_ns(ticks - c->start_ticks) : 0;
        if (c->seq != t.seq) {
            t = Tracked{c->seq, -1, now > elapsed ? now - elapsed : now};
        }
        if (t.stall >= 0) {
            stalls_[size_t(t.stall)].duration_s = double(now - t.start_ns) / 1e9;
            continue;
        }
        if (elapsed < threshold_ns && !all_in_flight)
            continue;
        report::Stall st = make_stall(*c, elapsed);
        st.workload = workload_;
        t.stall = long(stalls_.size());
        stalls_.push_back(st);
        fresh.push_back(std::move(st));
    }
    for (const auto& st : fresh)
        announce(st);
}

report::Stall Watchdog::make_stall(const CallSnapshot& c, uint64_t elapsed_ns) {
    report::Stall st;
    st.tid = uint64_t(c.tid);
    st.thread = c.role ? c.role : "";
    st.operation = c.op ? c.op->name : "?";
    st.args = c.op ? c.op->describe(c.fd, c.args) : "";
    uint64_t now = now_ns();
    st.started_s = (double(now) - double(elapsed_ns) - double(o_.run_start_ns)) / 1e9;
    st.started_at = utc_ms(epoch_ns() - elapsed_ns);
    st.duration_s = double(elapsed_ns) / 1e9;
    std::string task = fmt::format("/proc/self/task/{}", c.tid);
    if (auto [stat, e] = read_proc(task + "/stat"); !e)
        st.task_state = parse_task_state(stat);
    if (auto [wchan, e] = read_proc(task + "/wchan"); !e)
        st.wchan = wchan == "0" ? "" : wchan;
    auto [stack, e] = read_proc(task + "/stack");
    if (e)
        st.stack_error = fmt::format("{}/stack: {}{}", task, errno_name(e),
                                     e == EACCES || e == EPERM ? " (needs root: CAP_SYS_ADMIN)"
                                     : e == ENOENT ? " (kernel without CONFIG_STACKTRACE?)"
                                                   : "");
    else
        st.kernel_stack = parse_kernel_stack(stack);
    if (!e && st.kernel_stack.empty())
        st.stack_error = task + "/stack is empty (the thread is running in user space or on "
                                "a CPU)";
    if (is_kvm_run(c.op))
        st.vcpu = inspect_vcpu(c, o_.kick_vcpus);
    return st;
}

void Watchdog::announce(const report::Stall& st) {
    std::string top;
    for (size_t k = 0; k < st.kernel_stack.size() && k < 6; ++k)
        top += (k ? " <- " : "") + st.kernel_stack[k];
    fmt::print(stderr,
               "gmemstress: STALL: thread {} ({}) in {} {} for {:.1f}s (threshold {}s), state "
               "{}; kernel stack: {}\n",
               st.tid, st.thread.empty() ? "?" : st.thread, st.operation, st.args, st.duration_s,
               o_.stall_threshold_s, st.task_state.empty() ? "?" : st.task_state,
               top.empty() ? st.stack_error : top);
    if (st.vcpu)
        fmt::print(stderr, "gmemstress: STALL: vcpu{}: last exit {}; {}{}\n", st.vcpu->id,
                   st.vcpu->last_exit,
                   st.vcpu->guest_rip ? fmt::format("guest rip {:#x}; ", *st.vcpu->guest_rip)
                                      : std::string(),
                   st.vcpu->note);
    std::fflush(stderr);
    uint64_t at = abandon_at_.load(), now = now_ns();
    double ends_within = at > now ? double(at - now) / 1e9 : 0;
    console_marker(o_.lab_token, fmt::format("stall:{:.0f}:{} {} for {:.1f}s", ends_within,
                                             st.operation, st.args, st.duration_s));
}

std::vector<report::Stall> Watchdog::stalls() {
    scan(false);
    std::lock_guard lk(mu_);
    return stalls_;
}

std::vector<report::Stall> Watchdog::stalls_and_blockers() {
    scan(true);
    std::lock_guard lk(mu_);
    return stalls_;
}

// ---- supervisor ----------------------------------------------------------------

namespace {
int g_supervisor_fd = -1;
} // namespace

void fork_supervisor() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        return;
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        return;
    }
    if (pid == 0) {
        ::close(fds[0]);
        g_supervisor_fd = fds[1];
        // A supervisor killed outright (SIGKILL, the OOM killer) cannot
        // forward a stop: the run would go on to its full duration with
        // nobody waiting for it. Its death is a SIGTERM here instead, so the
        // run stops as if interrupted (report written, marked; the watchdog's
        // grace still bounds it). Checked again after prctl(): the parent may
        // already be gone.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != parent)
            RunControl::global().request_stop(SIGTERM);
        return;
    }
    ::close(fds[1]);
    RunControl& control = RunControl::global();
    int forwarded = 0;
    for (;;) {
        pollfd p{fds[0], POLLIN, 0};
        int r = ::poll(&p, 1, 100);
        if (int sig = control.signal(); sig && sig != forwarded) {
            ::kill(pid, sig);
            forwarded = sig;
        }
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        unsigned char code = 0;
        ssize_t n = ::read(fds[0], &code, 1);
        if (n == 1)
            ::_exit(code); // the child abandoned stuck threads; its report is written
        if (n == 0)
            break; // the child's last thread ended
        if (errno != EINTR && errno != EAGAIN)
            break;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status))
        ::_exit(WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        ::_exit(128 + WTERMSIG(status));
    ::_exit(4);
}

void notify_supervisor(int code) {
    if (g_supervisor_fd < 0)
        return;
    unsigned char c = static_cast<unsigned char>(code);
    (void)!::write(g_supervisor_fd, &c, 1);
}

} // namespace gms::engine
