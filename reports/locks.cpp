#include "reports/locks.h"

#include <fmt/format.h>

namespace gms::report {

namespace {

using nlohmann::json;

json times_json(const Histogram& h) {
    return {{"count", h.count()},
            {"p50", h.percentile(0.50)},
            {"p99", h.percentile(0.99)},
            {"max", h.max()}};
}

json hold_json(const LockHold& h) {
    return {{"operation", h.operation},
            {"mode", h.mode},
            {"tid", h.tid},
            {"tgid", h.tgid},
            {"comm", h.comm},
            {"syscall", h.syscall},
            {"ino", h.ino},
            {"lock", fmt::format("{:#x}", h.lock)},
            {"wait_ns", h.wait_ns},
            {"hold_ns", h.hold_ns},
            {"acquired_ns", h.acquired_ns},
            {"in_progress", h.in_progress},
            {"stack", h.stack}};
}

std::string secs(uint64_t ns) {
    return fmt::format("{:.3f} s", double(ns) / 1e9);
}

} // namespace

json to_json(const LocksSection& s) {
    json ops = json::array();
    for (const auto& o : s.by_operation)
        ops.push_back({{"operation", o.operation},
                       {"mode", o.mode},
                       {"wait_ns", times_json(o.wait_ns)},
                       {"hold_ns", times_json(o.hold_ns)}});
    json over = json::array(), open = json::array();
    for (const auto& h : s.over_threshold)
        over.push_back(hold_json(h));
    for (const auto& h : s.in_progress)
        open.push_back(hold_json(h));
    json rows = json::array();
    for (const auto& r : s.lock_stat.rows)
        rows.push_back({{"mode", r.mode},
                        {"contentions", r.contentions},
                        {"waittime_max_us", r.waittime_max_us},
                        {"waittime_total_us", r.waittime_total_us},
                        {"acquisitions", r.acquisitions},
                        {"holdtime_max_us", r.holdtime_max_us},
                        {"holdtime_total_us", r.holdtime_total_us},
                        {"holdtime_avg_us", r.holdtime_avg_us}});
    const auto& a = s.anomalies;
    return {{"attached", s.attached},
            {"reason", s.reason},
            {"threshold_ns", s.threshold_ns},
            {"functions", s.functions},
            {"events", s.events},
            {"operations", s.operations},
            {"holds", s.holds},
            {"by_operation", ops},
            {"longest", s.longest ? hold_json(*s.longest) : json(nullptr)},
            {"over_threshold_count", s.over_threshold_count},
            {"over_threshold", over},
            {"in_progress", open},
            {"anomalies",
             {{"lost_events", a.lost_events},
              {"unpaired_releases", a.unpaired_releases},
              {"acquires_without_return", a.acquires_without_return},
              {"returns_without_acquire", a.returns_without_acquire},
              {"nested", a.nested},
              {"releases_missed", a.releases_missed}}},
            {"lock_stat",
             {{"available", s.lock_stat.available},
              {"reason", s.lock_stat.reason},
              {"class_name", s.lock_stat.class_name},
              {"rows", rows}}}};
}

std::vector<std::string> text_lines(const LocksSection& s) {
    std::vector<std::string> out;
    if (!s.attached) {
        out.push_back("invalidate_lock: not measured: " + s.reason);
        return out;
    }
    out.push_back(fmt::format("invalidate_lock: {} holds in {} guest_memfd operations "
                              "(threshold {})",
                              s.holds, s.operations, secs(s.threshold_ns)));
    for (const auto& o : s.by_operation)
        out.push_back(fmt::format("  {:<15} {:<5} hold p50 {} ns p99 {} ns max {} ns; wait max "
                                  "{} ns ({} holds)",
                                  o.operation, o.mode, o.hold_ns.percentile(0.5),
                                  o.hold_ns.percentile(0.99), o.hold_ns.max(), o.wait_ns.max(),
                                  o.hold_ns.count()));
    if (s.longest)
        out.push_back(fmt::format(
            "  longest: {} ({}) by {}:{} in {}: {}{}", s.longest->operation, s.longest->mode,
            s.longest->comm, s.longest->tid, s.longest->syscall.empty() ? "?" : s.longest->syscall,
            secs(s.longest->hold_ns), s.longest->in_progress ? " and still held" : ""));
    if (s.over_threshold_count)
        out.push_back(fmt::format("  {} hold(s) over the threshold", s.over_threshold_count));
    if (s.lock_stat.available)
        for (const auto& r : s.lock_stat.rows)
            out.push_back(
                fmt::format("  /proc/lock_stat {}{}: {} acquisitions, holdtime max {:.2f} "
                            "us, {} contentions",
                            s.lock_stat.class_name, r.mode.empty() ? "" : "-" + r.mode,
                            r.acquisitions, r.holdtime_max_us, r.contentions));
    else
        out.push_back("  /proc/lock_stat: " + s.lock_stat.reason);
    return out;
}

} // namespace gms::report
