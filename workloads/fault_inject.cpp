// fault-inject: error-path sweeps of guest_memfd calls with fail-nth.
//
// For each call (create, allocate, punch, bind, unbind, set_attributes,
// pre_fault, first_touch) and N = 1, 2, ...: build what the call needs
// (nothing of it under injection), arm /proc/thread-self/fail-nth with N,
// make the call, read fail-nth back ("0": the N-th allocation of this thread
// failed), then check what a failed allocation must leave: the call failed
// with ENOMEM (SIGBUS for a touch) or succeeded, the file's page cache holds
// what the outcome implies and empties when punched, no memslot binding
// outlives a failed bind or unbind, the call works again without injection,
// every fd is closed again and the kernel log has no finding. The sweep of a
// call ends at the first N that injects nothing (every allocation the call
// reached was failed once) or at a bound (max_n, its share of the time, ops).
// Memory: the call's folios are drained onto the unevictable LRU while in the
// file (guest_memfd's mapping is unevictable), so one leaked with an extra
// reference stays counted in Unevictable (/proc/meminfo) after everything
// was released: it must come back to where it was before each attempt.
#include "workloads/fault_inject.h"

#include "core/error.h"
#include "core/kmsg.h"
#include "workloads/host_common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <functional>
#include <memory>
#include <optional>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <thread>

namespace gms::workloads {

namespace {

using namespace host;
using report::FaultSweep;
using report::Outcome;

constexpr uint64_t kGpa = 1ull << 32;  // slot 0 of every fixture
constexpr uint64_t kGpa2 = 1ull << 33; // slot 1: re-binding the same file range
constexpr uint32_t kSlot = 0, kSlot2 = 1;

// ---- what the checks read ---------------------------------------------------------

size_t open_fds() {
    size_t n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (dirent* e = ::readdir(d))
            n += e->d_name[0] != '.';
        ::closedir(d);
        --n; // the directory's own fd
    }
    return n;
}

// Pages of the mapping present in the page cache (mincore() looks the file's
// pages up for a shared file mapping, mapped or not).
uint64_t resident_pages(const kvm::Mapping& m) {
    std::vector<unsigned char> vec(m.size() / kPage);
    if (::mincore(m.data(), m.size(), vec.data()) != 0)
        throw SysError("mincore", fmt::format("{} bytes of a guest_memfd mapping", m.size()),
                       errno);
    return uint64_t(std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return c & 1; }));
}

bool write_sysctl(const char* path) {
    UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
    return fd && ::write(fd.get(), "1", 1) == 1;
}

// Empties every CPU's LRU batches: a new page-cache folio waits in one until
// a batch fills, and only then goes onto an LRU list. mbind(MPOL_MF_MOVE) on
// a page of our own calls lru_cache_disable(), which drains them on all CPUs
// (the cheapest way from userspace; compact_memory also compacts). Drained
// while they are in the file, guest_memfd's folios go onto the unevictable
// list (its mapping is unevictable); drained after a truncation, a leaked
// folio would land on an evictable list, among everyone else's pages.
class LruDrain {
  public:
    LruDrain() : page_(kvm::Mapping::anonymous(kPage)) {}
    // false: this kernel cannot (no CONFIG_NUMA: ENOSYS).
    bool drain() {
        return ::syscall(SYS_mbind, page_.data(), kPage, 0 /*MPOL_DEFAULT*/, nullptr, 0UL,
                         1u << 1 /*MPOL_MF_MOVE*/) == 0;
    }

  private:
    kvm::Mapping page_;
};

// Unevictable in kB once the LRU batches are drained and the per-CPU vmstat
// deltas folded (stat_refresh; it may report EINVAL for a negative counter
// and still fold them). nullopt when the batches cannot be drained: a freed
// folio still in a batch, or a leaked one drained too late, would mislead.
std::optional<int64_t> unevictable_kb(LruDrain& lru) {
    if (!lru.drain())
        return std::nullopt;
    write_sysctl("/proc/sys/vm/stat_refresh");
    auto info = read_file("/proc/meminfo");
    if (!info)
        return std::nullopt;
    auto at = info->find("\nUnevictable:");
    if (at == std::string::npos)
        return std::nullopt;
    return std::strtoll(info->c_str() + at + 13, nullptr, 10);
}

