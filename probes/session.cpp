// The probes session: plans one variant per attach point, loads the BPF
// skeleton (autoload off, enabling only what the kernel has), attaches, polls
// the ring buffer on its own thread and feeds the checkers.
#include "probes/session.h"

#include "core/error.h"
#include "core/util.h"
#include "gmem.skel.h"
#include "probes/attach_points.h"
#include "probes/bpf_util.h"
#include "probes/checkers.h"
#include "probes/decode.h"
#include "probes/events.h"

#include <array>
#include <atomic>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <chrono>
#include <deque>
#include <fcntl.h>
#include <fmt/format.h>
#include <fstream>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <thread>
#include <unistd.h>

namespace gms::probes {

namespace {

constexpr long kSysMemfdSecret = 447; // x86-64
constexpr uint64_t kCalibrationPages = 4;
// The ring buffer's consumer drains at least this often (ms) and is woken
// earlier when 1/kWakeupFraction of the buffer is pending.
constexpr int kPollTimeoutMs = 100;
constexpr uint64_t kWakeupFraction = 8;
// Loads of the object when fentry links the kernel does not call are sent to
// their next variant (one more than the functions that can fail this way).
constexpr int kMaxAttachRounds = 3;
constexpr uint32_t kWatchGmem = GMS_WATCH_GMEM;
constexpr uint32_t kWatchCalibration = GMS_WATCH_CALIBRATION;
// NO_DIRECT_MAP files: the BPF side records every hand-out (not only the
// non-uptodate ones) so the direct-map checker can correlate them by pfn.
constexpr uint32_t kWatchNoDirectMap = GMS_WATCH_NO_DIRECT_MAP;

using InodeKey = std::pair<uint32_t, uint64_t>; // kernel dev_t, ino

struct PointState {
    const AttachPointDef* def = nullptr;
    std::optional<Backend> chosen;
    std::string target; // function or tracepoint
    std::vector<std::string> progs;
    bool attached = false;
    std::string reason;                // why not chosen / not attached
    std::vector<std::string> rejected; // better variants that could not be used
    std::vector<bpf_link*> links;
};

std::string join(const std::vector<std::string>& v, const char* sep) {
    std::string s;
    for (const auto& x : v)
        s += (s.empty() ? "" : sep) + x;
    return s;
}

std::map<std::string, int64_t> read_thp_split_vmstat() {
    std::map<std::string, int64_t> m;
    std::ifstream in("/proc/vmstat");
    std::string k;
    int64_t v;
    while (in >> k >> v)
        if (k.rfind("thp_split", 0) == 0 || k.rfind("thp_deferred_split", 0) == 0)
            m[k] = v;
    return m;
}

uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts); // the clock of bpf_ktime_get_ns()
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

std::string counter_name(int i) {
    static const char* names[GMS_CNT_MAX] = {
        "ringbuf_reserve_failures",
        "events_submitted",
        "kvm_page_fault",
        "spte_set",
        "spte_changed",
        "lock_contended",
        "lock_wait_ns",
        "gmem_lock_contended",
        "gmem_lock_wait_ns",
        "direct_map_calls",
        "split_calls",
        "kprobe_stash_full",
        "page_cache_events_of_other_files",
        "get_pfn_judged_in_bpf",
        "user_fault_judged_in_bpf",
    };
    return names[i];
}

} // namespace

struct Session::Impl {
    Options opts;
    std::string lockdown;
    unsigned no_direct_map_bit = 2;
    gmem_bpf* skel = nullptr;
    ring_buffer* rb = nullptr;
    std::thread poller;
    std::atomic<bool> stop{false};
    // CPU time of the consumer thread (decoding, checkers), set when it ends:
    // under emulation it competes with the workloads for the same CPUs.
    std::atomic<uint64_t> consumer_cpu_ns{0};
    bool finished = false;
    std::vector<PointState> points;
    std::map<std::pair<std::string, Backend>, std::string> excluded; // failed at load
    nlohmann::json load_failures = nlohmann::json::array();          // libbpf logs of failed loads
    int load_attempts = 0;
    int attach_rounds = 0;
    std::string attach_check; // what unreached_fentry_points() found
    uint32_t filter_tgid = 0;
    std::string gmem_dev_source;
    std::string tracefs;
    std::string kprobe_source;

    mutable std::mutex mu; // everything below
    CheckerSet checkers;
    // By raw source id: counted once per event on the hot path.
    std::array<uint64_t, GMS_SRC_MAX + 1> by_src{};
    uint64_t decoded = 0, short_records = 0, unknown_types = 0, watch_map_full = 0;
    uint64_t calibration_file_events = 0;
    std::vector<Event> recorded;
    uint64_t record_dropped = 0;
    int64_t pfn_correction = 0;
    std::set<InodeKey> watched;
    std::deque<std::pair<uint64_t, InodeKey>> unwatch_queue; // (due ns, key)
    std::optional<uint32_t> gmem_kdev;
    std::set<InodeKey> calib_keys; // secretmem files: never fed to the checkers
    bool calibrating = false;
    std::vector<Event> calib_events;
    nlohmann::json calibration = nlohmann::json::object();
    bool calib_ran = false, calib_ok = false;
    std::string calib_reason;
    std::array<uint64_t, GMS_CNT_MAX> final_counters{};
    bool have_final = false;
    std::map<std::string, int64_t> vmstat_before, vmstat_delta;
    uint64_t started_ns = 0;

