// punch-hole: fallocate / FALLOC_FL_PUNCH_HOLE cycles on random aligned
// ranges of a mapped guest_memfd, alone (race = none) or while host threads
// fault the same file through the mapping (race = host), a vCPU reads it
// through a guest_memfd memslot (race = guest), or both. A punched range must
// read zero afterwards; data next to it must survive. Racing host writers only
// ever store one pattern, so every word they can see is 0 or that pattern.
#include "core/call_scope.h"
#include "core/error.h"
#include "workloads/host_common.h"

#include <array>
#include <csignal>
#include <cstring>
#include <fmt/format.h>
#include <mutex>
#include <pthread.h>
#include <shared_mutex>
#include <sys/mman.h>
#include <thread>

namespace gms::workloads {

namespace {

using namespace host;

enum class Race { none, host, guest, both };
bool host_racers(Race r) {
    return r == Race::host || r == Race::both;
}
bool guest_racers(Race r) {
    return r == Race::guest || r == Race::both;
}

struct Config {
    Race race = Race::host;
    uint64_t max_pages = 64;
    uint64_t align = 1;
    uint64_t verify_every = 4;
    double write_ratio = 0.5;
    uint64_t seed = 0;
};

// Racing writers and readers only ever put generation 1 in a page, so any
// word is either 0 (punched) or gen 1's value, whatever the interleaving.
constexpr uint32_t kRaceGen = 1;

// Guest racer layout: code in an anonymous slot at GPA 0, the guest_memfd at 1 MiB.
constexpr uint64_t kCodeGpa = 0, kCodeSize = 64 << 10, kCodeEntry = 0x1000;
constexpr uint64_t kGmemGpa = 1 << 20;
constexpr uint64_t kGuestMaxGmem = 3ull << 30; // 32-bit flat addressing
constexpr uint32_t kCodeSlot = 0, kGmemSlot = 1;

struct Shared {
    Context& ctx;
    Config cfg;
    std::vector<kvm::ObservedGmem>& inst;
    std::vector<PageBook>& books;
    std::atomic<bool> abort{false};
    std::atomic<bool> done{false};
    // race = host: racers hold a chunk shared per page; a verified punch holds
    // its chunks exclusively so nobody refills the range before it is checked.
    uint64_t chunk_pages = 64;
    std::vector<std::vector<std::shared_mutex>> chunks;
};

// Checks one page against the book, faulting it in (and recording that).
bool check_against_book(Shared& s, WorkerResult& w, unsigned f, uint64_t pg, const char* when) {
    return verify_page(w, s.books[f], s.inst[f].page(pg), f, pg, s.cfg.seed, when);
}

bool do_allocate(Shared& s, WorkerResult& w, const Range& r) {
    Timer t;
    int e = s.inst[r.file].gmem.try_allocate(r.offset(), r.bytes());
    if (e) {
        w.ops["allocate"].record_error(e);
        w.fail(fmt::format("fallocate(KEEP_SIZE) {} failed: {}", range_str(r), errno_name(e)));
        return false;
    }
    w.ops["allocate"].record(t.ns(), r.pages * kPage);
    return true;
}

bool do_punch(Shared& s, WorkerResult& w, const Range& r) {
    Timer t;
    int e = s.inst[r.file].gmem.try_punch_hole(r.first * kPage, r.pages * kPage);
    if (e) {
        w.ops["punch_hole"].record_error(e);
        w.fail(fmt::format("fallocate(PUNCH_HOLE) {} failed: {}", range_str(r), errno_name(e)));
        return false;
    }
    w.ops["punch_hole"].record(t.ns(), r.pages * kPage);
    return true;
}

// Fills a range with `gen` (kRaceGen) or each page's next generation (gen = 0)
// through the mapping, faulting absent pages in.
bool do_fill(Shared& s, WorkerResult& w, const Range& r, uint32_t gen, bool book) {
    Timer t;
    for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg) {
        uint32_t g = gen;
        if (book) {
            uint32_t& st = s.books[r.file].state[pg];
            g = next_gen(st);
            if (st == PageBook::kAbsent)
                ++w.pages.added;
            st = g;
        }
        void* addr = nullptr;
        if (!sigbus_guarded(
                [&] { fill_page(s.inst[r.file].page(pg), s.cfg.seed, r.file, pg * kPage, g); },
                &addr, s.inst[r.file].page(pg))) {
            w.ops["write"].errors["SIGBUS"]++;
            w.fail(fmt::format("SIGBUS writing file {} offset {:#x}", r.file, pg * kPage));
            return false;
        }
    }
    w.ops["write"].record(t.ns(), r.pages * kPage);
    return true;
}

// Every page of the range must read zero (the whole page), right after a punch.
bool verify_zero(Shared& s, WorkerResult& w, const Range& r, bool book) {
    for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg) {
        if (book) {
            if (!check_against_book(s, w, r.file, pg, "after punch_hole"))
                return false;
            continue;
        }
        std::optional<PageMismatch> bad;
        void* addr = nullptr;
        Timer t;
        bool ok = sigbus_guarded(
            [&] { bad = check_page(s.inst[r.file].page(pg), s.cfg.seed, r.file, pg * kPage, 0); },
            &addr, s.inst[r.file].page(pg));
        w.ops["verify"].record(t.ns(), kPage);
        if (!ok) {
            w.fail(fmt::format("SIGBUS reading punched file {} offset {:#x}", r.file, pg * kPage));
            return false;
        }
        ++w.verification.pages_checked;
        if (bad)
            w.verification.mismatch(describe(r.file, pg * kPage, *bad, "after punch_hole"));
    }
    return true;
}

