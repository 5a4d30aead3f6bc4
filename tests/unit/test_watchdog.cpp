// The watchdog's pure parts (call slots, /proc parsing, the stall model in
// every renderer) and its detection of a real blocking call: a thread asleep
// in nanosleep() inside a CallScope, no KVM needed.
#include "core/call_scope.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/util.h"
#include "engine/watchdog.h"
#include "reports/kcidb.h"
#include "reports/ktap.h"
#include "reports/lava.h"
#include "reports/render.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <chrono>
#include <cstdio>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

using namespace gms;
using Catch::Matchers::ContainsSubstring;

namespace {
const CallOp kSleepOp{"nanosleep", "fd={fd} a={0} b={1:x} c={2}"};
const CallOp kPinOp{"pinned", "", true};
} // namespace

TEST_CASE("CallOp::describe renders fd and arguments, hex on request", "[watchdog]") {
    uint64_t args[3] = {7, 0x3000, 12};
    CHECK(kSleepOp.describe(5, args) == "fd=5 a=7 b=0x3000 c=12");
    CallOp odd{"x", "{3} {fd"};
    CHECK(odd.describe(1, args) == "{3} {fd");
}

TEST_CASE("a call slot is visible only while its scope lasts", "[watchdog]") {
    CallSlot* s = this_thread_slot();
    REQUIRE(s != nullptr);
    size_t idx = size_t(s - call_slots().data());
    CHECK(s->tid.load() == pid_t(::syscall(SYS_gettid)));
    CHECK_FALSE(read_call(idx));
    {
        CallScope scope(kSleepOp, 3, 1, 2, 3);
        auto c = read_call(idx);
        REQUIRE(c);
        CHECK(c->op == &kSleepOp);
        CHECK(c->fd == 3);
        CHECK(c->args[1] == 2);
        CHECK((c->seq & 1) == 1);
        // A pin taken on a call that goes on is kept; one on a stale seq is refused.
        CHECK(pin_call(*c));
        unpin_call(*c);
        CallSnapshot stale = *c;
        stale.seq += 2;
        CHECK_FALSE(pin_call(stale));
    }
    CHECK_FALSE(read_call(idx));
}