    ~Impl() { teardown(); }

    // ---- lifecycle ---------------------------------------------------
    void teardown() noexcept {
        try {
            stop_collection();
        } catch (...) {
        }
        if (rb) {
            ring_buffer__free(rb);
            rb = nullptr;
        }
        if (skel) {
            gmem_bpf__destroy(skel);
            skel = nullptr;
        }
    }

    void detach_all() noexcept {
        for (auto& p : points) {
            for (auto* l : p.links)
                bpf_link__destroy(l);
            p.links.clear();
        }
    }

    void stop_collection() {
        detach_all(); // no new records
        stop = true;
        if (poller.joinable())
            poller.join();
        if (rb)
            ring_buffer__consume(rb); // what was already submitted
    }

    // ---- records ----------------------------------------------------
    static int on_record(void* ctx, void* data, size_t size) {
        static_cast<Impl*>(ctx)->handle(data, size);
        return 0;
    }

    void handle(const void* data, size_t size) {
        DecodeError err;
        auto ev = decode_record(data, size, &err);
        std::lock_guard lk(mu);
        if (!ev) {
            (err == DecodeError::unknown_type ? unknown_types : short_records)++;
            return;
        }
        ++decoded;
        ++by_src[std::min<size_t>(ev->src, GMS_SRC_MAX)];
        if (ev->has(GMS_F_PTR_PFN))
            ev->pfn = uint64_t(int64_t(ev->pfn) + pfn_correction);
        if (calibrating &&
            (ev->type == EventType::direct_map || calib_keys.count({ev->dev, ev->ino})))
            calib_events.push_back(*ev);
        if ((ev->dev || ev->ino) && calib_keys.count({ev->dev, ev->ino})) {
            ++calibration_file_events; // the calibration's own file: not the run's stream
            return;
        }
        feed_locked(*ev);
    }

    void feed_locked(const Event& e) {
        checkers.feed(e);
        if (opts.record) {
            if (recorded.size() < opts.record_max_events)
                recorded.push_back(e);
            else
                ++record_dropped;
        }
    }

    // The BPF side wakes this thread only once cfg_wakeup_bytes are pending
    // (see submit() in gmem.bpf.c): what is submitted without a wake-up is
    // drained here on the timeout, so no record waits longer than it.
    void poll_loop() {
        while (!stop.load()) {
            int n = ring_buffer__poll(rb, kPollTimeoutMs);
            if (n < 0 && n != -EINTR)
                break;
            if (n <= 0)
                ring_buffer__consume(rb);
            housekeeping();
        }
        timespec ts{};
        if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
            consumer_cpu_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    }

    // Released files leave the BPF filter a little later: their last
    // deletions happened before on_released() returned, but keep a margin.
    void housekeeping() {
        std::vector<InodeKey> due;
        {
            std::lock_guard lk(mu);
            uint64_t now = monotonic_ns();
            while (!unwatch_queue.empty() && unwatch_queue.front().first <= now) {
                due.push_back(unwatch_queue.front().second);
                unwatch_queue.pop_front();
            }
        }
        for (const auto& k : due)
            unwatch_bpf(k);
    }

    bool watch_bpf(const InodeKey& k, uint32_t what) {
        gms_inode_key key{k.first, 0, k.second};
        if (what & kWatchNoDirectMap)
            skel->bss->cfg_ndm_watched = 1; // from now on kvm_gmem_free_folio is recorded
        int r = bpf_map__update_elem(skel->maps.watched, &key, sizeof(key), &what, sizeof(what),
                                     BPF_ANY);
        bump_watch_gen();
        return r == 0;
    }

    void unwatch_bpf(const InodeKey& k) {
        gms_inode_key key{k.first, 0, k.second};
        bpf_map__delete_elem(skel->maps.watched, &key, sizeof(key), 0);
        bump_watch_gen();
    }

    // After every change of the BPF map `watched`: voids the per-CPU memos
    // of the hand-out programs (watch_memo in gmem.bpf.c).
    void bump_watch_gen() {
        __atomic_fetch_add(&skel->bss->cfg_watch_gen, 1, __ATOMIC_SEQ_CST);
    }

    std::array<uint64_t, GMS_CNT_MAX> read_counters() const {
        std::array<uint64_t, GMS_CNT_MAX> out{};
        if (have_final)
            return final_counters;
        if (!skel)
            return out;
        int ncpu = libbpf_num_possible_cpus();
        if (ncpu <= 0)
            return out;
        std::vector<uint64_t> vals(ncpu);
        for (uint32_t i = 0; i < GMS_CNT_MAX; ++i) {
            if (bpf_map__lookup_elem(skel->maps.counters, &i, sizeof(i), vals.data(),
                                     vals.size() * sizeof(uint64_t), 0) == 0)
                for (auto v : vals)
                    out[i] += v;
        }
        return out;
    }

