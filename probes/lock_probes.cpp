#include "probes/lock_probes.h"

#include "core/util.h"
#include "locks.skel.h"
#include "probes/lock_events.h"
#include "probes/lock_pairer.h"
#include "probes/program_stats.h"
#include "probes/ring_reader.h"

#include <algorithm>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <ctime>
#include <fmt/format.h>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unistd.h>

namespace gms::probes {

namespace {

constexpr char kLockStatPath[] = "/proc/lock_stat";
constexpr char kLockStatSysctl[] = "/proc/sys/kernel/lock_stat";
constexpr size_t kMaxStackDepth = 127; // the stack map's value_size

uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts); // bpf_ktime_get_ns()'s clock
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
    out.flush();
    return bool(out);
}

// Kernel addresses -> "function+0xoff", from /proc/kallsyms (read once, when
// a stack is to be shown).
class Symbolizer {
  public:
    Symbolizer() {
        std::ifstream in("/proc/kallsyms");
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream ls(line);
            std::string addr, type, name;
            if (!(ls >> addr >> type >> name) || (type != "t" && type != "T"))
                continue;
            uint64_t a = std::strtoull(addr.c_str(), nullptr, 16);
            if (a)
                syms_.emplace_back(a, name);
        }
        std::sort(syms_.begin(), syms_.end());
    }
    std::string name(uint64_t addr) const {
        auto it =
            std::upper_bound(syms_.begin(), syms_.end(), std::make_pair(addr, std::string("\xff")));
        if (it == syms_.begin())
            return fmt::format("{:#x}", addr);
        --it;
        return fmt::format("{}+{:#x}", it->second, addr - it->first);
    }
    bool empty() const { return syms_.empty(); }

  private:
    std::vector<std::pair<uint64_t, std::string>> syms_;
};

} // namespace

const std::vector<AttachPointDef>& lock_attach_points() {
    static const std::vector<AttachPointDef> points = [] {
        std::vector<AttachPointDef> p;
        auto fn = [&p](std::string name, std::string what, std::string function,
                       std::vector<std::string> progs, int nargs, bool where_present) {
            AttachPointDef d;
            d.name = std::move(name);
            d.what = std::move(what);
            d.functions = {std::move(function)};
            d.fentry_progs = std::move(progs);
            d.nargs = nargs;
            d.where_present = where_present;
            p.push_back(std::move(d));
        };
        // filemap_invalidate_lock()/_shared() and the unlocks (include/linux/fs.h)
        // are inlines around exactly these four; guest_memfd (7.3) uses no
        // trylock, killable or _nested form of them.
        fn("lock_down_write", "down_write() on a watched invalidate_lock: wait and acquire",
           "down_write", {"fe_down_write", "fx_down_write"}, 1, false);
        fn("lock_down_read", "down_read() on a watched invalidate_lock: wait and acquire",
           "down_read", {"fe_down_read", "fx_down_read"}, 1, false);
        fn("lock_up_write", "up_write() on a watched invalidate_lock: release", "up_write",
           {"fe_up_write"}, 1, false);
        fn("lock_up_read", "up_read() on a watched invalidate_lock: release", "up_read",
           {"fe_up_read"}, 1, false);
        // The operations that take the lock: they name it (CO-RE) and what is in flight.
        fn("lock_op_fallocate", "kvm_gmem_fallocate(): punch hole (write) or allocate (read)",
           "kvm_gmem_fallocate", {"fe_op_fallocate", "fx_op_fallocate"}, 4, false);
        fn("lock_op_release", "kvm_gmem_release(): the file's last reference (write)",
           "kvm_gmem_release", {"fe_op_release", "fx_op_release"}, 2, false);
        fn("lock_op_commit", "kvm_gmem_commit_memory_region(): memslot bound (write; 7.3+)",
           "kvm_gmem_commit_memory_region", {"fe_op_commit", "fx_op_commit"}, 2, true);
        fn("lock_op_unbind", "kvm_gmem_unbind(): memslot unbound (write)", "kvm_gmem_unbind",
           {"fe_op_unbind", "fx_op_unbind"}, 1, true);
        return p;
    }();
    return points;
}

