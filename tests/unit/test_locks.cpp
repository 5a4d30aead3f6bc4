// The invalidate_lock pairing (probes/lock_pairer.h), its invariant, the
// /proc/lock_stat parser, and the kernel log's whole splats (core/kmsg.h):
// pure logic fed good and broken streams.
#include "core/kmsg.h"
#include "probes/lock_events.h"
#include "probes/lock_pairer.h"
#include "probes/lock_probes.h"
#include "reports/render.h"

#include <catch2/catch_test_macros.hpp>
#include <cstring>
#include <fstream>

using namespace gms;
using namespace gms::probes;

namespace {

constexpr uint64_t kLock = 0xffff888012345678ull;
constexpr uint64_t kSecond = 1000000000ull;

struct Stream {
    uint64_t seq = 0;
    std::vector<LockEvent> events;
    LockEvent& add(uint32_t type, uint32_t tid, uint64_t ts, uint16_t mode = GMS_LOCK_WRITE,
                   uint16_t op = GMS_LOCK_OP_PUNCH, uint64_t lock = kLock) {
        LockEvent e;
        e.type = type;
        e.tid = tid;
        e.tgid = 100;
        e.ts_ns = ts;
        e.mode = mode;
        e.op = op;
        e.lock = lock;
        e.seq = seq++;
        e.comm = "gmemstress";
        e.syscall = 285;
        e.ino = 42;
        events.push_back(e);
        return events.back();
    }
    // One whole acquisition: entry, return, release.
    void hold(uint32_t tid, uint64_t start, uint64_t wait, uint64_t hold,
              uint16_t mode = GMS_LOCK_WRITE, uint16_t op = GMS_LOCK_OP_PUNCH) {
        add(GMS_LEV_ACQUIRE, tid, start, mode, op);
        add(GMS_LEV_ACQUIRED, tid, start + wait, mode, op).stack_id = 7;
        add(GMS_LEV_RELEASE, tid, start + wait + hold, mode, op);
    }
    report::LocksSection run(uint64_t threshold = kSecond, uint64_t now = 0) const {
        LockPairer p(threshold);
        for (const auto& e : events)
            p.feed(e);
        auto s = p.result(now);
        s.attached = true;
        return s;
    }
};

const report::LockOpStats* stats_of(const report::LocksSection& s, const std::string& op,
                                    const std::string& mode) {
    for (const auto& o : s.by_operation)
        if (o.operation == op && o.mode == mode)
            return &o;
    return nullptr;
}

} // namespace

TEST_CASE("lock pairer: acquire, acquired, release give wait and hold per operation", "[locks]") {
    Stream st;
    st.add(GMS_LEV_OP_BEGIN, 1, 0);
    st.hold(1, 100, 50, 1000);                                      // punch, write
    st.hold(1, 5000, 10, 300, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE); // allocate, read
    st.hold(1, 9000, 0, 2000, GMS_LOCK_WRITE, GMS_LOCK_OP_RELEASE); // release, write
    auto s = st.run();
    CHECK(s.holds == 3);
    CHECK(s.operations == 1);
    auto* punch = stats_of(s, "punch_hole", "write");
    REQUIRE(punch);
    CHECK(punch->hold_ns.max() == 1000);
    CHECK(punch->wait_ns.max() == 50);
    auto* alloc = stats_of(s, "allocate", "read");
    REQUIRE(alloc);
    CHECK(alloc->hold_ns.max() == 300);
    REQUIRE(s.longest);
    CHECK(s.longest->operation == "release");
    CHECK(s.longest->hold_ns == 2000);
    CHECK(s.longest->syscall == "fallocate");
    CHECK(s.over_threshold_count == 0);
    CHECK(s.in_progress.empty());
    auto inv = judge_lock_holds(s);
    CHECK(inv.name == "invalidate_lock_hold");
    CHECK(inv.verdict == report::Verdict::verified);
}