    Coverage coverage() const {
        Coverage c;
        for (const auto& p : points) {
            if (p.attached)
                c.attached[p.def->name] = to_string(*p.chosen);
            else
                c.missing[p.def->name] = p.reason;
        }
        auto cnt = read_counters();
        std::lock_guard lk(mu);
        c.lost_events = cnt[GMS_CNT_RB_DROPS];
        c.filter_full = watch_map_full;
        c.parse_errors = short_records + unknown_types;
        c.stash_lost = cnt[GMS_CNT_ARG_STASH_FULL];
        c.bpf_judges_handouts = true;
        c.judged_get_pfn = cnt[GMS_CNT_GET_PFN_JUDGED];
        c.judged_user_fault = cnt[GMS_CNT_USER_FAULT_JUDGED];
        c.calibration_ran = calib_ran;
        c.calibration_ok = calib_ok;
        c.calibration_reason = calib_reason;
        c.lockdown = lockdown;
        c.pfn_correction = pfn_correction;
        return c;
    }

    // ---- planning and loading -----------------------------------------
    void plan(const KernelTargets& kt, const std::map<Backend, BackendStatus>& usable,
              std::optional<Backend> forced) {
        points.clear();
        for (const auto& def : attach_points()) {
            PointState ps;
            ps.def = &def;
            if (opts.exclude.count(def.name))
                ps.reason = kExcludedReason;
            else if (!def.tracepoint.empty())
                plan_tracepoint(ps, kt, usable);
            else
                plan_function(ps, kt, usable, forced);
            points.push_back(std::move(ps));
        }
    }

    void plan_tracepoint(PointState& ps, const KernelTargets& kt,
                         const std::map<Backend, BackendStatus>& usable) {
        const auto& def = *ps.def;
        auto ex = excluded.find({def.name, Backend::tracepoint});
        if (kt.tracefs().empty())
            ps.reason = "tracefs unavailable: " + kt.tracefs_error();
        else if (!kt.tracepoint_exists(def.tracepoint))
            ps.reason = fmt::format("tracepoint {} not in this kernel ({}/events/{} missing)",
                                    def.tracepoint, kt.tracefs(), def.tracepoint);
        else if (!usable.at(Backend::tracepoint).usable)
            ps.reason = "tracepoint programs unusable: " + usable.at(Backend::tracepoint).reason;
        else if (ex != excluded.end())
            ps.reason = ex->second;
        else {
            ps.chosen = Backend::tracepoint;
            ps.target = def.tracepoint;
            ps.progs = {def.tp_prog};
        }
    }

    void plan_function(PointState& ps, const KernelTargets& kt,
                       const std::map<Backend, BackendStatus>& usable,
                       std::optional<Backend> forced) {
        const auto& def = *ps.def;
        if (forced == Backend::tracepoint) {
            ps.reason = fmt::format("backend forced to tracepoint: there is no tracepoint for {}",
                                    join(def.functions, "/"));
            return;
        }
        std::vector<Backend> order = forced
                                         ? std::vector<Backend>{*forced}
                                         : std::vector<Backend>{Backend::fentry, Backend::kprobe};
        std::vector<std::string> why;
        for (Backend b : order) {
            const auto& st = usable.at(b);
            if (!st.usable) {
                why.push_back(fmt::format("{} unusable here: {}", to_string(b), st.reason));
                continue;
            }
            if (auto ex = excluded.find({def.name, b}); ex != excluded.end()) {
                why.push_back(fmt::format("{}: {}", to_string(b), ex->second));
                continue;
            }
            std::string found, fnwhy;
            for (const auto& fn : def.functions) {
                auto nargs = kt.btf_func_args(fn);
                if (b == Backend::fentry && !nargs) {
                    fnwhy += fmt::format("{}{} not in kernel BTF (missing or inlined)",
                                         fnwhy.empty() ? "" : ", ", fn);
                    continue;
                }
                if (b == Backend::kprobe && !kt.kprobe_target(fn)) {
                    fnwhy += fmt::format(
                        "{}{} not in {} (missing, inlined or notrace)", fnwhy.empty() ? "" : ", ",
                        fn, kt.kprobe_source().empty() ? "the symbol lists" : kt.kprobe_source());
                    continue;
                }
                if (nargs && def.nargs >= 0 && *nargs != def.nargs) {
                    fnwhy += fmt::format("{}{} takes {} arguments, the program expects {}",
                                         fnwhy.empty() ? "" : ", ", fn, *nargs, def.nargs);
                    continue;
                }
                found = fn;
                break;
            }
            if (found.empty()) {
                why.push_back(fmt::format("{}: {}", to_string(b), fnwhy));
                continue;
            }
            ps.chosen = b;
            ps.target = found;
            ps.rejected = why;
            if (b == Backend::fentry) {
                ps.progs = def.fentry_progs;
            } else {
                ps.progs.clear();
                for (const auto& n : {def.kprobe_prog, def.kretprobe_prog})
                    if (!n.empty())
                        ps.progs.push_back(n);
            }
            return;
        }
        ps.reason = join(why, "; ");
    }

