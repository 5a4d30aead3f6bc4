// host-fault: host threads fault guest_memfd pages in through a shared
// mapping. Every page's first touch must read zero (the whole page), data
// written must read back after the mapping is zapped and refaulted, and the
// page-cache insertions are predicted exactly (threads own disjoint pages).
#include "workloads/host_common.h"

#include <fmt/format.h>
#include <sys/mman.h>

namespace gms::workloads {

namespace {

using namespace host;

enum class Pattern { sequential, random, stride };

struct Config {
    Pattern pattern = Pattern::random;
    uint64_t stride = 16;
    double write_ratio = 0.5;
    bool zap = true;
    uint64_t seed = 0;
};

// The pages one thread owns, as one index space [0, n).
class Space {
  public:
    explicit Space(const std::vector<Region>& regions) : regions_(regions) {
        for (const auto& r : regions_)
            n_ += r.pages;
    }
    uint64_t size() const { return n_; }
    // (file, page) of index i.
    std::pair<unsigned, uint64_t> at(uint64_t i) const {
        for (const auto& r : regions_) {
            if (i < r.pages)
                return {r.file, r.first_page + i};
            i -= r.pages;
        }
        return {0, 0}; // unreachable for i < size()
    }
    const std::vector<Region>& regions() const { return regions_; }

  private:
    std::vector<Region> regions_;
    uint64_t n_ = 0;
};

// Visit order of one pass: n visits, each page once (except random).
class Order {
  public:
    Order(const Config& c, uint64_t n, Rng& rng) : c_(c), n_(n), rng_(rng) {}
    void restart() { i_ = r_ = k_ = 0; }
    uint64_t next() {
        uint64_t out = 0;
        switch (c_.pattern) {
        case Pattern::sequential:
            out = k_;
            break;
        case Pattern::random:
            out = rng_.below(n_);
            break;
        case Pattern::stride:
            // Columns of a stride-wide grid: 0, s, 2s, ..., then 1, 1+s, ...
            while (i_ >= n_)
                i_ = ++r_;
            out = i_;
            i_ += c_.stride;
            break;
        }
        ++k_;
        return out;
    }