TEST_CASE("lock pairer: a hold over the threshold is a violation naming the operation", "[locks]") {
    Stream st;
    st.hold(7, 0, 20, 3 * kSecond + 5); // the planted msleep(3000) under punch hole
    st.hold(7, 4 * kSecond, 20, 1000);
    auto s = st.run();
    CHECK(s.over_threshold_count == 1);
    REQUIRE(s.over_threshold.size() == 1);
    CHECK(s.over_threshold[0].operation == "punch_hole");
    CHECK(s.over_threshold[0].mode == "write");
    CHECK(s.over_threshold[0].stack_id == 7);
    CHECK(s.over_threshold[0].hold_ns == 3 * kSecond + 5);
    auto inv = judge_lock_holds(s);
    CHECK(inv.verdict == report::Verdict::violated);
    REQUIRE(inv.violations.size() == 1);
    CHECK(inv.violations[0].find("punch_hole (write)") != std::string::npos);
    CHECK(inv.violations[0].find("3.000 s") != std::string::npos);
    CHECK(inv.violations[0].find("fallocate") != std::string::npos);
    // A larger threshold: the same stream is fine.
    CHECK(judge_lock_holds(st.run(4 * kSecond)).verdict == report::Verdict::verified);
}

TEST_CASE("lock pairer: interleaved tasks on one lock pair per task", "[locks]") {
    Stream st;
    // Two readers overlap; their releases come in the other order.
    st.add(GMS_LEV_ACQUIRE, 1, 0, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_ACQUIRE, 2, 5, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_ACQUIRED, 1, 10, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_ACQUIRED, 2, 12, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_RELEASE, 2, 100, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_RELEASE, 1, 1000, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    auto s = st.run();
    CHECK(s.holds == 2);
    REQUIRE(s.longest);
    CHECK(s.longest->tid == 1);
    CHECK(s.longest->hold_ns == 990);
    CHECK(s.longest->wait_ns == 10);
    const auto& a = s.anomalies;
    CHECK(a.unpaired_releases + a.nested + a.acquires_without_return + a.returns_without_acquire ==
          0);
}

TEST_CASE("lock pairer: nested read holds release innermost first", "[locks]") {
    Stream st;
    st.add(GMS_LEV_ACQUIRE, 1, 0, GMS_LOCK_READ);
    st.add(GMS_LEV_ACQUIRED, 1, 1, GMS_LOCK_READ);
    st.add(GMS_LEV_ACQUIRE, 1, 10, GMS_LOCK_READ);
    st.add(GMS_LEV_ACQUIRED, 1, 11, GMS_LOCK_READ);
    st.add(GMS_LEV_RELEASE, 1, 20, GMS_LOCK_READ);
    st.add(GMS_LEV_RELEASE, 1, 101, GMS_LOCK_READ);
    auto s = st.run();
    CHECK(s.holds == 2);
    CHECK(s.anomalies.nested == 1);
    REQUIRE(s.longest);
    CHECK(s.longest->hold_ns == 100); // the outer one
    CHECK(s.in_progress.empty());
}

TEST_CASE("lock pairer: broken streams are counted, never paired wrongly", "[locks]") {
    SECTION("a release without a hold") {
        Stream st;
        st.add(GMS_LEV_RELEASE, 1, 10);
        st.hold(1, 100, 1, 10);
        auto s = st.run();
        CHECK(s.anomalies.unpaired_releases == 1);
        CHECK(s.holds == 1);
    }
    SECTION("a release of the other mode does not end the hold") {
        Stream st;
        st.add(GMS_LEV_ACQUIRE, 1, 0);
        st.add(GMS_LEV_ACQUIRED, 1, 1);
        st.add(GMS_LEV_RELEASE, 1, 5, GMS_LOCK_READ);
        auto s = st.run(kSecond, 2 * kSecond + 1);
        CHECK(s.anomalies.unpaired_releases == 1);
        CHECK(s.holds == 0);
        REQUIRE(s.in_progress.size() == 1);
        CHECK(s.in_progress[0].hold_ns == 2 * kSecond);
    }
    SECTION("an acquire whose return was lost") {
        Stream st;
        st.add(GMS_LEV_ACQUIRE, 1, 0);
        st.add(GMS_LEV_ACQUIRE, 1, 50);
        st.add(GMS_LEV_ACQUIRED, 1, 60);
        st.add(GMS_LEV_RELEASE, 1, 70);
        auto s = st.run();
        CHECK(s.anomalies.acquires_without_return == 1);
        CHECK(s.anomalies.nested == 0);
        CHECK(s.holds == 1);
        CHECK(s.longest->wait_ns == 10);
    }
    SECTION("a return without its entry") {
        Stream st;
        st.add(GMS_LEV_ACQUIRED, 1, 60);
        st.add(GMS_LEV_RELEASE, 1, 70);
        auto s = st.run();
        CHECK(s.anomalies.returns_without_acquire == 1);
        CHECK(s.holds == 1);
        CHECK(s.longest->hold_ns == 10);
    }
    SECTION("lost records (a sequence gap) make the invariant incomplete") {
        Stream st;
        st.hold(1, 0, 1, 10);
        st.seq += 3;
        st.hold(1, 100, 1, 10);
        auto s = st.run();
        CHECK(s.anomalies.lost_events == 3);
        auto inv = judge_lock_holds(s);
        CHECK(inv.verdict == report::Verdict::incomplete);
        CHECK(inv.reason.find("lost") != std::string::npos);
    }
    SECTION("ring-buffer drops too") {
        LockPairer p(kSecond);
        p.add_lost(2);
        auto s = p.result(0);
        s.attached = true;
        CHECK(judge_lock_holds(s).verdict == report::Verdict::incomplete);
    }
}

TEST_CASE("lock pairer: a hold still open at the end counts to now", "[locks]") {
    Stream st;
    st.add(GMS_LEV_ACQUIRE, 3, 0, GMS_LOCK_WRITE, GMS_LOCK_OP_RELEASE);
    st.add(GMS_LEV_ACQUIRED, 3, 10, GMS_LOCK_WRITE, GMS_LOCK_OP_RELEASE);
    st.add(GMS_LEV_ACQUIRE, 4, 20); // waiting at the end: no hold
    auto s = st.run(kSecond, 5 * kSecond);
    REQUIRE(s.in_progress.size() == 1);
    CHECK(s.in_progress[0].in_progress);
    CHECK(s.in_progress[0].operation == "release");
    CHECK(s.over_threshold_count == 1);
    auto inv = judge_lock_holds(s);
    CHECK(inv.verdict == report::Verdict::violated);
    CHECK(inv.violations.at(0).find("still held") != std::string::npos);
}

TEST_CASE("lock invariant: unverifiable without probes, incomplete with nothing seen", "[locks]") {
    report::LocksSection s;
    s.reason = "probes.locks = false";
    auto inv = judge_lock_holds(s);
    CHECK(inv.verdict == report::Verdict::unverifiable);
    CHECK(inv.reason.find("probes.locks = false") != std::string::npos);
    s.attached = true;
    CHECK(judge_lock_holds(s).verdict == report::Verdict::incomplete);
}

TEST_CASE("lock records decode as the BPF side lays them out", "[locks]") {
    gms_lock_ev r{};
    r.type = GMS_LEV_ACQUIRED;
    r.mode = GMS_LOCK_READ;
    r.op = GMS_LOCK_OP_COMMIT;
    r.ts_ns = 123;
    r.seq = 9;
    r.lock = kLock;
    r.tid = 5;
    r.tgid = 4;
    r.stack_id = 17;
    r.syscall = 16;
    r.sys_arg1 = 0x4020ae49; // _IOW(KVMIO, 0x49, 32 bytes): KVM_SET_USER_MEMORY_REGION2
    r.class_version = 3;
    std::strcpy(r.comm, "vcpu0");
    auto e = decode_lock_record(&r, sizeof r);
    REQUIRE(e);
    CHECK(e->type == GMS_LEV_ACQUIRED);
    CHECK(e->op == GMS_LOCK_OP_COMMIT);
    CHECK(e->lock == kLock);
    CHECK(e->stack_id == 17);
    CHECK(e->class_version == 3);
    CHECK(e->comm == "vcpu0");
    CHECK(syscall_name(e->syscall, e->sys_arg1) == "ioctl KVM_SET_USER_MEMORY_REGION2");
    CHECK(syscall_name(285, 0) == "fallocate");
    CHECK(syscall_name(~0u, 0).empty());
    CHECK_FALSE(decode_lock_record(&r, sizeof r - 1));
    r.type = 99;
    CHECK_FALSE(decode_lock_record(&r, sizeof r));
}

TEST_CASE("/proc/lock_stat rows of one class", "[locks]") {
    const std::string text =
        "lock_stat version 0.4\n"
        "------------------------------------------------------------------------\n"
        "                              class name    con-bounces    contentions   "
        "waittime-min   waittime-max waittime-total   waittime-avg    acq-bounces   "
        "acquisitions   holdtime-min   holdtime-max holdtime-total   holdtime-avg\n"
        "------------------------------------------------------------------------\n"
        "              mapping.invalidate_lock#4-W:             2              3           "
        "0.10        2000.50        2100.00         700.00             10            120   "
        "       0.20     3000123.45     3001000.00       25008.33\n"
        "              mapping.invalidate_lock#4-R:             0              0           "
        "0.00           0.00           0.00           0.00              1             40   "
        "       0.30          12.00          80.00           2.00\n"
        "              mapping.invalidate_lock#2-W:             0              0           "
        "0.00           0.00           0.00           0.00              1              5   "
        "       0.30          12.00          80.00           2.00\n";
    auto rows = parse_lock_stat(text, "mapping.invalidate_lock#4");
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].mode == "W");
    CHECK(rows[0].contentions == 3);
    CHECK(rows[0].acquisitions == 120);
    CHECK(rows[0].holdtime_max_us == 3000123.45);
    CHECK(rows[1].mode == "R");
    CHECK(rows[1].acquisitions == 40);
    CHECK(parse_lock_stat(text, "mapping.invalidate_lock").empty());
}