// ---- one attempt's objects ----------------------------------------------------------

struct Fixture {
    kvm::ObservedGmem in; // VM, file, mapping
    kvm::Mapping va;      // a slot's userspace_addr when the file is not mapped
    kvm::Vcpu* vcpu = nullptr;
    UniqueFd created; // the create call's file, adopted once fail-nth is read back

    uint64_t uaddr() const {
        return reinterpret_cast<uint64_t>(in.map.valid() ? in.map.data() : va.data());
    }
    kvm::Memslot slot(uint32_t id, uint64_t gpa, uint64_t size) const {
        return kvm::Memslot{id, uapi::kMemGuestMemfd, gpa, size, uaddr(), in.gmem.fd(), 0};
    }
    void release() {
        vcpu = nullptr;
        in.release();
        va.reset();
    }
};

// What one armed call ended in. Plain data: building it must not allocate
// (a malloc could make a system call before fail-nth is read back).
struct Result {
    int errnum = 0;
    bool sigbus = false;
    bool ok() const { return !errnum && !sigbus; }
    // "" (success), an errno name or SIGBUS.
    std::string err() const { return sigbus ? fault::kSigbus : errnum ? errno_name(errnum) : ""; }
};
Result from_errno(int e) {
    return Result{e, false};
}

struct Config {
    std::vector<std::string> calls;
    unsigned max_n = 0;
    uint64_t size = 0;
    uint64_t flags = 0; // the mapped file: profile flags | MMAP | INIT_SHARED
    uint64_t ops = 0;
    double attempt_s = 20; // an attempt slower than this ends the call's sweep ("slow")
};

class Sweeper {
  public:
    Sweeper(Context& ctx, const Config& c, report::WorkloadResult& r)
        : ctx_(ctx), c_(c), r_(r), fail_nth_(kFailNthPath) {}

    void sweep(const std::string& call, double deadline_s);

    uint64_t files() const { return files_; }
    uint64_t armed() const { return armed_; }
    uint64_t slowest_ms() const { return slowest_ms_; }

  private:
    // ---- building blocks: un-armed, a failure is the tool's (throws) or the kernel's (noted)

