// Invariant checkers fed recorded real streams (tests/data/host-tp-*.jsonl,
// captured on the host with the tracepoint backend; lab-fentry-faults.jsonl,
// captured in the lab with fentry) and deliberately broken streams
// (tests/data/synthetic-*.jsonl and mutations of the recordings).
#include "probes/attach_points.h"
#include "probes/checkers.h"
#include "probes/decode.h"
#include "probes/events.h"

#include <algorithm>
#include <catch2/catch_test_macros.hpp>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <sys/sysmacros.h>

using namespace gms::probes;
using gms::report::InvariantResult;
using gms::report::Verdict;

namespace {

std::string data(const std::string& name) {
    return std::string(GMS_TEST_DATA) + "/" + name;
}

std::vector<InvariantResult> run(const RecordedStream& s) {
    CheckerSet c;
    for (const auto& e : s.events)
        c.feed(e);
    return c.results(s.coverage, s.expect);
}

InvariantResult get(const std::vector<InvariantResult>& v, const std::string& name) {
    for (const auto& r : v)
        if (r.name == name)
            return r;
    FAIL("no invariant " << name);
    return {};
}

std::string dump(const InvariantResult& r) {
    std::string s =
        fmt::format("{}: {} ({})\n", r.name, gms::report::to_string(r.verdict), r.reason);
    for (const auto& [k, v] : r.evidence)
        s += fmt::format("  {}={}\n", k, v);
    for (const auto& v : r.violations)
        s += "  violation: " + v + "\n";
    return s;
}

bool any_violation(const InvariantResult& r, const std::string& needle) {
    return std::any_of(r.violations.begin(), r.violations.end(),
                       [&](const std::string& v) { return v.find(needle) != std::string::npos; });
}

// invalidation_balance and folio_release need points these streams were
// recorded without: unverifiable on them (checked in the lab stream's test),
// judged on their own streams in test_leak_checkers.cpp.
bool judged_from_newer_points(const InvariantResult& r) {
    return r.name == "invalidation_balance" || r.name == "folio_release";
}

InvariantResult check_file(const std::string& file, const std::string& invariant) {
    auto s = load_stream(data(file));
    auto r = get(run(s), invariant);
    INFO(file << "\n" << dump(r));
    return r;
}

} // namespace

// ---------------------------------------------------------------------------
// Recorded real streams (host, tracepoint backend)
// ---------------------------------------------------------------------------
TEST_CASE("checkers: recorded host streams balance", "[checkers]") {
    for (const char* f :
         {"host-tp-host-fault.jsonl", "host-tp-guest-fault.jsonl", "host-tp-punch-hole.jsonl"}) {
        auto s = load_stream(data(f));
        REQUIRE(s.events.size() > 100);
        REQUIRE(s.meta.value("recording_dropped", 1) == 0);
        auto res = run(s);
        auto pc = get(res, "page_cache_balance");
        INFO(f << "\n" << dump(pc));
        CHECK(pc.verdict == Verdict::verified);
        CHECK(pc.evidence.at("pages_added") == pc.evidence.at("pages_removed"));
        CHECK(pc.evidence.at("pages_added") > 0);
        if (s.expect.pages_added)
            CHECK(pc.evidence.at("pages_added") == *s.expect.pages_added);
        // Recorded under lockdown: nothing can be said about the direct map
        // or hand-outs, and the checkers must say so instead of passing.
        auto dm = get(res, "direct_map");
        INFO(dump(dm));
        CHECK(dm.verdict == Verdict::unverifiable);
        CHECK(dm.reason.find("lockdown") != std::string::npos);
        auto up = get(res, "uptodate");
        INFO(dump(up));
        CHECK(up.verdict == Verdict::unverifiable);
    }
}

// ---------------------------------------------------------------------------
// Recorded real stream from the lab (Debian 7.3.4 under QEMU, fentry backend;
// tests/data/capture-lab-stream.toml says how it was captured)
// ---------------------------------------------------------------------------
namespace {

RecordedStream lab_stream() {
    auto s = load_stream(data("lab-fentry-faults.jsonl"));
    REQUIRE(s.meta.value("recording_dropped", 1) == 0);
    REQUIRE(s.coverage.attached.count("user_fault"));
    REQUIRE(s.coverage.attached.at("user_fault") == "fentry");
    return s;
}

// The first page-cache add of a watched folio: a folio to mutate around.
Event first_watched_add(const RecordedStream& s) {
    auto it = std::find_if(s.events.begin(), s.events.end(),
                           [](const Event& e) { return e.type == EventType::pc_add; });
    REQUIRE(it != s.events.end());
    return *it;
}

} // namespace