TEST_CASE("lock points: excludable by name", "[locks]") {
    auto names = excludable_point_names();
    for (const char* n : {"lock_down_write", "lock_up_read", "lock_op_fallocate", "pc_add"})
        CHECK(std::find(names.begin(), names.end(), n) != names.end());
}

namespace {
std::vector<KmsgRecord> records(const std::vector<std::string>& lines, uint64_t t0 = 1000) {
    std::vector<KmsgRecord> out;
    for (const auto& l : lines)
        out.push_back({t0++, l});
    return out;
}

// A WARN_ONCE in punch hole as Linux 7.3 prints it (kernel/panic.c __warn).
const std::vector<std::string> kWarn = {
    "WARNING: virt/kvm/guest_memfd.c:290 at kvm_gmem_punch_hole+0x1b6/0x1d0, CPU#0: "
    "gmemstress/321",
    "gmemstress plant: punch hole at 0, 4096 bytes",
    "Modules linked in:",
    "CPU: 0 UID: 0 PID: 321 Comm: gmemstress Not tainted 7.3.4 #1 PREEMPT(voluntary)",
    "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)",
    "RIP: 0010:kvm_gmem_punch_hole+0x1b6/0x1d0",
    "Call Trace:",
    " <TASK>",
    " kvm_gmem_fallocate+0x5e/0x90",
    " vfs_fallocate+0x150/0x3c0",
    " __x64_sys_fallocate+0x44/0x70",
    " do_syscall_64+0x80/0x870",
    " </TASK>",
    "irq event stamp: 4521",
    "hardirqs last  enabled at (4531): [<ffffffff811b2a44>] __up_console_sem+0x54/0x60",
    "---[ end trace 0000000000000000 ]---",
};
} // namespace

