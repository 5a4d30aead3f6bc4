// Shared pieces of the host-side workloads (host-fault, punch-hole, populate,
// lifecycle): the data pattern and page checks, a SIGBUS guard for touching
// guest_memfd mappings, page bookkeeping for the page-cache counters,
// per-thread partitioning and creating their VM + guest_memfd + mapping.
#pragma once

#include "workloads/sigbus.h"
#include "workloads/workload.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gms::workloads::host {

inline constexpr uint64_t kPage = kvm::kPageSize;
inline constexpr uint64_t kWordsPerPage = kPage / sizeof(uint64_t);
// Flags every workload that touches the memory through mmap needs.
inline constexpr uint64_t kMmapFlags = uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared;

// ---- data pattern ------------------------------------------------------------

// Word `word` of page content generation `gen` (>= 1) at byte offset `page_off`
// of file `file`. Depends only on (seed, file, offset, word, gen), so any page
// can be checked without remembering what was written. Never 0.
uint64_t pattern_word(uint64_t seed, unsigned file, uint64_t page_off, unsigned word, uint32_t gen);
void fill_page(uint8_t* page, uint64_t seed, unsigned file, uint64_t page_off, uint32_t gen,
               unsigned first_word = 0);

struct PageMismatch {
    uint64_t byte = 0; // offset in the page
    uint64_t expected = 0;
    uint64_t got = 0;
};

// Reads the whole page. gen == 0: must be all zero; else must hold `gen`'s pattern.
// Words below `first_word` are not checked (the caller checked them).
std::optional<PageMismatch> check_page(const uint8_t* page, uint64_t seed, unsigned file,
                                       uint64_t page_off, uint32_t gen, unsigned first_word = 0);
// Reads the whole page; every word must be 0 or generation `gen`'s word (the
// content of pages that racing writers fill while a puncher zeroes them).
std::optional<PageMismatch> check_page_zero_or(const uint8_t* page, uint64_t seed, unsigned file,
                                               uint64_t page_off, uint32_t gen);
// "file 0 offset 0x3000 (+0x18): expected 0x0 got 0x1234 (after punch_hole)"
std::string describe(unsigned file, uint64_t page_off, const PageMismatch& m,
                     const std::string& when);

// Defeats the compiler's knowledge of what memory holds (the kernel changes it).
inline void compiler_barrier() {
    asm volatile("" ::: "memory");
}

// ---- page bookkeeping ------------------------------------------------------------

// Per page of one file: 0 = absent from the page cache, 1 = present and zero,
// >= 2 = present holding that generation's pattern. Threads own disjoint pages,
// so plain element writes do not race.
struct PageBook {
    static constexpr uint32_t kAbsent = 0, kZero = 1;
    std::vector<uint32_t> state;
    explicit PageBook(uint64_t pages = 0) : state(pages, kAbsent) {}
    uint64_t present() const;
};

inline uint32_t next_gen(uint32_t g) {
    return g < 2 || g == UINT32_MAX ? 2 : g + 1;
}

// What the page-cache checker is told: insertions and deletions we caused.
struct PageCounts {
    uint64_t added = 0;
    uint64_t removed = 0;
    void merge(const PageCounts& o) {
        added += o.added;
        removed += o.removed;
    }
};

// ---- threads -------------------------------------------------------------------

struct Region {
    unsigned file = 0;
    uint64_t first_page = 0;
    uint64_t pages = 0;
};

// Splits `files` files of `pages` pages each between `threads` threads: with
// more threads than files each file is cut into contiguous slices, with fewer
// each thread gets whole files. Slices never overlap. A thread may get nothing
// when there are more threads than pages.
std::vector<std::vector<Region>> partition(unsigned files, uint64_t pages, unsigned threads);

