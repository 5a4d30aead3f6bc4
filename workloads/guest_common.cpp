#include "workloads/guest_common.h"

#include "core/call_scope.h"
#include "core/error.h"

#include <cerrno>
#include <chrono>
#include <cpuid.h>
#include <csignal>
#include <cstring>
#include <fmt/format.h>
#include <mutex>
#include <sys/mman.h>

extern "C" {
extern const uint8_t gms_guest_pages_start[], gms_guest_pages_end[];
extern const uint8_t gms_guest_vmcall_start[], gms_guest_vmcall_end[];
extern const uint8_t gms_guest_vmmcall_start[], gms_guest_vmmcall_end[];
}

namespace gms::workloads::guest {

// ---- programs ------------------------------------------------------------------

Program pages_program() {
    return {gms_guest_pages_start, gms_guest_pages_end};
}

CpuVendor cpu_vendor() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return CpuVendor::other;
    char v[13] = {};
    std::memcpy(v, &b, 4);
    std::memcpy(v + 4, &d, 4);
    std::memcpy(v + 8, &c, 4);
    if (!std::strcmp(v, "GenuineIntel"))
        return CpuVendor::intel;
    if (!std::strcmp(v, "AuthenticAMD") || !std::strcmp(v, "HygonGenuine"))
        return CpuVendor::amd;
    return CpuVendor::other;
}

std::string to_string(CpuVendor v) {
    switch (v) {
    case CpuVendor::intel:
        return "intel";
    case CpuVendor::amd:
        return "amd";
    default:
        return "other";
    }
}

Program hypercall_program(CpuVendor v) {
    if (v == CpuVendor::amd)
        return {gms_guest_vmmcall_start, gms_guest_vmmcall_end};
    return {gms_guest_vmcall_start, gms_guest_vmcall_end};
}

// ---- pattern -------------------------------------------------------------------

void fill_page(uint8_t* page, uint32_t key) {
    auto* w = reinterpret_cast<uint32_t*>(page);
    for (uint32_t i = 0; i < kWordsPerPage; ++i)
        w[i] = pattern_word(key, i);
}

long first_bad_word(const uint8_t* page, bool pattern, uint32_t key) {
    const auto* w = reinterpret_cast<const volatile uint32_t*>(page);
    for (uint32_t i = 0; i < kWordsPerPage; ++i)
        if (w[i] != (pattern ? pattern_word(key, i) : 0u))
            return static_cast<long>(i);
    return -1;
}

long first_bad_word_mixed(const uint8_t* page, uint32_t base_key, uint32_t guest_key,
                          unsigned shift) {
    const auto* w = reinterpret_cast<const volatile uint32_t*>(page);
    for (uint32_t i = 0; i < kWordsPerPage; ++i)
        if (w[i] != mixed_word(base_key, guest_key, shift, i))
            return static_cast<long>(i);
    return -1;
}

uint32_t page_key(uint64_t seed, uint32_t tag, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = Rng::derive(seed, tag);
    x = Rng::derive(x, a);
    x = Rng::derive(x, b);
    x = Rng::derive(x, c);
    auto k = static_cast<uint32_t>(x ^ (x >> 32));
    return k ? k : 0x5a5a5a5au;
}

// ---- GuestVm -------------------------------------------------------------------