TEST_CASE("kernel log: a WARN is one finding with its whole splat", "[kmsg]") {
    auto lines = kWarn;
    lines.insert(lines.begin(), "virtio_net virtio0 eth0: link up");
    lines.push_back("kvm: something unrelated afterwards");
    auto f = assemble_splats(records(lines));
    REQUIRE(f.size() == 1);
    CHECK(f[0].kind == "WARNING");
    CHECK(f[0].line == kWarn[0]);
    CHECK(f[0].timestamp_us == 1001);
    CHECK(f[0].splat == kWarn);
    CHECK(f[0].task == "gmemstress:321");
    CHECK(f[0].operations == std::vector<std::string>{"punch_hole"});
}

TEST_CASE("kernel log: cut-here splats take the next headline", "[kmsg]") {
    auto f = assemble_splats(records(
        {"------------[ cut here ]------------", "kernel BUG at mm/filemap.c:1234!",
         "Oops: invalid opcode: 0000 [#1] SMP",
         "CPU: 1 UID: 0 PID: 9 Comm: kworker/1:0 Not tainted", "Call Trace:", " <TASK>",
         " kvm_gmem_release+0x20/0x90", " </TASK>", "---[ end trace 0000000000000000 ]---"}));
    // The Oops line is a headline of its own: two findings, the BUG first.
    REQUIRE(f.size() == 2);
    CHECK(f[0].kind == "BUG");
    CHECK(f[0].line == "kernel BUG at mm/filemap.c:1234!");
    CHECK(f[0].splat.size() == 2);
    CHECK(f[1].kind == "oops");
    CHECK(f[1].task == "kworker/1:0:9");
    CHECK(f[1].operations == std::vector<std::string>{"release"});
}

