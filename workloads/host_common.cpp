#include "workloads/host_common.h"

#include "core/call_scope.h"
#include "core/error.h"

#include <algorithm>
#include <csignal>
#include <fmt/format.h>
#include <thread>

namespace gms::workloads::host {

// ---- data pattern ------------------------------------------------------------

namespace {
uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
uint64_t page_key(uint64_t seed, unsigned file, uint64_t page_off, uint32_t gen) {
    return mix(seed ^ mix(page_off + (uint64_t(file) << 48)) ^
               (uint64_t(gen) * 0x9e3779b97f4a7c15ull));
}
uint64_t word_of(uint64_t key, unsigned word) {
    uint64_t w = key + uint64_t(word) * 0xd1b54a32d192ed03ull;
    w ^= w >> 29;
    return w ? w : 1; // never 0, so a zero page never passes as data
}
} // namespace

uint64_t pattern_word(uint64_t seed, unsigned file, uint64_t page_off, unsigned word,
                      uint32_t gen) {
    return word_of(page_key(seed, file, page_off, gen), word);
}

void fill_page(uint8_t* page, uint64_t seed, unsigned file, uint64_t page_off, uint32_t gen,
               unsigned first_word) {
    uint64_t key = page_key(seed, file, page_off, gen);
    auto* w = reinterpret_cast<uint64_t*>(page);
    for (unsigned i = first_word; i < kWordsPerPage; ++i)
        w[i] = word_of(key, i);
    compiler_barrier();
}

std::optional<PageMismatch> check_page(const uint8_t* page, uint64_t seed, unsigned file,
                                       uint64_t page_off, uint32_t gen, unsigned first_word) {
    compiler_barrier();
    const auto* w = reinterpret_cast<const uint64_t*>(page);
    if (gen == 0) {
        uint64_t acc = 0;
        for (unsigned i = first_word; i < kWordsPerPage; ++i)
            acc |= w[i];
        if (acc == 0)
            return std::nullopt;
        for (unsigned i = first_word; i < kWordsPerPage; ++i)
            if (w[i])
                return PageMismatch{i * 8ull, 0, w[i]};
        return std::nullopt; // changed under us: the second read saw zeros
    }
    uint64_t key = page_key(seed, file, page_off, gen);
    for (unsigned i = first_word; i < kWordsPerPage; ++i) {
        uint64_t e = word_of(key, i);
        if (w[i] != e)
            return PageMismatch{i * 8ull, e, w[i]};
    }
    return std::nullopt;
}

std::optional<PageMismatch> check_page_zero_or(const uint8_t* page, uint64_t seed, unsigned file,
                                               uint64_t page_off, uint32_t gen) {
    compiler_barrier();
    const auto* w = reinterpret_cast<const uint64_t*>(page);
    uint64_t key = page_key(seed, file, page_off, gen);
    for (unsigned i = 0; i < kWordsPerPage; ++i) {
        uint64_t v = w[i];
        if (v != 0) {
            uint64_t e = word_of(key, i);
            if (v != e)
                return PageMismatch{i * 8ull, e, v};
        }
    }
    return std::nullopt;
}

std::string describe(unsigned file, uint64_t page_off, const PageMismatch& m,
                     const std::string& when) {
    return fmt::format("file {} offset {:#x} (+{:#x}): expected {:#018x} got {:#018x} ({})", file,
                       page_off + m.byte, m.byte, m.expected, m.got, when);
}

// ---- page bookkeeping ------------------------------------------------------------

uint64_t PageBook::present() const {
    return static_cast<uint64_t>(
        std::count_if(state.begin(), state.end(), [](uint32_t s) { return s != kAbsent; }));
}

// ---- threads -------------------------------------------------------------------

std::vector<std::vector<Region>> partition(unsigned files, uint64_t pages, unsigned threads) {
    std::vector<std::vector<Region>> out(threads);
    if (threads == 0 || files == 0 || pages == 0)
        return out;
    if (threads <= files) {
        for (unsigned f = 0; f < files; ++f)
            out[f % threads].push_back(Region{f, 0, pages});
        return out;
    }
    // Threads t, t+files, t+2*files... share file t % files.
    for (unsigned f = 0; f < files; ++f) {
        std::vector<unsigned> mine;
        for (unsigned t = f; t < threads; t += files)
            mine.push_back(t);
        uint64_t n = mine.size();
        for (uint64_t i = 0; i < n; ++i) {
            uint64_t lo = pages * i / n, hi = pages * (i + 1) / n;
            if (hi > lo)
                out[mine[i]].push_back(Region{f, lo, hi - lo});
        }
    }
    return out;
}

Range pick_range(Rng& rng, const Region& r, uint64_t max_pages, uint64_t align) {
    uint64_t a = std::max<uint64_t>(1, align);
    uint64_t end = r.first_page + r.pages;
    uint64_t lo = (r.first_page + a - 1) / a * a;
    if (lo >= end || end - lo < a)
        a = 1, lo = r.first_page;
    uint64_t room = end - lo;
    uint64_t max_units = std::max<uint64_t>(1, std::min(max_pages, room) / a);
    uint64_t len = a * (1 + rng.below(max_units));
    uint64_t starts = (room - len) / a + 1;
    return Range{r.file, lo + a * rng.below(starts), len};
}

std::string range_str(const Range& r) {
    return fmt::format("file {} [{:#x}, {:#x})", r.file, r.offset(), r.offset() + r.bytes());
}

void book_allocate(PageBook& b, PageCounts& pc, const Range& r) {
    for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg)
        if (b.state[pg] == PageBook::kAbsent) {
            b.state[pg] = PageBook::kZero;
            ++pc.added;
        }
}