    void make_vm(Fixture& f, unsigned long type = uapi::kX86DefaultVm) {
        f.in.vm = kvm::Vm::create(ctx_.kvm, type);
    }
    void make_file(Fixture& f, uint64_t flags) {
        f.in.create_gmem(f.in.vm, c_.size, flags, ctx_.observer);
        ++files_;
        if (flags & uapi::kGuestMemfdFlagMmap)
            f.in.map = f.in.gmem.map_shared();
        else
            f.va = kvm::Mapping::map(-1, c_.size, PROT_NONE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
    }
    void mapped_file(Fixture& f) {
        make_vm(f);
        make_file(f, c_.flags);
    }
    void allocate_all(Fixture& f) {
        if (int e = f.in.gmem.try_allocate(0, c_.size))
            throw SysError("fallocate", fmt::format("KEEP_SIZE 0 {:#x} (setup)", c_.size), e);
    }
    void bind(Fixture& f, uint32_t id, uint64_t gpa) {
        if (int e = f.in.vm.try_set_region_raw(f.slot(id, gpa, c_.size)))
            throw SysError("ioctl", fmt::format("KVM_SET_USER_MEMORY_REGION2 slot {} (setup)", id),
                           e);
    }

    // The call works again without injection; `what` names it for the failure.
    bool again(FaultSweep& s, unsigned n, const std::string& what, int e) {
        if (!e)
            return true;
        s.failure(fmt::format("N={}: {} without injection afterwards failed: {}", n, what,
                              errno_name(e)));
        return false;
    }
    // The file's page cache holds `want` pages (mincore through the mapping).
    void expect_resident(FaultSweep& s, unsigned n, const Fixture& f, uint64_t want,
                         const std::string& when, bool leak) {
        uint64_t got = resident_pages(f.in.map);
        if (got == want)
            return;
        std::string what = fmt::format(
            "N={}: {} pages of the file in the page cache {}, expected {}", n, got, when, want);
        leak ? s.leak(std::move(what)) : s.failure(std::move(what));
    }
    // Punches the whole file: nothing may be left in its page cache.
    void punch_all_empty(FaultSweep& s, unsigned n, Fixture& f) {
        if (!again(s, n, "punching the whole file", f.in.gmem.try_punch_hole(0, c_.size)))
            return;
        expect_resident(s, n, f, 0, "after punching the whole file", true);
    }
    // After a memslot over [0, size) of the file is gone (deleted or never
    // made), a new slot over the same range binds: no binding outlived it.
    void rebind_free(FaultSweep& s, unsigned n, Fixture& f, const std::string& after) {
        int e = f.in.vm.try_set_region_raw(f.slot(kSlot2, kGpa2, c_.size));
        if (e == EEXIST) {
            s.leak(fmt::format("N={}: binding the same file range to another memslot after {} "
                               "returned EEXIST: a binding outlived its memslot",
                               n, after));
            return;
        }
        if (again(s, n, fmt::format("binding the file range to another memslot after {}", after),
                  e))
            again(s, n, "deleting that memslot",
                  f.in.vm.try_set_region_raw(f.slot(kSlot2, kGpa2, 0)));
    }

    // ---- the calls: setup (un-armed), the armed call, the checks after it

    struct CallDef {
        std::string syscall;
        std::function<void(Fixture&)> setup;
        // Must not allocate in userspace: between arm and read-back only the call runs.
        std::function<Result(Fixture&)> call;
        std::function<void(FaultSweep&, unsigned, Fixture&, const Result&)> after;
    };
    CallDef define(const std::string& call);
    std::optional<std::string> skip_reason(const std::string& call);

    Context& ctx_;
    const Config& c_;
    report::WorkloadResult& r_;
    fault::FailNth fail_nth_;
    KmsgWatcher kmsg_;
    LruDrain lru_;
    uint64_t files_ = 0;
    uint64_t armed_ = 0;
    uint64_t slowest_ms_ = 0;

    void progress(const FaultSweep& s, const std::string& what);
};

std::optional<std::string> Sweeper::skip_reason(const std::string& call) {
    const Caps& caps = ctx_.caps;
    if (call == "pre_fault" && !caps.pre_fault_memory)
        return std::string("KVM_CAP_PRE_FAULT_MEMORY=0 on this kernel");
    if (call == "set_attributes") {
        if (!caps.vm_type_supported(uapi::kX86SwProtectedVm))
            return fmt::format("KVM_X86_SW_PROTECTED_VM is not a VM type here "
                               "(KVM_CAP_VM_TYPES={:#x}; CONFIG_KVM_SW_PROTECTED_VM)",
                               caps.vm_types);
        kvm::Vm vm = kvm::Vm::create(ctx_.kvm, uapi::kX86SwProtectedVm);
        long attrs = vm.check_extension(uapi::kCapMemoryAttributes);
        if (attrs < 0 || !(uint64_t(attrs) & uapi::kMemoryAttributePrivate))
            return fmt::format("KVM_CAP_MEMORY_ATTRIBUTES={:#x} on a sw_protected VM: no PRIVATE",
                               attrs);
    }
    return std::nullopt;
}

Sweeper::CallDef Sweeper::define(const std::string& call) {
    const uint64_t size = c_.size, pages = size / kPage;
    if (call == "create")
        return {"KVM_CREATE_GUEST_MEMFD", [this](Fixture& f) { make_vm(f); },
                [this](Fixture& f) {
                    int fd = f.in.vm.try_create_guest_memfd_raw(c_.size, c_.flags);
                    if (fd < 0)
                        return from_errno(-fd);
                    f.created.reset(fd);
                    return Result{};
                },
                [this](FaultSweep& s, unsigned n, Fixture& f, const Result& r) {
                    if (r.ok()) {
                        // The observer hears of it only now: its work is not the call's.
                        f.in.adopt(kvm::GuestMemfd(std::move(f.created), c_.size, c_.flags),
                                   ctx_.observer);
                        ++files_;
                    }
                    if (again(s, n, "KVM_CREATE_GUEST_MEMFD",
                              f.in.try_create_gmem(f.in.vm, c_.size, c_.flags, ctx_.observer)))
                        ++files_;
                }};
    if (call == "allocate")
        return {"fallocate(KEEP_SIZE)", [this](Fixture& f) { mapped_file(f); },
                [size](Fixture& f) { return from_errno(f.in.gmem.try_allocate(0, size)); },
                [this, size, pages](FaultSweep& s, unsigned n, Fixture& f, const Result& r) {
                    // A failed fallocate may leave what it allocated before the failure.
                    // No residency check after fallocate: mincore() counts only uptodate
                    // folios and guest_memfd marks a folio uptodate when it first hands it
                    // out (zeroed), not when fallocate adds it (measured on 7.3.4-gms:
                    // 0 of 16 pages after a successful fallocate).
                    (void)r;
                    (void)pages;
                    if (!again(s, n, "fallocate", f.in.gmem.try_allocate(0, size)))
                        return;
                    punch_all_empty(s, n, f);
                }};
    if (call == "punch")
        return {"fallocate(PUNCH_HOLE|KEEP_SIZE)",
                [this](Fixture& f) {
                    mapped_file(f);
                    allocate_all(f);
                    bind(f, kSlot, kGpa); // the punch invalidates KVM's mappings of a bound range
                },
                [size](Fixture& f) { return from_errno(f.in.gmem.try_punch_hole(0, size)); },
                [this](FaultSweep& s, unsigned n, Fixture& f, const Result& r) {
                    if (r.ok())
                        expect_resident(s, n, f, 0, "after the punch succeeded", true);
                    punch_all_empty(s, n, f);
                }};
    if (call == "bind")
        return {"KVM_SET_USER_MEMORY_REGION2(KVM_MEM_GUEST_MEMFD)",
                [this](Fixture& f) {
                    mapped_file(f);
                    allocate_all(f); // a file reference leaked by a failed bind pins these
                },
                [this, size](Fixture& f) {
                    return from_errno(f.in.vm.try_set_region_raw(f.slot(kSlot, kGpa, size)));
                },
                [this, size](FaultSweep& s, unsigned n, Fixture& f, const Result& r) {
                    if (r.ok() && !again(s, n, "deleting the memslot the bind made",
                                         f.in.vm.try_set_region_raw(f.slot(kSlot, kGpa, 0))))
                        return;
                    // Same slot, same range: EEXIST means a memslot or binding survived.
                    int e = f.in.vm.try_set_region_raw(f.slot(kSlot, kGpa, size));
                    if (e == EEXIST) {
                        s.leak(fmt::format("N={}: binding again returned EEXIST: a memslot or "
                                           "binding outlived the {} bind",
                                           n, r.ok() ? "deleted" : "failed"));
                        return;
                    }
                    if (!again(s, n, "KVM_SET_USER_MEMORY_REGION2 (bind)", e) ||
                        !again(s, n, "deleting that memslot",
                               f.in.vm.try_set_region_raw(f.slot(kSlot, kGpa, 0))))
                        return;
                    rebind_free(s, n, f, "the bind and its delete");
                }};
    if (call == "unbind")
        return {"KVM_SET_USER_MEMORY_REGION2(size 0) of a guest_memfd slot",
                [this](Fixture& f) {
                    mapped_file(f);
                    allocate_all(f);
                    bind(f, kSlot, kGpa);
                },
                [this](Fixture& f) {
                    return from_errno(f.in.vm.try_set_region_raw(f.slot(kSlot, kGpa, 0)));
                },
                [this](FaultSweep& s, unsigned n, Fixture& f, const Result& r) {
                    if (!r.ok()) {
                        // A failed delete leaves the memslot: deleting it again must work
                        // (EINVAL: it was gone after all).
                        int e = f.in.vm.try_set_region_raw(f.slot(kSlot, kGpa, 0));
                        if (e == EINVAL)
                            s.failure(fmt::format("N={}: the delete failed ({}) yet the memslot "
                                                  "was gone (deleting again: EINVAL)",
                                                  n, r.err()));
                        else if (!again(s, n, "deleting the memslot", e))
                            return;
                    }
                    rebind_free(s, n, f, r.ok() ? "the unbind" : "the failed unbind and a retry");
                }};
    if (call == "set_attributes")
        return {"KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on a sw_protected VM",
                [this](Fixture& f) {
                    make_vm(f, uapi::kX86SwProtectedVm);
                    // INIT_SHARED is not offered to VMs with private memory.
                    make_file(f, ctx_.profile.gmem_flags & ~kMmapFlags);
                    allocate_all(f);
                    bind(f, kSlot, kGpa);
                },
                [size](Fixture& f) {
                    return from_errno(f.in.vm.try_set_memory_attributes(
                        kGpa, size, uapi::kMemoryAttributePrivate));
                },
                [this, size](FaultSweep& s, unsigned n, Fixture& f, const Result&) {
                    if (again(s, n, "KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)",
                              f.in.vm.try_set_memory_attributes(kGpa, size,
                                                                uapi::kMemoryAttributePrivate)))
                        again(s, n, "KVM_SET_MEMORY_ATTRIBUTES(0) back to shared",
                              f.in.vm.try_set_memory_attributes(kGpa, size, 0));
                }};
    if (call == "pre_fault")
        return {"KVM_PRE_FAULT_MEMORY",
                [this](Fixture& f) {
                    mapped_file(f);
                    bind(f, kSlot, kGpa);
                    f.vcpu = &f.in.vm.add_vcpu(0, ctx_.kvm);
                },
                [size](Fixture& f) { return from_errno(f.vcpu->try_pre_fault(kGpa, size)); },
                [this, size, pages](FaultSweep& s, unsigned n, Fixture& f, const Result&) {
                    // The whole range, without injection (the ioctl may stop early).
                    uint64_t gpa = kGpa, left = size;
                    for (int rounds = 0; left && rounds < 1000; ++rounds) {
                        uint64_t remaining = left;
                        int e = f.vcpu->try_pre_fault(gpa, left, &remaining);
                        if (e == EINTR || e == EAGAIN)
                            continue;
                        if (!again(s, n, "KVM_PRE_FAULT_MEMORY", e))
                            return;
                        gpa += left - remaining;
                        left = remaining;
                    }
                    if (left) {
                        s.failure(fmt::format("N={}: KVM_PRE_FAULT_MEMORY made no progress ({:#x} "
                                              "bytes left)",
                                              n, left));
                        return;
                    }
                    expect_resident(s, n, f, pages, "after pre-faulting every page", false);
                    punch_all_empty(s, n, f);
                }};
    // first_touch
    return {"first write to a page through mmap", [this](Fixture& f) { mapped_file(f); },
            [](Fixture& f) {
                volatile uint8_t* p = f.in.page(0);
                return Result{0, !sigbus_guarded([&] { *p = 0x5a; })};
            },
            [this](FaultSweep& s, unsigned n, Fixture& f, const Result& r) {
                volatile uint8_t* p = f.in.page(0);
                uint8_t v = 0;
                if (!r.ok() && !sigbus_guarded([&] { *p = 0x5a; })) {
                    s.failure(fmt::format("N={}: writing the page again without injection raised "
                                          "SIGBUS",
                                          n));
                    return;
                }
                if (!sigbus_guarded([&] { v = *p; }) || v != 0x5a) {
                    s.failure(fmt::format("N={}: the page reads back {:#x}, expected 0x5a", n, v));
                    return;
                }
                expect_resident(s, n, f, 1, "after the first touch", false);
                punch_all_empty(s, n, f);
            }};
}

void Sweeper::sweep(const std::string& call, double deadline_s) {
    FaultSweep& s = r_.fault_sweeps.emplace_back();
    s.call = call;
    if (auto why = skip_reason(call)) {
        s.outcome = Outcome::skip;
        s.reason = *why;
        s.syscall = call;
        return;
    }
    CallDef def = define(call);
    s.syscall = def.syscall;
    auto& op = r_.ops[call];
    if (now_ns() >= uint64_t(deadline_s * 1e9)) {
        // No time left even for the warm-up: not swept at all, and said so.
        s.bounded_by = "time";
        s.outcome = Outcome::skip;
        s.reason = "incomplete: not swept, the workload's time was used up by the calls before";
        progress(s, "not swept (no time left)");
        return;
    }
    kmsg_.collect(); // only what the sweep causes counts
    // One untimed round first, so that what the first VM of a run sets up for
    // good (caches, module state) is not counted as a leak.
    {
        Fixture warm;
        def.setup(warm);
    }
    const std::optional<int64_t> unevictable_before = unevictable_kb(lru_);

    uint64_t slowest_ns = 0; // the longest attempt so far
    for (unsigned n = 1;; ++n) {
        if (n > c_.max_n) {
            s.bounded_by = "max_n";
            break;
        }
        if (ctx_.control.should_stop()) {
            s.bounded_by = "stop";
            break;
        }
        if (now_ns() >= uint64_t(deadline_s * 1e9)) {
            s.bounded_by = "time";
            break;
        }
        if (c_.ops && armed_ >= c_.ops) {
            s.bounded_by = "ops";
            break;
        }
        if (slowest_ns > uint64_t(c_.attempt_s * 1e9)) {
            // One attempt (fixture, armed call, checks) took longer than a
            // whole attempt may: the sweep stops rather than overrun the run.
            s.bounded_by = "slow";
            break;
        }
        const uint64_t attempt_t0 = now_ns();
        const size_t fds_before = open_fds();
        const std::optional<int64_t> unevictable_at_start = unevictable_kb(lru_);
        Fixture f;
        def.setup(f);
        if (int e = fail_nth_.try_arm(n))
            throw SysError("write", fmt::format("{} (N={})", kFailNthPath, n), e);
        Timer t;
        Result res = def.call(f);
        const uint64_t ns = t.ns();
        int rerr = 0;
        const bool injected = fail_nth_.injected(&rerr);
        if (rerr)
            throw SysError("read", fmt::format("{} after {} (N={})", kFailNthPath, call, n), rerr);
        // The call's folios onto the unevictable list while they are in the file.
        lru_.drain();
        ++armed_;
        ++s.attempts;
        if (!s.first_n)
            s.first_n = n;
        s.last_n = n;
        const std::string err = res.err();
        if (res.ok())
            op.record(ns, 0);
        else if (res.errnum)
            op.record_error(res.errnum);
        else {
            ++op.count;
            ++op.errors[err];
        }
        if (injected) {
            ++s.faults_injected;
            if (res.ok())
                ++s.succeeded_despite_fault;
            else
                ++s.errnos[err];
            if (!res.ok() && !fault::clean_failure(call, err))
                s.failure(
                    fmt::format("N={}: {} failed with {} (an allocation failure must end "
                                "in {})",
                                n, def.syscall, err,
                                call == "first_touch" ? "success or SIGBUS" : "success or ENOMEM"));
        } else if (!res.ok()) {
            s.failure(
                fmt::format("N={}: no fault was injected yet {} failed: {}", n, def.syscall, err));
        }
        def.after(s, n, f, res);
        f.release();
        const size_t fds_after = open_fds();
        if (fds_after != fds_before)
            s.leak(fmt::format("N={}: {} fds open after everything was closed, {} before", n,
                               fds_after, fds_before));
        if (unevictable_at_start) {
            // A folio leaked with an extra reference stays on the unevictable
            // list once its file is gone. Measured again before calling it one.
            std::optional<int64_t> now;
            for (int i = 0; i < 3; ++i) {
                now = unevictable_kb(lru_);
                if (!now || *now <= *unevictable_at_start)
                    break;
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            if (now && *now > *unevictable_at_start)
                s.leak(fmt::format("N={}: Unevictable grew by {} kB, every VM, file and mapping "
                                   "released (a guest_memfd folio leaked with a reference)",
                                   n, *now - *unevictable_at_start));
        }
        for (const auto& k : kmsg_.collect())
            s.failure(fmt::format("N={}: kernel log {}: {}", n, k.kind, k.line));
        ctx_.progress.ops.fetch_add(1, std::memory_order_relaxed);
        slowest_ns = std::max(slowest_ns, now_ns() - attempt_t0);
        if (n % 25 == 0)
            progress(s, fmt::format("at N={}", n));
        if (!injected) {
            s.exhausted = true;
            break;
        }
    }

    if (unevictable_before)
        if (auto after = unevictable_kb(lru_))
            s.unevictable_delta_kb = *after - *unevictable_before;
    slowest_ms_ = std::max(slowest_ms_, slowest_ns / 1000000);
    if (s.attempts == 0) {
        s.outcome = Outcome::skip;
        s.reason = fmt::format("incomplete: nothing armed, the sweep was bounded by {} before N=1",
                               s.bounded_by);
    } else if (!s.exhausted) {
        // An unfinished sweep is no pass: the allocations past last_n were
        // never failed.
        s.outcome = Outcome::skip;
        s.reason = fmt::format(
            "incomplete: bounded by {} after N {}..{} ({} faults injected; slowest attempt "
            "{} ms): the call's allocations past N={} were not failed",
            s.bounded_by == "slow" ? fmt::format("slow attempts (one over {} s)", c_.attempt_s)
                                   : s.bounded_by,
            s.first_n, s.last_n, s.faults_injected, slowest_ns / 1000000, s.last_n);
    }
    if (s.failures || s.leaks) {
        s.outcome = Outcome::fail;
        s.reason = !s.first_failures.empty() ? s.first_failures.front() : s.first_leaks.front();
    }
    progress(s, s.exhausted ? "exhausted" : "bounded by " + s.bounded_by);
}

// One line per sweep on stderr (the lab's serial log keeps it): where a run
// that overruns spent its time.
void Sweeper::progress(const FaultSweep& s, const std::string& what) {
    fmt::print(stderr, "fault-inject: {} {} after {:.1f} s: N {}..{}, {} faults injected\n", s.call,
               what, double(now_ns() - ctx_.started_ns) / 1e9, s.first_n, s.last_n,
               s.faults_injected);
    std::fflush(stderr);
}


report::WorkloadResult run(Context& ctx) {
    report::WorkloadResult r = start_result(ctx, "fault-inject");
    const uint64_t t0 = now_ns();
    Config c;
    c.calls = ctx.spec.list("calls");
    if (c.calls.empty())
        c.calls = fault::call_names();
    c.max_n = unsigned(ctx.spec.integer("max_n"));
    c.size = ctx.profile.gmem_size;
    c.flags = ctx.profile.gmem_flags | kMmapFlags;
    c.ops = uint64_t(ctx.spec.integer("ops"));
    c.attempt_s = double(ctx.spec.integer("attempt_s"));
    std::vector<WorkerResult> workers(1);
    std::unique_ptr<fault::DebugfsSettings> settings;
    try {
        settings = std::make_unique<fault::DebugfsSettings>(kDebugfsDir, fault::sweep_settings());
    } catch (const EnvError& e) {
        // debugfs not writable (not root): nothing can be armed.
        r.outcome = Outcome::skip;
        r.reason = e.what();
        r.duration_s = double(now_ns() - t0) / 1e9;
        return r;
    }
    try {
        SigbusGuard sigbus;
        Sweeper sw(ctx, c, r);
        const double end_s =
            ctx.time_budget_s > 0 ? double(ctx.started_ns) / 1e9 + ctx.time_budget_s : 1e18;
        for (size_t i = 0; i < c.calls.size(); ++i) {
            // Each call gets an equal share of what is left.
            double now_s = double(now_ns()) / 1e9;
            double deadline = now_s + (end_s - now_s) / double(c.calls.size() - i);
            sw.sweep(c.calls[i], deadline);
        }
        r.expect.gmem_files = sw.files();
        r.counters["armed_calls"] = sw.armed();
        r.counters["slowest_attempt_ms"] = sw.slowest_ms();
    } catch (const std::exception& e) {
        workers[0].error = e.what();
    }
    // Restored on every way out: here, and by the destructor if this throws.
    for (const auto& f : settings->restore())
        workers.emplace_back().error = "could not restore the fault-injection setting " + f;
    uint64_t injected = 0;
    for (const auto& s : r.fault_sweeps) {
        r.checks.push_back(fault::sweep_check(s));
        injected += s.faults_injected;
    }
    r.counters["faults_injected"] = injected;
    // Calls not swept to the end make the workload incomplete, not a pass.
    std::vector<std::string> incomplete;
    for (const auto& s : r.fault_sweeps)
        if (s.outcome == Outcome::skip && s.reason.starts_with("incomplete"))
            incomplete.push_back(s.call + " (" + (s.bounded_by.empty() ? "?" : s.bounded_by) + ")");
    if (!incomplete.empty()) {
        r.outcome = Outcome::skip;
        r.reason =
            fmt::format("incomplete: {} of {} calls not swept until an N injected nothing: "
                        "{}",
                        incomplete.size(), r.fault_sweeps.size(), fmt::join(incomplete, ", "));
    }
    finish_result(r, workers, t0);
    return r;
}

} // namespace

WorkloadInfo fault_inject_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "fault-inject";
    w.description =
        "Error-path sweeps: arms /proc/thread-self/fail-nth around each guest_memfd call "
        "(create, allocate, punch, bind, unbind, set_attributes, pre_fault, first_touch) for N = "
        "1.. until no fault is injected; each injected fault must end in ENOMEM (SIGBUS for a "
        "touch) or success, leak no page, binding, fd or memory, leave the kernel log clean, and "
        "the call must work again.";
    w.needs = "CONFIG_FAULT_INJECTION (fail-nth), CONFIG_FAILSLAB and CONFIG_FAIL_PAGE_ALLOC with "
              "CONFIG_FAULT_INJECTION_DEBUG_FS (debugfs mounted, writable: root), guest_memfd "
              "with MMAP|INIT_SHARED (6.18+) and KVM_CAP_USER_MEMORY2; set_attributes needs "
              "KVM_X86_SW_PROTECTED_VM, pre_fault KVM_CAP_PRE_FAULT_MEMORY. Runs on default "
              "VMs (set_attributes: sw_protected) whatever vm.type says";
    w.params = {
        {"threads", ParamType::integer, int64_t(1),
         "1: fail-nth is per thread and the leak checks read machine-wide counters, so calls "
         "are swept one at a time",
         1, 1},
        {"calls", ParamType::string_list, std::vector<std::string>{},
         "calls to sweep (default all): create, allocate, punch, bind, unbind, set_attributes, "
         "pre_fault, first_touch",
         0, 0, fault::call_names()},
        {"max_n", ParamType::integer, int64_t(2000),
         "highest N armed per call; a call still failing at max_n is reported as bounded", 1,
         1 << 20},
        {"attempt_s", ParamType::integer, int64_t(20),
         "seconds one attempt (fixture, armed call, checks) may take; after a slower one the "
         "call's sweep ends, bounded by \"slow\"",
         1, 3600},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile& p,
                       const profile::WorkloadSpec&) -> std::optional<std::string> {
        if (!caps.fail_nth)
            return fmt::format("{} is missing: the kernel lacks CONFIG_FAULT_INJECTION",
                               kFailNthPath);
        if (!caps.debugfs)
            return fmt::format("debugfs is not mounted at {} (mount -t debugfs none {})",
                               kDebugfsDir, kDebugfsDir);
        if (!caps.failslab || !caps.fail_page_alloc)
            return fmt::format("{}/{} is missing: the kernel lacks {} (or "
                               "CONFIG_FAULT_INJECTION_DEBUG_FS)",
                               kDebugfsDir, caps.failslab ? "fail_page_alloc" : "failslab",
                               caps.failslab ? "CONFIG_FAIL_PAGE_ALLOC" : "CONFIG_FAILSLAB");
        if (caps.kvm_accessible && caps.guest_memfd && !caps.user_memory2)
            return std::string(
                "KVM_CAP_USER_MEMORY2 is not supported: guest_memfd memslots cannot be bound");
        // The page-cache checks read the file through its mapping.
        return gmem_skip_reason(caps, p, p.gmem_flags | kMmapFlags);
    };
    w.memory_estimate = [](const profile::Profile& p, const profile::WorkloadSpec&) {
        // One fixture (and the warm-up's) at a time: the file, a VM, a vCPU.
        return 2 * (p.gmem_size + (4ull << 20));
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