std::vector<std::string> excludable_point_names() {
    auto names = attach_point_names();
    for (const auto& d : lock_attach_points())
        names.push_back(d.name);
    return names;
}

std::vector<report::LockStatRow> parse_lock_stat(const std::string& text,
                                                 const std::string& class_name) {
    std::vector<report::LockStatRow> rows;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        // "%40s:" or "%38s-W:" / "%38s-R:", then 12 numbers.
        auto colon = line.find(':');
        if (colon == std::string::npos)
            continue;
        std::string name = line.substr(0, colon);
        name.erase(0, name.find_first_not_of(' '));
        std::string mode;
        if (name.size() > 2 && (name.ends_with("-W") || name.ends_with("-R"))) {
            mode = name.substr(name.size() - 1);
            name.resize(name.size() - 2);
        }
        if (name != class_name)
            continue;
        std::istringstream ns(line.substr(colon + 1));
        double v[12];
        int n = 0;
        while (n < 12 && ns >> v[n])
            ++n;
        if (n < 12)
            continue;
        report::LockStatRow r;
        r.mode = mode;
        r.contentions = uint64_t(v[1]);
        r.waittime_max_us = v[3];
        r.waittime_total_us = v[4];
        r.acquisitions = uint64_t(v[7]);
        r.holdtime_max_us = v[9];
        r.holdtime_total_us = v[10];
        r.holdtime_avg_us = v[11];
        rows.push_back(r);
    }
    return rows;
}

struct LockProbes::Impl {
    LockProbeOptions opts;
    locks_bpf* skel = nullptr;
    std::vector<AttachedPoint> points;
    std::vector<bpf_link*> links;
    std::unique_ptr<RingReader> reader;
    bool attached = false;
    bool finished = false;
    std::string reason;
    // /proc/lock_stat: enabled by us (restored at finish), cleared at attach.
    bool lock_stat_present = false;
    std::string lock_stat_sysctl_before;
    std::string lock_stat_text; // read at finish
    uint64_t finished_ns = 0;
    uint64_t drops = 0;

    mutable std::mutex mu;
    LockPairer pairer{1000000000ull};
    uint64_t short_records = 0;

    ~Impl() {
        detach();
        reader.reset();
        if (skel)
            locks_bpf__destroy(skel);
        restore_lock_stat();
    }

    void detach() noexcept {
        for (auto* l : links)
            bpf_link__destroy(l);
        links.clear();
    }

    void handle(const void* data, size_t size) {
        auto e = decode_lock_record(data, size);
        std::lock_guard lk(mu);
        if (!e) {
            ++short_records;
            return;
        }
        pairer.feed(*e);
    }

    uint64_t read_drops() const {
        if (!skel)
            return 0;
        int ncpu = libbpf_num_possible_cpus();
        if (ncpu <= 0)
            return 0;
        std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
        uint32_t k = GMS_LCNT_RB_DROPS;
        uint64_t sum = 0;
        if (bpf_map__lookup_elem(skel->maps.lock_counters, &k, sizeof k, vals.data(),
                                 vals.size() * sizeof(uint64_t), 0) == 0)
            for (auto v : vals)
                sum += v;
        return sum;
    }

    void start_lock_stat() {
        lock_stat_present = ::access(kLockStatPath, R_OK) == 0;
        if (!lock_stat_present)
            return;
        lock_stat_sysctl_before = read_file(kLockStatSysctl);
        if (lock_stat_sysctl_before.rfind("0", 0) == 0)
            write_file(kLockStatSysctl, "1\n"); // collection is off by default
        write_file(kLockStatPath, "0\n");       // clears the statistics
    }