    // Returns 0 or the libbpf error; on error names the failing program.
    int try_load(std::string* failed_prog, std::string* log) {
        skel = gmem_bpf__open();
        if (!skel)
            throw EnvError(
                fmt::format("BPF: cannot open the probes' BPF object: {}", errno_name(errno)));
        bpf_program* p;
        bpf_object__for_each_program(p, skel->obj) bpf_program__set_autoload(p, false);
        for (const auto& ps : points) {
            if (!ps.chosen)
                continue;
            for (const auto& name : ps.progs) {
                bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name.c_str());
                if (!prog)
                    throw Error(
                        fmt::format("probes: program {} missing from the BPF object", name));
                bpf_program__set_autoload(prog, true);
                if (*ps.chosen == Backend::fentry && ps.target != ps.def->functions.front())
                    bpf_program__set_attach_target(prog, 0, ps.target.c_str());
            }
        }
        if (int r = bpf_map__set_max_entries(skel->maps.events,
                                             static_cast<uint32_t>(opts.ringbuf_size));
            r)
            throw UsageError(
                fmt::format("probes: ring buffer size {}: {}", opts.ringbuf_size, errno_name(-r)));
        take_libbpf_log();
        int r = gmem_bpf__load(skel);
        if (r == 0)
            return 0;
        *log = take_libbpf_log();
        static const std::regex prog_re("prog '([A-Za-z0-9_]+)'");
        std::istringstream in(*log);
        std::string line;
        while (std::getline(in, line)) {
            // Other programs' warnings also name them: only a load failure counts.
            bool failure = line.find("load failed") != std::string::npos ||
                           line.find("failed to load") != std::string::npos;
            std::smatch m;
            if (failure && std::regex_search(line, m, prog_re)) {
                *failed_prog = m[1];
                break;
            }
        }
        gmem_bpf__destroy(skel);
        skel = nullptr;
        return r;
    }

    void load(const KernelTargets& kt, const std::map<Backend, BackendStatus>& usable,
              std::optional<Backend> forced) {
        for (load_attempts = 1; load_attempts <= 64; ++load_attempts) {
            plan(kt, usable, forced);
            std::string failed, log;
            int r = try_load(&failed, &log);
            if (r == 0)
                return;
            PointState* culprit = nullptr;
            for (auto& ps : points)
                for (const auto& n : ps.progs)
                    if (ps.chosen && n == failed)
                        culprit = &ps;
            if (load_failures.size() < 16)
                load_failures.push_back(
                    {{"program", failed},
                     {"error", errno_name(-r)},
                     {"log", log.size() > 3000 ? log.substr(log.size() - 3000) : log}});
            if (!culprit)
                throw EnvError(fmt::format("BPF: loading the probes failed ({}): {}",
                                           errno_name(-r), log_tail(log, 4)));
            excluded[{culprit->def->name, *culprit->chosen}] = fmt::format(
                "load of {} failed: {}: {}", failed, errno_name(-r), verifier_error(log, 2));
        }
        throw EnvError("BPF: loading the probes failed after too many attempts");
    }

    void attach_points_now() {
        for (auto& ps : points) {
            if (!ps.chosen)
                continue;
            bool ok = true;
            for (const auto& name : ps.progs) {
                bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name.c_str());
                bpf_link* l = nullptr;
                switch (*ps.chosen) {
                case Backend::fentry:
                    l = bpf_program__attach(prog);
                    break;
                case Backend::kprobe:
                    l = bpf_program__attach_kprobe(prog, name == ps.def->kretprobe_prog,
                                                   ps.target.c_str());
                    break;
                case Backend::tracepoint: {
                    auto slash = ps.target.find('/');
                    l = bpf_program__attach_tracepoint(prog, ps.target.substr(0, slash).c_str(),
                                                       ps.target.substr(slash + 1).c_str());
                    break;
                }
                }
                if (!l) {
                    int err = errno;
                    ps.reason = fmt::format("{} {} attach failed: {}{}", to_string(*ps.chosen),
                                            ps.target, errno_name(err),
                                            err == EPERM && lockdown != "none"
                                                ? fmt::format(" (kernel lockdown={})", lockdown)
                                                : std::string());
                    ok = false;
                    break;
                }
                ps.links.push_back(l);
            }
            if (!ok) {
                for (auto* l : ps.links)
                    bpf_link__destroy(l);
                ps.links.clear();
            }
            ps.attached = ok;
        }
        take_libbpf_log();
    }

    // Points attached with fentry/fexit whose function has no BPF trampoline
    // in <tracefs>/enabled_functions: the link was created but the kernel
    // never runs the program. Seen with Debian's 7.3.4 under TCG for
    // kvm_gmem_get_pfn in about 4 boots of 10, for the whole boot (every
    // later fentry/fexit attach to it as well; a kprobe on it works). Only
    // functions ftrace manages are checked (those in
    // available_filter_functions); the others are patched without ftrace.
    std::vector<std::pair<PointState*, std::string>>
    unreached_fentry_points(const KernelTargets& kt) {
        std::vector<std::pair<PointState*, std::string>> out;
        std::vector<PointState*> check;
        size_t fentry_points = 0;
        for (auto& ps : points) {
            if (!ps.attached || ps.chosen != Backend::fentry)
                continue;
            ++fentry_points;
            if (kt.ftrace_managed(ps.target))
                check.push_back(&ps);
        }
        if (fentry_points == 0) {
            attach_check = "no fentry/fexit point attached";
            return out;
        }
        if (check.empty()) {
            attach_check = "not checked: which functions ftrace patches is unknown (no "
                           "available_filter_functions)";
            return out;
        }
        const std::string path = tracefs + "/enabled_functions";
        std::ifstream in(path);
        if (tracefs.empty() || !in) {
            attach_check = fmt::format("not checked: cannot read {}", path);
            return out;
        }
        const std::set<std::string> direct = functions_with_bpf_trampoline(in);
        for (auto* ps : check)
            if (!direct.count(ps->target))
                out.emplace_back(
                    ps, fmt::format("the link was created but {} has no BPF trampoline in {} "
                                    "(the kernel would never run the program)",
                                    ps->target, path));
        attach_check = fmt::format("{} of {} fentry/fexit points have their BPF trampoline in {}",
                                   check.size() - out.size(), check.size(), path);
        return out;
    }

    const PointState* point(const std::string& name) const {
        for (const auto& p : points)
            if (p.def->name == name)
                return &p;
        return nullptr;
    }
    bool attached(const std::string& name) const {
        auto* p = point(name);
        return p && p->attached;
    }

    // ---- all guest_memfds: the superblock's dev ------------------------
    void learn_gmem_dev() {
        kvm::Kvm kvm;
        if (int r = kvm::Kvm::try_open(kvm); r) {
            gmem_dev_source = fmt::format("cannot open /dev/kvm ({})", errno_name(r));
            return;
        }
        kvm::Vm vm;
        if (int r = kvm::Vm::try_create(vm, kvm, 0); r) {
            gmem_dev_source = fmt::format("KVM_CREATE_VM failed ({})", errno_name(r));
            return;
        }
        int fd = vm.try_create_guest_memfd_raw(4096, 0);
        if (fd < 0) {
            gmem_dev_source = fmt::format("KVM_CREATE_GUEST_MEMFD failed ({})", errno_name(-fd));
            return;
        }
        UniqueFd owner(fd);
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            gmem_dev_source = fmt::format("fstat of a guest_memfd failed ({})", errno_name(errno));
            return;
        }
        set_gmem_kdev(kernel_dev(st.st_dev));
        gmem_dev_source = "a guest_memfd created by the probes at attach time";
    }

    void set_gmem_kdev(uint32_t kd) {
        {
            std::lock_guard lk(mu);
            gmem_kdev = kd;
        }
        if (skel)
            skel->bss->cfg_gmem_dev = kd;
    }

    // ---- secretmem calibration ---------------------------------------
    void calibrate() {
        std::vector<std::string> dm = {"dm_invalid", "dm_default", "dm_valid", "folio_zap",
                                       "folio_restore"};
        bool any_dm = false;
        for (const auto& n : dm)
            any_dm |= attached(n);
        auto set = [this](bool ran, bool ok, std::string reason) {
            std::lock_guard lk(mu);
            calib_ran = ran;
            calib_ok = ok;
            calib_reason = std::move(reason);
        };
        if (!opts.calibrate)
            return set(false, false, "calibration disabled");
        if (!any_dm) {
            auto* p = point("dm_invalid");
            return set(false, false,
                       "no direct-map probe attached (dm_invalid: " + (p ? p->reason : "?") + ")");
        }
        if (!attached("pc_add"))
            return set(false, false, "page-cache tracepoint not attached");

        int fd = static_cast<int>(::syscall(kSysMemfdSecret, O_CLOEXEC));
        if (fd < 0)
            return set(false, false,
                       fmt::format("memfd_secret failed: {}{}", errno_name(errno),
                                   errno == ENOSYS ? " (secretmem disabled or not built)" : ""));
        UniqueFd sfd(fd);
        struct stat st {};
        if (::fstat(fd, &st) != 0)
            return set(false, false,
                       fmt::format("fstat(memfd_secret) failed: {}", errno_name(errno)));
        InodeKey key{kernel_dev(st.st_dev), st.st_ino};
        {
            std::lock_guard lk(mu);
            calib_keys.insert(key);
            calib_events.clear();
            calibrating = true;
        }
        watch_bpf(key, kWatchCalibration);
        const size_t len = kCalibrationPages * 4096;
        std::string fail;
        if (::ftruncate(fd, static_cast<off_t>(len)) != 0) {
            fail = fmt::format("ftruncate(memfd_secret) failed: {}", errno_name(errno));
        } else {
            void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) {
                fail = fmt::format("mmap(memfd_secret) failed: {}", errno_name(errno));
            } else {
                for (size_t off = 0; off < len; off += 4096)
                    static_cast<volatile char*>(p)[off] = 1; // fault in: secretmem zaps each page
                ::munmap(p, len);
            }
        }
        sfd.reset(); // release: secretmem restores each page as it frees it
        // Wait (bounded) for the poller to deliver the pairs.
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        nlohmann::json result;
        bool ok = false;
        std::string reason;
        while (true) {
            {
                std::lock_guard lk(mu);
                ok = evaluate_calibration(key, &result, &reason);
            }
            if (ok || !fail.empty() || std::chrono::steady_clock::now() > deadline)
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        unwatch_bpf(key);
        std::lock_guard lk(mu);
        calibrating = false;
        calib_events.clear();
        calibration = result;
        calib_ran = fail.empty();
        calib_ok = ok && fail.empty();
        calib_reason = !fail.empty() ? fail : reason;
        if (ok)
            pfn_correction = result.value("pfn_correction", int64_t(0));
    }

    // Under mu. Matches the secretmem file's page-cache pfns (exact, from
    // the tracepoint) with the direct-map changes (pfns derived from struct
    // page pointers): a constant offset is learned as the pfn correction.
    bool evaluate_calibration(const InodeKey& key, nlohmann::json* out, std::string* reason) {
        std::set<uint64_t> added, deleted, zaps, restores;
        std::map<std::string, uint64_t> by;
        for (const auto& e : calib_events) {
            if (e.type == EventType::pc_add && e.dev == key.first && e.ino == key.second)
                added.insert(e.pfn);
            else if (e.type == EventType::pc_del && e.dev == key.first && e.ino == key.second)
                deleted.insert(e.pfn);
            else if (e.type == EventType::direct_map && e.ret == 0) {
                for (uint64_t i = 0; i < std::max<uint64_t>(e.nr, 1); ++i)
                    (e.has(GMS_F_VALID) ? restores : zaps).insert(e.pfn + i);
                ++by[src_name(e.src)];
            }
        }
        // Most frequent offset between a page-cache pfn and a zapped pfn.
        std::map<int64_t, uint64_t> deltas;
        for (auto a : added)
            for (auto z : zaps)
                ++deltas[int64_t(a) - int64_t(z)];
        int64_t corr = 0;
        uint64_t best = 0;
        for (auto [d, n] : deltas)
            if (n > best || (n == best && d == 0))
                corr = d, best = n;
        uint64_t zap_match = 0, restore_match = 0;
        for (auto a : added) {
            zap_match += zaps.count(uint64_t(int64_t(a) - corr));
            restore_match += restores.count(uint64_t(int64_t(a) - corr));
        }
        *out = {{"ran", true},
                {"pages", kCalibrationPages},
                {"page_cache_adds", added.size()},
                {"page_cache_deletes", deleted.size()},
                {"zaps_matched", zap_match},
                {"restores_matched", restore_match},
                {"direct_map_events_by_source", by},
                {"pfn_correction", corr}};
        bool ok = added.size() == kCalibrationPages && zap_match == kCalibrationPages &&
                  restore_match == kCalibrationPages;
        if (ok)
            *reason =
                fmt::format("observed {} zap/restore pairs on secretmem pages{}", kCalibrationPages,
                            corr ? fmt::format(" (pfn correction {})", corr) : std::string());
        else
            *reason = fmt::format(
                "secretmem: {} of {} page-cache insertions, {} zaps and {} restores matched",
                added.size(), kCalibrationPages, zap_match, restore_match);
        (*out)["ok"] = ok;
        (*out)["reason"] = *reason;
        return ok;
    }
};