TEST_CASE("checkers: the recorded lab stream (fentry) verifies every invariant", "[checkers]") {
    auto s = lab_stream();
    REQUIRE(s.meta.at("calibration").value("ok", false));
    auto res = run(s);
    for (const auto& r : res) {
        INFO(dump(r));
        // Recorded before the invalidation and page-free points existed:
        // those invariants cannot be judged from it, and say so.
        if (r.name == "invalidation_balance" || r.name == "folio_release")
            CHECK(r.verdict == Verdict::unverifiable);
        else
            CHECK(r.verdict == Verdict::verified);
    }
    auto pc = get(res, "page_cache_balance");
    REQUIRE(s.expect.pages_added);
    CHECK(pc.evidence.at("pages_added") == *s.expect.pages_added);
    // One record per page-cache change (the tracepoints), nothing from the
    // dropped function probes, no frees for a file without NO_DIRECT_MAP.
    auto n = [&s](EventType t) {
        return std::count_if(s.events.begin(), s.events.end(),
                             [t](const Event& e) { return e.type == t; });
    };
    CHECK(uint64_t(n(EventType::pc_add)) == *s.expect.pages_added);
    CHECK(n(EventType::add_folio) == 0);
    CHECK(n(EventType::remove_folio) == 0);
    CHECK(n(EventType::free_folio) == 0);
    CHECK(s.coverage.attached.count("add_folio") == 0);
    auto dm = get(res, "direct_map");
    CHECK(dm.backend.find("fentry") != std::string::npos);
    auto up = get(res, "uptodate");
    CHECK(up.evidence.at("judged_in_bpf_user") >= s.expect.min_handouts_user);
    CHECK(up.evidence.at("judged_in_bpf_guest") >= s.expect.min_handouts_guest);
    CHECK(s.expect.min_handouts_user > 0);
    CHECK(s.expect.min_handouts_guest > 0);
}

TEST_CASE("checkers: the lab stream with a zap of a watched folio violates the direct map",
          "[checkers]") {
    auto s = lab_stream();
    Event add = first_watched_add(s);
    // A file without NO_DIRECT_MAP: no direct-map change may touch its pages.
    Event zap;
    zap.type = EventType::direct_map;
    zap.seq = add.seq; // right after the add, before its removal
    zap.ts_ns = add.ts_ns + 1;
    zap.src = GMS_SRC_SET_DM_INVALID;
    zap.flags = GMS_F_RETURN | GMS_F_PTR_PFN;
    zap.pfn = add.pfn;
    zap.nr = 1;
    auto pos = std::find_if(s.events.begin(), s.events.end(),
                            [&](const Event& e) { return e.seq > add.seq; });
    s.events.insert(pos, zap);
    auto dm = get(run(s), "direct_map");
    INFO(dump(dm));
    CHECK(dm.verdict == Verdict::violated);
    CHECK(any_violation(dm, fmt::format("pfn={:#x}", add.pfn)));
}

TEST_CASE("checkers: the lab stream with a non-uptodate hand-out violates uptodate", "[checkers]") {
    auto s = lab_stream();
    Event add = first_watched_add(s);
    Event out = add;
    out.type = EventType::user_fault;
    out.src = GMS_SRC_KVM_GMEM_FAULT_USER;
    out.flags = GMS_F_RETURN | GMS_F_WATCHED; // no GMS_F_UPTODATE, judged here
    out.seq = add.seq;
    auto pos = std::find_if(s.events.begin(), s.events.end(),
                            [&](const Event& e) { return e.seq > add.seq; });
    s.events.insert(pos, out);
    auto up = get(run(s), "uptodate");
    INFO(dump(up));
    CHECK(up.verdict == Verdict::violated);
    CHECK(any_violation(up, "the user fault (to host userspace)"));
    CHECK(any_violation(up, fmt::format("pfn={:#x}", add.pfn)));
}

TEST_CASE("checkers: the lab stream broken in other ways is never verified", "[checkers]") {
    SECTION("a leaked folio") {
        auto s = lab_stream();
        auto it = std::find_if(s.events.begin(), s.events.end(),
                               [](const Event& e) { return e.type == EventType::pc_del; });
        REQUIRE(it != s.events.end());
        s.events.erase(it);
        CHECK(get(run(s), "page_cache_balance").verdict == Verdict::violated);
    }
    SECTION("a hand-out probe that saw fewer hand-outs than the workloads made") {
        auto s = lab_stream();
        s.coverage.judged_user_fault = s.expect.min_handouts_user - 1;
        auto up = get(run(s), "uptodate");
        INFO(dump(up));
        CHECK(up.verdict == Verdict::incomplete);
    }
    SECTION("a failed calibration") {
        auto s = lab_stream();
        s.coverage.calibration_ok = false;
        s.coverage.calibration_reason = "observed 0 zap/restore pairs";
        auto dm = get(run(s), "direct_map");
        INFO(dump(dm));
        CHECK(dm.verdict == Verdict::unverifiable);
    }
    SECTION("lost events") {
        auto s = lab_stream();
        s.coverage.lost_events = 3;
        for (const auto& r : run(s)) {
            if (judged_from_newer_points(r))
                continue;
            INFO(dump(r));
            CHECK(r.verdict == Verdict::incomplete);
        }
    }
}