void book_punch(PageBook& b, PageCounts& pc, const Range& r) {
    for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg)
        if (b.state[pg] != PageBook::kAbsent) {
            b.state[pg] = PageBook::kAbsent;
            ++pc.removed;
        }
}

bool verify_page(WorkerResult& w, PageBook& b, const uint8_t* page, unsigned file, uint64_t pg,
                 uint64_t seed, const std::string& when) {
    uint32_t& st = b.state[pg];
    uint32_t gen = st >= 2 ? st : 0;
    std::optional<PageMismatch> bad;
    void* addr = nullptr;
    Timer t;
    bool ok =
        sigbus_guarded([&] { bad = check_page(page, seed, file, pg * kPage, gen); }, &addr, page);
    auto& op = w.ops["verify"];
    op.record(t.ns(), kPage);
    if (!ok) {
        op.errors["SIGBUS"]++;
        w.fail(fmt::format("SIGBUS reading file {} offset {:#x} ({}), address {}", file, pg * kPage,
                           when, addr));
        return false;
    }
    ++w.verification.pages_checked;
    if (bad)
        w.verification.mismatch(describe(file, pg * kPage, *bad, when));
    if (st == PageBook::kAbsent) {
        st = PageBook::kZero;
        ++w.pages.added;
    }
    return true;
}

uint64_t ops_share(uint64_t total, unsigned threads, unsigned t) {
    if (total == 0 || threads == 0)
        return 0;
    return total / threads + (t < total % threads ? 1 : 0);
}

void WorkerResult::progress(Context& ctx, uint64_t nops, uint64_t nbytes) {
    pending_ops += nops;
    pending_bytes += nbytes;
    if (pending_ops >= 64)
        flush_progress(ctx);
}

void WorkerResult::flush_progress(Context& ctx) {
    ctx.progress.ops.fetch_add(pending_ops, std::memory_order_relaxed);
    ctx.progress.bytes.fetch_add(pending_bytes, std::memory_order_relaxed);
    pending_ops = pending_bytes = 0;
}

void publish_page_counts(report::WorkloadResult& r, uint64_t files, const PageCounts& pc,
                         bool exact, const std::vector<WorkerResult>& workers) {
    for (const auto& w : workers)
        exact = exact && w.failures.empty() && w.error.empty();
    r.expect.gmem_files = files;
    if (exact) {
        r.expect.pages_added = pc.added;
        r.expect.pages_removed = pc.removed;
    }
}