Session::Session() : impl_(std::make_unique<Impl>()) {}

Session::~Session() = default;

std::unique_ptr<Session> Session::attach(const Options& opts, const Caps& caps) {
    std::optional<Backend> forced;
    if (opts.backend != "auto") {
        forced = backend_from_string(opts.backend);
        if (!forced)
            throw UsageError(fmt::format(
                "probes backend '{}': expected auto, fentry, kprobe or tracepoint", opts.backend));
    }
    uint64_t rs = opts.ringbuf_size;
    if (rs < 4096 || (rs & (rs - 1)) || rs > (1ull << 30))
        throw UsageError(fmt::format(
            "probes ring buffer size {}: must be a power of two between 4 KiB and 1 GiB", rs));
    for (const auto& name : opts.exclude)
        if (!find_attach_point(name))
            throw UsageError(fmt::format("probes.exclude: unknown attach point '{}' (known: {})",
                                         name, join(attach_point_names(), ", ")));
    install_libbpf_log();
    std::unique_ptr<Session> s(new Session());
    auto& im = *s->impl_;
    im.opts = opts;
    im.lockdown = caps.lockdown.empty() ? lockdown_state() : caps.lockdown;
    im.no_direct_map_bit = caps.bits.no_direct_map;
    im.started_ns = monotonic_ns();
    im.filter_tgid = opts.filter_pid < 0 ? static_cast<uint32_t>(::getpid())
                                         : static_cast<uint32_t>(opts.filter_pid);

    const auto& usable = probe_backends();
    if (!usable.at(Backend::tracepoint).usable && !usable.at(Backend::kprobe).usable &&
        !usable.at(Backend::fentry).usable)
        throw EnvError(
            "BPF is unusable here: tracepoint: " + usable.at(Backend::tracepoint).reason +
            "; kprobe: " + usable.at(Backend::kprobe).reason +
            "; fentry: " + usable.at(Backend::fentry).reason);
    KernelTargets kt;
    im.tracefs = kt.tracefs();
    im.kprobe_source = kt.kprobe_source();
    im.vmstat_before = read_thp_split_vmstat();
    // Load and attach; a fentry/fexit link the kernel does not call (see
    // unreached_fentry_points) sends its point to the next variant, which
    // takes a reload of the object.
    for (im.attach_rounds = 1;; ++im.attach_rounds) {
        im.load(kt, usable, forced);
        im.skel->bss->cfg_filter_tgid = im.filter_tgid;
        im.skel->bss->cfg_wakeup_bytes = opts.ringbuf_size / kWakeupFraction;
        im.skel->bss->cfg_watch_gen = 1; // a memo never filled (gen 0) never matches
        im.skel->bss->cfg_all_gmem = opts.all_guest_memfds ? 1 : 0;
        im.attach_points_now();
        auto unreached = im.unreached_fentry_points(kt);
        if (unreached.empty())
            break;
        const bool last = im.attach_rounds == kMaxAttachRounds;
        for (auto& [ps, why] : unreached) {
            if (last) { // no round left: the point is not observed, and says why
                for (auto* l : ps->links)
                    bpf_link__destroy(l);
                ps->links.clear();
                ps->attached = false;
                ps->reason = "fentry: " + why;
            } else {
                im.excluded[{ps->def->name, Backend::fentry}] = why;
            }
        }
        if (last)
            break;
        im.detach_all();
        gmem_bpf__destroy(im.skel);
        im.skel = nullptr;
    }
    if (opts.all_guest_memfds)
        im.learn_gmem_dev();

    im.rb = ring_buffer__new(bpf_map__fd(im.skel->maps.events), &Impl::on_record, &im, nullptr);
    if (!im.rb)
        throw EnvError(fmt::format("BPF: ring buffer setup failed: {}", errno_name(errno)));
    im.poller = std::thread([&im] { im.poll_loop(); });
    im.calibrate();
    return s;
}

