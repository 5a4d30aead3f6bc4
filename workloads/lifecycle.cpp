// lifecycle: creates and tears down VMs, guest_memfds and their memslot
// bindings quickly and in unusual orders: close a guest_memfd while it is
// bound, destroy the VM while the guest_memfd lives on (its data must persist
// and stay readable and writable through the mapping), bind and unbind
// random ranges. Counts every kind of operation.
#include "core/error.h"
#include "workloads/host_common.h"

#include <algorithm>
#include <fmt/format.h>
#include <set>
#include <sys/mman.h>

namespace gms::workloads {

namespace {

using namespace host;

constexpr uint64_t kGpaBase = 1ull << 32;

const std::vector<std::string>& all_kinds() {
    static const std::vector<std::string> k = {"create_destroy", "bind_unbind", "close_while_bound",
                                               "destroy_vm_first"};
    return k;
}

struct Config {
    std::vector<std::string> kinds;
    uint64_t touch_pages = 8;
    uint64_t binds = 8;
    uint64_t max_bind_pages = 256;
    uint32_t slots = 32;
    uint64_t size = 0;
    uint64_t flags = 0;
    bool mapped = false;
    uint64_t seed = 0;
};

class Scenario {
  public:
    Scenario(Context& ctx, const Config& c, WorkerResult& w, Rng& rng)
        : ctx_(ctx), c_(c), w_(w), rng_(rng) {}

    void create() {
        in_ = create_instance(ctx_, c_.size, c_.flags, c_.mapped, &w_.ops);
        book_ = PageBook(c_.size / kPage);
        ++files_;
    }