void WorkerResult::fail(std::string what) {
    if (failures.size() < 8)
        failures.push_back(std::move(what));
    else if (failures.size() == 8)
        failures.push_back("(more failures not listed)");
}

namespace {
nlohmann::json to_json(const profile::ParamValue& v) {
    return std::visit([](auto&& x) { return nlohmann::json(x); }, v);
}
} // namespace

report::WorkloadResult start_result(const Context& ctx, const std::string& name) {
    report::WorkloadResult r;
    r.name = name;
    r.label = ctx.spec.label.empty() ? name : ctx.spec.label;
    for (const auto& [k, v] : ctx.spec.params)
        r.params[k] = to_json(v);
    return r;
}

void finish_result(report::WorkloadResult& r, std::vector<WorkerResult>& workers, uint64_t t0_ns) {
    std::vector<std::string> failures, errors;
    for (auto& w : workers) {
        for (auto& [k, s] : w.ops)
            r.ops[k].merge(s);
        r.verification.pages_checked += w.verification.pages_checked;
        r.verification.mismatches += w.verification.mismatches;
        for (auto& m : w.verification.first_mismatches)
            if (r.verification.first_mismatches.size() < 8)
                r.verification.first_mismatches.push_back(m);
        failures.insert(failures.end(), w.failures.begin(), w.failures.end());
        if (!w.error.empty())
            errors.push_back(w.error);
    }
    r.duration_s = double(now_ns() - t0_ns) / 1e9;
    if (!errors.empty()) {
        r.outcome = report::Outcome::error;
        r.reason = errors.front();
        if (errors.size() > 1)
            r.reason += fmt::format(" (and {} more thread errors)", errors.size() - 1);
        return;
    }
    for (const auto& c : r.checks)
        if (c.outcome == report::Outcome::fail)
            failures.push_back(fmt::format("check '{}' failed: {}", c.name,
                                           c.reason.empty() ? c.observed : c.reason));
    if (r.verification.mismatches) {
        r.outcome = report::Outcome::fail;
        r.reason = fmt::format("{} verification mismatch(es); first: {}", r.verification.mismatches,
                               r.verification.first_mismatches.empty()
                                   ? "?"
                                   : r.verification.first_mismatches.front());
    } else if (!failures.empty()) {
        r.outcome = report::Outcome::fail;
        r.reason = failures.front();
        if (failures.size() > 1)
            r.reason += fmt::format(" (and {} more)", failures.size() - 1);
    } else if (r.outcome != report::Outcome::skip) {
        r.outcome = report::Outcome::pass;
    }
}

void run_threads(unsigned threads, std::vector<WorkerResult>& workers, std::atomic<bool>& abort,
                 const std::function<void(unsigned)>& body) {
    auto guarded = [&](unsigned t) {
        set_thread_role("worker");
        try {
            body(t);
        } catch (const std::exception& e) {
            workers[t].error = e.what();
            abort.store(true);
        }
    };
    if (threads == 1) {
        guarded(0);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(threads);
    try {
        for (unsigned t = 0; t < threads; ++t)
            pool.emplace_back(guarded, t);
    } catch (const std::exception& e) {
        // Could not start every thread: stop the ones that run, then report.
        abort.store(true);
        for (auto& th : pool)
            th.join();
        throw;
    }
    for (auto& th : pool)
        th.join();
}

// ---- VM + guest_memfd + mapping ----------------------------------------------------

kvm::ObservedGmem create_instance(Context& ctx, uint64_t size, uint64_t flags, bool mapped,
                                  std::map<std::string, report::OpStats>* ops) {
    kvm::ObservedGmem in;
    Timer t;
    in.vm = kvm::Vm::create(ctx.kvm, ctx.profile.vm_type);
    if (ops)
        (*ops)["create_vm"].record(t.ns());
    t = Timer();
    in.create_gmem(in.vm, size, flags, ctx.observer);
    if (ops)
        (*ops)["create_gmem"].record(t.ns(), size);
    if (mapped) {
        t = Timer();
        in.map = in.gmem.map_shared();
        if (ops)
            (*ops)["mmap"].record(t.ns(), size);
    }
    return in;
}

} // namespace gms::workloads::host
