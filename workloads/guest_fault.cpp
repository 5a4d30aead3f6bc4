// guest-fault: vCPUs fault guest_memfd pages in from the guest side.
//
// Per VM: one guest_memfd (MMAP|INIT_SHARED) bound as a memslot whose
// userspace_addr is the guest_memfd's own mapping (as the selftests do for
// shared guest_memfd); each vCPU owns a disjoint region of it and runs on its
// own thread. A round: the host pre-fills some pages of the next batch with a
// seed-derived pattern through the mapping; the guest (guest_pages.S) checks
// every page of the batch (host pattern, its own earlier pattern, or zero for
// never-touched pages), reports mismatches through an OUT port, writes its
// pattern (seed, VM, vCPU, page, round) and HLTs; the host then verifies what
// the guest wrote through the mapping.
//
// With punch_pages > 0, each round ends with the guest's view of a punch
// hole, in sequence (not racing): the host drops its own mapping of a few
// pages of the batch, the guest maps them again (kvm_gmem_get_pfn) and checks
// them, fallocate(PUNCH_HOLE|KEEP_SIZE) punches them, and after it returned
// the guest reads them again and must read zero. A stale value is a guest
// mapping of a folio that left the file: a use-after-free, which a racing
// "old or new" check cannot tell from a late punch. The host mapping is
// dropped first because the memslot's userspace_addr is that mapping: a
// mapped page's MMU notifier would invalidate the guest's mapping by address
// and hide a missing guest_memfd invalidation (private memory has no address).
#include "core/error.h"
#include "workloads/guest_common.h"
#include "workloads/host_common.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <memory>
#include <optional>
#include <sys/mman.h>