TEST_CASE("kernel log: soft lockup, hung task and bad page state end with their stack", "[kmsg]") {
    auto f = assemble_splats(records({
        "watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [gmemstress:77]",
        "CPU: 1 UID: 0 PID: 77 Comm: gmemstress Not tainted",
        "Call Trace:",
        " <TASK>",
        " truncate_inode_pages_range+0x100/0x500",
        " kvm_gmem_punch_hole+0x90/0x1d0",
        " </TASK>",
        "INFO: task gmemstress:78 blocked for more than 120 seconds.",
        "task:gmemstress state:D stack:0 pid:78",
        "Call Trace:",
        " <TASK>",
        " rwsem_down_write_slowpath+0x200/0x600",
        " kvm_gmem_allocate+0x40/0x150",
        " </TASK>",
        "BUG: Bad page state in process gmemstress  pfn:12345",
        "page dumped because: nonzero mapcount",
        " <TASK>",
        " </TASK>",
        "after the splats",
    }));
    REQUIRE(f.size() == 3);
    CHECK(f[0].kind == "soft_lockup");
    CHECK(f[0].splat.size() == 7);
    CHECK(f[0].task == "gmemstress:77");
    CHECK(f[0].operations == std::vector<std::string>{"punch_hole"});
    CHECK(f[1].kind == "hung_task");
    CHECK(f[1].task == "gmemstress:78");
    CHECK(f[1].operations == std::vector<std::string>{"allocate"});
    CHECK(f[2].kind == "bad_page_state");
    CHECK(f[2].splat.size() == 4);
}

TEST_CASE("kernel log: a splat is bounded and ends when the log goes quiet", "[kmsg]") {
    std::vector<std::string> lines = {"rcu: INFO: rcu_preempt self-detected stall on CPU"};
    for (int i = 0; i < 300; ++i)
        lines.push_back(" frame_" + std::to_string(i) + "+0x1/0x2");
    auto f = assemble_splats(records(lines));
    REQUIRE(f.size() == 1);
    CHECK(f[0].kind == "rcu_stall");
    CHECK(f[0].splat.size() == kMaxSplatLines);

    auto recs = records({"WARNING: at foo+0x1/0x2, CPU#0: a/1", "line two"});
    recs.push_back({recs.back().timestamp_us + 5000000, " later, unrelated"});
    f = assemble_splats(recs);
    REQUIRE(f.size() == 1);
    CHECK(f[0].splat.size() == 2);
    CHECK(f[0].task == "a:1");
    CHECK(f[0].operations.empty());
}

TEST_CASE("report: the locks section and whole splats are rendered", "[locks][render]") {
    Stream st;
    st.hold(7, 0, 20, 3 * kSecond);
    report::Report r;
    r.locks = st.run();
    r.kernel_log = assemble_splats(records(kWarn));
    auto j = report::to_json(r);
    CHECK(j["locks"]["over_threshold_count"] == 1);
    CHECK(j["locks"]["longest"]["operation"] == "punch_hole");
    CHECK(j["locks"]["by_operation"][0]["hold_ns"]["max"] == 3 * kSecond);
    CHECK(j["kernel_log"]["findings"][0]["splat"].size() == kWarn.size());
    CHECK(j["kernel_log"]["findings"][0]["operations"][0] == "punch_hole");
    auto text = report::to_text(r, false);
    CHECK(text.find("longest: punch_hole (write)") != std::string::npos);
    CHECK(text.find("by gmemstress:321 in punch_hole") != std::string::npos);
}

TEST_CASE("kernel log: the planted WARN as the test kernel printed it", "[kmsg]") {
    // Recorded from `gmemstress lab --plant warn` (tests/lab/test_lab_locks.py):
    // punch hole is inlined into kvm_gmem_fallocate there; the user registers
    // (ORIG_RAX 0x11d = fallocate, RSI = mode 3) say it was a punch.
    std::ifstream in(std::string(GMS_TEST_DATA) + "/splat-warn-punch-test-kernel.txt");
    REQUIRE(in);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);)
        lines.push_back(l);
    auto f = assemble_splats(records(lines));
    REQUIRE(f.size() == 1);
    CHECK(f[0].kind == "WARNING");
    CHECK(f[0].line == "WARNING: at kvm_gmem_fallocate+0x391/0x3e0, CPU#0: gmemstress/80");
    CHECK(f[0].splat.size() == lines.size() - 2);
    CHECK(f[0].splat.front() == "------------[ cut here ]------------");
    CHECK(f[0].splat.back().find("---[ end trace") == 0);
    CHECK(f[0].task == "gmemstress:80");
    CHECK(f[0].operations == std::vector<std::string>{"punch_hole"});
}