GuestVm::GuestVm(const kvm::Kvm& kvm, unsigned long type, unsigned nvcpus) : nvcpus_(nvcpus) {
    vm_ = kvm::Vm::create(kvm, type);
    uint64_t size = code_slot_size(nvcpus);
    code_ = kvm::Mapping::map(-1, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    kvm::Memslot m;
    m.slot = kCodeSlot;
    m.gpa = 0;
    m.size = size;
    m.userspace_addr = reinterpret_cast<uint64_t>(code_.data());
    vm_.add_memslot(m);
}

uint64_t GuestVm::load(const Program& p) {
    uint64_t at = (next_ + 15) & ~uint64_t(15);
    if (at + p.size() > kProgramArea)
        throw Error(fmt::format("guest program area full ({} bytes)", kProgramArea));
    std::memcpy(code_.data() + at, p.begin, p.size());
    next_ = at + p.size();
    return at;
}

kvm::Vcpu& GuestVm::add_vcpu(unsigned id, const kvm::Kvm& kvm) {
    if (id >= nvcpus_)
        throw Error(
            fmt::format("vCPU id {} beyond the {} the guest layout has room for", id, nvcpus_));
    kvm::Vcpu& v = vm_.add_vcpu(id, kvm);
    kvm::setup_flat_protected_mode(v, 0, stack_top(id));
    return v;
}

PageDesc* GuestVm::descs(unsigned vcpu) {
    return reinterpret_cast<PageDesc*>(code_.data() + descs_gpa(vcpu));
}

void enter(kvm::Vcpu& v, const GuestCall& c) {
    kvm_regs r{};
    r.rflags = 0x2; // IF=0, DF=0
    r.rip = c.rip;
    r.rsp = c.rsp;
    r.rax = c.rax;
    r.rbx = c.rbx;
    r.rcx = c.rcx;
    r.rdx = c.rdx;
    r.rsi = c.rsi;
    r.rdi = c.rdi;
    v.set_regs(r);
}

std::string describe_exit(kvm::Vcpu& v) {
    kvm_run& run = *v.run_state();
    std::string what = "exit " + kvm::exit_reason_name(run.exit_reason);
    switch (run.exit_reason) {
    case KVM_EXIT_IO:
        what += fmt::format(" {} port {:#x} size {}",
                            run.io.direction == KVM_EXIT_IO_OUT ? "out" : "in", run.io.port,
                            run.io.size);
        break;
    case KVM_EXIT_MMIO:
        what += fmt::format(" {} gpa {:#x} len {}", run.mmio.is_write ? "write" : "read",
                            run.mmio.phys_addr, run.mmio.len);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        what += fmt::format(" hardware_entry_failure_reason {:#x}",
                            run.fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        what += fmt::format(" suberror {}", run.internal.suberror);
        for (uint32_t i = 0; i < run.internal.ndata && i < 16; ++i)
            what += fmt::format(" data[{}]={:#x}", i, run.internal.data[i]);
        break;
    case KVM_EXIT_UNKNOWN:
        what += fmt::format(" hardware_exit_reason {:#x}", run.hw.hardware_exit_reason);
        break;
    case KVM_EXIT_HYPERCALL:
        what += fmt::format(" nr {} args {:#x} {:#x} {:#x}", run.hypercall.nr,
                            run.hypercall.args[0], run.hypercall.args[1], run.hypercall.args[2]);
        break;
    case uapi::kExitMemoryFault: {
        uapi::kvm_memory_fault_exit mf{};
        std::memcpy(&mf, &run.hw, sizeof mf); // the union starts at run.hw
        what += fmt::format(" gpa {:#x} size {:#x} flags {:#x}{}", mf.gpa, mf.size, mf.flags,
                            (mf.flags & (1ull << 3)) ? " (private)" : "");
        break;
    }
    default:
        break;
    }
    try {
        kvm_regs r = v.regs();
        what +=
            fmt::format("; rip={:#x} rsp={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} "
                        "rdi={:#x} rflags={:#x}",
                        r.rip, r.rsp, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rflags);
        kvm_sregs s = v.sregs();
        what += fmt::format(" cr0={:#x} cs.base={:#x}", s.cr0, s.cs.base);
    } catch (const Error& e) {
        what += fmt::format("; registers unavailable: {}", e.what());
    }
    return what;
}

// ---- running -----------------------------------------------------------------

RunResult run_vcpu(kvm::Vcpu& v, RunSlot& slot, report::OpStats& kvm_run_stats,
                   const std::function<std::string(kvm::Vcpu&, kvm_run&)>& on_exit,
                   double run_timeout_s) {
    kvm_run* run = v.run_state();
    slot.run.store(run);
    for (;;) {
        if (int k = slot.kick.load()) {
            if (k == RunSlot::timeout)
                return {RunResult::failed,
                        fmt::format("vcpu{}: KVM_RUN did not return within {}s; {}", v.id(),
                                    run_timeout_s, describe_exit(v))};
            return {RunResult::stopped, {}};
        }
        // The supervisor sets immediate_exit before each kick; it is only ever
        // cleared here, before a kick was requested (kicks repeat, so a kick
        // landing between this store and KVM_RUN is not lost).
        run->immediate_exit = 0;
        uint64_t t0 = now_ns();
        slot.run_since_ns.store(t0);
        int e = v.try_run();
        slot.run_since_ns.store(0);
        uint64_t dt = now_ns() - t0;
        if (e == EINTR) {
            kvm_run_stats.record_error(e);
            continue; // the kick check at the top decides
        }
        if (e == EFAULT && run->exit_reason == uapi::kExitMemoryFault && on_exit) {
            // KVM_RUN fails with EFAULT and fills in the exit: the caller
            // decides (a private/shared mismatch while conversions race is
            // expected; it re-enters once the attribute settled).
            kvm_run_stats.record_error(e);
            if (std::string fail = on_exit(v, *run); !fail.empty())
                return {RunResult::failed, fmt::format("vcpu{}: {}", v.id(), fail)};
            continue;
        }
        if (e) {
            kvm_run_stats.record_error(e);
            return {RunResult::failed, fmt::format("vcpu{}: KVM_RUN failed: {} ({})", v.id(),
                                                   std::strerror(e), errno_name(e))};
        }
        kvm_run_stats.record(dt);
        if (run->exit_reason == KVM_EXIT_HLT)
            return {RunResult::halted, {}};
        if (run->exit_reason == KVM_EXIT_INTR)
            continue;
        std::string fail;
        if (on_exit)
            fail = on_exit(v, *run);
        else
            fail = "unexpected " + describe_exit(v);
        if (!fail.empty())
            return {RunResult::failed, fmt::format("vcpu{}: {}", v.id(), fail)};
    }
}

namespace {
void on_kick(int) {}
} // namespace

void ensure_kick_handler() {
    static std::mutex m;
    std::lock_guard lock(m);
    struct sigaction old {};
    if (::sigaction(SIGUSR1, nullptr, &old) != 0)
        throw SysError("sigaction", "SIGUSR1 (query)", errno);
    bool is_default =
        !(old.sa_flags & SA_SIGINFO) && (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN);
    if (!is_default)
        return; // RunControl's (or a test's) handler is in place
    struct sigaction sa {};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
    if (::sigaction(SIGUSR1, &sa, nullptr) != 0)
        throw SysError("sigaction", "SIGUSR1", errno);
}

VcpuThreads::VcpuThreads(double run_timeout_s, double stop_grace_s)
    : run_timeout_s_(run_timeout_s), stop_grace_s_(stop_grace_s) {
    ensure_kick_handler();
}

VcpuThreads::~VcpuThreads() {
    stop_all();
}

void VcpuThreads::spawn(std::function<void(RunSlot&)> body) {
    slots_.push_back(std::make_unique<RunSlot>());
    RunSlot* s = slots_.back().get();
    s->active.store(true);
    try {
        threads_.emplace_back([s, body = std::move(body)] {
            set_thread_role("vcpu");
            body(*s);
            s->active.store(false);
        });
    } catch (...) {
        s->active.store(false);
        throw;
    }
    s->thread = threads_.back().native_handle();
}

void VcpuThreads::kick(RunSlot& s, int why) {
    int none = RunSlot::none;
    s.kick.compare_exchange_strong(none, why);
    if (!s.active.load())
        return;
    if (kvm_run* r = s.run.load())
        r->immediate_exit = 1;
    ::pthread_kill(s.thread, SIGUSR1); // the thread is not joined yet, so the handle is valid
}

void VcpuThreads::supervise(const std::function<bool()>& should_stop) {
    uint64_t stop_seen = 0;
    auto timeout_ns = static_cast<uint64_t>(run_timeout_s_ * 1e9);
    auto grace_ns = static_cast<uint64_t>(stop_grace_s_ * 1e9);
    for (;;) {
        bool any = false;
        for (auto& s : slots_)
            any |= s->active.load();
        if (!any)
            break;
        uint64_t now = now_ns();
        if (!stop_seen && should_stop && should_stop())
            stop_seen = now;
        for (auto& s : slots_) {
            if (!s->active.load())
                continue;
            uint64_t since = s->run_since_ns.load();
            if (s->kick.load() != RunSlot::none) {
                if (since) // still inside KVM_RUN: the previous signal may have been early
                    kick(*s, s->kick.load());
            } else if (since && timeout_ns && now > since && now - since > timeout_ns) {
                kick(*s, RunSlot::timeout);
            } else if (stop_seen && now - stop_seen >= grace_ns) {
                kick(*s, RunSlot::stop);
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
}

void VcpuThreads::stop_all() {
    for (;;) {
        bool any = false;
        for (auto& s : slots_) {
            if (s->active.load()) {
                any = true;
                kick(*s, RunSlot::stop);
            }
        }
        if (!any)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
}

// ---- hooks -------------------------------------------------------------------------

namespace {
GuestFaultHooks g_hooks;
}

void set_guest_fault_hooks(GuestFaultHooks h) {
    g_hooks = std::move(h);
}
const GuestFaultHooks& guest_fault_hooks() {
    return g_hooks;
}

} // namespace gms::workloads::guest