void Session::on_created(const kvm::GuestMemfd& g) {
    auto id = g.inode();
    if (!id.ino)
        return;
    bool ndm = (g.flags() >> impl_->no_direct_map_bit) & 1;
    auto& im = *impl_;
    InodeKey key{kernel_dev(id.dev), id.ino};
    Event m;
    m.type = EventType::gmem_created;
    m.ts_ns = monotonic_ns();
    m.dev = key.first;
    m.ino = key.second;
    m.gmem_flags = g.flags();
    m.flags_known = true;
    m.no_direct_map = ndm;
    {
        std::lock_guard lk(im.mu);
        im.feed_locked(m);
        im.watched.insert(key);
        if (!im.gmem_kdev)
            im.gmem_kdev = key.first;
    }
    if (!im.finished && im.skel && !im.watch_bpf(key, kWatchGmem | (ndm ? kWatchNoDirectMap : 0))) {
        std::lock_guard lk(im.mu);
        ++im.watch_map_full;
    }
}

void Session::watch_inode(kvm::InodeId id, std::optional<uint64_t> flags, bool preexisting) {
    auto& im = *impl_;
    InodeKey key{kernel_dev(id.dev), id.ino};
    Event m;
    m.type = EventType::gmem_created;
    m.ts_ns = monotonic_ns();
    m.dev = key.first;
    m.ino = key.second;
    m.gmem_flags = flags.value_or(0);
    m.flags_known = flags.has_value();
    m.no_direct_map = flags && ((*flags >> im.no_direct_map_bit) & 1);
    m.preexisting = preexisting;
    {
        std::lock_guard lk(im.mu);
        if (im.watched.count(key))
            return;
        im.feed_locked(m);
        im.watched.insert(key);
    }
    if (!im.finished && im.skel &&
        !im.watch_bpf(key, kWatchGmem | (m.no_direct_map ? kWatchNoDirectMap : 0))) {
        std::lock_guard lk(im.mu);
        ++im.watch_map_full;
    }
}

