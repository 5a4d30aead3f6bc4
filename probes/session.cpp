// The probes session: the object loaded and attached (probes/loader.h), the
// ring buffer read on its own thread (probes/ring_reader.h), the records
// decoded and fed to the checkers, the inode filter kept, the secretmem
// calibration run (probes/calibration.h), and what it all saw described.
#include "probes/session.h"

#include "core/error.h"
#include "core/util.h"
#include "gmem.skel.h"
#include "probes/attach_points.h"
#include "probes/bpf_util.h"
#include "probes/calibration.h"
#include "probes/checkers.h"
#include "probes/decode.h"
#include "probes/events.h"
#include "probes/loader.h"
#include "probes/lock_pairer.h"
#include "probes/lock_probes.h"
#include "probes/point_names.h"
#include "probes/program_stats.h"
#include "probes/ring_reader.h"
#include "refcount.skel.h"

#include <algorithm>
#include <array>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <chrono>
#include <deque>
#include <fcntl.h>
#include <fmt/format.h>
#include <fstream>
#include <mutex>
#include <set>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <thread>
#include <unistd.h>

namespace gms::probes {

namespace {

// The ring buffer's consumer is woken when 1/kWakeupFraction of the buffer
// is pending (else on its poll timeout, RingReader::kPollTimeoutMs).
constexpr uint64_t kWakeupFraction = 8;
constexpr uint32_t kWatchGmem = GMS_WATCH_GMEM;
constexpr uint32_t kWatchCalibration = GMS_WATCH_CALIBRATION;
// NO_DIRECT_MAP files: the BPF side records every hand-out (not only the
// non-uptodate ones) so the direct-map checker can correlate them by pfn.
constexpr uint32_t kWatchNoDirectMap = GMS_WATCH_NO_DIRECT_MAP;
// folio_refcount markers: where the count came from (Event::mode).
constexpr uint32_t kRefcountFromKpagecount = 1;
constexpr uint32_t kRefcountFromBpf = 2;
constexpr size_t kDepartedMax = 262144; // max_entries of the BPF map `departed`

using InodeKey = std::pair<uint32_t, uint64_t>; // kernel dev_t, ino

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

// Report names of the BPF per-CPU counters, indexed by enum gms_cnt
// (probes/events.h): one name per value, checked at compile time, so a new
// counter without a name does not build.
constexpr auto kCounterNames = std::to_array<const char*>({
    "ringbuf_reserve_failures",         // GMS_CNT_RB_DROPS
    "events_submitted",                 // GMS_CNT_EVENTS
    "kvm_page_fault",                   // GMS_CNT_KVM_PAGE_FAULT
    "spte_set",                         // GMS_CNT_SPTE_SET
    "spte_changed",                     // GMS_CNT_SPTE_CHANGED
    "lock_contended",                   // GMS_CNT_LOCK_CONTENDED
    "lock_wait_ns",                     // GMS_CNT_LOCK_WAIT_NS
    "gmem_lock_contended",              // GMS_CNT_GMEM_LOCK_CONTENDED
    "gmem_lock_wait_ns",                // GMS_CNT_GMEM_LOCK_WAIT_NS
    "direct_map_calls",                 // GMS_CNT_DM_FOREIGN
    "split_calls",                      // GMS_CNT_SPLIT_CALLS
    "kprobe_stash_full",                // GMS_CNT_ARG_STASH_FULL
    "page_cache_events_of_other_files", // GMS_CNT_PC_FILTERED_OUT
    "get_pfn_judged_in_bpf",            // GMS_CNT_GET_PFN_JUDGED
    "user_fault_judged_in_bpf",         // GMS_CNT_USER_FAULT_JUDGED
    "departed_map_full",                // GMS_CNT_DEPARTED_FULL
});
static_assert(kCounterNames.size() == GMS_CNT_MAX, "a name for every enum gms_cnt value");
static_assert(GMS_CNT_DEPARTED_FULL == GMS_CNT_MAX - 1, "the last counter is named last");

std::string counter_name(int i) {
    return kCounterNames.at(size_t(i));
}

} // namespace

struct Session::Impl {
    Options opts;
    std::string lockdown;
    unsigned no_direct_map_bit = 2;
    std::unique_ptr<ProbeObject> object;
    std::unique_ptr<RingReader> reader;
    std::unique_ptr<LockProbes> locks; // null: not asked for (locks_reason)
    std::string locks_reason;
    bool finished = false;
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
    int64_t pfn_correction = 0; // learned by the calibration, per derivation
    int64_t addr_pfn_correction = 0;
    std::set<InodeKey> watched;
    std::deque<std::pair<uint64_t, InodeKey>> unwatch_queue; // (due ns, key)
    std::optional<uint32_t> gmem_kdev;
    std::set<InodeKey> calib_keys; // secretmem files: never fed to the checkers
    bool calibrating = false;
    std::vector<Event> calib_events;
    CalibrationResult calibration;
    std::array<uint64_t, GMS_CNT_MAX> final_counters{};
    bool have_final = false;
    std::map<std::string, int64_t> vmstat_before, vmstat_delta;
    uint64_t started_ns = 0;
    BpfStatsScope bpf_stats; // on while attached, when asked for
    report::ProgramStats prog_stats;

