#include "core/call_scope.h"

#include "core/util.h"

#include <cstdlib>
#include <fmt/format.h>
#include <string_view>
#include <sys/syscall.h>
#include <unistd.h>

namespace gms {

namespace {

std::array<CallSlot, kCallSlots> g_slots;

// Frees the thread's slot when the thread ends (constructed only by a thread
// that claimed one).
struct SlotRelease {
    CallSlot* slot = nullptr;
    ~SlotRelease() {
        if (slot) {
            slot->role.store(nullptr, std::memory_order_relaxed);
            slot->tid.store(0, std::memory_order_release);
        }
    }
};

thread_local CallSlot* t_slot = nullptr;
thread_local bool t_no_slot = false; // the table was full
thread_local SlotRelease t_release;

CallSlot* claim() {
    if (!call_scopes_enabled()) {
        t_no_slot = true;
        return nullptr;
    }
    pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
    for (auto& s : g_slots) {
        pid_t free = 0;
        if (s.tid.load(std::memory_order_relaxed) == 0 &&
            s.tid.compare_exchange_strong(free, tid, std::memory_order_acq_rel)) {
            // seq keeps counting across owners: a reader never mistakes the new
            // owner's call for the old one's.
            if (s.seq.load(std::memory_order_relaxed) & 1)
                s.seq.fetch_add(1, std::memory_order_release);
            t_release.slot = &s;
            return &s;
        }
    }
    t_no_slot = true;
    return nullptr;
}

} // namespace

bool call_scopes_enabled() {
    static const bool enabled = [] {
        const char* off = std::getenv("GMS_BENCH_NO_CALLSCOPE");
        return !(off && *off && std::string_view(off) != "0");
    }();
    return enabled;
}

std::array<CallSlot, kCallSlots>& call_slots() {
    return g_slots;
}

CallSlot* this_thread_slot() {
    if (CallSlot* s = t_slot; s) [[likely]]
        return s;
    if (t_no_slot)
        return nullptr;
    t_slot = claim();
    return t_slot;
}

void call_enter(CallSlot* s, const CallOp& op, int fd, uint64_t a0, uint64_t a1, uint64_t a2) {
    if (!s)
        return;
    // Written while seq is even (idle): a reader ignores the slot until the
    // release store below makes seq odd, and re-checks seq after reading.
    s->op.store(&op, std::memory_order_relaxed);
    s->fd.store(fd, std::memory_order_relaxed);
    s->args[0].store(a0, std::memory_order_relaxed);
    s->args[1].store(a1, std::memory_order_relaxed);
    s->args[2].store(a2, std::memory_order_relaxed);
    s->start_ticks.store(LatencyTimer::ticks(), std::memory_order_relaxed);
    uint64_t q = s->seq.load(std::memory_order_relaxed);
    s->seq.store(q + 1, std::memory_order_release);
}

void call_leave(CallSlot* s) {
    if (!s)
        return;
    uint64_t q = s->seq.load(std::memory_order_relaxed);
    const CallOp* op = s->op.load(std::memory_order_relaxed);
    if (op && op->pinnable) {
        // Dekker with pin_call(): either the watchdog sees seq move on and
        // lets go, or this thread sees the pin and waits for the unpin.
        s->seq.store(q + 1, std::memory_order_seq_cst);
        while (s->pin.load(std::memory_order_seq_cst) == q)
            ::usleep(100);
        return;
    }
    s->seq.store(q + 1, std::memory_order_release);
}

std::optional<CallSnapshot> read_call(size_t i) {
    CallSlot& s = g_slots[i];
    pid_t tid = s.tid.load(std::memory_order_acquire);
    if (!tid)
        return std::nullopt;
    uint64_t q = s.seq.load(std::memory_order_acquire);
    if (!(q & 1))
        return std::nullopt;
    CallSnapshot c;
    c.index = i;
    c.tid = tid;
    c.seq = q;
    c.op = s.op.load(std::memory_order_relaxed);
    c.fd = s.fd.load(std::memory_order_relaxed);
    for (int k = 0; k < 3; ++k)
        c.args[k] = s.args[k].load(std::memory_order_relaxed);
    c.start_ticks = s.start_ticks.load(std::memory_order_relaxed);
    c.role = s.role.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_relaxed) != q || s.tid.load(std::memory_order_relaxed) != tid)
        return std::nullopt;
    return c;
}

bool pin_call(const CallSnapshot& snap) {
    CallSlot& s = g_slots[snap.index];
    s.pin.store(snap.seq, std::memory_order_seq_cst);
    if (s.seq.load(std::memory_order_seq_cst) != snap.seq) {
        s.pin.store(0, std::memory_order_seq_cst);
        return false;
    }
    return true;
}

void unpin_call(const CallSnapshot& snap) {
    g_slots[snap.index].pin.store(0, std::memory_order_seq_cst);
}

void set_thread_role(const char* role) {
    if (CallSlot* s = this_thread_slot())
        s->role.store(role, std::memory_order_relaxed);
}

std::string CallOp::describe(int fd, const uint64_t (&args)[3]) const {
    std::string out;
    std::string_view f = arg_fmt ? arg_fmt : "";
    for (size_t i = 0; i < f.size(); ++i) {
        if (f[i] != '{') {
            out += f[i];
            continue;
        }
        size_t end = f.find('}', i);
        if (end == std::string_view::npos) {
            out += f.substr(i);
            break;
        }
        std::string_view field = f.substr(i + 1, end - i - 1);
        i = end;
        if (field == "fd") {
            out += std::to_string(fd);
            continue;
        }
        bool hex = field.size() == 3 && field.substr(1) == ":x";
        int k = field.empty() ? -1 : field[0] - '0';
        if (k < 0 || k > 2 || (field.size() != 1 && !hex)) {
            out += "{" + std::string(field) + "}";
            continue;
        }
        out += hex ? fmt::format("{:#x}", args[k]) : std::to_string(args[k]);
    }
    return out;
}

} // namespace gms