void Session::on_released(kvm::InodeId id) {
    auto& im = *impl_;
    InodeKey key{kernel_dev(id.dev), id.ino};
    Event m;
    m.type = EventType::gmem_released;
    m.ts_ns = monotonic_ns();
    m.dev = key.first;
    m.ino = key.second;
    std::lock_guard lk(im.mu);
    im.feed_locked(m);
    im.unwatch_queue.emplace_back(m.ts_ns + 1000000000ull, key);
}

void Session::set_gmem_dev(uint64_t st_dev) {
    impl_->set_gmem_kdev(kernel_dev(st_dev));
}

std::optional<uint64_t> Session::gmem_dev() const {
    std::lock_guard lk(impl_->mu);
    if (!impl_->gmem_kdev)
        return std::nullopt;
    return makedev(*impl_->gmem_kdev >> 20, *impl_->gmem_kdev & 0xfffff);
}

void Session::finish() {
    auto& im = *impl_;
    if (im.finished)
        return;
    im.stop_collection();
    im.final_counters = im.read_counters();
    im.have_final = true;
    auto after = read_thp_split_vmstat();
    for (const auto& [k, v] : after)
        im.vmstat_delta[k] = v - (im.vmstat_before.count(k) ? im.vmstat_before.at(k) : 0);
    im.finished = true;
}