// ---- race = none: each thread cycles on its own pages --------------------------

bool solo_cycle(Shared& s, WorkerResult& w, Rng& rng, const std::vector<Region>& regions) {
    const Region& reg = regions[rng.below(regions.size())];
    Range r = pick_range(rng, reg, s.cfg.max_pages, s.cfg.align);
    bool alloc_first = rng.below(2) == 0;
    bool fill = rng.below(10) != 0;
    bool alloc_after = !alloc_first && rng.below(2) == 0;
    if (alloc_first) {
        if (!do_allocate(s, w, r))
            return false;
        book_allocate(s.books[r.file], w.pages, r);
    }
    if (fill && !do_fill(s, w, r, 0, true))
        return false;
    if (alloc_after) {
        // fallocate over present pages must not touch their data.
        if (!do_allocate(s, w, r))
            return false;
        book_allocate(s.books[r.file], w.pages, r);
        for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg)
            if (!check_against_book(s, w, r.file, pg, "fallocate over written pages"))
                return false;
    }
    if (!do_punch(s, w, r))
        return false;
    book_punch(s.books[r.file], w.pages, r);
    if (!verify_zero(s, w, r, true))
        return false;
    // The pages next to the hole keep their data (if they have any).
    for (uint64_t pg : {r.first - 1, r.first + r.pages}) {
        // r.first - 1 wraps for r.first == 0 and then fails the bounds check.
        if (pg < reg.first_page || pg >= reg.first_page + reg.pages)
            continue;
        if (s.books[r.file].state[pg] != PageBook::kAbsent &&
            !check_against_book(s, w, r.file, pg, "next to a punched range"))
            return false;
    }
    return true;
}

void solo_worker(Shared& s, WorkerResult& w, const std::vector<Region>& regions, uint64_t ops_limit,
                 uint64_t seed) {
    if (regions.empty())
        return;
    Rng rng(seed);
    for (uint64_t done = 0; !ops_limit || done < ops_limit; ++done) {
        if (s.ctx.should_stop() || s.abort.load(std::memory_order_relaxed))
            return;
        if (!solo_cycle(s, w, rng, regions))
            return;
        w.progress(s.ctx, 1, 0);
    }
}