    void restore_lock_stat() noexcept {
        if (!lock_stat_present || lock_stat_sysctl_before.empty())
            return;
        if (lock_stat_sysctl_before.rfind("0", 0) == 0)
            write_file(kLockStatSysctl, "0\n");
        lock_stat_sysctl_before.clear();
    }

    bool load_and_attach(const KernelView& kernel, const std::map<Backend, BackendStatus>& usable) {
        PlanRequest req;
        req.usable = usable;
        req.forced = Backend::fentry; // see lock_probes.h: no kprobe fallback
        req.excluded = opts.exclude;
        for (auto& p : plan_attach_points(lock_attach_points(), kernel, req))
            points.push_back(AttachedPoint{std::move(p)});
        for (const auto& p : points)
            if (!p.chosen && !p.def->where_present) {
                reason = fmt::format("{}: {}", p.def->name, p.reason);
                return false;
            }
        skel = locks_bpf__open();
        if (!skel) {
            reason = fmt::format("cannot open the lock probes' BPF object: {}", errno_name(errno));
            return false;
        }
        bpf_program* prog;
        bpf_object__for_each_program(prog, skel->obj) bpf_program__set_autoload(prog, false);
        for (const auto& p : points)
            if (p.chosen)
                for (const auto& n : p.progs)
                    bpf_program__set_autoload(
                        bpf_object__find_program_by_name(skel->obj, n.c_str()), true);
        bpf_map__set_max_entries(skel->maps.lock_events, uint32_t(opts.ringbuf_size));
        skel->bss->cfg_filter_tgid = opts.filter_tgid;
        take_libbpf_log();
        if (int r = locks_bpf__load(skel); r) {
            reason = fmt::format("loading locks.bpf.c failed ({}): {}", errno_name(-r),
                                 verifier_error(take_libbpf_log(), 2));
            return false;
        }
        for (auto& p : points) {
            if (!p.chosen)
                continue;
            bool ok = true;
            for (const auto& n : p.progs) {
                bpf_link* l =
                    bpf_program__attach(bpf_object__find_program_by_name(skel->obj, n.c_str()));
                if (!l) {
                    p.reason =
                        fmt::format("fentry {} attach failed: {}", p.target, errno_name(errno));
                    ok = false;
                    break;
                }
                p.links.push_back(l);
                links.push_back(l);
            }
            p.attached = ok;
            if (!ok && !p.def->where_present) {
                reason = fmt::format("{}: {}", p.def->name, p.reason);
                return false;
            }
        }
        take_libbpf_log();
        // A trampoline the kernel never calls (docs/PROBES.md, "fentry links
        // the kernel never calls") would leave holds unseen: check.
        const std::string path = kernel.tracefs() + "/enabled_functions";
        std::ifstream in(path);
        if (!kernel.tracefs().empty() && in) {
            auto direct = functions_with_bpf_trampoline(in);
            for (auto& p : points)
                if (p.attached && kernel.ftrace_managed(p.target) && !direct.count(p.target)) {
                    p.attached = false;
                    p.reason =
                        fmt::format("fentry: {} has no BPF trampoline in {}", p.target, path);
                    if (!p.def->where_present) {
                        reason = fmt::format("{}: {}", p.def->name, p.reason);
                        return false;
                    }
                }
        }
        return true;
    }
};

LockProbes::LockProbes() : impl_(std::make_unique<Impl>()) {}
LockProbes::~LockProbes() = default;

std::unique_ptr<LockProbes> LockProbes::attach(const KernelView& kernel,
                                               const std::map<Backend, BackendStatus>& usable,
                                               const LockProbeOptions& opts) {
    std::unique_ptr<LockProbes> lp(new LockProbes());
    auto& im = *lp->impl_;
    im.opts = opts;
    im.pairer = LockPairer(opts.threshold_ns);
    if (!im.load_and_attach(kernel, usable)) {
        im.detach();
        return lp;
    }
    try {
        im.reader = std::make_unique<RingReader>(
            bpf_map__fd(im.skel->maps.lock_events),
            [&im](const void* data, size_t size) { im.handle(data, size); }, [] {});
    } catch (const std::exception& e) {
        im.reason = e.what();
        im.detach();
        return lp;
    }
    im.start_lock_stat();
    im.reader->start();
    im.attached = true;
    return lp;
}