uint64_t Session::events_seen() const {
    std::lock_guard lk(impl_->mu);
    return impl_->decoded;
}

nlohmann::json Session::describe() const {
    const auto& im = *impl_;
    nlohmann::json j;
    j["backend_requested"] = im.opts.backend;
    j["backends"] = detect_backends();
    j["lockdown"] = im.lockdown;
    j["tracefs"] = im.tracefs;
    j["kprobe_targets_from"] = im.kprobe_source;
    j["load_attempts"] = im.load_attempts;
    j["attach_rounds"] = im.attach_rounds;
    j["attach_check"] = im.attach_check;
    if (!im.load_failures.empty())
        j["load_failures"] = im.load_failures;
    j["ringbuf_size"] = im.opts.ringbuf_size;
    auto pts = nlohmann::json::array();
    std::set<std::string> used;
    for (const auto& p : im.points) {
        nlohmann::json e = {{"name", p.def->name}, {"what", p.def->what}, {"attached", p.attached}};
        if (p.chosen) {
            e["backend"] = to_string(*p.chosen);
            e["target"] = p.target;
            e["programs"] = p.progs;
        }
        if (!p.attached)
            e["reason"] = p.reason;
        if (p.def->where_present)
            e["optional"] = true;
        if (!p.rejected.empty())
            e["rejected"] = p.rejected;
        if (p.attached)
            used.insert(to_string(*p.chosen));
        pts.push_back(e);
    }
    j["attach_points"] = pts;
    j["backends_in_use"] = used;
    auto cnt = im.read_counters();
    nlohmann::json counters;
    for (int i = 0; i < GMS_CNT_MAX; ++i)
        counters[counter_name(i)] = cnt[i];
    j["counters"] = counters;
    j["lock_contention_gmem_identifiable"] = im.attached("fallocate");
    j["losses"] = im.coverage().losses(); // the sum the verdicts use (not recording_dropped)
    std::lock_guard lk(im.mu);
    j["drops"] = {{"ringbuf_reserve_failures", cnt[GMS_CNT_RB_DROPS]},
                  {"host_short_records", im.short_records},
                  {"host_unknown_types", im.unknown_types},
                  {"kprobe_stash_full", cnt[GMS_CNT_ARG_STASH_FULL]},
                  {"watch_map_full", im.watch_map_full},
                  {"recording_dropped", im.record_dropped}};
    j["events"] = im.checkers.counts();
    j["events_by_source"] = nlohmann::json::object();
    for (size_t src = 0; src < im.by_src.size(); ++src)
        if (im.by_src[src])
            j["events_by_source"][src_name(static_cast<uint16_t>(src))] = im.by_src[src];
    j["events_decoded"] = im.decoded;
    if (im.finished)
        j["consumer_cpu_s"] = double(im.consumer_cpu_ns.load()) / 1e9;
    j["events_of_calibration_files"] = im.calibration_file_events;
    j["filter"] = {{"mode", im.opts.all_guest_memfds ? "all_guest_memfds" : "watched_inodes"},
                   {"files_watched", im.watched.size()},
                   {"counters_tgid", im.filter_tgid}};
    if (im.gmem_kdev)
        j["filter"]["gmem_dev"] =
            fmt::format("{}:{}", *im.gmem_kdev >> 20, *im.gmem_kdev & 0xfffff);
    if (!im.gmem_dev_source.empty())
        j["filter"]["gmem_dev_source"] = im.gmem_dev_source;
    nlohmann::json cal = im.calibration.is_object() ? im.calibration : nlohmann::json::object();
    cal["ran"] = im.calib_ran;
    cal["ok"] = im.calib_ok;
    cal["reason"] = im.calib_reason;
    j["calibration"] = cal;
    j["pfn_correction"] = im.pfn_correction;
    j["thp_split_vmstat_delta"] = im.vmstat_delta;
    j["finished"] = im.finished;
    return j;
}

std::vector<report::InvariantResult>
Session::check(const std::vector<report::WorkloadResult>& w) const {
    auto cov = impl_->coverage();
    auto exp = Expectations::from_workloads(w);
    std::lock_guard lk(impl_->mu);
    return impl_->checkers.results(cov, exp);
}

void Session::save_recording(const std::string& path, const std::vector<report::WorkloadResult>& w,
                             const nlohmann::json& notes) const {
    RecordedStream rs;
    rs.coverage = impl_->coverage();
    rs.expect = Expectations::from_workloads(w);
    rs.meta = notes.is_object() ? notes : nlohmann::json::object();
    rs.meta["calibration"] = describe()["calibration"];
    {
        std::lock_guard lk(impl_->mu);
        rs.events = impl_->recorded;
        rs.meta["recording_dropped"] = impl_->record_dropped;
        // A replay must not judge a stream with holes as whole: the events
        // past the bound count as lost in the stored coverage.
        rs.coverage.lost_events += impl_->record_dropped;
    }
    save_stream(path, rs);
}

} // namespace gms::probes