  private:
    const Config& c_;
    uint64_t n_;
    Rng& rng_;
    uint64_t i_ = 0, r_ = 0, k_ = 0;
};

struct Shared {
    Context& ctx;
    Config cfg;
    std::vector<kvm::ObservedGmem>& inst;
    std::vector<PageBook>& books;
    std::atomic<bool> abort{false};
};

// A worker's stats of the hot path, looked up once (not per touch).
struct TouchOps {
    explicit TouchOps(WorkerResult& w)
        : fault_read(w.ops["fault_read"]), fault_write(w.ops["fault_write"]),
          verify(w.ops["verify"]) {}
    report::OpStats& fault_read;
    report::OpStats& fault_write;
    report::OpStats& verify;
};

// One access to one page: a read or an exchanging write as the first access
// (so that access is the fault), then a check of the whole page against what
// the book says it holds. Returns false on SIGBUS.
bool touch(Shared& s, WorkerResult& w, TouchOps& ops, unsigned f, uint64_t pg, bool write) {
    uint8_t* p = s.inst[f].page(pg);
    uint32_t& st = s.books[f].state[pg];
    const uint32_t g = st;
    const uint32_t data_gen = g >= 2 ? g : 0; // what the page must hold
    const uint64_t off = pg * kPage;
    const char* when = g == PageBook::kAbsent ? "first touch" : "refault after zap";
    void* addr = nullptr;
    std::optional<PageMismatch> bad;

    if (write) {
        const uint32_t ng = next_gen(g);
        const uint64_t nw0 = pattern_word(s.cfg.seed, f, off, 0, ng);
        uint64_t old = 0;
        Timer t;
        bool ok = sigbus_guarded(
            [&] {
                old = __atomic_exchange_n(reinterpret_cast<uint64_t*>(p), nw0, __ATOMIC_RELAXED);
            },
            &addr, p);
        ops.fault_write.record(t.ns(), kPage);
        if (!ok) {
            ops.fault_write.errors["SIGBUS"]++;
            w.fail(fmt::format("SIGBUS on write fault, file {} offset {:#x} ({}), address {}", f,
                               off, when, addr));
            return false;
        }
        uint64_t exp0 = data_gen ? pattern_word(s.cfg.seed, f, off, 0, data_gen) : 0;
        if (old != exp0)
            bad = PageMismatch{0, exp0, old};
        Timer tv;
        bool ok2 = sigbus_guarded(
            [&] {
                auto m = check_page(p, s.cfg.seed, f, off, data_gen, 1);
                if (m && !bad)
                    bad = m;
                fill_page(p, s.cfg.seed, f, off, ng, 1);
            },
            &addr);
        ops.verify.record(tv.ns(), kPage);
        if (!ok2) {
            w.fail(fmt::format("SIGBUS after a write fault, file {} offset {:#x}", f, off));
            return false;
        }
        st = ng;
    } else {
        Timer t;
        bool ok = sigbus_guarded([&] { (void)*reinterpret_cast<volatile uint64_t*>(p); }, &addr, p);
        ops.fault_read.record(t.ns(), kPage);
        if (!ok) {
            ops.fault_read.errors["SIGBUS"]++;
            w.fail(fmt::format("SIGBUS on read fault, file {} offset {:#x} ({}), address {}", f,
                               off, when, addr));
            return false;
        }
        Timer tv;
        bool ok2 =
            sigbus_guarded([&] { bad = check_page(p, s.cfg.seed, f, off, data_gen); }, &addr);
        ops.verify.record(tv.ns(), kPage);
        if (!ok2) {
            w.fail(fmt::format("SIGBUS after a read fault, file {} offset {:#x}", f, off));
            return false;
        }
        if (g == PageBook::kAbsent)
            st = PageBook::kZero;
    }
    ++w.verification.pages_checked;
    if (bad)
        w.verification.mismatch(
            describe(f, off, *bad, fmt::format("{}, {}", when, write ? "write" : "read")));
    if (g == PageBook::kAbsent)
        ++w.pages.added;
    return true;
}

// Zaps the thread's PTEs so the next pass faults every page again; the page
// cache (and the data) stays.
void zap(Shared& s, WorkerResult& w, const Space& space, bool& enabled) {
    for (const auto& r : space.regions()) {
        Timer t;
        int rc = ::madvise(s.inst[r.file].page(r.first_page), r.pages * kPage, MADV_DONTNEED);
        if (rc != 0) {
            int e = errno;
            w.ops["zap"].record_error(e);
            w.fail(fmt::format("madvise(MADV_DONTNEED) on the guest_memfd mapping failed: {}",
                               errno_name(e)));
            enabled = false;
            return;
        }
        w.ops["zap"].record(t.ns(), r.pages * kPage);
    }
}

void worker(Shared& s, WorkerResult& w, const Space& space, uint64_t ops_limit, uint64_t seed) {
    const uint64_t n = space.size();
    if (n == 0)
        return;
    Rng rng(seed);
    Order order(s.cfg, n, rng);
    const uint64_t write_threshold =
        s.cfg.write_ratio >= 1 ? UINT64_MAX : uint64_t(s.cfg.write_ratio * 0x1p64);
    bool zap_enabled = s.cfg.zap;
    uint64_t done = 0;
    TouchOps ops(w);
    for (;;) {
        order.restart();
        for (uint64_t k = 0; k < n; ++k) {
            if (ops_limit && done >= ops_limit)
                return;
            if ((k & 15) == 0 && (s.ctx.should_stop() || s.abort.load(std::memory_order_relaxed)))
                return;
            auto [f, pg] = space.at(order.next());
            bool write = s.cfg.write_ratio > 0 && rng.next() < write_threshold;
            if (!touch(s, w, ops, f, pg, write))
                return;
            ++done;
            w.progress(s.ctx, 1, kPage);
        }
        if (zap_enabled)
            zap(s, w, space, zap_enabled);
    }
}

// Reads back every present page once more, single-threaded, after the workers.
void final_verify(Shared& s, WorkerResult& w) {
    for (unsigned f = 0; f < s.inst.size(); ++f) {
        const auto& st = s.books[f].state;
        for (uint64_t pg = 0; pg < st.size(); ++pg) {
            if (st[pg] == PageBook::kAbsent)
                continue;
            if (s.ctx.control.interrupted())
                return;
            uint32_t gen = st[pg] >= 2 ? st[pg] : 0;
            std::optional<PageMismatch> bad;
            Timer t;
            void* addr = nullptr;
            bool ok = sigbus_guarded(
                [&] { bad = check_page(s.inst[f].page(pg), s.cfg.seed, f, pg * kPage, gen); },
                &addr);
            w.ops["verify"].record(t.ns(), kPage);
            if (!ok) {
                w.fail(fmt::format("SIGBUS reading back file {} offset {:#x}", f, pg * kPage));
                return;
            }
            ++w.verification.pages_checked;
            if (bad)
                w.verification.mismatch(describe(f, pg * kPage, *bad, "final read-back"));
        }
    }
}

Config parse(const Context& ctx) {
    Config c;
    const auto& p = ctx.spec.str("pattern");
    c.pattern = p == "sequential" ? Pattern::sequential
                : p == "stride"   ? Pattern::stride
                                  : Pattern::random;
    c.stride = static_cast<uint64_t>(ctx.spec.integer("stride"));
    c.write_ratio = ctx.spec.number("write_ratio");
    c.zap = ctx.spec.flag("zap");
    c.seed = ctx.seed;
    return c;
}

report::WorkloadResult run(Context& ctx) {
    return run_host_workload(
        ctx, "host-fault", [&](report::WorkloadResult& r, std::vector<WorkerResult>& workers) {
            const auto& prof = ctx.profile;
            const unsigned files = std::max(1u, prof.vm_count);
            const uint64_t pages = prof.gmem_size / kPage;
            const unsigned threads = static_cast<unsigned>(ctx.spec.integer("threads"));
            const uint64_t ops = static_cast<uint64_t>(ctx.spec.integer("ops"));

            std::vector<kvm::ObservedGmem> inst;
            std::vector<PageBook> books;
            for (unsigned f = 0; f < files; ++f) {
                inst.push_back(
                    create_instance(ctx, prof.gmem_size, prof.gmem_flags | kMmapFlags, true));
                books.emplace_back(pages);
            }
            Shared s{ctx, parse(ctx), inst, books};
            auto parts = partition(files, pages, threads);
            workers.resize(threads);
            run_threads(threads, workers, s.abort, [&](unsigned t) {
                worker(s, workers[t], Space(parts[t]), ops_share(ops, threads, t),
                       Rng::derive(ctx.seed, t));
                workers[t].flush_progress(ctx);
            });
            workers.emplace_back();
            if (!s.abort.load())
                final_verify(s, workers.back());

            PageCounts pc;
            for (auto& w : workers)
                pc.merge(w.pages);
            for (const auto& b : books)
                pc.removed += b.present();
            for (auto& in : inst)
                in.release();
            r.counters["pages_first_touched"] = pc.added;
            r.expect.min_handouts_to_user = pc.added; // each first touch faults
            // A failed fault leaves the page's presence unknown: no prediction then.
            publish_page_counts(r, files, pc, true, workers);
        });
}

} // namespace

WorkloadInfo host_fault_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "host-fault";
    w.description =
        "Host threads fault guest_memfd pages in through a MAP_SHARED mapping (sequential, random "
        "or "
        "strided), check that every first touch reads a zero page and that written data reads back "
        "after the mapping is zapped and refaulted.";
    w.needs = "KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED "
              "(Linux 6.18+), plus the profile's guest_memfd flags";
    w.params = {
        {"pattern",
         ParamType::choice,
         std::string("random"),
         "order pages are touched in",
         0,
         0,
         {"sequential", "random", "stride"}},
        {"stride", ParamType::integer, int64_t(16), "pages between touches for pattern = stride", 1,
         1e12},
        {"write_ratio", ParamType::number, 0.5, "fraction of touches that write (the rest read)", 0,
         1},
        {"zap", ParamType::boolean, true,
         "MADV_DONTNEED the thread's range after each pass so every pass faults again"},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile& p, const profile::WorkloadSpec&) {
        return gmem_skip_reason(caps, p, p.gmem_flags | kMmapFlags);
    };
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec&) {
        uint64_t files = std::max(1u, p.vm_count);
        // The file's pages, the page book (4 bytes a page) and the VM itself.
        return files * (p.gmem_size + p.gmem_size / kPage * 4 + (2ull << 20));
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