TEST_CASE("a pinned call's scope waits on exit until the unpin", "[watchdog]") {
    std::atomic<size_t> idx{kCallSlots};
    std::atomic<bool> in{false}, out{false};
    std::thread t([&] {
        idx = size_t(this_thread_slot() - call_slots().data());
        {
            CallScope scope(kPinOp);
            in = true;
            while (in.load())
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        out = true;
    });
    while (!in.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    auto c = read_call(idx);
    REQUIRE(c);
    REQUIRE(pin_call(*c));
    in = false; // the scope now ends, and must wait
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(out.load());
    CHECK(call_slots()[idx].seq.load() == c->seq + 1); // it did leave the call
    unpin_call(*c);
    t.join();
    CHECK(out.load());
}

TEST_CASE("/proc parsing: kernel stack frames and the task state", "[watchdog]") {
    auto frames = engine::parse_kernel_stack("[<0>] msleep+0x2d/0x40\n"
                                             "[<0>] kvm_gmem_fallocate+0x1a2/0x3c0\n"
                                             "[<0>] vfs_fallocate+0x14e/0x360  \n\n");
    REQUIRE(frames.size() == 3);
    CHECK(frames[0] == "msleep+0x2d/0x40");
    CHECK(frames[2] == "vfs_fallocate+0x14e/0x360");
    CHECK(engine::parse_kernel_stack("").empty());
    CHECK(engine::parse_task_state("4242 (gmem stress) D 1 2 3") == "D (disk sleep)");
    CHECK(engine::parse_task_state("1 (a) b) S 0") == "S (sleeping)");
    CHECK(engine::parse_task_state("garbage").empty());
    CHECK(engine::utc_ms(1'700'000'000'123'000'000ull) == "2023-11-14T22:13:20.123Z");
}

TEST_CASE("the watchdog reports a blocking call while it lasts, then its end", "[watchdog]") {
    engine::Watchdog wd({.stall_threshold_s = 0.2, .kick_vcpus = false});
    wd.set_workload("sleeper");
    std::atomic<pid_t> tid{0};
    std::thread t([&] {
        set_thread_role("sleeper-thread");
        tid = pid_t(::syscall(SYS_gettid));
        CallScope scope(kSleepOp, 9, 1, 0x40, 3);
        ::usleep(900'000); // a real blocking syscall
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    auto during = wd.stalls();
    REQUIRE(during.size() == 1);
    const auto& st = during[0];
    CHECK(st.tid == uint64_t(tid.load()));
    CHECK(st.thread == "sleeper-thread");
    CHECK(st.workload == "sleeper");
    CHECK(st.operation == "nanosleep");
    CHECK(st.args == "fd=9 a=1 b=0x40 c=3");
    CHECK_FALSE(st.ended);
    CHECK(st.duration_s >= 0.2);
    CHECK(st.task_state.rfind("S", 0) == 0); // asleep in the kernel
    // Root reads the kernel stack; others get the reason, never nothing.
    CHECK((!st.kernel_stack.empty() || !st.stack_error.empty()));
    t.join();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto after = wd.stalls();
    REQUIRE(after.size() == 1);
    CHECK(after[0].ended);
    CHECK(after[0].duration_s >= 0.8);
    CHECK(after[0].duration_s < 2.0);
}

TEST_CASE("calls shorter than the threshold are no stalls; blockers are on request", "[watchdog]") {
    engine::Watchdog wd({.stall_threshold_s = 5, .kick_vcpus = false});
    std::atomic<bool> go{false};
    std::thread t([&] {
        CallScope scope(kSleepOp);
        go = true;
        ::usleep(300'000);
    });
    while (!go.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(wd.stalls().empty());
    auto blockers = wd.stalls_and_blockers();
    REQUIRE(blockers.size() == 1);
    CHECK(blockers[0].operation == "nanosleep");
    t.join();
}

TEST_CASE("the abandon callback runs once at its time, not after disarm", "[watchdog]") {
    {
        engine::Watchdog wd({.stall_threshold_s = 1, .kick_vcpus = false});
        std::atomic<int> calls{0};
        wd.arm_abandon(0 + 1, [&] { ++calls; }); // already due
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        CHECK(calls.load() == 1);
        CHECK_FALSE(wd.disarm()); // too late: the report is the callback's
    }
    {
        engine::Watchdog wd({.stall_threshold_s = 1, .kick_vcpus = false});
        std::atomic<int> calls{0};
        wd.arm_abandon(now_ns() + 200'000'000ull, [&] { ++calls; });
        CHECK(wd.disarm());
        std::this_thread::sleep_for(std::chrono::milliseconds(400));
        CHECK(calls.load() == 0);
    }
}

TEST_CASE("stalls fail the verdict and reach every renderer", "[watchdog][render]") {
    report::Report r;
    r.command = "run";
    r.tool_version = "t";
    report::WorkloadResult w;
    w.name = w.label = "punch-hole";
    w.ops["punch_hole"].record(10);
    r.workloads.push_back(w);
    CHECK(r.verdict() == report::Outcome::pass);
    report::Stall st;
    st.tid = 42;
    st.thread = "puncher";
    st.operation = "fallocate(PUNCH_HOLE)";
    st.args = "guest_memfd fd=7 offset=0x0 len=0x40000";
    st.duration_s = 12.5;
    st.kernel_stack = {"msleep+0x2d/0x40", "kvm_gmem_fallocate+0x1a2/0x3c0"};
    st.vcpu = report::VcpuStallState{1, "IO", true, false, std::nullopt, "blocked"};
    r.stalls.push_back(st);
    r.stall_threshold_s = 5;
    r.incomplete = true;
    r.incomplete_reason = "abandoned";
    CHECK(r.verdict() == report::Outcome::fail);

    auto j = report::to_json(r);
    REQUIRE(j["stalls"].size() == 1);
    CHECK(j["stalls"][0]["operation"] == "fallocate(PUNCH_HOLE)");
    CHECK(j["stalls"][0]["kernel_stack"][1] == "kvm_gmem_fallocate+0x1a2/0x3c0");
    CHECK(j["stalls"][0]["vcpu"]["guest_rip"].is_null());
    CHECK(j["incomplete"] == true);
    CHECK(j["stall_threshold_s"] == 5.0);
    CHECK(j["verdict"] == "fail");
    CHECK_THAT(report::to_text(r), ContainsSubstring("STALL thread 42 (puncher) in "
                                                     "fallocate(PUNCH_HOLE)"));
    CHECK_THAT(report::to_text(r), ContainsSubstring("msleep+0x2d/0x40"));
    CHECK_THAT(report::to_text(r), ContainsSubstring("INCOMPLETE: abandoned"));
    CHECK_THAT(report::to_junit(r), ContainsSubstring("gmemstress.stall"));
    CHECK_THAT(report::to_ktap(r), ContainsSubstring("not ok 1 stall_1"));
    auto kcidb = report::to_kcidb(r, report::kcidb_options("ci", ""));
    CHECK_THAT(kcidb.dump(), ContainsSubstring("stalls.stall_1"));
    bool lava_fail = false;
    for (const auto& set : report::to_lava(r))
        for (const auto& c : set.cases)
            lava_fail |= c.name == "stalls.stall_1" && c.result == "fail";
    CHECK(lava_fail);
}

TEST_CASE("run.stall_threshold and run.grace are declared once and checked at load",
          "[watchdog][profile]") {
    const std::string base = "name = \"t\"\n[run]\nstall_threshold = \"2s\"\ngrace = \"3s\"\n"
                             "[[workload]]\nkind = \"host-fault\"\n";
    auto p = profile::parse_profile(base, "p.toml", {}, workloads::schemas());
    CHECK(p.stall_threshold_s == 2.0);
    CHECK(p.grace_s == 3.0);
    CHECK(p.to_json()["run"]["grace_s"] == 3.0);
    auto d = profile::parse_profile("[[workload]]\nkind = \"host-fault\"\n", "d.toml", {},
                                    workloads::schemas());
    CHECK(d.stall_threshold_s == 5.0);
    CHECK(d.grace_s == 10.0);
    auto error_of = [](const std::string& text, std::vector<profile::Override> o = {}) {
        try {
            profile::parse_profile(text, "p.toml", o, workloads::schemas());
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    std::string bad = base;
    bad.replace(bad.find("\"2s\""), 4, "\"soon\"");
    CHECK_THAT(error_of(bad), ContainsSubstring("p.toml:3"));
    CHECK_THAT(error_of(bad), ContainsSubstring("run.stall_threshold"));
    CHECK_THAT(error_of(base, {profile::parse_set_flag("run.grace=0")}),
               ContainsSubstring("--set run.grace=0"));
}

// Not run by default (hidden tag): `gms_unit_tests "[.bench]"` prints what
// one CallScope costs here, to set against a page touch (docs/BENCHMARKS.md).
TEST_CASE("CallScope cost per call", "[.][bench][watchdog]") {
    constexpr int kN = 5'000'000;
    uint64_t t0 = now_ns();
    for (int i = 0; i < kN; ++i) {
        CallScope scope(kSleepOp, i, uint64_t(i), 0, 0);
        asm volatile("" ::: "memory");
    }
    uint64_t t1 = now_ns();
    for (int i = 0; i < kN; ++i)
        asm volatile("" ::: "memory");
    uint64_t t2 = now_ns();
    double per = (double(t1 - t0) - double(t2 - t1)) / kN;
    std::printf("CallScope enter+leave: %.1f ns per call (%d calls)\n", per, kN);
    CHECK(per < 1000);
}