bool LockProbes::attached() const {
    return impl_->attached;
}

const std::string& LockProbes::reason() const {
    return impl_->reason;
}

std::vector<AttachedPoint> LockProbes::points() const {
    return impl_->points;
}

std::vector<report::ProgramStat> LockProbes::program_stats() const {
    return read_program_stats(impl_->skel ? impl_->skel->obj : nullptr, impl_->points);
}

void LockProbes::finish() {
    auto& im = *impl_;
    if (im.finished)
        return;
    im.finished = true;
    im.detach();
    if (im.reader)
        im.reader->stop_and_drain();
    im.finished_ns = monotonic_ns();
    im.drops = im.read_drops();
    if (im.lock_stat_present)
        im.lock_stat_text = read_file(kLockStatPath);
    im.restore_lock_stat();
}

report::LocksSection LockProbes::section() const {
    const auto& im = *impl_;
    report::LocksSection s;
    {
        std::lock_guard lk(im.mu);
        s = im.pairer.result(im.finished ? im.finished_ns : monotonic_ns());
        s.anomalies.lost_events += (im.finished ? im.drops : im.read_drops()) + im.short_records;
    }
    s.attached = im.attached;
    s.reason = im.reason;
    for (const auto& p : im.points)
        if (p.attached)
            s.functions.push_back(p.target);
    if (!im.attached)
        return s;
    // Stacks of the holds the report names.
    std::vector<report::LockHold*> named;
    for (auto& h : s.over_threshold)
        named.push_back(&h);
    for (auto& h : s.in_progress)
        named.push_back(&h);
    if (s.longest)
        named.push_back(&*s.longest);
    std::optional<Symbolizer> sym;
    for (auto* h : named) {
        if (h->stack_id < 0 || !im.skel)
            continue;
        if (!sym)
            sym.emplace();
        uint64_t ips[kMaxStackDepth] = {};
        uint32_t id = uint32_t(h->stack_id);
        if (bpf_map__lookup_elem(im.skel->maps.lock_stacks, &id, sizeof id, ips, sizeof ips, 0))
            continue;
        for (uint64_t ip : ips) {
            if (!ip)
                break;
            // The probes' own frames (the program, the trampolines of the
            // functions they probe) say nothing about the holder.
            auto name = sym->name(ip);
            if (name.rfind("bpf_prog_", 0) != 0 && name.rfind("bpf_trampoline", 0) != 0)
                h->stack.push_back(std::move(name));
        }
    }
    // /proc/lock_stat's row of the same class.
    auto& ls = s.lock_stat;
    int32_t version;
    {
        std::lock_guard lk(im.mu);
        version = im.pairer.class_version();
    }
    if (!im.lock_stat_present)
        ls.reason = "no /proc/lock_stat (kernel without CONFIG_LOCK_STAT)";
    else if (!im.finished)
        ls.reason = "read when the probes finish";
    else if (version <= 0)
        ls.reason = "the lockdep class of guest_memfd's invalidate_lock is unknown (no "
                    "guest_memfd operation returned, or no CONFIG_DEBUG_LOCK_ALLOC)";
    else {
        ls.class_name = version > 1 ? fmt::format("mapping.invalidate_lock#{}", version)
                                    : std::string("mapping.invalidate_lock");
        ls.rows = parse_lock_stat(im.lock_stat_text, ls.class_name);
        ls.available = !ls.rows.empty();
        if (!ls.available)
            ls.reason = fmt::format("{} has no row in {} (no acquisition recorded)", ls.class_name,
                                    kLockStatPath);
    }
    return s;
}

} // namespace gms::probes
