// Which blocking kernel call each thread is in, for the run's watchdog.
//
// Every call a workload makes that can block in the kernel (KVM_RUN,
// guest_memfd fallocate/pwrite/ioctls, first touches of a mapping) runs
// inside a CallScope. The scope writes {operation, arguments, start} into the
// calling thread's own slot of a fixed, process-wide table; the watchdog
// (engine/watchdog.h) scans the table and reports a call that has lasted too
// long while it lasts. The hot path takes no lock and makes no syscall: a
// thread-local pointer, a TSC read and a few stores, the slot published by a
// sequence number (odd while inside a call) that readers check twice
// (a seqlock). A thread claims its slot once, on its first scope.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>

namespace gms {

// What a call is: a name and how to show its arguments. Instances are
// static (the slot keeps a pointer).
struct CallOp {
    const char* name;    // "fallocate(PUNCH_HOLE)", "KVM_RUN", ...
    const char* arg_fmt; // how to render args[0..2], see CallOp::describe()
    // A call whose args[0] points at memory that lives only while the call
    // does (KVM_RUN: the vCPU's kvm_run). Its scope waits on exit while the
    // watchdog holds a pin, so the watchdog may read that memory.
    bool pinnable = false;
    // "fd=5 offset=0x3000 len=0x40000": arg_fmt with {0} {1} {2} {fd} replaced
    // ("{1:x}" in hex).
    std::string describe(int fd, const uint64_t (&args)[3]) const;
};

struct CallSlot {
    std::atomic<pid_t> tid{0};            // 0: free
    std::atomic<uint64_t> seq{0};         // odd: inside a call
    std::atomic<uint64_t> start_ticks{0}; // LatencyTimer::ticks() at entry
    std::atomic<const CallOp*> op{nullptr};
    std::atomic<int> fd{-1};
    std::atomic<uint64_t> args[3] = {};
    // The watchdog's pin (the seq it pinned, 0: none): see CallOp::pinnable.
    std::atomic<uint64_t> pin{0};
    std::atomic<const char*> role{nullptr}; // "vcpu", "worker", ... (set once per thread)
};

inline constexpr size_t kCallSlots = 1024;

// False when the environment has GMS_BENCH_NO_CALLSCOPE=1: no thread claims
// a slot, every scope is a null check, and the watchdog sees no call. Only
// for measuring what the scopes cost (bench/run_bench.py --only callscope);
// a run started so says it is not watched (stall_threshold_s 0).
bool call_scopes_enabled();

// The table every thread's scope writes to.
std::array<CallSlot, kCallSlots>& call_slots();

// This thread's slot (claimed on first use; nullptr when the table is full,
// then the thread's calls are not watched).
CallSlot* this_thread_slot();

// Enter/leave without RAII (for code that leaves by siglongjmp).
void call_enter(CallSlot* s, const CallOp& op, int fd, uint64_t a0, uint64_t a1, uint64_t a2);
void call_leave(CallSlot* s);

class CallScope {
  public:
    CallScope(const CallOp& op, int fd = -1, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0)
        : slot_(this_thread_slot()) {
        call_enter(slot_, op, fd, a0, a1, a2);
    }
    ~CallScope() { call_leave(slot_); }
    CallScope(const CallScope&) = delete;
    CallScope& operator=(const CallScope&) = delete;

  private:
    CallSlot* slot_;
};

// A consistent copy of one slot's call in progress.
struct CallSnapshot {
    size_t index = 0;
    pid_t tid = 0;
    uint64_t seq = 0; // identifies this call (odd)
    uint64_t start_ticks = 0;
    const CallOp* op = nullptr;
    int fd = -1;
    uint64_t args[3] = {};
    const char* role = nullptr;
};
// The call slot `i` is in, or nullopt (idle, free, or changed while read).
std::optional<CallSnapshot> read_call(size_t i);

// Pins call `snap` (still the same call, per its seq) so its pinnable
// memory stays valid; false if it already ended. Unpin as soon as done.
bool pin_call(const CallSnapshot& snap);
void unpin_call(const CallSnapshot& snap);

// Names this thread's role in stall reports ("vcpu0", "puncher", ...): a
// static string.
void set_thread_role(const char* role);

} // namespace gms