// A page range of one file.
struct Range {
    unsigned file = 0;
    uint64_t first = 0; // page index
    uint64_t pages = 0;
    uint64_t offset() const { return first * kPage; }
    uint64_t bytes() const { return pages * kPage; }
};
// A random range inside `r`: start and length multiples of `align` pages
// (absolute page index; 1 if the region is too small), at most max_pages long.
Range pick_range(Rng& rng, const Region& r, uint64_t max_pages, uint64_t align);
std::string range_str(const Range& r); // "file 0 [0x1000, 0x3000)"

// Thread t's share of `total` ops (0 = unlimited stays 0).
uint64_t ops_share(uint64_t total, unsigned threads, unsigned t);

// What one worker thread produced; merged into the WorkloadResult.
struct WorkerResult {
    std::map<std::string, report::OpStats> ops;
    report::Verification verification;
    PageCounts pages;
    std::vector<std::string> failures; // kernel misbehaved (wrong errno, SIGBUS, ...)
    std::string error;                 // the tool could not go on (exception text)
    uint64_t pending_ops = 0, pending_bytes = 0;

    // Ops are published to Progress in batches to keep the atomics cold.
    void progress(Context& ctx, uint64_t nops, uint64_t nbytes);
    void flush_progress(Context& ctx);
    void fail(std::string what);
};

// What the page-cache checker compares its events with (r.expect): the file
// count always, the page counts only when the run predicted them exactly (no
// race, no failure). `exact` is and-ed with every worker being clean.
void publish_page_counts(report::WorkloadResult& r, uint64_t files, const PageCounts& pc,
                         bool exact, const std::vector<WorkerResult>& workers);

// Book updates for a range: fallocate makes absent pages present (zero),
// a punch makes present pages absent. Counted as page-cache insertions/deletions.
void book_allocate(PageBook& b, PageCounts& pc, const Range& r);
void book_punch(PageBook& b, PageCounts& pc, const Range& r);

// Reads one page through the mapping and compares it with the book (faulting
// it in if absent, which the book and counts then record). Records a "verify"
// op; false (and a failure) on SIGBUS.
bool verify_page(WorkerResult& w, PageBook& b, const uint8_t* page, unsigned file, uint64_t pg,
                 uint64_t seed, const std::string& when);

// Elapsed-time helper: `auto t = Timer(); ... stats.record(t.ns())`.
using Timer = LatencyTimer;

// Uniform double in [0, 1).
inline double unit(Rng& r) {
    return double(r.next() >> 11) * 0x1p-53;
}

// Starts the result: name, label and the effective parameters.
report::WorkloadResult start_result(const Context& ctx, const std::string& name);
// Merges workers, decides the outcome: error > fail (mismatches, failures) > pass.
void finish_result(report::WorkloadResult& r, std::vector<WorkerResult>& workers, uint64_t t0_ns);

// The frame every host workload runs in: its result, a SIGBUS guard that
// outlives every thread `body` starts, an exception from `body` recorded as
// a worker's error, then finish_result().
template <class F>
report::WorkloadResult run_host_workload(Context& ctx, const std::string& name, F&& body) {
    report::WorkloadResult r = start_result(ctx, name);
    const uint64_t t0 = now_ns();
    std::vector<WorkerResult> workers;
    try {
        SigbusGuard sigbus;
        body(r, workers);
    } catch (const std::exception& e) {
        workers.emplace_back().error = e.what();
    }
    finish_result(r, workers, t0);
    return r;
}

// Runs body(t) on `threads` threads, catching exceptions into workers[t].error.
// `abort` is raised by a thread that errors so the others stop.
void run_threads(unsigned threads, std::vector<WorkerResult>& workers, std::atomic<bool>& abort,
                 const std::function<void(unsigned)>& body);

// ---- VM + guest_memfd + mapping ----------------------------------------------------

// A VM of the profile's type with a guest_memfd the observer hears of and,
// if `mapped`, its shared mapping. With `ops`, records create_vm /
// create_gmem / mmap latencies there.
kvm::ObservedGmem create_instance(Context& ctx, uint64_t size, uint64_t flags, bool mapped,
                                  std::map<std::string, report::OpStats>* ops = nullptr);

} // namespace gms::workloads::host
