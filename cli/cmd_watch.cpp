// `gmemstress watch`: the probes and checkers attached to guest_memfds of
// VMs this tool did not create (QEMU, crosvm, Firecracker, ...), without
// spawning anything. Files are found in /proc/PID/fd ("anon_inode:[kvm-gmem]")
// and /proc/PID/maps, rescanned every --interval to learn new and released
// files.
#include "cli/commands.h"
#include "core/caps.h"
#include "core/error.h"
#include "core/kmsg.h"
#include "core/run_control.h"
#include "core/util.h"
#include "engine/engine.h"
#include "probes/gmem_scan.h"
#include "probes/session.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <fmt/format.h>
#include <set>
#include <sys/sysmacros.h>
#include <thread>
#include <unistd.h>

namespace gms::cli {

namespace {

struct WatchOptions {
    int pid = 0;
    bool all = false;
    std::string duration;
    std::string report_path;
    bool json = false;
    std::string backend = "auto";
    std::string ringbuf = "8MiB";
    bool no_calibrate = false;
    std::string record;
    double interval = 1.0;
};

using FileKey = std::pair<uint64_t, uint64_t>; // st_dev, ino

std::string key_str(const FileKey& k) {
    return fmt::format("{}:{}/{}", major(k.first), minor(k.first), k.second);
}

bool process_alive(pid_t pid) {
    return ::kill(pid, 0) == 0 || errno == EPERM;
}

// Tracks the watched files across rescans and tells the session about new
// and released ones.
class FileTracker {
  public:
    FileTracker(probes::Session& s, const WatchOptions& o) : s_(s), o_(o) {}

    // First scan: everything found existed before observation began.
    void initial(const probes::GmemScan& scan) { update(scan, /*first=*/true); }
    void rescan(const probes::GmemScan& scan) { update(scan, false); }

    size_t count() const { return seen_.size(); }

    nlohmann::json to_json() const {
        auto files = nlohmann::json::array();
        for (const auto& [k, info] : seen_)
            files.push_back({{"file", key_str(k)},
                             {"holders", info.holders},
                             {"preexisting", info.preexisting},
                             {"released", info.released}});
        return {{"pid", o_.pid},
                {"all", o_.all},
                {"scans", scans_},
                {"files", files},
                {"scan_errors", errors_}};
    }

  private:
    struct Info {
        std::vector<std::string> holders;
        bool preexisting = false;
        bool released = false;
    };

    void update(const probes::GmemScan& scan, bool first) {
        ++scans_;
        for (const auto& e : scan.errors)
            if (errors_.size() < 8)
                errors_.push_back(e);
        // Which files are ours to watch: the pid's, or all of them.
        auto mine = o_.all ? scan.inodes() : scan.inodes_of(o_.pid);
        for (const auto& k : mine) {
            if (live_.count(k))
                continue;
            Info info;
            for (const auto& h : scan.files.at(k))
                info.holders.push_back(
                    fmt::format("{}[{}]{}", h.comm, h.pid,
                                h.fd >= 0 ? fmt::format(" fd {}", h.fd) : " mapped"));
            // With --all the s_dev filter saw later files from their creation;
            // with --pid they are added to the BPF filter only now.
            info.preexisting = first || !o_.all;
            if (o_.all && !s_.gmem_dev())
                s_.set_gmem_dev(k.first);
            s_.watch_inode(kvm::InodeId{k.first, k.second}, std::nullopt, info.preexisting);
            live_.insert(k);
            seen_[k] = info;
        }
        // Released: held by no process at all any more (fds and mappings).
        auto everywhere = o_.all ? scan.inodes() : probes::scan_guest_memfds(0).inodes();
        for (auto it = live_.begin(); it != live_.end();) {
            if (everywhere.count(*it)) {
                ++it;
                continue;
            }
            s_.on_released(kvm::InodeId{it->first, it->second});
            seen_[*it].released = true;
            it = live_.erase(it);
        }
    }