TEST_CASE("checkers: a leaked folio in a recorded stream is found", "[checkers]") {
    auto s = load_stream(data("host-tp-host-fault.jsonl"));
    auto it = std::find_if(s.events.begin() + s.events.size() / 2, s.events.end(),
                           [](const Event& e) { return e.type == EventType::pc_del; });
    REQUIRE(it != s.events.end());
    Event dropped = *it;
    s.events.erase(it);
    auto pc = get(run(s), "page_cache_balance");
    INFO(dump(pc));
    CHECK(pc.verdict == Verdict::violated);
    CHECK(any_violation(pc, "leaked folio"));
    CHECK(any_violation(pc, fmt::format("pfn={:#x}", dropped.pfn)));
    CHECK(any_violation(pc, fmt::format("index={}", dropped.index)));
    // The workload's own count no longer matches either.
    CHECK(any_violation(pc, "pages removed from the page cache"));
}

TEST_CASE("checkers: lost events make a recorded stream incomplete", "[checkers]") {
    auto s = load_stream(data("host-tp-guest-fault.jsonl"));
    s.coverage.lost_events = 1;
    auto pc = get(run(s), "page_cache_balance");
    INFO(dump(pc));
    CHECK(pc.verdict == Verdict::incomplete);
    CHECK(pc.reason.find("lost") != std::string::npos);
    // Host-side undecodable records count as losses too.
    s.coverage.lost_events = 0;
    s.coverage.parse_errors = 2;
    CHECK(get(run(s), "page_cache_balance").verdict == Verdict::incomplete);
}

TEST_CASE("checkers: a removal without its add is a violation", "[checkers]") {
    auto s = load_stream(data("host-tp-punch-hole.jsonl"));
    auto it = std::find_if(s.events.begin(), s.events.end(),
                           [](const Event& e) { return e.type == EventType::pc_add; });
    REQUIRE(it != s.events.end());
    s.events.erase(it);
    auto pc = get(run(s), "page_cache_balance");
    INFO(dump(pc));
    CHECK(pc.verdict == Verdict::violated);
    CHECK(any_violation(pc, "never added"));
}

TEST_CASE("checkers: an add recorded after its racing removal still balances", "[checkers]") {
    auto s = load_stream(data("host-tp-host-fault.jsonl"));
    // Move the first pc_del right before its pc_add (tracepoint order race).
    auto del = std::find_if(s.events.begin(), s.events.end(),
                            [](const Event& e) { return e.type == EventType::pc_del; });
    REQUIRE(del != s.events.end());
    Event d = *del;
    s.events.erase(del);
    auto add = std::find_if(s.events.begin(), s.events.end(), [&](const Event& e) {
        return e.type == EventType::pc_add && e.pfn == d.pfn && e.index == d.index;
    });
    REQUIRE(add != s.events.end());
    s.events.insert(add, d);
    auto pc = get(run(s), "page_cache_balance");
    INFO(dump(pc));
    CHECK(pc.verdict == Verdict::verified);
}

TEST_CASE("checkers: counts that differ from the workload's are violations", "[checkers]") {
    auto s = load_stream(data("host-tp-host-fault.jsonl"));
    REQUIRE(s.expect.pages_added);
    *s.expect.pages_added += 1;
    auto pc = get(run(s), "page_cache_balance");
    CHECK(pc.verdict == Verdict::violated);
    CHECK(any_violation(pc, "expected"));
    s = load_stream(data("host-tp-host-fault.jsonl"));
    s.expect.gmem_files = 2;
    CHECK(any_violation(get(run(s), "page_cache_balance"), "guest_memfd files"));
}

TEST_CASE("checkers: a file never released cannot be verified", "[checkers]") {
    auto s = load_stream(data("host-tp-guest-fault.jsonl"));
    s.events.erase(
        std::remove_if(s.events.begin(), s.events.end(),
                       [](const Event& e) { return e.type == EventType::gmem_released; }),
        s.events.end());
    CHECK(get(run(s), "page_cache_balance").verdict == Verdict::incomplete);
}