namespace gms::workloads {

namespace {

using namespace guest;

// The guest program's report of a mismatch: OUT of the GPA to kPortMismatch,
// with what it expected in ebx and what it read in ecx. Any other exit: none.
struct GuestMismatch {
    uint32_t gpa, expected, seen;
};
std::optional<GuestMismatch> guest_mismatch(kvm::Vcpu& v, kvm_run& run) {
    if (run.exit_reason != KVM_EXIT_IO || run.io.port != kPortMismatch ||
        run.io.direction != KVM_EXIT_IO_OUT || run.io.size != 4 || run.io.count != 1)
        return std::nullopt;
    GuestMismatch m;
    std::memcpy(&m.gpa, reinterpret_cast<uint8_t*>(&run) + run.io.data_offset, 4);
    kvm_regs r = v.regs();
    m.expected = uint32_t(r.rbx);
    m.seen = uint32_t(r.rcx);
    return m;
}

constexpr uint32_t kDataSlot = 1;
constexpr uint32_t kTagHost = 1, kTagGuest = 2;

// Defaults and limits live in the ParamSpecs (guest_fault_workload()); the
// profile loader has filled in and checked every one of them.
struct Params {
    uint32_t batch = 0;
    unsigned prefill_pct = 0;
    unsigned write_pct = 0;
    unsigned stride_shift = 0; // log2 of guest_stride (a power of two)
    uint32_t punch_pages = 0;  // pages punched per round (0: no punch step)
    double run_timeout_s = 0;
    double stop_grace_s = 0.5; // not a parameter: time for a batch to end on a stop
};

Params read_params(const profile::WorkloadSpec& s) {
    Params p;
    p.batch = static_cast<uint32_t>(s.integer("batch_pages"));
    p.prefill_pct = static_cast<unsigned>(s.integer("prefill_percent"));
    p.write_pct = static_cast<unsigned>(s.integer("write_percent"));
    p.stride_shift = static_cast<unsigned>(__builtin_ctzll(uint64_t(s.integer("guest_stride"))));
    p.run_timeout_s = s.number("run_timeout");
    p.punch_pages = static_cast<uint32_t>(s.integer("punch_pages"));
    return p;
}

uint64_t threads_total(const profile::Profile& p) {
    return uint64_t(p.vm_count) * p.vcpus;
}

std::optional<std::string> skip_reason(const Caps& caps, const profile::Profile& p,
                                       const profile::WorkloadSpec&) {
    if (auto r = gmem_skip_reason(caps, p, p.gmem_flags | host::kMmapFlags))
        return r;
    if (p.vm_type != uapi::kX86DefaultVm && p.vm_type != uapi::kX86SwProtectedVm)
        return fmt::format(
            "VM type {} needs a confidential-computing guest; guest-fault runs plain "
            "guest code (default or sw_protected VMs only)",
            p.vm_type_name);
    if (p.gmem_size > kMaxDataSize)
        return fmt::format("gmem_size {} exceeds what 32-bit guest code addresses ({})",
                           format_size(p.gmem_size), format_size(kMaxDataSize));
    if (p.gmem_size / kPage < p.vcpus)
        return fmt::format("gmem_size {} gives less than one page per vCPU ({} vCPUs)",
                           format_size(p.gmem_size), p.vcpus);
    return std::nullopt;
}

// One VM: guest code slot, guest_memfd, its mapping, its memslot. Members
// go in reverse order: the VM (vCPUs, memslots, VM fd) with its code memory,
// the fallback memory, then the guest_memfd and its mapping, whose release
// the observer hears of last, no reference being left.
struct VmInstance {
    kvm::ObservedGmem file;    // created on gvm's VM
    kvm::Mapping fallback_hva; // only if KVM refused the mapping as userspace_addr
    std::unique_ptr<GuestVm> gvm;
    uint64_t entry = 0;
};

// Sets up VM `index`; returns a skip reason if this kernel cannot, throws on tool errors.
std::optional<std::string> setup_vm(Context& ctx, VmInstance& in, unsigned index,
                                    std::vector<std::string>& notes) {
    const auto& p = ctx.profile;
    in.gvm = std::make_unique<GuestVm>(ctx.kvm, p.vm_type, p.vcpus);
    kvm::Vm& vm = in.gvm->vm();
    in.entry = in.gvm->load(pages_program());

    uint64_t flags = p.gmem_flags | host::kMmapFlags;
    long vm_flags = vm.check_extension(uapi::kCapGuestMemfdFlags);
    if (vm_flags < 0 || (uint64_t(vm_flags) & flags) != flags)
        return fmt::format(
            "guest_memfd flags {} not supported on a {} VM (KVM_CAP_GUEST_MEMFD_FLAGS={:#x})",
            flag_names(flags, p.bits), p.vm_type_name, vm_flags);
    in.file.create_gmem(vm, p.gmem_size, flags, ctx.observer);
    in.file.map = in.file.gmem.map_shared();

    kvm::Memslot m;
    m.slot = kDataSlot;
    m.flags = uapi::kMemGuestMemfd;
    m.gpa = kDataGpa;
    m.size = p.gmem_size;
    m.userspace_addr = reinterpret_cast<uint64_t>(in.file.map.data());
    m.gmem_fd = in.file.gmem.fd();
    m.gmem_offset = 0;
    if (int e = vm.try_add_memslot(m)) {
        // Older shared-guest_memfd kernels wanted an ordinary userspace_addr;
        // the guest still faults from the guest_memfd, the host still checks
        // through the guest_memfd mapping.
        in.fallback_hva = kvm::Mapping::anonymous(p.gmem_size);
        m.userspace_addr = reinterpret_cast<uint64_t>(in.fallback_hva.data());
        if (int e2 = vm.try_add_memslot(m))
            return fmt::format("KVM refused the guest_memfd memslot (KVM_SET_USER_MEMORY_REGION2 "
                               "KVM_MEM_GUEST_MEMFD): {} with userspace_addr = the guest_memfd "
                               "mapping, {} with anonymous memory",
                               errno_name(e), errno_name(e2));
        if (index == 0)
            notes.push_back(
                fmt::format("KVM refused userspace_addr = the guest_memfd mapping ({}); "
                            "using anonymous memory as userspace_addr",
                            errno_name(e)));
    }
    for (unsigned v = 0; v < p.vcpus; ++v)
        in.gvm->add_vcpu(v, ctx.kvm);
    return std::nullopt;
}

// What each page of a vCPU's region holds, as far as the host knows.
struct PageState {
    uint32_t base = 0;    // last host pre-fill (whole page); 0: zero
    uint32_t guest = 0;   // last guest write (strided words) since; 0: none
    bool touched = false; // in the guest_memfd's page cache
    uint32_t guest_view() const { return guest ? guest : base; }
};

struct VcpuJob {
    unsigned vm = 0, vcpu = 0;
    VmInstance* in = nullptr;
    uint64_t first_page = 0, pages = 0; // region, in guest_memfd pages
    uint64_t ops_limit = 0;             // pages to process; 0 = until stop
    host::WorkerResult out;
    uint64_t pages_touched = 0;
    bool exact = true; // every batch ran to its end: pages_touched is exact
    uint64_t rounds = 0;
    uint64_t pages_punched = 0; // in the page cache when punched (each left it)
    uint64_t punch_checks = 0;  // pages the guest read back after a punch
};

std::string key_str(uint32_t key) {
    return key ? fmt::format("pattern {:#010x}", key) : std::string("zero");
}

// One guest batch over `pages` (region page numbers), each checked against
// `expect(pg)` (0: zero), nothing written. false: stopped or failed (said in
// job.out); mismatches go to `mismatch(gpa, expected, read)`.
bool guest_check(VcpuJob& job, RunSlot& slot, std::atomic<bool>& abort, double run_timeout_s,
                 unsigned stride_shift, const std::vector<uint64_t>& pages,
                 const std::function<uint32_t(uint64_t)>& expect,
                 const std::function<void(uint32_t, uint32_t, uint32_t)>& mismatch, const char* op,
                 uint64_t round) {
    GuestVm& gvm = *job.in->gvm;
    kvm::Vcpu& vcpu = *gvm.vm().vcpus().at(job.vcpu);
    PageDesc* descs = gvm.descs(job.vcpu);
    for (size_t k = 0; k < pages.size(); ++k) {
        PageDesc d{};
        d.gpa = static_cast<uint32_t>(kDataGpa + (job.first_page + pages[k]) * kPage);
        d.flags = stride_flags(stride_shift);
        if (uint32_t key = expect(pages[k])) {
            d.flags |= kExpectPattern;
            d.expect_key = key;
        }
        descs[k] = d;
    }
    GuestCall call;
    call.rip = job.in->entry;
    call.rsp = gvm.stack_top(job.vcpu);
    call.rsi = gvm.descs_gpa(job.vcpu);
    call.rcx = pages.size();
    enter(vcpu, call);
    auto on_exit = [&](kvm::Vcpu& v, kvm_run& run) -> std::string {
        auto m = guest_mismatch(v, run);
        if (!m)
            return "unexpected " + describe_exit(v);
        mismatch(m->gpa, m->expected, m->seen);
        return "";
    };
    host::Timer t;
    RunResult rr = run_vcpu(vcpu, slot, job.out.ops["KVM_RUN"], on_exit, run_timeout_s);
    if (rr.kind == RunResult::stopped) {
        job.exact = false;
        return false;
    }
    if (rr.kind == RunResult::failed) {
        job.exact = false;
        job.out.fail(fmt::format("vm{} {} ({}, round {})", job.vm, rr.failure, op, round));
        abort.store(true);
        return false;
    }
    job.out.ops[op].record(t.ns(), pages.size() * kPage);
    job.out.verification.pages_checked += pages.size();
    return true;
}

// The punch step of a round (see the top of the file). false: stop the job.
bool punch_step(const Params& prm, VcpuJob& job, RunSlot& slot, std::atomic<bool>& abort,
                double run_timeout_s, std::vector<PageState>& st,
                const std::vector<uint64_t>& batch, Rng& rng, uint64_t round) {
    auto& w = job.out;
    // A run of contiguous batch pages (the batch wraps at the region's end).
    const size_t n = batch.size();
    const size_t want = std::min<size_t>(prm.punch_pages, n);
    size_t i0 = rng.below(n - want + 1), k = 1;
    while (k < want && batch[i0 + k] == batch[i0] + k)
        ++k;
    std::vector<uint64_t> pages(batch.begin() + long(i0), batch.begin() + long(i0 + k));
    const uint64_t first = pages.front();
    uint8_t* region = job.in->file.map.data() + job.first_page * kPage;

    // Only the guest maps them from here on.
    if (::madvise(region + first * kPage, k * kPage, MADV_DONTNEED) != 0) {
        w.fail(fmt::format("vm{} vcpu{} round {}: madvise(MADV_DONTNEED) of {} pages at "
                           "guest_memfd offset {:#x}: {}",
                           job.vm, job.vcpu, round, k, (job.first_page + first) * kPage,
                           errno_name(errno)));
        return false;
    }
    auto before = [&](uint32_t gpa, uint32_t expected, uint32_t got) {
        uint64_t off = uint64_t(gpa) - kDataGpa;
        w.verification.mismatch(fmt::format(
            "vm{} vcpu{} round {}: before punch hole the guest read {:#010x} at GPA {:#x} "
            "(guest_memfd offset {:#x}), expected {:#010x}",
            job.vm, job.vcpu, round, got, gpa, off, expected));
    };
    if (!guest_check(
            job, slot, abort, run_timeout_s, prm.stride_shift, pages,
            [&](uint64_t pg) { return st[pg].guest_view(); }, before, "guest_check_before_punch",
            round))
        return false;

    host::Timer tp;
    const uint64_t off = (job.first_page + first) * kPage;
    if (int e = job.in->file.gmem.try_punch_hole(off, k * kPage)) {
        w.ops["punch_hole"].record_error(e);
        w.fail(fmt::format("vm{} vcpu{} round {}: fallocate(PUNCH_HOLE) of {} pages at "
                           "guest_memfd offset {:#x}: {}",
                           job.vm, job.vcpu, round, k, off, errno_name(e)));
        abort.store(true);
        return false;
    }
    w.ops["punch_hole"].record(tp.ns(), k * kPage);
    for (uint64_t pg : pages) {
        job.pages_punched += st[pg].touched; // every batch page is touched
        st[pg] = PageState{};
    }

    if (const auto& hooks = guest_fault_hooks(); hooks.after_punch)
        hooks.after_punch(job.vm, job.vcpu, round, region, pages);

    // The punch returned: the guest must read zero, never what was there.
    auto after = [&](uint32_t gpa, uint32_t, uint32_t got) {
        uint64_t o = uint64_t(gpa) - kDataGpa;
        w.verification.mismatch(fmt::format(
            "vm{} vcpu{} round {}: after punch hole returned the guest read {:#010x} at GPA "
            "{:#x} (guest_memfd offset {:#x}, page {}), expected zero: a stale guest mapping "
            "of a punched page",
            job.vm, job.vcpu, round, got, gpa, o, o / kPage));
    };
    if (!guest_check(
            job, slot, abort, run_timeout_s, prm.stride_shift, pages, [](uint64_t) { return 0u; },
            after, "guest_check_after_punch", round))
        return false;
    job.punch_checks += k;
    // The read faulted each page in again (a fresh zero folio).
    for (uint64_t pg : pages) {
        st[pg].touched = true;
        ++job.pages_touched;
    }
    return true;
}

void run_vcpu_job(Context& ctx, const Params& prm, VcpuJob& job, RunSlot& slot,
                  std::atomic<bool>& abort, double run_timeout_s) {
    GuestVm& gvm = *job.in->gvm;
    kvm::Vcpu& vcpu = *gvm.vm().vcpus().at(job.vcpu);
    uint8_t* region = job.in->file.map.data() + job.first_page * kPage;
    const uint64_t region_off = job.first_page * kPage;
    Rng rng(Rng::derive(ctx.seed, uint64_t(job.vm) << 32 | job.vcpu));
    std::vector<PageState> st(job.pages);
    const auto& hooks = guest_fault_hooks();
    auto& w = job.out;
    uint64_t cursor = 0, done = 0;
    std::vector<uint64_t> batch;
    PageDesc* descs = gvm.descs(job.vcpu);

    while (!ctx.should_stop() && !abort.load()) {
        if (job.ops_limit && done >= job.ops_limit)
            break;
        uint64_t n = std::min<uint64_t>(prm.batch, job.pages);
        if (job.ops_limit)
            n = std::min(n, job.ops_limit - done);
        const uint64_t round = job.rounds;

        // Plan the batch; pre-fill some pages through the mapping.
        batch.clear();
        host::Timer tp;
        uint64_t prefilled = 0;
        for (uint64_t k = 0; k < n; ++k) {
            uint64_t pg = (cursor + k) % job.pages;
            batch.push_back(pg);
            PageDesc d{};
            d.gpa = static_cast<uint32_t>(kDataGpa + region_off + pg * kPage);
            if (rng.below(100) < prm.prefill_pct) {
                uint32_t key = page_key(ctx.seed, kTagHost, job.vm, job.vcpu, (round << 32) | pg);
                fill_page(region + pg * kPage, key);
                st[pg] = PageState{key, 0, st[pg].touched};
                ++prefilled;
            }
            d.flags = stride_flags(prm.stride_shift);
            if (uint32_t k = st[pg].guest_view()) {
                d.flags |= kExpectPattern;
                d.expect_key = k;
            }
            if (rng.below(100) < prm.write_pct) {
                d.flags |= kWrite;
                d.write_key = page_key(ctx.seed, kTagGuest, job.vm, job.vcpu, (round << 32) | pg);
            }
            descs[k] = d;
        }
        if (prefilled)
            w.ops["host_prefill"].record(tp.ns(), prefilled * kPage);
        // Every batch page is touched now (pre-fill) or by the guest below.
        for (uint64_t pg : batch)
            if (!st[pg].touched) {
                st[pg].touched = true;
                ++job.pages_touched;
            }
        if (hooks.before_guest_run)
            hooks.before_guest_run(job.vm, job.vcpu, round, region, batch);

        // The guest checks and writes the batch.
        GuestCall call;
        call.rip = job.in->entry;
        call.rsp = gvm.stack_top(job.vcpu);
        call.rsi = gvm.descs_gpa(job.vcpu);
        call.rcx = n;
        enter(vcpu, call);
        auto on_exit = [&](kvm::Vcpu& v, kvm_run& run) -> std::string {
            auto m = guest_mismatch(v, run);
            if (!m)
                return "unexpected " + describe_exit(v);
            uint64_t off = uint64_t(m->gpa) - kDataGpa; // guest_memfd offset
            uint64_t pg = off / kPage - job.first_page;
            w.verification.mismatch(fmt::format("vm{} vcpu{} round {}: guest read {:#010x} at "
                                                "guest_memfd offset {:#x} (page {}, word {}), "
                                                "expected {:#010x} ({})",
                                                job.vm, job.vcpu, round, m->seen, off,
                                                off / kPage, (off % kPage) / 4, m->expected,
                                                pg < job.pages ? key_str(st[pg].guest_view())
                                                               : "outside the vCPU's region"));
            return "";
        };
        host::Timer tr;
        RunResult rr = run_vcpu(vcpu, slot, w.ops["KVM_RUN"], on_exit, run_timeout_s);
        if (rr.kind == RunResult::stopped) {
            job.exact = false; // cut short: which pages it touched is unknown
            break;
        }
        if (rr.kind == RunResult::failed) {
            job.exact = false;
            w.fail(fmt::format("vm{} {} (round {})", job.vm, rr.failure, round));
            abort.store(true);
            break;
        }
        w.ops["guest_round"].record(tr.ns(), n * kPage);
        w.verification.pages_checked += n;

        if (hooks.before_host_verify)
            hooks.before_host_verify(job.vm, job.vcpu, round, region, batch);

        // The host checks what the guest left, through the mapping.
        host::Timer tv;
        for (uint64_t k = 0; k < n; ++k) {
            uint64_t pg = batch[k];
            const PageDesc& d = descs[k];
            PageState want = st[pg];
            if (d.flags & kWrite)
                want.guest = d.write_key;
            const uint8_t* page = region + pg * kPage;
            host::compiler_barrier();
            long bad = first_bad_word_mixed(page, want.base, want.guest, prm.stride_shift);
            if (bad >= 0) {
                uint32_t got;
                std::memcpy(&got, page + bad * 4, 4);
                bool guest_word =
                    want.guest && (uint32_t(bad) & ((1u << prm.stride_shift) - 1)) == 0;
                w.verification.mismatch(fmt::format(
                    "vm{} vcpu{} round {}: host read {:#010x} through the mapping at guest_memfd "
                    "offset {:#x} (page {}, word {}), expected {:#010x} ({} {})",
                    job.vm, job.vcpu, round, got, region_off + pg * kPage + bad * 4,
                    job.first_page + pg, bad,
                    mixed_word(want.base, want.guest, prm.stride_shift, uint32_t(bad)),
                    guest_word  ? "guest wrote"
                    : want.base ? "host pre-filled"
                                : "never written:",
                    key_str(guest_word ? want.guest : want.base)));
            }
            st[pg] = want;
        }
        w.ops["host_verify"].record(tv.ns(), n * kPage);
        w.verification.pages_checked += n;

        done += n;
        cursor = (cursor + n) % job.pages;
        ++job.rounds;
        w.progress(ctx, n, n * kPage);

        if (prm.punch_pages &&
            !punch_step(prm, job, slot, abort, run_timeout_s, st, batch, rng, round))
            break;
    }
    w.flush_progress(ctx);
}

report::WorkloadResult run(Context& ctx) {
    const uint64_t t0 = now_ns();
    const auto& p = ctx.profile;
    report::WorkloadResult r = host::start_result(ctx, "guest-fault");
    Params prm = read_params(ctx.spec);
    double run_timeout_s = prm.run_timeout_s;

    std::vector<std::string> notes;
    std::vector<std::unique_ptr<VmInstance>> vms;
    for (unsigned i = 0; i < p.vm_count; ++i) {
        vms.push_back(std::make_unique<VmInstance>());
        if (auto why = setup_vm(ctx, *vms.back(), i, notes)) {
            r.outcome = report::Outcome::skip;
            r.reason = *why;
            r.expect.gmem_files = vms.size();
            vms.clear();
            r.duration_s = double(now_ns() - t0) / 1e9;
            return r;
        }
    }

    const uint64_t pages_per_vcpu = p.gmem_size / kPage / p.vcpus;
    const unsigned nthreads = static_cast<unsigned>(threads_total(p));
    const uint64_t total_ops = static_cast<uint64_t>(ctx.spec.integer("ops"));
    std::vector<VcpuJob> jobs(nthreads);
    for (unsigned i = 0; i < p.vm_count; ++i)
        for (unsigned v = 0; v < p.vcpus; ++v) {
            unsigned t = i * p.vcpus + v;
            VcpuJob& j = jobs[t];
            j.vm = i;
            j.vcpu = v;
            j.in = vms[i].get();
            j.first_page = v * pages_per_vcpu;
            j.pages = pages_per_vcpu;
            j.ops_limit = host::ops_share(total_ops, nthreads, t); // 0 with ops: nothing to do
        }

    std::atomic<bool> abort{false};
    {
        VcpuThreads threads(run_timeout_s, prm.stop_grace_s);
        for (auto& j : jobs) {
            if (total_ops && !j.ops_limit)
                continue;
            VcpuJob* jp = &j;
            threads.spawn([&ctx, &prm, jp, &abort, run_timeout_s](RunSlot& slot) {
                try {
                    run_vcpu_job(ctx, prm, *jp, slot, abort, run_timeout_s);
                } catch (const std::exception& e) {
                    jp->out.error = e.what();
                    jp->exact = false;
                    abort.store(true);
                }
            });
        }
        threads.supervise([&] { return ctx.should_stop() || abort.load(); });
    }

    uint64_t touched = 0, rounds = 0, punched = 0, punch_checks = 0;
    bool exact = true, cut_short = false;
    std::vector<host::WorkerResult> outs;
    for (auto& j : jobs) {
        touched += j.pages_touched;
        rounds += j.rounds;
        punched += j.pages_punched;
        punch_checks += j.punch_checks;
        exact &= j.exact;
        cut_short |= !j.exact && j.out.error.empty() && j.out.failures.empty();
        outs.push_back(std::move(j.out));
    }
    r.expect.gmem_files = p.vm_count;
    r.counters["guest_rounds"] = rounds;
    r.counters["pages_punched"] = punched;
    r.counters["pages_checked_after_punch"] = punch_checks;
    // Released below: every page the run brought in leaves with the file.
    if (exact) {
        r.counters["pages_touched"] = touched;
        // The guest reads every page of each batch; a fresh VM has no SPTEs.
        r.expect.min_handouts_to_guest = touched;
        // Punched pages left the page cache once and came back on the
        // guest's read: counted in `touched` again.
        r.expect.pages_added = touched;
        r.expect.pages_removed = touched;
    }
    r.params["batch_pages"] = prm.batch;
    r.params["prefill_percent"] = prm.prefill_pct;
    r.params["write_percent"] = prm.write_pct;
    r.params["guest_stride"] = 1u << prm.stride_shift;
    r.params["run_timeout"] = prm.run_timeout_s;
    r.params["punch_pages"] = prm.punch_pages;
    r.params["cpu_vendor"] = to_string(cpu_vendor());
    if (!notes.empty())
        r.params["notes"] = notes;

    vms.clear(); // teardown and on_released() before the result is final
    host::finish_result(r, outs, t0);
    if (r.outcome == report::Outcome::pass && rounds == 0) {
        r.outcome = report::Outcome::skip;
        r.reason =
            cut_short
                ? fmt::format("no guest batch finished before the stop: a batch of {} pages "
                              "takes longer than the time given on this KVM (lower "
                              "batch_pages or raise guest_stride)",
                              prm.batch)
                : std::string("stopped before the first guest batch (no time left in the run)");
    }
    return r;
}

} // namespace

WorkloadInfo guest_fault_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "guest-fault";
    w.description =
        "vCPUs (one thread each) check and write guest_memfd pages from guest code; the "
        "host pre-fills some pages and verifies what the guest wrote through the mapping";
    w.needs =
        "KVM_CAP_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP|INIT_SHARED, x86 vCPUs in protected mode";
    w.params = {
        {"batch_pages", ParamType::integer, int64_t(64),
         "pages per guest batch (one KVM_RUN to HLT)", 1, double(kMaxDescs)},
        {"prefill_percent", ParamType::integer, int64_t(25),
         "share of batch pages the host fills through the mapping before the guest checks them", 0,
         100},
        {"write_percent", ParamType::integer, int64_t(90),
         "share of batch pages the guest writes after checking them (the rest it only reads)", 0,
         100},
        // The guest code masks the word index with stride - 1.
        {"guest_stride",
         ParamType::integer,
         int64_t(64),
         "the guest checks and writes every Nth 32-bit word of a page (power of two; 1 = every "
         "word); the host always checks whole pages",
         1,
         1024,
         {},
         {profile::power_of_two()}},
        {"run_timeout", ParamType::duration, 10.0, "a single KVM_RUN longer than this is a failure",
         0.1, 3600},
        {"punch_pages", ParamType::integer, int64_t(4),
         "pages of each batch punched per round (at most the batch), then read by the guest, "
         "which must see zero (0 = no punch step)",
         0, double(kMaxDescs)},
    };
    w.skip_reason = skip_reason;
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec&) {
        return uint64_t(p.vm_count) * (p.gmem_size + GuestVm::code_slot_size(p.vcpus));
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