    // The address a memslot over [off, off+len) of the file names: the file's
    // own mapping, or reserved address space when the file cannot be mapped.
    uint64_t uaddr(uint64_t off) {
        if (in_.map.valid())
            return reinterpret_cast<uint64_t>(in_.map.data() + off);
        if (!va_.valid())
            va_ = kvm::Mapping::map(-1, c_.size, PROT_NONE,
                                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
        return reinterpret_cast<uint64_t>(va_.data() + off);
    }

    bool bind(uint32_t slot, uint64_t first, uint64_t pages) {
        kvm::Memslot m{slot,          uapi::kMemGuestMemfd, kGpaBase + first * kPage,
                       pages * kPage, uaddr(first * kPage), in_.gmem.fd(),
                       first * kPage};
        Timer t;
        if (int e = in_.vm.try_add_memslot(m)) {
            w_.ops["bind"].record_error(e);
            w_.fail(fmt::format("binding slot {} to guest_memfd [{:#x}, {:#x}) failed: {}", slot,
                                first * kPage, (first + pages) * kPage, errno_name(e)));
            return false;
        }
        w_.ops["bind"].record(t.ns(), pages * kPage);
        return true;
    }

    bool unbind(uint32_t slot, const char* op = "unbind") {
        Timer t;
        if (int e = in_.vm.try_remove_memslot(slot)) {
            w_.ops[op].record_error(e);
            w_.fail(fmt::format("deleting memslot {} ({}) failed: {}", slot, op, errno_name(e)));
            return false;
        }
        w_.ops[op].record(t.ns());
        return true;
    }

    // Writes a new generation to a few random pages and reads each back.
    bool touch() {
        if (!in_.map.valid())
            return true;
        for (uint64_t i = 0; i < c_.touch_pages; ++i) {
            uint64_t pg = rng_.below(book_.state.size());
            uint32_t& st = book_.state[pg];
            uint32_t g = next_gen(st);
            if (st == PageBook::kAbsent)
                ++w_.pages.added;
            st = g;
            void* addr = nullptr;
            Timer t;
            if (!sigbus_guarded([&] { fill_page(in_.page(pg), c_.seed, 0, pg * kPage, g); },
                                &addr)) {
                w_.ops["write"].errors["SIGBUS"]++;
                w_.fail(fmt::format("SIGBUS writing guest_memfd offset {:#x}", pg * kPage));
                return false;
            }
            w_.ops["write"].record(t.ns(), kPage);
            if (!verify_page(w_, book_, in_.page(pg), 0, pg, c_.seed, "read back after write"))
                return false;
        }
        return true;
    }

    // Every page written so far still holds its data.
    bool verify_all(const std::string& when) {
        if (!in_.map.valid())
            return true;
        for (uint64_t pg = 0; pg < book_.state.size(); ++pg)
            if (book_.state[pg] >= 2 && !verify_page(w_, book_, in_.page(pg), 0, pg, c_.seed, when))
                return false;
        return true;
    }

    void close_gmem() {
        Timer t;
        in_.map.reset();
        in_.gmem.close();
        w_.ops["close_gmem"].record(t.ns());
    }

    void destroy_vm() {
        Timer t;
        in_.vm.destroy();
        w_.ops["destroy_vm"].record(t.ns());
    }

    // Everything gone: the page cache drops what was present.
    void finish() {
        in_.release();
        w_.pages.removed += book_.present();
        book_ = PageBook();
    }

    uint32_t random_slot() { return static_cast<uint32_t>(rng_.below(c_.slots)); }

    // ---- the scenarios ----

    bool create_destroy() {
        create();
        if (!touch())
            return false;
        // Either order must work and free everything.
        if (rng_.below(2)) {
            close_gmem();
            destroy_vm();
        } else {
            destroy_vm();
            close_gmem();
        }
        finish();
        return true;
    }

    bool bind_unbind() {
        create();
        for (uint64_t i = 0; i < c_.binds; ++i) {
            Range r = pick_range(rng_, Region{0, 0, c_.size / kPage}, c_.max_bind_pages, 1);
            uint32_t slot = random_slot();
            if (!bind(slot, r.first, r.pages))
                return false;
            if (rng_.below(4) == 0 && !touch())
                return false;
            if (!unbind(slot))
                return false;
        }
        // The file is intact after all the binding.
        if (!verify_all("after bind/unbind cycles"))
            return false;
        close_gmem();
        destroy_vm();
        finish();
        return true;
    }

    bool close_while_bound() {
        create();
        uint32_t slot = random_slot();
        if (!bind(slot, 0, c_.size / kPage) || !touch())
            return false;
        close_gmem(); // the binding dies with the file
        // Deleting the orphaned memslot must still work; or the VM goes with it.
        if (rng_.below(2) && !unbind(slot, "unbind_after_close"))
            return false;
        destroy_vm();
        finish();
        return true;
    }

    bool destroy_vm_first() {
        create();
        uint32_t slot = random_slot();
        if (!bind(slot, 0, c_.size / kPage) || !touch())
            return false;
        destroy_vm();
        // The guest_memfd holds its own reference: data stays, I/O keeps working.
        if (!verify_all("after the VM was destroyed") || !touch())
            return false;
        Range r = pick_range(rng_, Region{0, 0, c_.size / kPage}, 16, 1);
        Timer t;
        if (int e = in_.gmem.try_allocate(r.offset(), r.bytes())) {
            w_.ops["fallocate_after_destroy"].record_error(e);
            w_.fail(fmt::format("fallocate {} after the VM was destroyed: {}", range_str(r),
                                errno_name(e)));
            return false;
        }
        w_.ops["fallocate_after_destroy"].record(t.ns(), r.bytes());
        book_allocate(book_, w_.pages, r);
        t = Timer();
        if (int e = in_.gmem.try_punch_hole(r.offset(), r.bytes())) {
            w_.ops["punch_after_destroy"].record_error(e);
            w_.fail(fmt::format("punch_hole {} after the VM was destroyed: {}", range_str(r),
                                errno_name(e)));
            return false;
        }
        w_.ops["punch_after_destroy"].record(t.ns(), r.bytes());
        book_punch(book_, w_.pages, r);
        if (in_.map.valid())
            for (uint64_t pg = r.first; pg < r.first + r.pages; ++pg)
                if (!verify_page(w_, book_, in_.page(pg), 0, pg, c_.seed,
                                 "punched after the VM was destroyed"))
                    return false;
        if (!verify_all("after punching with the VM destroyed"))
            return false;
        close_gmem();
        finish();
        return true;
    }

    bool run(const std::string& kind) {
        Timer t;
        bool ok = kind == "create_destroy"      ? create_destroy()
                  : kind == "bind_unbind"       ? bind_unbind()
                  : kind == "close_while_bound" ? close_while_bound()
                                                : destroy_vm_first();
        if (ok)
            w_.ops[kind].record(t.ns());
        else
            w_.ops[kind].errors["failed"]++;
        // On failure the pages' fate is unknown: no removal count is claimed.
        in_.release();
        va_.reset();
        return ok;
    }

    uint64_t files() const { return files_; }

  private:
    Context& ctx_;
    const Config& c_;
    WorkerResult& w_;
    Rng& rng_;
    kvm::ObservedGmem in_;
    kvm::Mapping va_;
    PageBook book_;
    uint64_t files_ = 0;
};

report::WorkloadResult run(Context& ctx) {
    return run_host_workload(
        ctx, "lifecycle", [&](report::WorkloadResult& r, std::vector<WorkerResult>& workers) {
            std::atomic<uint64_t> files{0};
            const auto& prof = ctx.profile;
            Config c;
            c.kinds = ctx.spec.list("kinds"); // names checked when the profile loads
            if (c.kinds.empty())
                c.kinds = all_kinds();
            c.touch_pages = static_cast<uint64_t>(ctx.spec.integer("touch_pages"));
            c.binds = static_cast<uint64_t>(ctx.spec.integer("binds"));
            c.max_bind_pages = static_cast<uint64_t>(ctx.spec.integer("max_bind_pages"));
            c.size = ctx.spec.size("size") ? ctx.spec.size("size") : prof.gmem_size;
            int nr = ctx.caps.nr_memslots > 0 ? ctx.caps.nr_memslots : 32;
            c.slots = static_cast<uint32_t>(std::min(nr, 32));
            // Data checks need the mapping; without MMAP the lifecycle still runs.
            c.mapped = ctx.caps.has_gmem_flag(kMmapFlags);
            c.flags = prof.gmem_flags | (c.mapped ? kMmapFlags : 0);
            c.seed = ctx.seed;
            if (!c.mapped)
                r.checks.push_back(report::Check{
                    "data persists after the VM is destroyed", report::Outcome::skip,
                    "written pages read back through the mapping", "",
                    fmt::format(
                        "guest_memfd flags MMAP|INIT_SHARED not supported by this kernel "
                        "(KVM_CAP_GUEST_MEMFD_FLAGS={:#x}): no mapping to check data through",
                        ctx.caps.guest_memfd_flags)});

            const unsigned threads = static_cast<unsigned>(ctx.spec.integer("threads"));
            const uint64_t ops = static_cast<uint64_t>(ctx.spec.integer("ops"));
            std::atomic<bool> abort{false};
            workers.resize(threads);
            run_threads(threads, workers, abort, [&](unsigned t) {
                WorkerResult& w = workers[t];
                Rng rng(Rng::derive(ctx.seed, t));
                Scenario sc(ctx, c, w, rng);
                uint64_t limit = ops_share(ops, threads, t);
                if (ops && !limit)
                    return;
                for (uint64_t done = 0; !limit || done < limit; ++done) {
                    if (ctx.should_stop() || abort.load(std::memory_order_relaxed))
                        break;
                    const std::string& kind = c.kinds[rng.below(c.kinds.size())];
                    bool ok = false;
                    try {
                        ok = sc.run(kind);
                    } catch (...) {
                        files += sc.files();
                        throw;
                    }
                    if (!ok)
                        break;
                    w.progress(ctx, 1, 0);
                }
                files += sc.files();
                w.flush_progress(ctx);
            });
            PageCounts pc;
            for (auto& w : workers)
                pc.merge(w.pages);
            publish_page_counts(r, files.load(), pc, true, workers);
        });
}

} // namespace

WorkloadInfo lifecycle_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "lifecycle";
    w.description =
        "Creates and destroys VMs and guest_memfds quickly, binds and unbinds memslots, closes a "
        "guest_memfd while it is bound, destroys the VM while the guest_memfd lives on (its data "
        "must "
        "persist and stay readable and writable).";
    w.needs =
        "KVM_CREATE_GUEST_MEMFD and KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD (Linux "
        "6.8+); data checks need GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED (6.18+)";
    w.params = {
        {"kinds", ParamType::string_list, std::vector<std::string>{},
         "scenarios to pick from (default all): create_destroy, bind_unbind, close_while_bound, "
         "destroy_vm_first",
         0, 0, all_kinds()},
        {"size",
         ParamType::size,
         int64_t(0),
         "guest_memfd size per scenario; 0 = guest_memfd.size",
         0,
         1ull << 40,
         {},
         {profile::multiple_of(kPage, "the page size")}},
        {"touch_pages", ParamType::integer, int64_t(8),
         "pages written (and read back) per scenario", 0, 1 << 20},
        {"binds", ParamType::integer, int64_t(8), "bind/unbind rounds in a bind_unbind scenario", 1,
         1 << 20},
        {"max_bind_pages", ParamType::integer, int64_t(256),
         "largest range bound in bind_unbind, in pages", 1, 1ull << 28},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile& p,
                       const profile::WorkloadSpec&) -> std::optional<std::string> {
        if (!caps.user_memory2 && caps.kvm_accessible && caps.guest_memfd)
            return std::string(
                "KVM_CAP_USER_MEMORY2 is not supported: guest_memfd memslots cannot be bound");
        // MMAP is optional here: only the profile's own flags must be supported.
        return gmem_skip_reason(caps, p, p.gmem_flags);
    };
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec& spec) {
        auto threads = static_cast<uint64_t>(spec.integer("threads"));
        uint64_t size = spec.size("size") ? spec.size("size") : p.gmem_size;
        auto touch = static_cast<uint64_t>(spec.integer("touch_pages"));
        // Each thread holds one scenario: touched pages (twice in destroy_vm_first, plus a
        // 16-page fallocate), the page book and the VM.
        uint64_t pages = std::min(size / kPage, 2 * touch + 16);
        return threads * (pages * kPage + size / kPage * 4 + (2ull << 20));
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