    ~Impl() { teardown(); }

    gmem_bpf* skel() const { return object ? &object->skel() : nullptr; }

    // ---- lifecycle: links first (no new records), then the reader drains,
    // then the object goes -------------------------------------------------
    void teardown() noexcept {
        try {
            stop_collection();
        } catch (...) {
        }
        reader.reset();
        object.reset();
        locks.reset();
    }

    void stop_collection() {
        if (locks)
            locks->finish();
        if (object)
            object->detach_all(); // no new records
        if (reader)
            reader->stop_and_drain(); // what was already submitted
    }

    // ---- records ----------------------------------------------------
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
        else if (ev->has(GMS_F_ADDR_PFN))
            ev->pfn = uint64_t(int64_t(ev->pfn) + addr_pfn_correction);
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

    // ---- the BPF inode filter ------------------------------------------
    bool watch_bpf(const InodeKey& k, uint32_t what) {
        gms_inode_key key{k.first, 0, k.second};
        if (what & kWatchNoDirectMap)
            skel()->bss->cfg_ndm_watched = 1; // from now on kvm_gmem_free_folio is recorded
        int r = bpf_map__update_elem(skel()->maps.watched, &key, sizeof(key), &what, sizeof(what),
                                     BPF_ANY);
        bump_watch_gen();
        return r == 0;
    }

    void unwatch_bpf(const InodeKey& k) {
        gms_inode_key key{k.first, 0, k.second};
        bpf_map__delete_elem(skel()->maps.watched, &key, sizeof(key), 0);
        bump_watch_gen();
    }

    // After every change of the BPF map `watched`: voids the per-CPU memos
    // of the hand-out programs (watch_memo in gmem.bpf.c).
    void bump_watch_gen() { __atomic_fetch_add(&skel()->bss->cfg_watch_gen, 1, __ATOMIC_SEQ_CST); }

    std::array<uint64_t, GMS_CNT_MAX> read_counters() const {
        std::array<uint64_t, GMS_CNT_MAX> out{};
        if (have_final)
            return final_counters;
        if (!skel())
            return out;
        int ncpu = libbpf_num_possible_cpus();
        if (ncpu <= 0)
            return out;
        std::vector<uint64_t> vals(ncpu);
        for (uint32_t i = 0; i < GMS_CNT_MAX; ++i) {
            if (bpf_map__lookup_elem(skel()->maps.counters, &i, sizeof(i), vals.data(),
                                     vals.size() * sizeof(uint64_t), 0) == 0)
                for (auto v : vals)
                    out[i] += v;
        }
        return out;
    }

