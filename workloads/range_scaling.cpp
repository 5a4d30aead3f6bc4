// range-scaling: how long one guest_memfd operation takes as its range grows.
//
// For sizes min_size, min_size*growth, ... (up to max_size, a fraction of
// MemAvailable and the time budget) it times, `reps` times each:
//   allocate     fallocate() of the whole range of a fresh file (populates it);
//   punch_hole   FALLOC_FL_PUNCH_HOLE over the populated range (filemap
//                invalidate_lock held for write, the pages truncated);
//   release      close() of the last reference of a populated file (the
//                file's release and the inode's eviction, which frees the pages);
//   convert      KVM_SET_MEMORY_ATTRIBUTES private then shared over the range
//                (needs a VM type with private memory: KVM_X86_SW_PROTECTED_VM);
// each file bound to a memslot, so invalidation walks a binding as in a VM.
// Sizes whose pages would not fit the memory budget are populated sparsely
// (every sparse_stride-th page) and fitted as their own series
// (punch_hole_sparse, release_sparse): the work per page differs, mixing
// them would bend the fit.
//
// Per operation, time is fitted against the pages it works on (fit_op() in
// reports/range_scaling.h): the slope in ns per page, the growth class from
// the log-log exponent and the size at which one operation would take the
// soft-lockup threshold (2 x watchdog_thresh) or a guest-visible stall.
// Superlinear growth fails the workload.
#include "core/error.h"
#include "core/util.h"
#include "workloads/host_common.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <sys/mman.h>

namespace gms::workloads {

namespace {

using namespace host;

constexpr uint64_t kGpaBase = 1ull << 32;
constexpr uint32_t kSlot = 0;

const std::vector<std::string>& all_ops() {
    static const std::vector<std::string> o = {"punch_hole", "allocate", "convert", "release"};
    return o;
}

struct Config {
    uint64_t min_size = 0, max_size = 0;
    double growth = 2;
    unsigned reps = 3;
    double memory_fraction = 0;
    uint64_t stride = 16;
    double stall_s = 0.1;
    double tolerance = 0.2;
    double outlier_factor = 10;
    std::vector<std::string> ops;
    uint64_t budget = 0; // bytes populated at once, at most
    bool wants(const std::string& op) const {
        return std::find(ops.begin(), ops.end(), op) != ops.end();
    }
};

// The soft-lockup threshold: the detector fires after 2 x watchdog_thresh
// seconds without scheduling (kernel/watchdog.c get_softlockup_thresh()).
void read_watchdog(report::RangeScaling& s) {
    const char* path = "/proc/sys/kernel/watchdog_thresh";
    auto text = read_file(path);
    char* end = nullptr;
    long v = text ? std::strtol(text->c_str(), &end, 10) : -1;
    if (!text || end == text->c_str() || v < 0) {
        s.watchdog_thresh_s = 10;
        s.watchdog_source = fmt::format("{} unreadable: the kernel's default, 10 s", path);
    } else {
        s.watchdog_thresh_s = double(v);
        s.watchdog_source = path;
    }
    s.soft_lockup_s = 2 * s.watchdog_thresh_s;
}

// The VM type and guest_memfd flags conversions run with, or why they cannot.
struct ConvertPlan {
    std::string skip;
    unsigned long vm_type = 0;
    uint64_t flags = 0;
};

ConvertPlan plan_convert(const Context& ctx) {
    ConvertPlan pl;
    std::vector<unsigned long> types;
    if (ctx.profile.vm_type == uapi::kX86SwProtectedVm ||
        ctx.profile.vm_type == uapi::kX86DefaultVm)
        types.push_back(ctx.profile.vm_type);
    if (ctx.profile.vm_type != uapi::kX86SwProtectedVm &&
        ctx.caps.vm_type_supported(uapi::kX86SwProtectedVm))
        types.push_back(uapi::kX86SwProtectedVm);
    std::vector<std::string> seen;
    for (unsigned long t : types) {
        kvm::Vm vm;
        if (int e = kvm::Vm::try_create(vm, ctx.kvm, t)) {
            seen.push_back(fmt::format("KVM_CREATE_VM(type {}): {}", t, errno_name(e)));
            continue;
        }
        long attrs = vm.check_extension(uapi::kCapMemoryAttributes);
        if (attrs <= 0 || !(uint64_t(attrs) & uapi::kMemoryAttributePrivate)) {
            seen.push_back(fmt::format(
                "KVM_CAP_MEMORY_ATTRIBUTES={:#x} on a VM of type {}: no PRIVATE", attrs, t));
            continue;
        }
        // A VM with private memory may refuse some of the profile's flags
        // (INIT_SHARED on 7.3): conversions need none of them.
        long supported = vm.check_extension(uapi::kCapGuestMemfdFlags);
        pl.vm_type = t;
        pl.flags = ctx.profile.gmem_flags & (supported > 0 ? uint64_t(supported) : 0);
        return pl;
    }
    if (!ctx.caps.vm_type_supported(uapi::kX86SwProtectedVm))
        seen.push_back(
            fmt::format("no KVM_X86_SW_PROTECTED_VM (KVM_CAP_VM_TYPES={:#x})", ctx.caps.vm_types));
    pl.skip = fmt::format("KVM_SET_MEMORY_ATTRIBUTES private<->shared needs a VM type with private "
                          "memory: {}",
                          fmt::join(seen, "; "));
    return pl;
}

class Sweep {
  public:
    Sweep(Context& ctx, const Config& c, WorkerResult& w, report::RangeScaling& s)
        : ctx_(ctx), c_(c), w_(w), s_(s) {}