    probes::Session& s_;
    const WatchOptions& o_;
    std::set<FileKey> live_;
    std::map<FileKey, Info> seen_;
    uint64_t scans_ = 0;
    std::vector<std::string> errors_;
};

int run_watch(const WatchOptions& o) {
    if (!o.pid && !o.all)
        throw UsageError(
            "watch: give --pid PID (one process's guest_memfds) or --all-guest-memfds (every "
            "guest_memfd)");
    double duration = 0;
    if (!o.duration.empty()) {
        auto d = parse_duration(o.duration);
        if (!d || *d <= 0)
            throw UsageError(fmt::format(
                "--duration '{}': expected a positive duration such as 30s or 2m", o.duration));
        duration = *d;
    }
    auto ringbuf = parse_size(o.ringbuf);
    if (!ringbuf)
        throw UsageError(fmt::format("--ringbuf '{}': expected a size such as 8MiB", o.ringbuf));
    if (o.interval < 0.05 || o.interval > 3600)
        throw UsageError(fmt::format("--interval {}: expected 0.05 to 3600 seconds", o.interval));
    if (o.pid && !process_alive(o.pid))
        throw UsageError(fmt::format("--pid {}: no such process", o.pid));
    engine::check_output_paths({o.report_path, o.record});
    if (::geteuid() != 0)
        throw EnvError("watch needs root: BPF programs are loaded");

    // detect: no profile, so the default patch-series flag bits.
    RunControl& control = RunControl::global();
    if (duration > 0)
        control.set_deadline(duration);
    Caps caps = detect_caps();
    caps.bpf = probes::detect_backends();
    KmsgWatcher kmsg;
    report::Report rep = engine::new_report("watch", caps);
    uint64_t started = now_ns();

    // attach
    probes::Options po;
    po.backend = *profile::probe_backend_from_string(o.backend); // checked by the flag
    po.all_guest_memfds = o.all;
    po.ringbuf_size = *ringbuf;
    po.calibrate = !o.no_calibrate;
    po.filter_pid = o.all ? 0 : o.pid;
    po.record = !o.record.empty();
    engine::ProbeAttachment probes = engine::attach_probes(po, caps);

    // run: follow the files until the process exits, the duration ends or a signal.
    FileTracker files(*probes.session, o);
    files.initial(probes::scan_guest_memfds(o.all ? 0 : o.pid));
    // Attaching (and the calibration) takes seconds under emulation: say
    // when observation begins, so a user or a script starts its VM's work then.
    fmt::print(stderr, "watch: probes attached; watching {} ({} guest_memfd file(s) now)\n",
               o.all ? std::string("every process") : fmt::format("pid {}", o.pid), files.count());
    std::string end_reason;
    while (end_reason.empty()) {
        auto next = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.interval);
        while (!control.should_stop() && std::chrono::steady_clock::now() < next)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (o.pid && !process_alive(o.pid))
            end_reason = fmt::format("process {} exited", o.pid);
        files.rescan(probes::scan_guest_memfds(o.all ? 0 : o.pid));
        if (control.should_stop() && end_reason.empty())
            end_reason = control.stop_reason();
    }

    rep.duration_s = double(now_ns() - started) / 1e9;

    // finish: SIGINT is how an open-ended watch ends: recorded, not an error.
    rep.interrupted = false;
    rep.interrupt_reason = end_reason;
    engine::finish_probes(probes, rep, o.record, {{"pid", o.pid}, {"all", o.all}});
    rep.probes.watch = files.to_json();
    rep.probes.watch["ended_by"] = end_reason;
    engine::collect_kernel_log(kmsg, rep);

    // write
    return engine::write_reports(
        rep, {o.report_path, "", o.json ? engine::Summary::json : engine::Summary::text});
}

} // namespace

void add_watch_command(CLI::App& app, Action& action) {
    static WatchOptions opts;
    auto* cmd = app.add_subcommand(
        "watch",
        "Attach the probes and invariant checkers to guest_memfds of VMs this tool did not create");
    auto* pid = cmd->add_option("--pid", opts.pid,
                                "watch the guest_memfds of this process (QEMU, crosvm, ...)")
                    ->check(CLI::PositiveNumber);
    auto [all, all_alias] = add_all_guest_memfds_flag(cmd, opts.all);
    pid->excludes(all);
    pid->excludes(all_alias);
    cmd->add_option("--duration", opts.duration,
                    "stop after this long (default: until SIGINT or the process exits)");
    cmd->add_option("--report", opts.report_path, "write the JSON report here");
    cmd->add_flag("--json", opts.json, "print the JSON report instead of the summary");
    // Straight to the probes (no profile checks it): checked here.
    auto [backend, backend_alias] = add_probe_backend_flag(cmd, opts.backend);
    for (auto* b : {backend, backend_alias})
        b->check(CLI::IsMember({"auto", "fentry", "kprobe", "tracepoint"}));
    cmd->add_option("--ringbuf", opts.ringbuf, "BPF ring buffer size (power of two)");
    cmd->add_flag("--no-calibrate", opts.no_calibrate,
                  "skip the secretmem calibration (direct-map verdicts "
                  "become unverifiable)");
    cmd->add_option("--record", opts.record, "also save the decoded event stream (JSON lines)");
    cmd->add_option("--interval", opts.interval,
                    "seconds between /proc rescans for new and released files");
    cmd->callback([&action] { action = [] { return run_watch(opts); }; });
}

} // namespace gms::cli