    Coverage coverage() const {
        Coverage c;
        if (object)
            for (const auto& p : object->points()) {
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
        c.departed_full = cnt[GMS_CNT_DEPARTED_FULL];
        c.bpf_judges_handouts = true;
        c.judged_get_pfn = cnt[GMS_CNT_GET_PFN_JUDGED];
        c.judged_user_fault = cnt[GMS_CNT_USER_FAULT_JUDGED];
        c.calibration_ran = calibration.ran;
        c.calibration_ok = calibration.ok;
        c.calibration_reason = calibration.reason;
        c.lockdown = lockdown;
        c.pfn_correction = pfn_correction;
        c.addr_pfn_correction = addr_pfn_correction;
        return c;
    }

    bool attached(const std::string& name) const { return object && object->attached(name); }

    // ---- the leak drain (folio_release) ----------------------------------
    // pfns in the BPF map `departed`: left a watched page cache, not freed yet.
    std::vector<uint64_t> departed_pfns(size_t max) const {
        std::vector<uint64_t> out;
        uint64_t key = 0, next = 0;
        const uint64_t* prev = nullptr;
        while (out.size() < max &&
               bpf_map__get_next_key(skel()->maps.departed, prev, &next, sizeof(next)) == 0) {
            out.push_back(next);
            key = next;
            prev = &key;
        }
        return out;
    }

    bool wait_departed_empty(std::chrono::milliseconds limit) const {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (!departed_pfns(1).empty()) {
            if (std::chrono::steady_clock::now() > deadline)
                return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return true;
    }

    // Before the links go: a folio that left the page cache may still sit in
    // a per-CPU LRU batch (guest_memfd folios enter the unevictable LRU
    // through one), which holds a reference until the batch is flushed. When
    // frees are still due after a short wait, compacting memory flushes every
    // CPU's batches (lru_add_drain_all(); writing drop_caches would too, and
    // also drop the host's clean page cache); then what is still not freed is
    // read from /proc/kpagecount. The results are fed as markers after the
    // ring buffer is drained, behind every free it held.
    std::vector<Event> drain_departed() {
        std::vector<Event> out;
        if (!skel() || !attached(point::pc_del) || !attached(point::page_free))
            return out;
        const uint64_t t0 = monotonic_ns();
        Event drain;
        drain.type = EventType::leak_drain;
        if (!wait_departed_empty(std::chrono::milliseconds(300))) {
            int fd = ::open("/proc/sys/vm/compact_memory", O_WRONLY | O_CLOEXEC);
            if (fd < 0 || ::write(fd, "1\n", 2) != 2)
                drain.ret = -errno;
            if (fd >= 0)
                ::close(fd);
            wait_departed_empty(std::chrono::seconds(3));
        }
        drain.nr = (monotonic_ns() - t0) / 1000000;
        drain.ts_ns = monotonic_ns();
        out.push_back(drain);
        auto left = departed_pfns(4096);
        if (left.empty())
            return out;
        // /proc/kpagecount (CONFIG_PROC_PAGE_MONITOR), else struct page's
        // _refcount read by BPF (refcount.bpf.c); mode says which.
        int kpc = ::open("/proc/kpagecount", O_RDONLY | O_CLOEXEC);
        std::map<uint64_t, int64_t> by_bpf;
        int bpf_err = 0;
        if (kpc < 0)
            bpf_err = read_refcounts_bpf(by_bpf);
        for (uint64_t pfn : left) {
            Event m;
            m.type = EventType::folio_refcount;
            m.ts_ns = monotonic_ns();
            m.pfn = pfn;
            uint64_t count = 0;
            if (kpc >= 0) {
                m.mode = kRefcountFromKpagecount;
                if (::pread(kpc, &count, sizeof(count), off_t(pfn * sizeof(count))) ==
                    ssize_t(sizeof(count)))
                    m.ret = int64_t(count);
                else
                    m.ret = -(errno ? errno : EIO);
            } else {
                m.mode = kRefcountFromBpf;
                auto it = by_bpf.find(pfn);
                m.ret = it != by_bpf.end() ? it->second : -(bpf_err ? bpf_err : ENOENT);
            }
            out.push_back(m);
        }
        if (kpc >= 0)
            ::close(kpc);
        return out;
    }

    // Runs refcount.bpf.c over the `departed` map; 0 or an errno.
    int read_refcounts_bpf(std::map<uint64_t, int64_t>& out) const {
        refcount_bpf* rc = refcount_bpf__open();
        if (!rc)
            return errno ? errno : EINVAL;
        int err = 0;
        rc->bss->cfg_vmemmap_base = skel()->bss->gms_vmemmap_base;
        if (int r = bpf_map__reuse_fd(rc->maps.departed, bpf_map__fd(skel()->maps.departed)))
            err = -r;
        else if (int r2 = refcount_bpf__load(rc))
            err = -r2;
        else {
            LIBBPF_OPTS(bpf_test_run_opts, opts);
            if (bpf_prog_test_run_opts(bpf_program__fd(rc->progs.read_refcounts), &opts) != 0)
                err = errno;
        }
        if (!err) {
            uint64_t key = 0, next = 0;
            const uint64_t* prev = nullptr;
            gms_departed v{};
            // Bounded: a key deleted meanwhile restarts the walk from the first.
            for (size_t n = 0;
                 n < 2 * kDepartedMax &&
                 bpf_map__get_next_key(skel()->maps.departed, prev, &next, sizeof(next)) == 0;
                 ++n) {
                if (bpf_map__lookup_elem(skel()->maps.departed, &next, sizeof(next), &v, sizeof(v),
                                         0) == 0)
                    out[next] = v.refcount;
                key = next;
                prev = &key;
            }
        }
        refcount_bpf__destroy(rc);
        return err;
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
        if (skel())
            skel()->bss->cfg_gmem_dev = kd;
    }

    // ---- secretmem calibration ---------------------------------------
    // Why it cannot run, or "" when it can.
    std::string calibration_blocker() const {
        if (!opts.calibrate)
            return "calibration disabled";
        bool any_dm = false;
        for (const char* n : {point::dm_invalid, point::dm_default, point::dm_valid,
                              point::folio_zap, point::folio_restore})
            any_dm |= attached(n);
        if (!any_dm) {
            auto* p = object ? object->point(point::dm_invalid) : nullptr;
            return "no direct-map probe attached (dm_invalid: " + (p ? p->reason : "?") + ")";
        }
        if (!attached(point::pc_add))
            return "page-cache tracepoint not attached";
        return "";
    }

    void calibrate() {
        if (auto why = calibration_blocker(); !why.empty()) {
            std::lock_guard lk(mu);
            calibration = CalibrationResult{};
            calibration.reason = why;
            return;
        }
        std::optional<InodeKey> key;
        std::string fail = exercise_secretmem(kCalibrationPages, [&](uint32_t kdev, uint64_t ino) {
            key = InodeKey{kdev, ino};
            {
                std::lock_guard lk(mu);
                calib_keys.insert(*key);
                calib_events.clear();
                calibrating = true;
            }
            watch_bpf(*key, kWatchCalibration);
        });
        CalibrationResult result;
        if (key) {
            // Wait (bounded) for the reader to deliver the pairs.
            auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
            while (true) {
                {
                    std::lock_guard lk(mu);
                    result = evaluate_calibration(calib_events, key->first, key->second,
                                                  kCalibrationPages);
                }
                if (result.ok || !fail.empty() || std::chrono::steady_clock::now() > deadline)
                    break;
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            unwatch_bpf(*key);
        }
        std::lock_guard lk(mu);
        calibrating = false;
        calib_events.clear();
        if (!fail.empty()) {
            result.ran = false;
            result.ok = false;
            result.reason = fail;
        }
        calibration = result;
        if (calibration.ok) {
            pfn_correction = calibration.pfn_correction;
            addr_pfn_correction = calibration.addr_pfn_correction;
        }
    }
};

Session::Session() : impl_(std::make_unique<Impl>()) {}

Session::~Session() = default;

std::unique_ptr<Session> Session::attach(const Options& opts, const Caps& caps) {
    std::optional<Backend> forced;
    switch (opts.backend) {
    case profile::ProbeBackendRequest::automatic:
        break;
    case profile::ProbeBackendRequest::fentry:
        forced = Backend::fentry;
        break;
    case profile::ProbeBackendRequest::kprobe:
        forced = Backend::kprobe;
        break;
    case profile::ProbeBackendRequest::tracepoint:
        forced = Backend::tracepoint;
        break;
    }
    auto is_lock_point = [](const std::string& name) {
        for (const auto& d : lock_attach_points())
            if (d.name == name)
                return true;
        return false;
    };
    for (const auto& name : opts.exclude)
        if (!find_attach_point(name) && !is_lock_point(name))
            throw UsageError(fmt::format("probes.exclude: unknown attach point '{}' (known: {})",
                                         name, join(excludable_point_names(), ", ")));
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
    LoadRequest req;
    req.plan.usable = usable;
    req.plan.forced = forced;
    req.plan.excluded = opts.exclude;
    req.ringbuf_size = opts.ringbuf_size;
    req.lockdown = im.lockdown;
    req.configure = [&im, &opts](gmem_bpf& skel) {
        skel.bss->cfg_filter_tgid = im.filter_tgid;
        skel.bss->cfg_wakeup_bytes =
            opts.wakeup_bytes ? opts.wakeup_bytes : opts.ringbuf_size / kWakeupFraction;
        skel.bss->cfg_watch_gen = 1; // a memo never filled (gen 0) never matches
        skel.bss->cfg_all_gmem = opts.all_guest_memfds ? 1 : 0;
    };
    if (opts.program_stats) {
        // Before loading, so that every run of every program is counted.
        if (int err = im.bpf_stats.try_enable())
            im.prog_stats.reason = fmt::format("BPF_ENABLE_STATS(BPF_STATS_RUN_TIME): {}",
                                               errno_name(err));
        im.prog_stats.enabled = im.bpf_stats.enabled();
    }
    im.object = ProbeObject::load_and_attach(kt, std::move(req));
    if (!opts.locks)
        im.locks_reason = "probes.locks = false";
    else if (forced && *forced != Backend::fentry)
        im.locks_reason = fmt::format("backend forced to {}: the lock probes are fentry only",
                                      to_string(*forced));
    else
        im.locks = LockProbes::attach(
            kt, usable,
            LockProbeOptions{im.filter_tgid, opts.lock_threshold_ns, opts.exclude, 1ull << 20});
    if (opts.all_guest_memfds)
        im.learn_gmem_dev();
    im.reader = std::make_unique<RingReader>(
        bpf_map__fd(im.skel()->maps.events),
        [&im](const void* data, size_t size) { im.handle(data, size); },
        [&im] { im.housekeeping(); });
    im.reader->start();
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
    if (!im.finished && im.skel() &&
        !im.watch_bpf(key, kWatchGmem | (ndm ? kWatchNoDirectMap : 0))) {
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
    if (!im.finished && im.skel() &&
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
    auto drained = im.drain_departed();
    im.stop_collection();
    {
        std::lock_guard lk(im.mu);
        for (const auto& m : drained)
            im.feed_locked(m);
    }
    im.final_counters = im.read_counters();
    im.have_final = true;
    if (im.bpf_stats.enabled()) {
        // The links are gone, the programs still loaded: their totals are final.
        auto& ps = im.prog_stats;
        ps.span_s = double(monotonic_ns() - im.started_ns) / 1e9;
        if (im.object)
            ps.programs = read_program_stats(im.skel()->obj, im.object->points());
        if (im.locks)
            for (auto& s : im.locks->program_stats())
                ps.programs.push_back(std::move(s));
        std::stable_sort(ps.programs.begin(), ps.programs.end(),
                         [](const auto& a, const auto& b) { return a.run_time_ns > b.run_time_ns; });
        im.bpf_stats.disable();
    }
    auto after = read_thp_split_vmstat();
    for (const auto& [k, v] : after)
        im.vmstat_delta[k] = v - (im.vmstat_before.count(k) ? im.vmstat_before.at(k) : 0);
    im.finished = true;
}

// One attach point as the report shows it (gmem and lock objects alike).
template <class Point> report::AttachPointSummary point_summary(const Point& p) {
    report::AttachPointSummary e;
    e.name = p.def->name;
    e.what = p.def->what;
    e.attached = p.attached;
    if (p.chosen) {
        e.backend = to_string(*p.chosen);
        e.target = p.target;
        e.programs = p.progs;
    }
    e.reason = p.reason;
    e.optional = p.def->where_present;
    e.rejected = p.rejected;
    return e;
}

report::ProbesSummary Session::summary() const {
    const auto& im = *impl_;
    report::ProbesSummary j;
    j.backend_requested = profile::to_string(im.opts.backend);
    j.backends = detect_backends();
    j.lockdown = im.lockdown;
    j.tracefs = im.tracefs;
    j.kprobe_targets_from = im.kprobe_source;
    if (im.object) {
        j.load_attempts = im.object->load_attempts();
        j.attach_rounds = im.object->attach_rounds();
        j.attach_check = im.object->attach_check();
        j.load_failures = im.object->load_failures();
        for (const auto& p : im.object->points()) {
            report::AttachPointSummary e = point_summary(p);
            if (p.chosen && p.def->decoding != ArgDecoding::fixed)
                e.decoding = to_string(p.form);
            if (p.attached)
                j.backends_in_use.insert(to_string(*p.chosen));
            j.attach_points.push_back(std::move(e));
        }
    }
    if (im.locks)
        for (const auto& p : im.locks->points()) {
            report::AttachPointSummary e = point_summary(p);
            if (!p.attached && p.reason.empty() && !im.locks->attached())
                e.reason = "lock probes not attached: " + im.locks->reason();
            if (p.attached)
                j.backends_in_use.insert(to_string(*p.chosen));
            j.attach_points.push_back(std::move(e));
        }
    j.ringbuf_size = im.opts.ringbuf_size;
    auto cnt = im.read_counters();
    for (int i = 0; i < GMS_CNT_MAX; ++i)
        j.counters[counter_name(i)] = cnt[i];
    j.lock_contention_gmem_identifiable = im.attached(point::fallocate);
    j.losses = im.coverage().losses();
    std::lock_guard lk(im.mu);
    j.drops.ringbuf_reserve_failures = cnt[GMS_CNT_RB_DROPS];
    j.drops.host_short_records = im.short_records;
    j.drops.host_unknown_types = im.unknown_types;
    j.drops.kprobe_stash_full = cnt[GMS_CNT_ARG_STASH_FULL];
    j.drops.watch_map_full = im.watch_map_full;
    j.drops.recording_dropped = im.record_dropped;
    j.events = im.checkers.counts();
    for (size_t src = 0; src < im.by_src.size(); ++src)
        if (im.by_src[src])
            j.events_by_source[src_name(static_cast<uint16_t>(src))] = im.by_src[src];
    j.events_decoded = im.decoded;
    if (im.finished && im.reader)
        j.consumer_cpu_s = double(im.reader->consumer_cpu_ns()) / 1e9;
    j.events_of_calibration_files = im.calibration_file_events;
    j.filter.all_guest_memfds = im.opts.all_guest_memfds;
    j.filter.files_watched = im.watched.size();
    j.filter.counters_tgid = im.filter_tgid;
    if (im.gmem_kdev)
        j.filter.gmem_dev = fmt::format("{}:{}", *im.gmem_kdev >> 20, *im.gmem_kdev & 0xfffff);
    j.filter.gmem_dev_source = im.gmem_dev_source;
    j.calibration = to_json(im.calibration);
    j.pfn_correction = im.pfn_correction;
    j.thp_split_vmstat_delta = im.vmstat_delta;
    j.finished = im.finished;
    if (im.opts.program_stats)
        j.program_stats = im.prog_stats;
    return j;
}

nlohmann::json Session::describe() const {
    return report::to_json(summary());
}

report::LocksSection Session::locks() const {
    const auto& im = *impl_;
    if (im.locks)
        return im.locks->section();
    report::LocksSection s;
    s.threshold_ns = im.opts.lock_threshold_ns;
    s.reason = im.locks_reason;
    return s;
}

std::vector<report::InvariantResult>
Session::check(const std::vector<report::WorkloadResult>& w) const {
    auto cov = impl_->coverage();
    auto exp = Expectations::from_workloads(w);
    std::vector<report::InvariantResult> out;
    {
        std::lock_guard lk(impl_->mu);
        out = impl_->checkers.results(cov, exp);
    }
    out.push_back(judge_lock_holds(locks()));
    return out;
}

void Session::save_recording(const std::string& path, const std::vector<report::WorkloadResult>& w,
                             const nlohmann::json& notes) const {
    RecordedStream rs;
    rs.coverage = impl_->coverage();
    rs.expect = Expectations::from_workloads(w);
    rs.meta = notes.is_object() ? notes : nlohmann::json::object();
    {
        std::lock_guard lk(impl_->mu);
        rs.meta["calibration"] = to_json(impl_->calibration);
    }
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
