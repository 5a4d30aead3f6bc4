// populate: fills guest_memfd ranges every way the kernel offers —
// fallocate, memcpy through the mapping, write()/pwrite() (patch-series WRITE
// flag), KVM_PRE_FAULT_MEMORY through a vCPU — and checks that everything
// reads back through the mapping: allocated pages as zero, written pages as
// the data. Ways this kernel lacks are checks with outcome skip and the reason.
#include "workloads/host_common.h"

#include <cstring>
#include <fmt/format.h>
#include <mutex>

namespace gms::workloads {

namespace {

using namespace host;

constexpr uint64_t kGpa = 1ull << 32; // where the guest_memfd slot sits (pre-fault)
constexpr uint32_t kSlot = 0;

enum Method { kFallocate, kMemcpy, kPwrite, kPreFault, kPunch, kMethods };
constexpr const char* kOpName[kMethods] = {"fallocate", "memcpy", "pwrite", "pre_fault",
                                           "punch_hole"};

struct Config {
    uint64_t max_pages = 64;
    double punch_ratio = 0.1;
    uint64_t seed = 0;
};

struct Shared {
    Context& ctx;
    Config cfg;
    std::vector<kvm::ObservedGmem>& inst;
    std::vector<PageBook>& books;
    bool can_pwrite = false;
    std::atomic<bool> can_pre_fault{false};
    std::atomic<bool> abort{false};
    // A pre-fault refused as unsupported turns the check into a skip.
    std::mutex why_mu;
    std::string pre_fault_skip;
};

// Page-sized pattern of each page's next generation, in `buf`; updates the book.
void stage(Shared& s, WorkerResult& w, const Range& r, std::vector<uint8_t>& buf) {
    auto& b = s.books[r.file];
    for (uint64_t i = 0; i < r.pages; ++i) {
        uint32_t& st = b.state[r.first + i];
        uint32_t g = next_gen(st);
        fill_page(buf.data() + i * kPage, s.cfg.seed, r.file, (r.first + i) * kPage, g);
        if (st == PageBook::kAbsent)
            ++w.pages.added;
        st = g;
    }
}

bool do_fallocate(Shared& s, WorkerResult& w, const Range& r) {
    Timer t;
    if (int e = s.inst[r.file].gmem.try_allocate(r.offset(), r.bytes())) {
        w.ops["fallocate"].record_error(e);
        w.fail(fmt::format("fallocate(KEEP_SIZE) {} failed: {}", range_str(r), errno_name(e)));
        return false;
    }
    w.ops["fallocate"].record(t.ns(), r.bytes());
    book_allocate(s.books[r.file], w.pages, r);
    return true;
}

bool do_memcpy(Shared& s, WorkerResult& w, const Range& r, std::vector<uint8_t>& buf) {
    stage(s, w, r, buf);
    void* addr = nullptr;
    Timer t;
    bool ok = sigbus_guarded(
        [&] {
            std::memcpy(s.inst[r.file].page(r.first), buf.data(), r.bytes());
            compiler_barrier();
        },
        &addr);
    if (!ok) {
        w.ops["memcpy"].errors["SIGBUS"]++;
        w.fail(fmt::format("SIGBUS copying into {} (address {})", range_str(r), addr));
        return false;
    }
    w.ops["memcpy"].record(t.ns(), r.bytes());
    return true;
}

bool do_pwrite(Shared& s, WorkerResult& w, const Range& r, std::vector<uint8_t>& buf) {
    stage(s, w, r, buf);
    Timer t;
    uint64_t done = 0;
    while (done < r.bytes()) {
        ssize_t n =
            s.inst[r.file].gmem.try_pwrite(buf.data() + done, r.bytes() - done, r.offset() + done);
        if (n == -EINTR)
            continue;
        if (n <= 0) {
            int e = n == 0 ? EIO : int(-n);
            w.ops["pwrite"].record_error(e);
            w.fail(fmt::format("pwrite {} stopped at +{:#x}: {}", range_str(r), done,
                               n == 0 ? "wrote 0 bytes" : errno_name(e)));
            return false;
        }
        done += uint64_t(n);
    }
    w.ops["pwrite"].record(t.ns(), r.bytes());
    return true;
}

bool do_pre_fault(Shared& s, WorkerResult& w, const Range& r) {
    kvm::Vcpu& v = *s.inst[r.file].vm.vcpus()[0];
    Timer t;
    uint64_t gpa = kGpa + r.offset(), left = r.bytes();
    while (left) {
        uint64_t remaining = left;
        int e = v.try_pre_fault(gpa, left, &remaining);
        uint64_t progressed = left - std::min(left, remaining);
        gpa += progressed;
        left -= progressed;
        if (e == EINTR || e == EAGAIN)
            continue;
        if (e == EOPNOTSUPP || e == ENOTTY) {
            // The cap is there but this VM cannot pre-fault (e.g. no TDP).
            std::lock_guard lock(s.why_mu);
            if (s.can_pre_fault.exchange(false))
                s.pre_fault_skip =
                    fmt::format("KVM_PRE_FAULT_MEMORY returned {} for this VM", errno_name(e));
            if (progressed == 0 && left == r.bytes())
                return true; // nothing happened: not a population
            w.fail(fmt::format("KVM_PRE_FAULT_MEMORY {} returned {} after partial progress",
                               range_str(r), errno_name(e)));
            return false;
        }
        if (e) {
            w.ops["pre_fault"].record_error(e);
            w.fail(fmt::format("KVM_PRE_FAULT_MEMORY gpa {:#x} size {:#x} ({}) failed: {}", gpa,
                               left, range_str(r), errno_name(e)));
            return false;
        }
        if (!progressed && left) {
            w.fail(
                fmt::format("KVM_PRE_FAULT_MEMORY {} returned 0 without progress", range_str(r)));
            return false;
        }
    }
    w.ops["pre_fault"].record(t.ns(), r.bytes());
    book_allocate(s.books[r.file], w.pages, r);
    return true;
}

bool do_punch(Shared& s, WorkerResult& w, const Range& r) {
    Timer t;
    if (int e = s.inst[r.file].gmem.try_punch_hole(r.offset(), r.bytes())) {
        w.ops["punch_hole"].record_error(e);
        w.fail(fmt::format("fallocate(PUNCH_HOLE) {} failed: {}", range_str(r), errno_name(e)));
        return false;
    }
    w.ops["punch_hole"].record(t.ns(), r.bytes());
    book_punch(s.books[r.file], w.pages, r);
    return true;
}

void worker(Shared& s, WorkerResult& w, const std::vector<Region>& regions, uint64_t ops_limit,
            uint64_t seed) {
    if (regions.empty())
        return;
    Rng rng(seed);
    std::vector<uint8_t> buf(s.cfg.max_pages * kPage);
    for (uint64_t done = 0; !ops_limit || done < ops_limit; ++done) {
        if (s.ctx.should_stop() || s.abort.load(std::memory_order_relaxed))
            return;
        Range r = pick_range(rng, regions[rng.below(regions.size())], s.cfg.max_pages, 1);
        // Draw the method the same way whatever the kernel offers, so a seed
        // gives the same ranges everywhere; unavailable ways fall back to memcpy.
        Method m = unit(rng) < s.cfg.punch_ratio ? kPunch : Method(rng.below(4));
        if (m == kPwrite && !s.can_pwrite)
            m = kMemcpy;
        if (m == kPreFault && !s.can_pre_fault.load())
            m = kMemcpy;
        bool ok = true;
        switch (m) {
        case kFallocate:
            ok = do_fallocate(s, w, r);
            break;
        case kMemcpy:
            ok = do_memcpy(s, w, r, buf);
            break;
        case kPwrite:
            ok = do_pwrite(s, w, r, buf);
            break;
        case kPreFault:
            ok = do_pre_fault(s, w, r);
            break;
        case kPunch:
            ok = do_punch(s, w, r);
            break;
        default:
            break;
        }
        if (!ok)
            return;
        if (m != kPunch) {
            std::string when = fmt::format("after {}", kOpName[m]);
            for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg)
                if (!verify_page(w, s.books[r.file], s.inst[r.file].page(pg), r.file, pg,
                                 s.cfg.seed, when))
                    return;
        }
        w.progress(s.ctx, 1, m == kPunch ? 0 : r.bytes());
    }
}

// Without the WRITE flag, pwrite() on a guest_memfd must fail and change nothing.
report::Check pwrite_refused(Shared& s, WorkerResult& w, uint64_t write_flag) {
    report::Check c;
    c.name = "pwrite refused without the WRITE flag";
    c.expected = "pwrite() on a guest_memfd created without the WRITE flag fails";
    std::vector<uint8_t> page(kPage);
    fill_page(page.data(), s.cfg.seed, 0, 0, 2);
    ssize_t n = s.inst[0].gmem.try_pwrite(page.data(), kPage, 0);
    if (n < 0) {
        c.outcome = report::Outcome::pass;
        c.observed = fmt::format("pwrite failed with {}", errno_name(int(-n)));
        // Nothing may have reached the file: page 0 must still read zero.
        verify_page(w, s.books[0], s.inst[0].page(0), 0, 0, s.cfg.seed, "after a refused pwrite");
        return c;
    }
    c.outcome = report::Outcome::fail;
    c.observed = fmt::format("pwrite wrote {} bytes at offset 0", n);
    c.reason = fmt::format("flags {:#x} lack WRITE ({:#x}) yet pwrite() succeeded",
                           s.inst[0].gmem.flags(), write_flag);
    if (n > 0) {
        // Keep the book honest: the (partial) page now holds data we did not track.
        s.books[0].state[0] = 2;
        ++w.pages.added;
    }
    return c;
}

report::WorkloadResult run(Context& ctx) {
    return run_host_workload(
        ctx, "populate", [&](report::WorkloadResult& r, std::vector<WorkerResult>& workers) {
            const auto& prof = ctx.profile;
            const auto& caps = ctx.caps;
            const unsigned files = std::max(1u, prof.vm_count);
            const uint64_t pages = prof.gmem_size / kPage;
            const unsigned threads = static_cast<unsigned>(ctx.spec.integer("threads"));
            const uint64_t ops = static_cast<uint64_t>(ctx.spec.integer("ops"));
            const uint64_t write_flag = 1ull << prof.bits.write;
            const bool can_write = caps.has_gmem_flag(write_flag);
            const bool can_pre_fault = caps.pre_fault_memory;
            uint64_t flags = prof.gmem_flags | kMmapFlags | (can_write ? write_flag : 0);

            std::vector<kvm::ObservedGmem> inst;
            std::vector<PageBook> books;
            for (unsigned f = 0; f < files; ++f) {
                inst.push_back(create_instance(ctx, prof.gmem_size, flags, true));
                books.emplace_back(pages);
                if (can_pre_fault) {
                    // Pre-faulting goes through a memslot bound to the guest_memfd
                    // (userspace_addr = its own mapping, as the selftests do).
                    kvm::ObservedGmem& in = inst.back();
                    in.vm.add_memslot(
                        kvm::Memslot{kSlot, uapi::kMemGuestMemfd, kGpa, prof.gmem_size,
                                     reinterpret_cast<uint64_t>(in.map.data()), in.gmem.fd(), 0});
                    in.vm.add_vcpu(0, ctx.kvm);
                }
            }
            Shared s{ctx, Config{}, inst, books};
            s.cfg.max_pages = static_cast<uint64_t>(ctx.spec.integer("max_pages"));
            s.cfg.punch_ratio = ctx.spec.number("punch_ratio");
            s.cfg.seed = ctx.seed;
            s.can_pwrite = can_write;
            s.can_pre_fault = can_pre_fault;

            workers.resize(threads);
            WorkerResult setup;
            if (!can_write)
                r.checks.push_back(pwrite_refused(s, setup, write_flag));

            auto parts = partition(files, pages, threads);
            run_threads(threads, workers, s.abort, [&](unsigned t) {
                worker(s, workers[t], parts[t], ops_share(ops, threads, t),
                       Rng::derive(ctx.seed, t));
                workers[t].flush_progress(ctx);
            });

            // Read back every present page once more.
            WorkerResult final;
            for (unsigned f = 0; f < files && !s.abort.load(); ++f)
                for (uint64_t pg = 0; pg < pages && !ctx.control.interrupted(); ++pg)
                    if (books[f].state[pg] != PageBook::kAbsent &&
                        !verify_page(final, books[f], inst[f].page(pg), f, pg, ctx.seed,
                                     "final read-back"))
                        break;
            workers.push_back(std::move(setup));
            workers.push_back(std::move(final));

            PageCounts pc;
            for (auto& w : workers)
                pc.merge(w.pages);
            for (const auto& b : books)
                pc.removed += b.present();
            for (auto& in : inst)
                in.release();

            auto method_check = [&](const std::string& name, const char* op, bool available,
                                    const std::string& why_not) {
                report::Check c;
                c.name = name;
                c.expected = "ranges populated this way read back through the mapping";
                if (!available) {
                    c.outcome = report::Outcome::skip;
                    c.reason = why_not;
                } else {
                    uint64_t n = 0, errs = 0;
                    for (auto& w : workers)
                        if (auto it = w.ops.find(op); it != w.ops.end()) {
                            n += it->second.count;
                            for (const auto& [_, k] : it->second.errors)
                                errs += k;
                        }
                    c.observed = fmt::format("{} {} operation(s), {} failed", n, op, errs);
                    if (errs) {
                        c.outcome = report::Outcome::fail;
                        c.reason = fmt::format("{} failed {} time(s); see the failures", op, errs);
                    } else if (n == 0) {
                        c.outcome = report::Outcome::skip;
                        c.reason = "the random sequence did not pick this way before the run ended";
                    } else {
                        c.outcome = report::Outcome::pass;
                    }
                }
                r.checks.push_back(c);
            };
            method_check("populate by fallocate", "fallocate", true, "");
            method_check("populate by memcpy through the mapping", "memcpy", true, "");
            method_check(
                "populate by write()/pwrite() (WRITE flag)", "pwrite", can_write,
                fmt::format(
                    "guest_memfd flag WRITE (bit {}, set with flag_bits.write) not supported by "
                    "this kernel (KVM_CAP_GUEST_MEMFD_FLAGS={:#x})",
                    prof.bits.write, caps.guest_memfd_flags));
            std::string pf_why =
                !can_pre_fault ? "KVM_CAP_PRE_FAULT_MEMORY=0 on this kernel" : s.pre_fault_skip;
            method_check("populate by KVM_PRE_FAULT_MEMORY", "pre_fault",
                         can_pre_fault && s.pre_fault_skip.empty(), pf_why);

            publish_page_counts(r, files, pc, true, workers);
        });
}

} // namespace