TEST_CASE("checkers: missing page-cache tracepoints make balance unverifiable", "[checkers]") {
    auto s = load_stream(data("host-tp-host-fault.jsonl"));
    s.coverage.attached.erase("pc_del");
    s.coverage.missing["pc_del"] =
        "tracepoint filemap/mm_filemap_delete_from_page_cache not in this kernel";
    auto pc = get(run(s), "page_cache_balance");
    CHECK(pc.verdict == Verdict::unverifiable);
    CHECK(pc.reason.find("mm_filemap_delete_from_page_cache") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Direct map (synthetic: no released kernel has NO_DIRECT_MAP)
// ---------------------------------------------------------------------------
TEST_CASE("checkers: good NO_DIRECT_MAP stream is verified by all checkers", "[checkers]") {
    auto s = load_stream(data("synthetic-ndm-good.jsonl"));
    auto res = run(s);
    for (const auto& r : res) {
        if (judged_from_newer_points(r))
            continue;
        INFO(dump(r));
        CHECK(r.verdict == Verdict::verified);
    }
    auto dm = get(res, "direct_map");
    CHECK(dm.evidence.at("folios_no_direct_map") == 2);
    CHECK(dm.evidence.at("direct_map_changes_foreign") == 2); // the unrelated page
    CHECK(dm.evidence.at("handouts_checked") == 2);
}

TEST_CASE("checkers: a NO_DIRECT_MAP folio never handed out may stay in the direct map",
          "[checkers]") {
    // NO_DIRECT_MAP v12 zaps at hand-out: pfn 0x1000 without its hand-out
    // and without zap/restore is fine; with the hand-out it is not.
    auto s = load_stream(data("synthetic-ndm-good.jsonl"));
    auto handout = std::find_if(s.events.begin(), s.events.end(), [](const Event& e) {
        return e.type == EventType::get_pfn && e.pfn == 0x1000;
    });
    REQUIRE(handout != s.events.end());
    const Event kept = *handout;
    s.events.erase(std::remove_if(s.events.begin(), s.events.end(),
                                  [](const Event& e) {
                                      return e.pfn == 0x1000 && (e.type == EventType::direct_map ||
                                                                 e.type == EventType::get_pfn);
                                  }),
                   s.events.end());
    auto dm = get(run(s), "direct_map");
    INFO(dump(dm));
    CHECK(dm.verdict == Verdict::verified);
    CHECK(dm.evidence.at("handouts_checked") == 1);

    auto pos = std::find_if(s.events.begin(), s.events.end(),
                            [&](const Event& e) { return e.seq > kept.seq; });
    s.events.insert(pos, kept);
    dm = get(run(s), "direct_map");
    CHECK(dm.verdict == Verdict::violated);
    CHECK(any_violation(dm, "handed out (get_pfn) while still in the direct map"));
    CHECK(any_violation(dm, "handed out but never removed from the direct map"));
}

TEST_CASE("checkers: kprobe order (folio marker before its page-level change) is no double zap",
          "[checkers]") {
    // With kprobes, folio_zap_direct_map's record (at entry) precedes the
    // set_direct_map_valid_noflush() it calls; when it is the first
    // direct-map record of the stream it still is one zap.
    auto s = load_stream(data("synthetic-ndm-good.jsonl"));
    auto first_zap = std::find_if(s.events.begin(), s.events.end(), [](const Event& e) {
        return e.type == EventType::direct_map && e.pfn == 0x1000 && !e.has(GMS_F_VALID);
    });
    REQUIRE(first_zap != s.events.end());
    auto marker = std::next(first_zap);
    REQUIRE(marker->src == GMS_SRC_FOLIO_ZAP);
    std::iter_swap(first_zap, marker);
    // Nothing page-level before it: drop the unrelated page's pair.
    s.events.erase(std::remove_if(s.events.begin(), s.events.end(),
                                  [](const Event& e) { return e.pfn == 0x9000; }),
                   s.events.end());
    auto dm = get(run(s), "direct_map");
    INFO(dump(dm));
    CHECK(dm.verdict == Verdict::verified);
}

TEST_CASE("checkers: broken direct-map streams give the right violation", "[checkers]") {
    struct Case {
        const char* file;
        const char* needle;
    };
    for (const auto& c : std::vector<Case>{
             {"synthetic-ndm-missing-restore.jsonl", "freed while still out of the direct map"},
             {"synthetic-ndm-double-zap.jsonl", "double zap of pfn 0x1000"},
             {"synthetic-ndm-restore-without-zap.jsonl", "restore without zap of pfn 0x1000"},
             {"synthetic-ndm-never-zapped.jsonl", "never removed from the direct map"},
             {"synthetic-ndm-handout-before-zap.jsonl",
              "handed out (get_pfn) while still in the direct map"},
             {"synthetic-ndm-granularity.jsonl", "different granularity"},
             {"synthetic-plain-zapped.jsonl", "without NO_DIRECT_MAP"},
         }) {
        auto r = check_file(c.file, "direct_map");
        CHECK(r.verdict == Verdict::violated);
        CHECK(any_violation(r, c.needle));
        // The page-cache side of these streams is fine.
        CHECK(check_file(c.file, "page_cache_balance").verdict == Verdict::verified);
    }
    auto plain = check_file("synthetic-plain-good.jsonl", "direct_map");
    CHECK(plain.verdict == Verdict::verified);
    CHECK(plain.evidence.at("folios_watched") == 2);
}

// The NO_DIRECT_MAP series may zap the direct map inside filemap_add_folio():
// before the insertion (the zap is recorded before the add tracepoint) or
// after it (recorded after). The checker needs only the add, the zap and
// their order, not a probe on filemap_add_folio itself.
TEST_CASE("checkers: a zap before the insertion is seen as the folio's zap", "[checkers]") {
    auto s = load_stream(data("synthetic-ndm-zap-before-add.jsonl"));
    auto first_zap = std::find_if(s.events.begin(), s.events.end(), [](const Event& e) {
        return e.type == EventType::direct_map && e.pfn == 0x1000;
    });
    auto first_add = std::find_if(s.events.begin(), s.events.end(),
                                  [](const Event& e) { return e.type == EventType::pc_add; });
    REQUIRE(first_zap < first_add);
    for (const auto& r : run(s)) {
        if (judged_from_newer_points(r))
            continue;
        INFO(dump(r));
        CHECK(r.verdict == Verdict::verified);
    }
    // A folio of a plain file already out of the direct map when inserted.
    auto plain = check_file("synthetic-plain-zap-before-add.jsonl", "direct_map");
    CHECK(plain.verdict == Verdict::violated);
    CHECK(
        any_violation(plain, "added to a file without NO_DIRECT_MAP while out of the direct map"));
    CHECK(any_violation(plain, "pfn=0x1000"));
}

// Frees are recorded only once a NO_DIRECT_MAP file is watched: a plain
// file's stream has none and still verifies.
TEST_CASE("checkers: plain files need no free records", "[checkers]") {
    auto s = load_stream(data("synthetic-plain-good.jsonl"));
    REQUIRE(std::none_of(s.events.begin(), s.events.end(),
                         [](const Event& e) { return e.type == EventType::free_folio; }));
    auto dm = get(run(s), "direct_map");
    INFO(dump(dm));
    CHECK(dm.verdict == Verdict::verified);
    CHECK(dm.evidence.at("frees_seen") == 0);
    CHECK(dm.evidence.at("removed_without_free_event") == 0);
}

TEST_CASE("checkers: missing restore is found at the end when no free is probed", "[checkers]") {
    auto s = load_stream(data("synthetic-ndm-missing-restore.jsonl"));
    s.coverage.attached.erase("kvm_gmem_free_folio");
    s.coverage.attached.erase("filemap_free_folio");
    s.events.erase(std::remove_if(s.events.begin(), s.events.end(),
                                  [](const Event& e) { return e.type == EventType::free_folio; }),
                   s.events.end());
    auto dm = get(run(s), "direct_map");
    INFO(dump(dm));
    CHECK(dm.verdict == Verdict::violated);
    CHECK(any_violation(dm, "never restored"));
    CHECK(any_violation(dm, "pfn=0x2000"));
}

TEST_CASE("checkers: direct-map verdicts need probes, calibration and no loss", "[checkers]") {
    auto lost = check_file("synthetic-ndm-lost-events.jsonl", "direct_map");
    CHECK(lost.verdict == Verdict::incomplete);
    CHECK(check_file("synthetic-ndm-lost-events.jsonl", "page_cache_balance").verdict ==
          Verdict::incomplete);
    CHECK(check_file("synthetic-ndm-lost-events.jsonl", "uptodate").verdict == Verdict::incomplete);

    auto s = load_stream(data("synthetic-ndm-good.jsonl"));
    s.coverage.calibration_ok = false;
    s.coverage.calibration_reason =
        "secretmem: 4 of 4 page-cache insertions, 0 zaps and 0 restores matched";
    auto uncal = get(run(s), "direct_map");
    CHECK(uncal.verdict == Verdict::unverifiable);
    CHECK(uncal.reason.find("calibration") != std::string::npos);

    s = load_stream(data("synthetic-ndm-good.jsonl"));
    for (const char* p : {"dm_invalid", "dm_default", "dm_valid", "folio_zap", "folio_restore"}) {
        s.coverage.attached.erase(p);
        s.coverage.missing[p] = "fentry unusable here: load failed: EPERM";
    }
    s.coverage.lockdown = "confidentiality";
    auto noprobe = get(run(s), "direct_map");
    CHECK(noprobe.verdict == Verdict::unverifiable);
    CHECK(noprobe.reason.find("lockdown=confidentiality") != std::string::npos);
    CHECK(noprobe.reason.find("EPERM") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Uptodate
// ---------------------------------------------------------------------------
TEST_CASE("checkers: a non-uptodate folio handed out is a violation", "[checkers]") {
    auto r = check_file("synthetic-not-uptodate.jsonl", "uptodate");
    CHECK(r.verdict == Verdict::violated);
    CHECK(any_violation(r, "not uptodate"));
    CHECK(any_violation(r, "pfn=0x1000"));
    CHECK(r.evidence.at("handed_to_guest") == 1);
    CHECK(r.evidence.at("handed_to_user") == 1);
}

// Hand-outs judged inside BPF: counters in the coverage, a record only for a
// folio that was not uptodate (or of a NO_DIRECT_MAP file), flagged COUNTED.
TEST_CASE("checkers: hand-outs judged in BPF verify from the counters", "[checkers]") {
    auto s = load_stream(data("synthetic-bpf-judged-good.jsonl"));
    REQUIRE(s.coverage.bpf_judges_handouts);
    REQUIRE(std::none_of(s.events.begin(), s.events.end(), [](const Event& e) {
        return e.type == EventType::get_pfn || e.type == EventType::user_fault;
    }));
    auto res = run(s);
    for (const auto& r : res) {
        if (judged_from_newer_points(r))
            continue;
        INFO(dump(r));
        CHECK(r.verdict == Verdict::verified);
    }
    auto up = get(res, "uptodate");
    CHECK(up.evidence.at("handed_to_guest") == 1);
    CHECK(up.evidence.at("handed_to_user") == 1);
    CHECK(up.evidence.at("judged_in_bpf_guest") == 1);
    CHECK(up.evidence.at("judged_in_bpf_user") == 1);
    CHECK(up.evidence.at("handout_records") == 0);
    CHECK(up.reason.find("judged in BPF") != std::string::npos);

    // Counters that judged nothing and no record: nothing to verify.
    s.coverage.judged_get_pfn = s.coverage.judged_user_fault = 0;
    auto none = get(run(s), "uptodate");
    INFO(dump(none));
    CHECK(none.verdict == Verdict::unverifiable);

    // Fewer hand-outs seen than the workloads certainly made: the probe does
    // not see what it claims (e.g. a program that returns early).
    s = load_stream(data("synthetic-bpf-judged-good.jsonl"));
    s.expect.min_handouts_user = 5;
    auto missed = get(run(s), "uptodate");
    INFO(dump(missed));
    CHECK(missed.verdict == Verdict::incomplete);
    CHECK(missed.reason.find("saw 1 hand-outs to host userspace, the workloads made at least 5") !=
          std::string::npos);
    CHECK(missed.evidence.at("min_handouts_to_user") == 5);
    s.expect.min_handouts_user = 1;
    s.expect.min_handouts_guest = 2;
    CHECK(get(run(s), "uptodate").reason.find("kvm_gmem_get_pfn saw 1") != std::string::npos);
    s.expect.min_handouts_guest = 1; // bounds met
    CHECK(get(run(s), "uptodate").verdict == Verdict::verified);
    // A bound for a point that is not attached is not held against it.
    s.coverage.attached.erase("user_fault");
    s.expect.min_handouts_user = 100;
    CHECK(get(run(s), "uptodate").verdict == Verdict::verified);
    // The bounds survive a save/load round trip.
    auto exp_back = Expectations::from_json(s.expect.to_json());
    CHECK(exp_back.min_handouts_user == 100);
    CHECK(exp_back.min_handouts_guest == 1);

    // Lost records (a violation record may be among them): never verified.
    s = load_stream(data("synthetic-bpf-judged-good.jsonl"));
    s.coverage.lost_events = 1;
    CHECK(get(run(s), "uptodate").verdict == Verdict::incomplete);

    // The coverage survives a save/load round trip.
    s = load_stream(data("synthetic-bpf-judged-good.jsonl"));
    auto back = Coverage::from_json(s.coverage.to_json());
    CHECK(back.bpf_judges_handouts);
    CHECK(back.judged_get_pfn == 1);
    CHECK(back.judged_user_fault == 1);
    // Streams from before BPF judging load with the counters off.
    auto old = load_stream(data("synthetic-ndm-good.jsonl"));
    CHECK_FALSE(old.coverage.bpf_judges_handouts);
}

TEST_CASE("checkers: a non-uptodate hand-out judged in BPF is the violation", "[checkers]") {
    auto r = check_file("synthetic-bpf-judged-not-uptodate.jsonl", "uptodate");
    CHECK(r.verdict == Verdict::violated);
    CHECK(any_violation(r, "kvm_gmem_get_pfn (to the guest) while not uptodate"));
    CHECK(any_violation(r, "pfn=0x1000"));
    CHECK(r.evidence.at("not_uptodate") == 1);
    // The record is also in the counter: counted once.
    CHECK(r.evidence.at("handed_to_guest") == 1);
    CHECK(r.evidence.at("handed_to_user") == 1);
    CHECK(r.evidence.at("handout_records") == 1);
    CHECK(check_file("synthetic-bpf-judged-not-uptodate.jsonl", "page_cache_balance").verdict ==
          Verdict::verified);
}

TEST_CASE("checkers: NO_DIRECT_MAP hand-outs stay recorded for the direct-map checker",
          "[checkers]") {
    auto s = load_stream(data("synthetic-bpf-judged-ndm-good.jsonl"));
    auto res = run(s);
    for (const auto& r : res) {
        if (judged_from_newer_points(r))
            continue;
        INFO(dump(r));
        CHECK(r.verdict == Verdict::verified);
    }
    CHECK(get(res, "direct_map").evidence.at("handouts_checked") == 2);
    auto up = get(res, "uptodate");
    CHECK(up.evidence.at("handed_to_guest") == 1); // not 2: the record is in the counter
    CHECK(up.evidence.at("handed_to_user") == 1);
    CHECK(up.evidence.at("handout_records") == 2);

    // Counted records the counters do not cover: the totals are not trusted.
    s.coverage.judged_get_pfn = 0;
    auto bad = get(run(s), "uptodate");
    INFO(dump(bad));
    CHECK(bad.verdict == Verdict::incomplete);
    CHECK(bad.reason.find("do not cover") != std::string::npos);
}

TEST_CASE("checkers: workloads reading non-zero fresh memory violate uptodate", "[checkers]") {
    auto s = load_stream(data("host-tp-host-fault.jsonl"));
    s.expect.verify_mismatches = 3;
    s.expect.mismatch_examples = {"host-fault: page 7 offset 0: read 0xaa, expected 0"};
    auto r = get(run(s), "uptodate");
    INFO(dump(r));
    CHECK(r.verdict == Verdict::violated); // conclusive without any probe
    CHECK(any_violation(r, "page 7"));
    CHECK(r.evidence.at("violations") == 3);
}

TEST_CASE("checkers: hand-outs without probes are unverifiable", "[checkers]") {
    auto s = load_stream(data("synthetic-ndm-good.jsonl"));
    s.coverage.attached.erase("get_pfn");
    s.coverage.attached.erase("user_fault");
    CHECK(get(run(s), "uptodate").verdict == Verdict::unverifiable);
}

// ---------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------
TEST_CASE("checkers: events round-trip through JSON", "[checkers]") {
    Event e;
    e.type = EventType::get_pfn;
    e.seq = 7;
    e.ts_ns = 123;
    e.src = GMS_SRC_KVM_GMEM_GET_PFN;
    e.flags = GMS_F_UPTODATE | GMS_F_RETURN;
    e.pfn = 0xabc;
    e.dev = 15;
    e.ino = 99;
    e.index = 4;
    e.ret = -14;
    auto j = to_json(e);
    CHECK(j["src"] == "kvm_gmem_get_pfn");
    auto back = event_from_json(j);
    CHECK(back.type == e.type);
    CHECK(back.src == e.src);
    CHECK(back.flags == e.flags);
    CHECK(back.pfn == e.pfn);
    CHECK(back.ret == -14);
    CHECK_THROWS_AS(event_from_json(nlohmann::json{{"type", "bogus"}}), std::invalid_argument);
    CHECK_THROWS_AS(event_from_json(nlohmann::json{{"type", "pc_add"}, {"pfn", "x"}}),
                    std::invalid_argument);
}

TEST_CASE("checkers: a bad stream file is named with its line", "[checkers]") {
    auto path = std::filesystem::temp_directory_path() / "gms-bad-stream.jsonl";
    {
        std::ofstream out(path);
        out << R"({"meta": {}})"
            << "\n"
            << R"({"type": "pc_add", "pfn": 1})"
            << "\n"
            << "{not json\n";
    }
    try {
        load_stream(path.string());
        FAIL("no error");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find("gms-bad-stream.jsonl:3") != std::string::npos);
    }
    std::filesystem::remove(path);
}

TEST_CASE("checkers: ring-buffer records decode; short and unknown ones are counted",
          "[checkers]") {
    gms_ev_folio r{};
    r.hdr.type = GMS_EV_PC_ADD;
    r.hdr.src = GMS_SRC_TP_PC_ADD;
    r.hdr.seq = 5;
    r.pfn = 0x1234;
    r.ino = 77;
    r.dev = (0u << 20) | 15;
    r.index = 3;
    r.order = 2;
    DecodeError err;
    auto e = decode_record(&r, sizeof(r), &err);
    REQUIRE(e);
    CHECK(e->type == EventType::pc_add);
    CHECK(e->pfn == 0x1234);
    CHECK(e->pages() == 4);
    CHECK(!decode_record(&r, sizeof(r) - 1, &err));
    CHECK(err == DecodeError::short_record);
    r.hdr.type = 999;
    CHECK(!decode_record(&r, sizeof(r), &err));
    CHECK(err == DecodeError::unknown_type);
    CHECK(kernel_dev(makedev(8, 1)) == ((8u << 20) | 1));
    CHECK(kernel_dev(makedev(0, 300)) == 300);
}

TEST_CASE("checkers: expectations are summed only when every workload knows them", "[checkers]") {
    using gms::report::WorkloadResult;
    WorkloadResult a, b, c;
    a.name = "host-fault";
    a.expect = {.gmem_files = 1, .pages_added = 10, .pages_removed = 10};
    b.name = "guest-fault";
    b.expect = {.gmem_files = 2, .pages_added = 5, .pages_removed = 4};
    c.name = "punch-hole"; // racing threads: no page counts
    c.expect = {.gmem_files = 1};
    auto x = Expectations::from_workloads({a, b});
    CHECK(x.gmem_files == 3u);
    CHECK(x.pages_added == 15u);
    CHECK(x.pages_removed == 14u);
    x = Expectations::from_workloads({a, b, c});
    CHECK(x.gmem_files == 4u);
    CHECK(!x.pages_added);
    CHECK(!x.pages_removed);
    // A skipped workload that never ran does not void the sums.
    WorkloadResult skipped;
    skipped.name = "convert";
    skipped.outcome = gms::report::Outcome::skip;
    x = Expectations::from_workloads({a, skipped});
    CHECK(x.pages_added == 10u);
    // Verification results are summed and quoted.
    a.verification.pages_checked = 7;
    a.verification.mismatch("page 3: read 0xff");
    x = Expectations::from_workloads({a});
    CHECK(x.pages_verified == 7);
    CHECK(x.verify_mismatches == 1);
    REQUIRE(x.mismatch_examples.size() == 1);
    CHECK(x.mismatch_examples[0] == "host-fault: page 3: read 0xff");
}

// <tracefs>/enabled_functions as Debian's 7.3.4 wrote it in the lab while the
// probes were attached, in a boot where kvm_gmem_get_pfn got no trampoline
// (the session then moves get_pfn to kprobe). A function line without a
// "direct" line after it (the function tracer's) has no BPF trampoline.
TEST_CASE("probes: BPF trampolines are read from enabled_functions", "[checkers]") {
    std::istringstream in(
        "set_direct_map_invalid_noflush (1) R   D   M \ttramp: ftrace_regs_caller+0x0/0x61 "
        "(call_direct_funcs+0x0/0x20)\n"
        "\tdirect(jmp)-->bpf_trampoline_6442564287+0x0/0xd7\n"
        "kvm_gmem_release [kvm] (1) R   D   M \ttramp: ftrace_regs_caller+0x0/0x61 "
        "(call_direct_funcs+0x0/0x20)\n"
        "\tdirect-->bpf_trampoline_32212389376+0x0/0xb4\n"
        "kvm_gmem_fault_user_mapping [kvm] (1) R   D   M \ttramp: ftrace_regs_caller+0x0/0x61 "
        "(call_direct_funcs+0x0/0x20)\n"
        "\tdirect(jmp)-->bpf_trampoline_32212389362+0x0/0xd7\n"
        "kvm_gmem_get_pfn [kvm] (1)           \ttramp: 0xffffffffc08f3000 "
        "(function_trace_call+0x0/0x160) ->function_trace_call+0x0/0x160\n");
    auto direct = functions_with_bpf_trampoline(in);
    CHECK(direct == std::set<std::string>{"set_direct_map_invalid_noflush", "kvm_gmem_release",
                                          "kvm_gmem_fault_user_mapping"});
    std::istringstream empty("");
    CHECK(functions_with_bpf_trampoline(empty).empty());
}