    // The samples of `op` at the size being measured.
    report::ScalingSample& sample(const std::string& op, uint64_t range, uint64_t work,
                                  bool sparse) {
        auto& o = series(op);
        if (o.samples.empty() || o.samples.back().range_bytes != range)
            o.samples.push_back({range, work, sparse, {}});
        return o.samples.back();
    }

    report::ScalingOp& series(const std::string& op) {
        for (auto& o : s_.ops)
            if (o.name == op)
                return o;
        report::ScalingOp o;
        o.name = op;
        o.x = op == "punch_hole" || op == "release" ? "pages (all populated)"
              : op.ends_with("_sparse")
                  ? fmt::format("populated pages (1 in {} of the range)", c_.stride)
                  : "pages of the range";
        s_.ops.push_back(o);
        return s_.ops.back();
    }

    // Populates [0, size): one fallocate, or one per stride-th page. Untimed.
    bool populate(kvm::GuestMemfd& g, uint64_t size, uint64_t stride, uint64_t& pages) {
        pages = 0;
        if (stride == 1) {
            if (int e = g.try_allocate(0, size)) {
                w_.ops["populate"].record_error(e);
                w_.fail(fmt::format("fallocate [0, {:#x}) to populate: {}", size, errno_name(e)));
                return false;
            }
            pages = size / kPage;
        } else {
            for (uint64_t off = 0; off < size; off += stride * kPage, ++pages)
                if (int e = g.try_allocate(off, kPage)) {
                    w_.ops["populate"].record_error(e);
                    w_.fail(fmt::format("fallocate of page {:#x} to populate sparsely: {}", off,
                                        errno_name(e)));
                    return false;
                }
        }
        w_.pages.added += pages;
        return true;
    }

