#include "probes/lock_pairer.h"

#include "probes/lock_events.h"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

namespace gms::probes {

static_assert(sizeof(gms_lock_ev) == 96, "BPF and C++ agree on the record layout");

std::optional<LockEvent> decode_lock_record(const void* data, size_t size) {
    if (size < sizeof(gms_lock_ev))
        return std::nullopt;
    gms_lock_ev r;
    std::memcpy(&r, data, sizeof r);
    if (r.type < GMS_LEV_ACQUIRE || r.type >= GMS_LEV_TYPE_MAX)
        return std::nullopt;
    LockEvent e;
    e.type = r.type;
    e.mode = r.mode;
    e.op = r.op;
    e.ts_ns = r.ts_ns;
    e.seq = r.seq;
    e.lock = r.lock;
    e.tid = r.tid;
    e.tgid = r.tgid;
    e.ret = r.ret;
    e.stack_id = r.stack_id;
    e.syscall = r.syscall;
    e.sys_arg1 = r.sys_arg1;
    e.ino = r.ino;
    e.class_version = r.class_version;
    e.comm.assign(r.comm, strnlen(r.comm, sizeof r.comm));
    return e;
}

std::string lock_op_name(uint16_t op) {
    switch (op) {
    case GMS_LOCK_OP_NONE:
        return "none";
    case GMS_LOCK_OP_PUNCH:
        return "punch_hole";
    case GMS_LOCK_OP_ALLOCATE:
        return "allocate";
    case GMS_LOCK_OP_RELEASE:
        return "release";
    case GMS_LOCK_OP_COMMIT:
        return "memslot_commit";
    case GMS_LOCK_OP_UNBIND:
        return "memslot_unbind";
    }
    return fmt::format("op{}", op);
}

std::string lock_mode_name(uint16_t mode) {
    return mode == GMS_LOCK_READ ? "read" : "write";
}

std::string syscall_name(uint32_t nr, uint64_t arg1) {
    if (nr == ~0u)
        return "";
    switch (nr) { // x86-64 numbers
    case 3:
        return "close";
    case 11:
        return "munmap";
    case 16: {
        // KVM's ioctls by number (type KVMIO = 0xAE); others by request.
        const uint32_t req = uint32_t(arg1), type = (req >> 8) & 0xff, num = req & 0xff;
        if (type == 0xAE) {
            switch (num) {
            case 0x46:
                return "ioctl KVM_SET_USER_MEMORY_REGION";
            case 0x49:
                return "ioctl KVM_SET_USER_MEMORY_REGION2";
            case 0xd2:
                return "ioctl KVM_SET_MEMORY_ATTRIBUTES";
            case 0xd4:
                return "ioctl KVM_CREATE_GUEST_MEMFD";
            case 0xd5:
                return "ioctl KVM_PRE_FAULT_MEMORY";
            }
        }
        return fmt::format("ioctl {:#x}", req);
    }
    case 60:
        return "exit";
    case 231:
        return "exit_group";
    case 285:
        return "fallocate";
    case 436:
        return "close_range";
    }
    return fmt::format("syscall {}", nr);
}

LockPairer::LockPairer(uint64_t threshold_ns, size_t keep)
    : threshold_ns_(threshold_ns), keep_(keep) {}

void LockPairer::feed(const LockEvent& e) {
    ++events_;
    if (any_seq_ && e.seq > max_seq_ + 1)
        anomalies_.lost_events += e.seq - max_seq_ - 1; // a gap: records never delivered
    if (!any_seq_ || e.seq > max_seq_)
        max_seq_ = e.seq;
    any_seq_ = true;
    switch (e.type) {
    case GMS_LEV_ACQUIRE:
        on_acquire(e);
        break;
    case GMS_LEV_ACQUIRED:
        on_acquired(e);
        break;
    case GMS_LEV_RELEASE:
        on_release(e);
        break;
    case GMS_LEV_OP_BEGIN:
        ++operations_;
        break;
    case GMS_LEV_OP_END:
        if (e.class_version > 0)
            class_version_ = e.class_version;
        on_op_end(e);
        break;
    }
}

void LockPairer::on_op_end(const LockEvent& e) {
    // guest_memfd's operations release invalidate_lock before they return:
    // whatever this task still holds of it had its release record lost.
    auto it = open_.find({e.tid, e.lock});
    if (it == open_.end())
        return;
    for (const auto& en : it->second)
        ++(en.held ? anomalies_.releases_missed : anomalies_.acquires_without_return);
    open_.erase(it);
}

void LockPairer::on_acquire(const LockEvent& e) {
    auto& stack = open_[{e.tid, e.lock}];
    if (!stack.empty() && !stack.back().held) {
        // The previous acquire never returned: its ACQUIRED record is lost.
        ++anomalies_.acquires_without_return;
        stack.pop_back();
    }
    if (!stack.empty())
        ++anomalies_.nested;
    Entry en;
    en.mode = e.mode;
    en.start_ns = e.ts_ns;
    stack.push_back(en);
}

void LockPairer::on_acquired(const LockEvent& e) {
    auto& stack = open_[{e.tid, e.lock}];
    if (stack.empty() || stack.back().held || stack.back().mode != e.mode) {
        ++anomalies_.returns_without_acquire;
        Entry en; // a hold whose wait is unknown: measured from here
        en.mode = e.mode;
        en.start_ns = e.ts_ns;
        stack.push_back(en);
    }
    Entry& en = stack.back();
    en.held = true;
    en.acquired_ns = e.ts_ns;
    en.at = e;
    auto& st = stats_[{lock_op_name(e.op), lock_mode_name(e.mode)}];
    st.operation = lock_op_name(e.op);
    st.mode = lock_mode_name(e.mode);
    st.wait_ns.add(e.ts_ns - std::min(e.ts_ns, en.start_ns));
}

void LockPairer::on_release(const LockEvent& e) {
    auto it = open_.find({e.tid, e.lock});
    if (it == open_.end()) {
        ++anomalies_.unpaired_releases;
        return;
    }
    auto& stack = it->second;
    // The innermost hold of this mode (nested read holds release LIFO).
    auto held = std::find_if(stack.rbegin(), stack.rend(),
                             [&](const Entry& en) { return en.held && en.mode == e.mode; });
    if (held == stack.rend()) {
        ++anomalies_.unpaired_releases;
        return;
    }
    record_hold(hold_of(*held, e.ts_ns, false));
    stack.erase(std::next(held).base());
    if (stack.empty())
        open_.erase(it);
}

report::LockHold LockPairer::hold_of(const Entry& en, uint64_t end_ns, bool in_progress) const {
    report::LockHold h;
    const LockEvent& a = en.at;
    h.operation = lock_op_name(a.op);
    h.mode = lock_mode_name(en.mode);
    h.tid = a.tid;
    h.tgid = a.tgid;
    h.comm = a.comm;
    h.syscall = syscall_name(a.syscall, a.sys_arg1);
    h.ino = a.ino;
    h.lock = a.lock;
    h.wait_ns = en.acquired_ns - std::min(en.acquired_ns, en.start_ns);
    h.hold_ns = end_ns - std::min(end_ns, en.acquired_ns);
    h.acquired_ns = en.acquired_ns;
    h.in_progress = in_progress;
    h.stack_id = a.stack_id;
    return h;
}

void LockPairer::record_hold(report::LockHold h) {
    ++holds_;
    auto& st = stats_[{h.operation, h.mode}];
    st.hold_ns.add(h.hold_ns);
    if (!longest_ || h.hold_ns > longest_->hold_ns)
        longest_ = h;
    if (h.hold_ns > threshold_ns_) {
        ++over_count_;
        if (over_.size() < keep_)
            over_.push_back(std::move(h));
    }
}

report::LocksSection LockPairer::result(uint64_t now_ns) const {
    report::LocksSection s;
    s.threshold_ns = threshold_ns_;
    s.events = events_;
    s.operations = operations_;
    s.holds = holds_;
    for (const auto& [k, st] : stats_)
        s.by_operation.push_back(st);
    s.longest = longest_;
    s.over_threshold = over_;
    s.over_threshold_count = over_count_;
    s.anomalies = anomalies_;
    for (const auto& [k, stack] : open_)
        for (const auto& en : stack) {
            if (!en.held)
                continue; // waiting when observation ended: no hold to report
            auto h = hold_of(en, std::max(now_ns, en.acquired_ns), true);
            if (!s.longest || h.hold_ns > s.longest->hold_ns)
                s.longest = h;
            if (h.hold_ns > threshold_ns_) {
                ++s.over_threshold_count;
                if (s.over_threshold.size() < keep_)
                    s.over_threshold.push_back(h);
            }
            if (s.in_progress.size() < keep_)
                s.in_progress.push_back(std::move(h));
        }
    return s;
}

report::InvariantResult judge_lock_holds(const report::LocksSection& s) {
    report::InvariantResult r;
    r.name = kLockHoldInvariant;
    r.backend = s.attached ? "fentry" : "";
    if (!s.attached) {
        r.verdict = report::Verdict::unverifiable;
        r.reason = "invalidate_lock probes not attached: " + s.reason;
        return r;
    }
    r.evidence = {{"holds", s.holds},
                  {"operations", s.operations},
                  {"threshold_ns", s.threshold_ns},
                  {"longest_hold_ns", s.longest ? s.longest->hold_ns : 0},
                  {"over_threshold", s.over_threshold_count},
                  {"in_progress", s.in_progress.size()},
                  {"lost_events", s.anomalies.lost_events},
                  {"releases_missed", s.anomalies.releases_missed}};
    for (const auto& h : s.over_threshold)
        r.violations.push_back(fmt::format(
            "{} ({}) held guest_memfd ino {}'s invalidate_lock for {:.3f} s{} (threshold {:.3f} "
            "s): {}:{}{}",
            h.operation, h.mode, h.ino, double(h.hold_ns) / 1e9,
            h.in_progress ? " and still held at the end" : "", double(s.threshold_ns) / 1e9, h.comm,
            h.tid, h.syscall.empty() ? "" : " in " + h.syscall));
    if (s.over_threshold_count) {
        r.verdict = report::Verdict::violated;
        r.reason = fmt::format("{} hold(s) of invalidate_lock over {:.3f} s, the longest {:.3f} s "
                               "by {}",
                               s.over_threshold_count, double(s.threshold_ns) / 1e9,
                               double(s.longest->hold_ns) / 1e9, s.longest->operation);
    } else if (s.anomalies.lost_events) {
        r.verdict = report::Verdict::incomplete;
        r.reason =
            fmt::format("{} lock records lost: a hold may be missing", s.anomalies.lost_events);
    } else if (s.anomalies.releases_missed) {
        r.verdict = report::Verdict::incomplete;
        r.reason = fmt::format("{} hold(s) whose release record never arrived (still held when "
                               "their operation returned): their length is unknown",
                               s.anomalies.releases_missed);
    } else if (!s.holds) {
        r.verdict = report::Verdict::incomplete;
        r.reason = "no hold of a guest_memfd invalidate_lock was seen";
    } else {
        r.verdict = report::Verdict::verified;
        r.reason = fmt::format("{} holds, none over {:.3f} s (longest {:.6f} s, {})", s.holds,
                               double(s.threshold_ns) / 1e9, double(s.longest->hold_ns) / 1e9,
                               s.longest->operation);
    }
    return r;
}

} // namespace gms::probes