WorkloadInfo populate_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "populate";
    w.description =
        "Populates guest_memfd ranges by fallocate, memcpy through the mapping, write()/pwrite() "
        "(WRITE flag) and KVM_PRE_FAULT_MEMORY, with occasional punches, and reads everything "
        "back.";
    w.needs =
        "KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED (Linux "
        "6.18+). Optional: the WRITE flag (patch series) for pwrite(), KVM_CAP_PRE_FAULT_MEMORY "
        "for pre-faulting through a guest_memfd memslot";
    w.params = {
        {"max_pages", ParamType::integer, int64_t(64), "longest range populated at once, in pages",
         1, 1 << 16},
        {"punch_ratio", ParamType::number, 0.1,
         "fraction of operations that punch a range out again", 0, 1},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile& p, const profile::WorkloadSpec&) {
        return gmem_skip_reason(caps, p, p.gmem_flags | kMmapFlags);
    };
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec& spec) {
        uint64_t files = std::max(1u, p.vm_count);
        auto threads = static_cast<uint64_t>(spec.integer("threads"));
        uint64_t buf = static_cast<uint64_t>(spec.integer("max_pages")) * kPage;
        return files * (p.gmem_size + p.gmem_size / kPage * 4 + (4ull << 20)) + threads * buf;
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