TEST_CASE("kernel log: lockdep and KASAN reports are findings with their stack", "[kmsg]") {
    // As 7.3 prints them (the lock-order and use-after-free plants, sanitizer kernel).
    auto f = assemble_splats(records({
        "======================================================",
        "WARNING: possible circular locking dependency detected",
        "7.3.4-gms #1 Not tainted",
        "------------------------------------------------------",
        "gmemstress/88 is trying to acquire lock:",
        "ffff888004a1c0e8 (&mm->mmap_lock){++++}-{4:4}, at: kvm_gmem_punch_hole+0x95/0x3a0",
        "but task is already holding lock:",
        "ffff888005d2b4d0 (mapping.invalidate_lock#2){++++}-{4:4}, at: "
        "kvm_gmem_punch_hole+0x7e/0x3a0",
        " *** DEADLOCK ***",
        "stack backtrace:",
        "CPU: 1 UID: 0 PID: 88 Comm: gmemstress Not tainted 7.3.4-gms #1",
        "Call Trace:",
        " <TASK>",
        " __lock_acquire+0x1a2c/0x2d70",
        " kvm_gmem_punch_hole+0x95/0x3a0",
        " kvm_gmem_fallocate+0x5e/0x90",
        " </TASK>",
        "==================================================================",
        "BUG: KASAN: use-after-free in kvm_gmem_punch_hole+0x2f1/0x3a0",
        "Read of size 1 at addr ffff888012345000 by task gmemstress/91",
        "CPU: 0 UID: 0 PID: 91 Comm: gmemstress Not tainted 7.3.4-gms #1",
        "Call Trace:",
        " <TASK>",
        " kasan_report+0xb9/0xf0",
        " kvm_gmem_punch_hole+0x2f1/0x3a0",
        " kvm_gmem_fallocate+0x5e/0x90",
        " </TASK>",
        "kvm: an unrelated line",
    }));
    REQUIRE(f.size() == 2);
    CHECK(f[0].kind == "lockdep");
    CHECK(f[0].task == "gmemstress:88");
    CHECK(f[0].operations == std::vector<std::string>{"punch_hole"});
    CHECK(f[0].splat.back() == " </TASK>");
    CHECK(f[1].kind == "sanitizer");
    CHECK(f[1].task == "gmemstress:91");
    CHECK(f[1].operations == std::vector<std::string>{"punch_hole"});
    CHECK(f[1].splat.size() == 9);
}

TEST_CASE("lock pairer: a hold open when its operation returned lost its release", "[locks]") {
    // The Debian 7.3.4 lab run that reported "allocate (read) held ... 4.6 s":
    // the up_read record never came, the operation's return did.
    Stream st;
    st.add(GMS_LEV_OP_BEGIN, 1, 0, 0, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_ACQUIRE, 1, 1, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_ACQUIRED, 1, 2, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    st.add(GMS_LEV_OP_END, 1, 50, 0, GMS_LOCK_OP_ALLOCATE);
    st.hold(2, 100, 1, 10);
    auto s = st.run(kSecond, 10 * kSecond);
    CHECK(s.anomalies.releases_missed == 1);
    CHECK(s.in_progress.empty());
    CHECK(s.over_threshold_count == 0);
    CHECK(s.holds == 1);
    auto r = judge_lock_holds(s);
    CHECK(r.verdict == report::Verdict::incomplete);
    CHECK(r.reason.find("release record never arrived") != std::string::npos);
    // A hold that really lasts is still open when observation ends, its
    // operation still running: that one is judged.
    Stream longer;
    longer.add(GMS_LEV_OP_BEGIN, 1, 0, 0, GMS_LOCK_OP_ALLOCATE);
    longer.add(GMS_LEV_ACQUIRE, 1, 1, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    longer.add(GMS_LEV_ACQUIRED, 1, 2, GMS_LOCK_READ, GMS_LOCK_OP_ALLOCATE);
    auto s2 = longer.run(kSecond, 3 * kSecond);
    CHECK(s2.anomalies.releases_missed == 0);
    CHECK(s2.over_threshold_count == 1);
    CHECK(judge_lock_holds(s2).verdict == report::Verdict::violated);
}