// ---- race = host / guest: one puncher, racing faulters ---------------------------

void racer(Shared& s, WorkerResult& w, uint64_t seed) {
    Rng rng(seed);
    const uint64_t pages = s.books[0].state.size();
    const uint64_t write_threshold =
        s.cfg.write_ratio >= 1 ? UINT64_MAX : uint64_t(s.cfg.write_ratio * 0x1p64);
    while (!s.done.load(std::memory_order_relaxed) && !s.abort.load(std::memory_order_relaxed)) {
        unsigned f = static_cast<unsigned>(rng.below(s.inst.size()));
        uint64_t pg = rng.below(pages);
        uint8_t* p = s.inst[f].page(pg);
        bool write = s.cfg.write_ratio > 0 && rng.next() < write_threshold;
        std::optional<PageMismatch> bad;
        void* addr = nullptr;
        bool ok;
        Timer t;
        {
            std::shared_lock lock(s.chunks[f][pg / s.chunk_pages]);
            if (write)
                ok = sigbus_guarded([&] { fill_page(p, s.cfg.seed, f, pg * kPage, kRaceGen); },
                                    &addr, p);
            else
                ok = sigbus_guarded(
                    [&] { bad = check_page_zero_or(p, s.cfg.seed, f, pg * kPage, kRaceGen); },
                    &addr, p);
        }
        auto& op = w.ops[write ? "fault_write" : "fault_read"];
        op.record(t.ns(), kPage);
        if (!ok) {
            op.errors["SIGBUS"]++;
            w.fail(fmt::format("SIGBUS {} file {} offset {:#x} racing with punch_hole (address {})",
                               write ? "writing" : "reading", f, pg * kPage, addr));
            return;
        }
        if (!write) {
            ++w.verification.pages_checked;
            if (bad)
                w.verification.mismatch(describe(
                    f, pg * kPage, *bad, "racing read: each word must be 0 or the pattern"));
        }
        w.progress(s.ctx, 1, kPage);
    }
}

void puncher(Shared& s, WorkerResult& w, uint64_t ops_limit, uint64_t seed, uint64_t& verified) {
    Rng rng(seed);
    const uint64_t pages = s.books[0].state.size();
    for (uint64_t cycle = 0; !ops_limit || cycle < ops_limit; ++cycle) {
        if (s.ctx.should_stop() || s.abort.load(std::memory_order_relaxed))
            return;
        unsigned f = static_cast<unsigned>(rng.below(s.inst.size()));
        Range r = pick_range(rng, Region{f, 0, pages}, s.cfg.max_pages, s.cfg.align);
        // A guest racer only reads, so every punch can be checked.
        bool check = s.cfg.race == Race::guest || cycle % s.cfg.verify_every == 0;
        if (check) {
            std::vector<std::unique_lock<std::shared_mutex>> locks;
            if (host_racers(s.cfg.race))
                for (uint64_t c = r.first / s.chunk_pages;
                     c <= (r.first + r.pages - 1) / s.chunk_pages; ++c)
                    locks.emplace_back(s.chunks[f][c]);
            if (!do_fill(s, w, r, kRaceGen, false) || !do_punch(s, w, r) ||
                !verify_zero(s, w, r, false))
                return;
            ++verified;
        } else {
            if (rng.below(4) == 0 && !do_allocate(s, w, r))
                return;
            if (!do_punch(s, w, r))
                return;
        }
        w.progress(s.ctx, 1, 0);
    }
}

// ---- guest racer: a vCPU reading every page of the guest_memfd slot in a loop ----

// 32-bit flat protected mode, esi = base, edi = end, ebx = base:
//   loop: mov eax, [esi]; add esi, 4096; cmp esi, edi; jb loop
//         out 0x10, al; mov esi, ebx; jmp loop
constexpr uint8_t kGuestCode[] = {0x8b, 0x06, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, 0x39,
                                  0xfe, 0x72, 0xf4, 0xe6, 0x10, 0x89, 0xde, 0xeb, 0xee};