    // One file of `size` on a VM of `vm_type`, bound to a memslot over all of it.
    bool create(kvm::ObservedGmem& in, kvm::Mapping& va, unsigned long vm_type, uint64_t size,
                uint64_t flags) {
        in.vm = kvm::Vm::create(ctx_.kvm, vm_type);
        in.create_gmem(in.vm, size, flags, ctx_.observer);
        ++files_;
        // The memslot's userspace_addr only has to be valid address space.
        va = kvm::Mapping::map(-1, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
        kvm::Memslot m{kSlot,
                       uapi::kMemGuestMemfd,
                       kGpaBase,
                       size,
                       reinterpret_cast<uint64_t>(va.data()),
                       in.gmem.fd(),
                       0};
        if (int e = in.vm.try_add_memslot(m)) {
            w_.ops["bind"].record_error(e);
            w_.fail(fmt::format("binding a {} guest_memfd to a memslot at gpa {:#x}: {}",
                                format_size(size), kGpaBase, errno_name(e)));
            return false;
        }
        return true;
    }

    // allocate, punch_hole and release at one size, once.
    bool file_ops(uint64_t size, bool sparse) {
        const uint64_t stride = sparse ? c_.stride : 1;
        const std::string sfx = sparse ? "_sparse" : "";
        kvm::Mapping va;
        kvm::ObservedGmem in;
        if (!create(in, va, ctx_.profile.vm_type, size, ctx_.profile.gmem_flags))
            return false;
        // `present`: pages in the page cache now (the page-cache counts).
        uint64_t pages = 0, present = 0;
        if (!sparse && c_.wants("allocate")) {
            Timer t;
            int e = in.gmem.try_allocate(0, size);
            uint64_t ns = t.ns();
            if (e) {
                w_.ops["allocate"].record_error(e);
                w_.fail(fmt::format("fallocate [0, {:#x}): {}", size, errno_name(e)));
                return false;
            }
            w_.ops["allocate"].record(ns, size);
            pages = size / kPage;
            w_.pages.added += pages;
            sample("allocate", size, pages, false).ns.push_back(ns);
        } else if (!populate(in.gmem, size, stride, pages)) {
            return false;
        }
        present = pages;
        if (c_.wants("punch_hole")) {
            Timer t;
            int e = in.gmem.try_punch_hole(0, size);
            uint64_t ns = t.ns();
            if (e) {
                w_.ops["punch_hole" + sfx].record_error(e);
                w_.fail(fmt::format("punch_hole [0, {:#x}): {}", size, errno_name(e)));
                return false;
            }
            w_.ops["punch_hole" + sfx].record(ns, size);
            w_.pages.removed += present;
            present = 0;
            sample("punch_hole" + sfx, size, pages, sparse).ns.push_back(ns);
            if (c_.wants("release")) {
                if (!populate(in.gmem, size, stride, pages))
                    return false;
                present = pages;
            }
        }
        if (c_.wants("release")) {
            // The last reference: no mapping, and a memslot holds none.
            Timer t;
            in.gmem.close();
            uint64_t ns = t.ns();
            w_.ops["release" + sfx].record(ns, size);
            sample("release" + sfx, size, pages, sparse).ns.push_back(ns);
        }
        // Freed by the release above, or by the teardown.
        w_.pages.removed += present;
        in.release();
        return true;
    }

    // private then shared over the whole range, once.
    bool convert_ops(uint64_t size, const ConvertPlan& pl) {
        kvm::Mapping va;
        kvm::ObservedGmem in;
        if (!create(in, va, pl.vm_type, size, pl.flags))
            return false;
        for (auto [op, attr] :
             {std::pair<const char*, uint64_t>{"convert_to_private", uapi::kMemoryAttributePrivate},
              {"convert_to_shared", 0}}) {
            Timer t;
            int e = in.vm.try_set_memory_attributes(kGpaBase, size, attr);
            uint64_t ns = t.ns();
            if (e) {
                w_.ops[op].record_error(e);
                w_.fail(fmt::format("KVM_SET_MEMORY_ATTRIBUTES {:#x} over [{:#x}, +{}): {}", attr,
                                    kGpaBase, format_size(size), errno_name(e)));
                return false;
            }
            w_.ops[op].record(ns, size);
            sample(op, size, size / kPage, false).ns.push_back(ns);
        }
        in.release();
        return true;
    }

    uint64_t files() const { return files_; }

  private:
    Context& ctx_;
    const Config& c_;
    WorkerResult& w_;
    report::RangeScaling& s_;
    uint64_t files_ = 0;
};

std::vector<uint64_t> geometric_sizes(uint64_t lo, uint64_t hi, double growth) {
    std::vector<uint64_t> out;
    for (double s = double(lo); s <= double(hi); s *= growth) {
        uint64_t b = uint64_t(s) / kPage * kPage;
        if (b && (out.empty() || b > out.back()))
            out.push_back(b);
    }
    return out;
}

report::WorkloadResult run(Context& ctx) {
    return run_host_workload(
        ctx, "range-scaling", [&](report::WorkloadResult& r, std::vector<WorkerResult>& workers) {
            const auto& spec = ctx.spec;
            Config c;
            c.min_size = spec.size("min_size");
            c.max_size = spec.size("max_size");
            c.growth = spec.number("growth");
            c.reps = static_cast<unsigned>(spec.integer("reps"));
            c.memory_fraction = spec.number("memory_fraction");
            c.stride = static_cast<uint64_t>(spec.integer("sparse_stride"));
            c.stall_s = spec.number("stall");
            c.tolerance = spec.number("tolerance");
            c.outlier_factor = spec.number("outlier_factor");
            c.ops = spec.list("operations");
            if (c.ops.empty())
                c.ops = all_ops();

            report::RangeScaling s;
            s.mem_available = mem_available_bytes();
            c.budget = uint64_t(double(s.mem_available) * c.memory_fraction);
            if (ctx.profile.memory_limit)
                c.budget = std::min(c.budget, ctx.profile.memory_limit);
            s.memory_budget = c.budget;
            s.min_size = c.min_size;
            s.max_size = c.max_size;
            s.dense_limit = c.budget / kPage * kPage;
            s.sparse_stride = c.stride;
            s.growth_factor = c.growth;
            s.reps = c.reps;
            s.tolerance = c.tolerance;
            s.stall_s = c.stall_s;
            read_watchdog(s);
            if (spec.integer("threads") > 1 || spec.integer("ops") > 0)
                s.notes.push_back("threads and ops do not apply: one operation at a time, sizes "
                                  "and reps decide how many");

            ConvertPlan conv;
            if (c.wants("convert")) {
                conv = plan_convert(ctx);
                if (!conv.skip.empty())
                    for (const char* op : {"convert_to_private", "convert_to_shared"}) {
                        report::ScalingOp o;
                        o.name = op;
                        o.x = "pages of the range";
                        o.skip_reason = conv.skip;
                        s.ops.push_back(o);
                        r.checks.push_back({fmt::format("{} grows at most n log n", op),
                                            report::Outcome::skip, "", "", conv.skip});
                    }
            }
            const bool file_work =
                c.wants("punch_hole") || c.wants("allocate") || c.wants("release");

            workers.resize(1);
            WorkerResult& w = workers[0];
            Sweep sweep(ctx, c, w, s);
            const uint64_t t0 = now_ns();
            uint64_t last_size = 0;
            double last_cost_s = 0; // one clean repetition of the last size
            std::string stopped = fmt::format("max_size {}", format_size(c.max_size));
            bool failed = false, sparse_noted = false;
            for (uint64_t size : geometric_sizes(c.min_size, c.max_size, c.growth)) {
                const bool sparse = size > c.budget;
                if (file_work && sparse && size / c.stride > c.budget) {
                    stopped = fmt::format(
                        "the memory budget: {} populated 1 page in {} is {}, over {} ({:g} of "
                        "MemAvailable {})",
                        format_size(size), c.stride, format_size(size / c.stride),
                        format_size(c.budget), c.memory_fraction, format_size(s.mem_available));
                    break;
                }
                if (last_size && ctx.time_budget_s > 0) {
                    // The next size costs about its share more than the last
                    // (linear), with a margin; stop before the budget runs out.
                    double next = last_cost_s * double(size) / double(last_size) * c.reps * 1.3;
                    double left = ctx.time_budget_s - double(now_ns() - t0) / 1e9;
                    if (next > left) {
                        stopped = fmt::format("the time budget: {} would take about {:.1f}s, "
                                              "{:.1f}s are left",
                                              format_size(size), next, left);
                        break;
                    }
                }
                if (sparse && !sparse_noted && file_work) {
                    s.notes.push_back(fmt::format(
                        "sizes above {} are populated sparsely, 1 page in {} (the memory budget, "
                        "{:g} of MemAvailable {}): punch_hole_sparse and release_sparse; "
                        "allocate is measured at the dense sizes only",
                        format_size(c.budget), c.stride, c.memory_fraction,
                        format_size(s.mem_available)));
                    sparse_noted = true;
                }
                double best = 0;
                unsigned done = 0;
                for (unsigned rep = 0; rep < c.reps && !ctx.control.should_stop(); ++rep) {
                    uint64_t t = now_ns();
                    if (file_work && !sweep.file_ops(size, sparse)) {
                        failed = true;
                        break;
                    }
                    if (c.wants("convert") && conv.skip.empty() && !sweep.convert_ops(size, conv)) {
                        failed = true;
                        break;
                    }
                    double took = double(now_ns() - t) / 1e9;
                    best = done++ ? std::min(best, took) : took;
                    w.progress(ctx, 1, size);
                }
                if (failed || done < c.reps) {
                    stopped = failed ? fmt::format("a failure at {}", format_size(size))
                                     : "the run being stopped";
                    break;
                }
                last_size = size;
                last_cost_s = best;
            }
            w.flush_progress(ctx);
            s.notes.push_back(fmt::format("largest size {}; sizes stopped at {}",
                                          last_size ? format_size(last_size) : "none", stopped));

            std::vector<std::pair<std::string, double>> thresholds;
            if (s.watchdog_thresh_s > 0)
                thresholds.emplace_back("soft_lockup", s.soft_lockup_s);
            else
                s.notes.push_back("watchdog_thresh is 0 (the lockup detectors are off): no "
                                  "soft-lockup projection");
            thresholds.emplace_back("guest_stall", c.stall_s);
            for (auto& o : s.ops) {
                if (!o.skip_reason.empty())
                    continue;
                report::fit_op(o, c.tolerance, c.outlier_factor, thresholds);
                report::Check chk;
                chk.name = fmt::format("{} grows at most n log n", o.name);
                chk.expected =
                    fmt::format("exponent <= {:.2f} (n log n at these sizes + tolerance "
                                "{:g})",
                                std::max(o.n_log_n_exponent, 1.0) + c.tolerance, c.tolerance);
                if (!o.growth) {
                    chk.outcome = report::Outcome::skip;
                    chk.reason = o.growth_reason;
                } else {
                    chk.observed =
                        fmt::format("exponent {:.2f} ({}), {:.1f} ns/page", o.power->exponent,
                                    fit::to_string(*o.growth), o.linear ? o.linear->slope : 0.0);
                    if (*o.growth == fit::Growth::superlinear) {
                        chk.outcome = report::Outcome::fail;
                        chk.reason = fmt::format("superlinear growth of {} time with size", o.name);
                    }
                }
                r.checks.push_back(chk);
            }
            r.counters["sizes"] = 0;
            for (const auto& o : s.ops)
                r.counters["sizes"] = std::max<uint64_t>(r.counters["sizes"], o.samples.size());
            r.range_scaling = std::move(s);
            publish_page_counts(r, sweep.files(), w.pages, !failed, workers);
        });
}

} // namespace

WorkloadInfo range_scaling_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "range-scaling";
    w.description =
        "Times punch hole, fallocate, private<->shared conversion and release of one guest_memfd "
        "range as it grows geometrically up to what memory allows (sparse where large), fits "
        "time against size per operation (ns/page, growth class) and projects the size at which "
        "one operation reaches the soft-lockup threshold or a guest-visible stall. Superlinear "
        "growth fails.";
    w.needs = "KVM_CREATE_GUEST_MEMFD and KVM_SET_USER_MEMORY_REGION2 (Linux 6.8+); conversions "
              "need KVM_SET_MEMORY_ATTRIBUTES with PRIVATE on the VM type "
              "(KVM_X86_SW_PROTECTED_VM, CONFIG_KVM_SW_PROTECTED_VM)";
    w.params = {
        {"min_size",
         ParamType::size,
         int64_t(1) << 20,
         "smallest range",
         kPage,
         1ull << 46,
         {},
         {profile::multiple_of(kPage, "the page size"), profile::at_most("max_size")}},
        {"max_size",
         ParamType::size,
         int64_t(16) << 30,
         "largest range (memory and the time budget may stop earlier)",
         kPage,
         1ull << 46,
         {},
         {profile::multiple_of(kPage, "the page size")}},
        {"growth", ParamType::number, 2.0, "factor between successive sizes", 1.25, 64},
        {"reps", ParamType::integer, int64_t(3), "repetitions per size (the fits use the fastest)",
         1, 1000},
        {"memory_fraction", ParamType::number, 0.25,
         "memory budget as a fraction of MemAvailable: larger sizes are populated sparsely", 0.001,
         0.75},
        {"sparse_stride", ParamType::integer, int64_t(16),
         "above the memory budget, populate 1 page in this many", 2, 1 << 20},
        {"stall", ParamType::duration, 0.1,
         "a guest-visible stall: the projection says at which size one operation takes this long",
         0.000001, 3600},
        {"tolerance", ParamType::number, 0.2,
         "exponent tolerance of the growth classes (constant < tol, linear <= 1 + tol, ...)", 0.01,
         1},
        {"outlier_factor", ParamType::number, 10.0,
         "a repetition this many times above the linear fit (and 1 ms) is an outlier", 1.5, 1e6},
        {"operations", ParamType::string_list, std::vector<std::string>{},
         "operations to time (default all): punch_hole, allocate, convert, release", 0, 0,
         all_ops()},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile& p,
                       const profile::WorkloadSpec&) -> std::optional<std::string> {
        if (!caps.user_memory2 && caps.kvm_accessible && caps.guest_memfd)
            return std::string(
                "KVM_CAP_USER_MEMORY2 is not supported: guest_memfd memslots cannot be bound");
        return gmem_skip_reason(caps, p, p.gmem_flags);
    };
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec& spec) {
        // Populated pages stay within the budget; the sparse sizes add page
        // tables of nothing (PROT_NONE reservations) and the attribute xarray.
        uint64_t budget = uint64_t(double(mem_available_bytes()) * spec.number("memory_fraction"));
        if (p.memory_limit)
            budget = std::min(budget, p.memory_limit);
        return std::min<uint64_t>(spec.size("max_size"), budget) + (8ull << 20);
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