constexpr uint16_t kGuestPort = 0x10;

void on_kick(int) {}

// KVM_RUN only returns on a signal that has a handler; make sure SIGUSR1 has
// one (RunControl installs the same no-op one in the CLI).
void ensure_kick_handler() {
    struct sigaction old {};
    sigaction(SIGUSR1, nullptr, &old);
    if (!(old.sa_flags & SA_SIGINFO) && (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN)) {
        struct sigaction sa {};
        sa.sa_handler = on_kick;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, nullptr);
    }
}

class GuestRacers {
  public:
    GuestRacers(Shared& s, std::vector<kvm::Mapping>& code) : s_(s), code_(code) {}
    ~GuestRacers() { stop(); }

    // Binds the code and guest_memfd slots and starts one vCPU per VM.
    void start() {
        ensure_kick_handler();
        results_.resize(s_.inst.size());
        for (size_t i = 0; i < s_.inst.size(); ++i) {
            kvm::ObservedGmem& in = s_.inst[i];
            code_.push_back(kvm::Mapping::anonymous(kCodeSize));
            std::memcpy(code_.back().data() + kCodeEntry, kGuestCode, sizeof(kGuestCode));
            in.vm.add_memslot(kvm::Memslot{kCodeSlot, 0, kCodeGpa, kCodeSize,
                                           reinterpret_cast<uint64_t>(code_.back().data()), -1, 0});
            in.vm.add_memslot(
                kvm::Memslot{kGmemSlot, uapi::kMemGuestMemfd, kGmemGpa, in.gmem.size(),
                             reinterpret_cast<uint64_t>(in.map.data()), in.gmem.fd(), 0});
            kvm::Vcpu& v = in.vm.add_vcpu(0, s_.ctx.kvm);
            kvm::setup_flat_protected_mode(v, kCodeEntry, kCodeEntry);
            kvm_regs regs = v.regs();
            regs.rsi = regs.rbx = kGmemGpa;
            regs.rdi = kGmemGpa + in.gmem.size();
            v.set_regs(regs);
        }
        for (size_t i = 0; i < s_.inst.size(); ++i)
            threads_.emplace_back([this, i] { loop(i); });
    }

    void stop() {
        stopping_.store(true);
        for (;;) {
            bool all = true;
            for (size_t i = 0; i < threads_.size(); ++i) {
                if (exited_[i].load())
                    continue;
                all = false;
                // immediate_exit covers a kick that lands just before KVM_RUN.
                s_.inst[i].vm.vcpus()[0]->run_state()->immediate_exit = 1;
                pthread_kill(threads_[i].native_handle(), SIGUSR1);
            }
            if (all)
                break;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        for (auto& t : threads_)
            t.join();
        threads_.clear();
    }

    std::vector<WorkerResult>& results() { return results_; }
    uint64_t passes() const { return passes_.load(); }

  private:
    void loop(size_t i) {
        WorkerResult& w = results_[i];
        set_thread_role("vcpu (guest racer)");
        try {
            kvm::Vcpu& v = *s_.inst[i].vm.vcpus()[0];
            Timer pass;
            while (!stopping_.load() && !s_.abort.load()) {
                int e = v.try_run();
                if (e == EINTR || e == EAGAIN)
                    continue;
                if (e) {
                    w.ops["guest_pass"].record_error(e);
                    w.fail(fmt::format("KVM_RUN of the guest racer (VM {}) failed: {}", i,
                                       errno_name(e)));
                    break;
                }
                kvm_run* run = v.run_state();
                if (run->exit_reason == KVM_EXIT_IO && run->io.port == kGuestPort) {
                    w.ops["guest_pass"].record(pass.ns(), s_.inst[i].gmem.size());
                    passes_.fetch_add(1);
                    pass = Timer();
                    continue;
                }
                w.fail(fmt::format("guest racer (VM {}) exited with {} at rip {:#x}", i,
                                   kvm::exit_reason_name(run->exit_reason), v.regs().rip));
                break;
            }
        } catch (const std::exception& e) {
            w.error = e.what();
        }
        exited_[i].store(true);
    }

    Shared& s_;
    std::vector<kvm::Mapping>& code_;
    std::vector<std::thread> threads_;
    std::vector<WorkerResult> results_;
    std::atomic<bool> stopping_{false};
    std::atomic<uint64_t> passes_{0};
    std::array<std::atomic<bool>, 64> exited_{}; // vm_count <= 64 (profile limit)
};

Config parse(const Context& ctx) {
    Config c;
    const auto& race = ctx.spec.str("race");
    c.race = race == "none"    ? Race::none
             : race == "guest" ? Race::guest
             : race == "both"  ? Race::both
                               : Race::host;
    c.max_pages = static_cast<uint64_t>(ctx.spec.integer("max_pages"));
    c.align = static_cast<uint64_t>(ctx.spec.integer("align_pages"));
    c.verify_every = static_cast<uint64_t>(ctx.spec.integer("verify_every"));
    c.write_ratio = ctx.spec.number("write_ratio");
    c.seed = ctx.seed;
    return c;
}

report::WorkloadResult run(Context& ctx) {
    auto result = run_host_workload(
        ctx, "punch-hole", [&](report::WorkloadResult& r, std::vector<WorkerResult>& workers) {
            const auto& prof = ctx.profile;
            const unsigned files = std::max(1u, prof.vm_count);
            const uint64_t pages = prof.gmem_size / kPage;
            const unsigned threads = static_cast<unsigned>(ctx.spec.integer("threads"));
            const uint64_t ops = static_cast<uint64_t>(ctx.spec.integer("ops"));

            std::vector<kvm::Mapping> code; // guest racer code, outlives the VMs
            std::vector<kvm::ObservedGmem> inst;
            std::vector<PageBook> books;
            for (unsigned f = 0; f < files; ++f) {
                inst.push_back(
                    create_instance(ctx, prof.gmem_size, prof.gmem_flags | kMmapFlags, true));
                books.emplace_back(pages);
            }
            Shared s{ctx, parse(ctx), inst, books};
            uint64_t verified = 0;

            if (s.cfg.race == Race::none) {
                auto parts = partition(files, pages, threads);
                workers.resize(threads);
                run_threads(threads, workers, s.abort, [&](unsigned t) {
                    solo_worker(s, workers[t], parts[t], ops_share(ops, threads, t),
                                Rng::derive(ctx.seed, t));
                    workers[t].flush_progress(ctx);
                });
            } else {
                // One puncher (thread 0), host racers (threads 1..), vCPU readers.
                const unsigned racers = host_racers(s.cfg.race) ? threads : 0;
                if (racers) {
                    s.chunk_pages = std::max<uint64_t>(64, s.cfg.max_pages);
                    s.chunks.resize(files);
                    for (auto& c : s.chunks)
                        c = std::vector<std::shared_mutex>((pages + s.chunk_pages - 1) /
                                                           s.chunk_pages);
                }
                GuestRacers guests(s, code);
                if (guest_racers(s.cfg.race))
                    guests.start();
                workers.resize(racers + 1);
                run_threads(racers + 1, workers, s.abort, [&](unsigned t) {
                    if (t == 0) {
                        set_thread_role("puncher");
                        puncher(s, workers[0], ops, Rng::derive(ctx.seed, 0), verified);
                        s.done.store(true);
                    } else {
                        set_thread_role("racer");
                        racer(s, workers[t], Rng::derive(ctx.seed, t));
                    }
                    workers[t].flush_progress(ctx);
                });
                guests.stop();
                if (guest_racers(s.cfg.race))
                    r.counters["guest_passes"] = guests.passes();
                for (auto& g : guests.results())
                    workers.push_back(std::move(g));
            }

            PageCounts pc;
            for (auto& w : workers)
                pc.merge(w.pages);
            for (const auto& b : books)
                pc.removed += b.present();
            for (auto& in : inst)
                in.release();
            if (s.cfg.race != Race::none)
                r.counters["verified_punches"] = verified;
            // Only a race-free run can predict the page cache exactly.
            publish_page_counts(r, files, pc, s.cfg.race == Race::none, workers);
        });
    if (result.params.value("race", "") == "none" && result.ops.count("punch_hole"))
        result.counters["verified_punches"] =
            result.ops["punch_hole"].count; // every solo punch is checked
    // A guest race in which the vCPU never finished a pass raced nothing: not
    // a pass (seen under TCG on a loaded host: one punch took 0.76 s of a 1 s run).
    auto passes = result.counters.find("guest_passes");
    if (result.outcome == report::Outcome::pass && passes != result.counters.end() &&
        passes->second == 0) {
        result.outcome = report::Outcome::skip;
        result.reason = "nothing raced: the vCPU finished no pass over the guest_memfd before "
                        "the workload's time ran out (raise duration)";
    }
    return result;
}

} // namespace

WorkloadInfo punch_hole_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "punch-hole";
    w.description =
        "fallocate / FALLOC_FL_PUNCH_HOLE cycles on random aligned ranges of a mapped guest_memfd, "
        "alone or racing host threads (or a vCPU) that fault the same pages; punched ranges must "
        "read "
        "zero and their neighbours keep their data.";
    w.needs =
        "KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED (Linux "
        "6.18+); race = guest or both also binds a KVM_MEM_GUEST_MEMFD memslot and runs a vCPU per "
        "VM";
    w.params = {
        {"race",
         ParamType::choice,
         std::string("host"),
         "what races the punches: none (each thread punches its own pages, exact page-cache "
         "counts), "
         "host (threads fault the mapping), guest (a vCPU per VM reads every page), both",
         0,
         0,
         {"none", "host", "guest", "both"}},
        {"max_pages", ParamType::integer, int64_t(64), "longest range punched, in pages", 1,
         1 << 20},
        // Above max_pages, every range would be one alignment unit long: longer than max_pages.
        {"align_pages",
         ParamType::integer,
         int64_t(1),
         "ranges start and end on multiples of this (at most max_pages)",
         1,
         1 << 20,
         {},
         {profile::at_most("max_pages")}},
        {"verify_every", ParamType::integer, int64_t(4),
         "race = host: every Nth punch keeps the racers out of its range and checks it reads zero",
         1, 1e9},
        {"write_ratio", ParamType::number, 0.5,
         "race = host: fraction of racing touches that write", 0, 1},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile& p,
                       const profile::WorkloadSpec& spec) -> std::optional<std::string> {
        if (auto why = gmem_skip_reason(caps, p, p.gmem_flags | kMmapFlags))
            return why;
        if (const auto& race = spec.str("race"); race == "guest" || race == "both") {
            if (!caps.user_memory2)
                return std::string(
                    "race = guest/both needs KVM_CAP_USER_MEMORY2 (guest_memfd memslots)");
            if (p.gmem_size > kGuestMaxGmem)
                return fmt::format("race = guest/both addresses the guest_memfd with 32-bit code: "
                                   "guest_memfd.size "
                                   "must be at most {}",
                                   format_size(kGuestMaxGmem));
            if (p.vm_type != uapi::kX86DefaultVm)
                return std::string(
                    "race = guest/both runs plain guest code: needs vm.type = default");
        }
        return std::nullopt;
    };
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec&) {
        uint64_t files = std::max(1u, p.vm_count);
        return files * (p.gmem_size + p.gmem_size / kPage * 4 + kCodeSize + (2ull << 20));
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
