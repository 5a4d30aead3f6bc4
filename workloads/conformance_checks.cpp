#include "workloads/conformance_checks.h"

#include "core/error.h"
#include "core/util.h"
#include "workloads/sigbus.h"
#include "workloads/workload.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gms::workloads::conformance {

namespace {

using report::Check;
using report::Outcome;

// fallocate modes that may be missing from older libc headers.
constexpr int kFallocCollapseRange = 0x08;
constexpr int kFallocZeroRange = 0x10;
constexpr int kFallocInsertRange = 0x20;
constexpr int kFallocUnshareRange = 0x40;
constexpr int kFallocWriteZeroes = 0x80;

constexpr uint32_t kMemLogDirtyPages = 1u << 0; // KVM_MEM_LOG_DIRTY_PAGES
constexpr uint32_t kMemReadonly = 1u << 1;      // KVM_MEM_READONLY

uint64_t page_size() {
    static const uint64_t p = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    return p;
}

std::string result_str(int err) {
    return err == 0 ? "success" : errno_name(err);
}

std::string hex(uint64_t v) {
    return fmt::format("{:#x}", v);
}

// A skipped check still says what it would have expected.
void set_skip(Check& c, std::string expected, std::string reason) {
    c.expected = std::move(expected);
    c.outcome = Outcome::skip;
    c.reason = std::move(reason);
    if (c.observed.empty())
        c.observed = "not run";
}

std::string errno_expectation(int want, const std::string& source) {
    return fmt::format("{} ({})", result_str(want), source);
}

void expect_errno(Check& c, int want, int got, const std::string& source) {
    c.expected = errno_expectation(want, source);
    c.observed = result_str(got);
    c.outcome = got == want ? Outcome::pass : Outcome::fail;
    if (c.outcome == Outcome::fail)
        c.reason = fmt::format("kernel returned {} where {} says {}", result_str(got), source,
                               result_str(want));
}

// Several inputs that share one expectation; observed lists every case, or
// only the ones that differ when there are many.
class Cases {
  public:
    void add(const std::string& label, bool ok, const std::string& observed) {
        ++total_;
        if (!ok)
            ++bad_;
        lines_.push_back({label + ": " + observed + (ok ? "" : " (!)"), ok});
    }
    void finish(Check& c, std::string expected, size_t list_all_up_to = 12) {
        c.expected = std::move(expected);
        std::string obs;
        bool list_all = total_ <= list_all_up_to;
        for (const auto& [line, ok] : lines_) {
            if (!list_all && ok)
                continue;
            obs += obs.empty() ? line : "; " + line;
        }
        if (!list_all)
            obs = bad_ == 0 ? fmt::format("all {} cases as expected", total_)
                            : fmt::format("{} of {} cases differ: {}", bad_, total_, obs);
        c.observed = obs;
        c.outcome = bad_ == 0 ? Outcome::pass : Outcome::fail;
        if (bad_)
            c.reason = fmt::format("{} of {} cases differ from the expectation", bad_, total_);
    }

  private:
    std::vector<std::pair<std::string, bool>> lines_;
    size_t total_ = 0, bad_ = 0;
};

struct Env {
    const kvm::Kvm& kvm;
    const Options& opt;
    uint64_t supported = 0;  // KVM_CAP_GUEST_MEMFD_FLAGS on a VM of opt.vm_type
    uint64_t attributes = 0; // KVM_CAP_MEMORY_ATTRIBUTES on that VM
    bool gmem = false;       // KVM_CAP_GUEST_MEMFD on that VM
    bool memory2 = false;    // KVM_CAP_USER_MEMORY2

    kvm::Vm new_vm() const { return kvm::Vm::create(kvm, opt.vm_type); }
    bool has(uint64_t f) const { return (supported & f) == f; }
    uint64_t write_flag() const { return 1ull << opt.bits.write; }
    std::string flags_str(uint64_t f) const { return kvm::flags_to_string(f, opt.bits); }
    std::string lacks(uint64_t f) const {
        return fmt::format("KVM_CAP_GUEST_MEMFD_FLAGS={:#x} on this VM type does not advertise {}",
                           supported, flags_str(f));
    }

    kvm::GmemObserver& observer() const {
        static kvm::GmemObserver nobody;
        return opt.observer ? *opt.observer : nobody;
    }
    // A guest_memfd on `vm`, which stays the check's (several files per VM):
    // 0 and `out` set, or errno.
    int try_create(kvm::Vm& vm, uint64_t size, uint64_t flags, kvm::ObservedGmem& out) const {
        return out.try_create_gmem(vm, size, flags, observer());
    }
    kvm::ObservedGmem create(kvm::Vm& vm, uint64_t size, uint64_t flags) const {
        kvm::ObservedGmem g;
        g.create_gmem(vm, size, flags, observer());
        return g;
    }
    // The flag sets the selftest runs its per-file tests with, as far as advertised.
    std::vector<uint64_t> flag_sets() const {
        std::vector<uint64_t> sets{0};
        if (has(uapi::kGuestMemfdFlagMmap))
            sets.push_back(uapi::kGuestMemfdFlagMmap);
        if (has(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared))
            sets.push_back(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared);
        return sets;
    }
};

class Runner {
  public:
    explicit Runner(std::vector<Check>& out) : out_(out) {}

    // Runs one check; a throw inside it makes it `error` with the message.
    template <class F> void run(const std::string& name, F&& body) {
        Check c;
        c.name = name;
        try {
            body(c);
        } catch (const std::exception& e) {
            c.outcome = Outcome::error;
            c.reason = e.what();
            if (c.observed.empty())
                c.observed = std::string("error: ") + e.what();
        }
        if (c.expected.empty())
            c.expected = "(not stated)";
        if (c.observed.empty())
            c.observed = "(nothing observed)";
        out_.push_back(std::move(c));
    }

  private:
    std::vector<Check>& out_;
};

struct stat fstat_or_throw(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw SysError("fstat", fmt::format("fd={}", fd), errno);
    return st;
}

int try_mmap(kvm::Mapping& m, int fd, size_t size, int flags) {
    return kvm::Mapping::try_map(m, fd, size, PROT_READ | PROT_WRITE, flags);
}

// A stable name fragment for a flag set: "mmap+init_shared", "bit5".
std::string flag_name(const Env& env, uint64_t f) {
    std::string s = env.flags_str(f);
    std::replace(s.begin(), s.end(), '|', '+');
    s.erase(std::remove(s.begin(), s.end(), ':'), s.end());
    return s;
}

bool is_upstream_flag(uint64_t f) {
    return (f & ~(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared)) == 0;
}

// ---- flags ---------------------------------------------------------------

void check_flags(Runner& r, const Env& env) {
    const uint64_t sup = env.supported;
    const std::string cap = fmt::format("KVM_CAP_GUEST_MEMFD_FLAGS={:#x}", sup);

    r.run("flags.cap.init_shared_implies_mmap", [&](Check& c) {
        c.expected = "mmap advertised whenever init_shared is (selftest guest_memfd_test.c: "
                     "\"MMAP should always be supported if INIT_SHARED is supported\")";
        if (!env.has(uapi::kGuestMemfdFlagInitShared))
            return set_skip(c, c.expected, env.lacks(uapi::kGuestMemfdFlagInitShared));
        c.observed = cap;
        c.outcome = env.has(uapi::kGuestMemfdFlagMmap) ? Outcome::pass : Outcome::fail;
    });

    // Every advertised bit alone, as the selftest's test_guest_memfd_flags does.
    std::vector<uint64_t> accept;
    for (unsigned b = 0; b < 64; ++b)
        if (sup & (1ull << b))
            accept.push_back(1ull << b);
    if (env.has(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared))
        accept.push_back(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared);
    for (uint64_t f : accept) {
        r.run("flags.accept." + flag_name(env, f), [&](Check& c) {
            kvm::Vm vm = env.new_vm();
            kvm::ObservedGmem g;
            int e = env.try_create(vm, page_size(), f, g);
            std::string tag = is_upstream_flag(f) ? "" : std::string(kVersionDependentTag);
            c.expected = fmt::format("{}success (flags {:#x} within {}; selftest "
                                     "test_guest_memfd_flags, api.rst KVM_CREATE_GUEST_MEMFD)",
                                     tag, f, cap);
            c.observed = e ? errno_name(e) : fmt::format("success (fd {})", g.gmem.fd());
            c.outcome = e == 0 ? Outcome::pass : Outcome::fail;
        });
    }
    if (accept.empty())
        r.run("flags.accept.none_advertised", [&](Check& c) {
            set_skip(c, "success for each advertised flag",
                     cap + ": no guest_memfd flags advertised (kernel before 6.18?)");
        });

    r.run("flags.reject.unadvertised_bits", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        Cases cases;
        for (unsigned b = 0; b < 64; ++b) {
            uint64_t f = 1ull << b;
            if (sup & f)
                continue;
            kvm::ObservedGmem g;
            int e = env.try_create(vm, page_size(), f, g);
            cases.add(fmt::format("bit {}", b), e == EINVAL,
                      e ? errno_name(e) : fmt::format("success (fd {})", g.gmem.fd()));
        }
        cases.finish(c, "EINVAL for every bit outside " + cap +
                            " (kvm_gmem_create; selftest test_guest_memfd_flags)");
    });

    r.run("flags.reject.unadvertised_with_valid", [&](Check& c) {
        const std::string expected = "EINVAL when any unadvertised bit accompanies the "
                                     "advertised ones (kvm_gmem_create: flags & ~supported)";
        if (sup == 0)
            return set_skip(c, expected, cap + ": no valid flag to combine with");
        kvm::Vm vm = env.new_vm();
        Cases cases;
        for (unsigned b = 0; b < 64; ++b) {
            uint64_t f = 1ull << b;
            if (sup & f)
                continue;
            kvm::ObservedGmem g;
            int e = env.try_create(vm, page_size(), sup | f, g);
            cases.add(fmt::format("{:#x}|bit {}", sup, b), e == EINVAL,
                      e ? errno_name(e) : fmt::format("success (fd {})", g.gmem.fd()));
        }
        cases.finish(c, expected);
    });
}

// ---- sizes ---------------------------------------------------------------

void check_sizes(Runner& r, const Env& env) {
    const std::string src = "kvm_gmem_create: size <= 0 or not page aligned; selftest "
                            "test_create_guest_memfd_invalid_sizes";
    auto run_sizes = [&](const std::string& name, const std::vector<uint64_t>& sizes,
                         size_t list_all_up_to) {
        r.run(name, [&](Check& c) {
            kvm::Vm vm = env.new_vm();
            Cases cases;
            for (uint64_t flags : env.flag_sets())
                for (uint64_t size : sizes) {
                    kvm::ObservedGmem g;
                    int e = env.try_create(vm, size, flags, g);
                    cases.add(fmt::format("size={:#x} flags={}", size, env.flags_str(flags)),
                              e == EINVAL,
                              e ? errno_name(e) : fmt::format("success (fd {})", g.gmem.fd()));
                }
            cases.finish(c, "EINVAL (" + src + ")", list_all_up_to);
        });
    };
    const uint64_t p = page_size();
    run_sizes("size.zero", {0}, 12);
    std::vector<uint64_t> unaligned;
    for (uint64_t s = 1; s < p; ++s)
        unaligned.push_back(s);
    unaligned.push_back(p + 1);
    unaligned.push_back(2 * p - 1);
    run_sizes("size.unaligned", unaligned, 0);
    // loff_t is signed: these are negative sizes to the kernel.
    run_sizes("size.negative", {1ull << 63, UINT64_MAX, ~(p - 1), (1ull << 63) | p}, 12);

    r.run("size.multiple_per_vm", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        c.expected = "two guest_memfds on one VM: st_size page and 2*page, distinct inodes, "
                     "the first unchanged (selftest test_create_guest_memfd_multiple)";
        kvm::ObservedGmem a = env.create(vm, p, 0);
        kvm::ObservedGmem b = env.create(vm, 2 * p, 0);
        struct stat sa = fstat_or_throw(a.gmem.fd()), sb = fstat_or_throw(b.gmem.fd());
        c.observed = fmt::format("st_size {:#x} and {:#x}, inodes {} and {}", sa.st_size,
                                 sb.st_size, sa.st_ino, sb.st_ino);
        bool ok = static_cast<uint64_t>(sa.st_size) == p &&
                  static_cast<uint64_t>(sb.st_size) == 2 * p && sa.st_ino != sb.st_ino;
        c.outcome = ok ? Outcome::pass : Outcome::fail;
    });
}

// ---- mmap ----------------------------------------------------------------

constexpr uint64_t kMapShared = uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared;

void check_mmap(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const uint64_t total = 4 * p;

    r.run("mmap.without_mmap_flag_refused", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, 0);
        kvm::Mapping m;
        Cases cases;
        for (uint64_t len : {p, total}) {
            int e = try_mmap(m, g.gmem.fd(), len, MAP_SHARED);
            m.reset();
            cases.add(fmt::format("len={:#x}", len), e == ENODEV, result_str(e));
        }
        cases.finish(c, "ENODEV (kvm_gmem_mmap without GUEST_MEMFD_FLAG_MMAP; no .mmap at all "
                        "before 6.18; selftest test_mmap_not_supported)");
    });

    r.run("mmap.init_shared_without_mmap_refused", [&](Check& c) {
        const std::string src = "kvm_gmem_mmap: mmap needs GUEST_MEMFD_FLAG_MMAP";
        if (!env.has(uapi::kGuestMemfdFlagInitShared))
            return set_skip(c, errno_expectation(ENODEV, src),
                            env.lacks(uapi::kGuestMemfdFlagInitShared));
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g;
        if (int e = env.try_create(vm, total, uapi::kGuestMemfdFlagInitShared, g))
            return set_skip(c, errno_expectation(ENODEV, src),
                            "init_shared alone refused with " + errno_name(e) +
                                " (see flags.accept.init_shared)");
        kvm::Mapping m;
        int e = try_mmap(m, g.gmem.fd(), total, MAP_SHARED);
        expect_errno(c, ENODEV, e, src);
    });

    r.run("mmap.map_private_refused", [&](Check& c) {
        c.expected = "EINVAL (kvm_gmem_mmap refuses mappings without VM_SHARED|VM_MAYSHARE; "
                     "selftest test_mmap_cow)";
        if (!env.has(uapi::kGuestMemfdFlagMmap))
            return set_skip(c, c.expected, env.lacks(uapi::kGuestMemfdFlagMmap));
        kvm::Vm vm = env.new_vm();
        Cases cases;
        for (uint64_t flags : env.flag_sets()) {
            if (!(flags & uapi::kGuestMemfdFlagMmap))
                continue;
            kvm::ObservedGmem g = env.create(vm, total, flags);
            kvm::Mapping m;
            int e = try_mmap(m, g.gmem.fd(), total, MAP_PRIVATE);
            cases.add("flags=" + env.flags_str(flags), e == EINVAL, result_str(e));
        }
        cases.finish(c, c.expected);
    });

    r.run("mmap.shared_reads_zero", [&](Check& c) {
        c.expected = "every byte of a fresh mmap|init_shared file reads 0, no SIGBUS "
                     "(kvm_gmem_fault_user_mapping clears new folios)";
        if (!env.has(kMapShared))
            return set_skip(c, c.expected, env.lacks(kMapShared));
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, kMapShared);
        kvm::Mapping m = kvm::Mapping::map(g.gmem.fd(), total, PROT_READ | PROT_WRITE, MAP_SHARED);
        SigbusGuard guard;
        for (uint64_t off = 0; off < total; off += p) {
            if (guard.read_faults(m.data() + off)) {
                c.observed = fmt::format("SIGBUS reading offset {:#x}", off);
                c.outcome = Outcome::fail;
                return;
            }
        }
        const uint8_t* d = m.data();
        const uint8_t* nz = std::find_if(d, d + total, [](uint8_t v) { return v != 0; });
        if (nz != d + total) {
            c.observed = fmt::format("byte at offset {:#x} is {:#04x}", nz - d, *nz);
            c.outcome = Outcome::fail;
            return;
        }
        c.observed = fmt::format("all {:#x} bytes zero", total);
        c.outcome = Outcome::pass;
    });

    r.run("mmap.shared_write_readback", [&](Check& c) {
        c.expected = "writes through a MAP_SHARED mapping succeed and read back, including "
                     "through a second mapping of the same file (selftest test_mmap_supported)";
        if (!env.has(kMapShared))
            return set_skip(c, c.expected, env.lacks(kMapShared));
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, kMapShared);
        kvm::Mapping m = kvm::Mapping::map(g.gmem.fd(), total, PROT_READ | PROT_WRITE, MAP_SHARED);
        SigbusGuard guard;
        for (uint64_t off = 0; off < total; off += p)
            if (guard.write_faults(m.data() + off, 0xaa)) {
                c.observed = fmt::format("SIGBUS writing offset {:#x}", off);
                c.outcome = Outcome::fail;
                return;
            }
        for (uint64_t i = 0; i < total; ++i)
            m.data()[i] = static_cast<uint8_t>(0xa0 ^ (i / p) ^ (i & 0xf));
        kvm::Mapping m2 = kvm::Mapping::map(g.gmem.fd(), total, PROT_READ, MAP_SHARED);
        for (uint64_t i = 0; i < total; ++i) {
            uint8_t want = static_cast<uint8_t>(0xa0 ^ (i / p) ^ (i & 0xf));
            if (m.data()[i] != want || m2.data()[i] != want) {
                c.observed = fmt::format("offset {:#x}: wrote {:#04x}, read {:#04x} / {:#04x}", i,
                                         want, m.data()[i], m2.data()[i]);
                c.outcome = Outcome::fail;
                return;
            }
        }
        c.observed = fmt::format("{:#x} bytes written and read back through two mappings", total);
        c.outcome = Outcome::pass;
    });

    r.run("mmap.sigbus_past_eof", [&](Check& c) {
        c.expected = "no fault below the file size, SIGBUS at and past it "
                     "(kvm_gmem_fault_user_mapping; selftest test_fault_overflow)";
        if (!env.has(kMapShared))
            return set_skip(c, c.expected, env.lacks(kMapShared));
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, kMapShared);
        kvm::Mapping m;
        if (int e = try_mmap(m, g.gmem.fd(), 4 * total, MAP_SHARED))
            throw SysError(
                "mmap",
                fmt::format("guest_memfd={}, len={:#x} (4x file size)", g.gmem.fd(), 4 * total), e);
        SigbusGuard guard;
        Cases cases;
        for (uint64_t off : {uint64_t(0), total - 1}) {
            bool f = guard.write_faults(m.data() + off, 0x5a);
            cases.add(fmt::format("write {:#x} (inside)", off), !f, f ? "SIGBUS" : "ok");
        }
        for (uint64_t off : {total, total + p, 4 * total - 1}) {
            bool fr = guard.read_faults(m.data() + off);
            bool fw = guard.write_faults(m.data() + off, 0x5a);
            cases.add(fmt::format("read/write {:#x} (past EOF)", off), fr && fw,
                      fmt::format("{}/{}", fr ? "SIGBUS" : "no fault", fw ? "SIGBUS" : "no fault"));
        }
        cases.finish(c, c.expected);
    });

    r.run("mmap.sigbus_private", [&](Check& c) {
        c.expected = "SIGBUS on every access: without INIT_SHARED the memory is private "
                     "(api.rst GUEST_MEMFD_FLAG_INIT_SHARED; selftest test_fault_private)";
        if (!env.has(uapi::kGuestMemfdFlagMmap))
            return set_skip(c, c.expected, env.lacks(uapi::kGuestMemfdFlagMmap));
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, uapi::kGuestMemfdFlagMmap);
        kvm::Mapping m = kvm::Mapping::map(g.gmem.fd(), total, PROT_READ | PROT_WRITE, MAP_SHARED);
        SigbusGuard guard;
        Cases cases;
        for (uint64_t off : {uint64_t(0), total - p}) {
            bool fr = guard.read_faults(m.data() + off);
            bool fw = guard.write_faults(m.data() + off, 0x5a);
            cases.add(fmt::format("read/write {:#x}", off), fr && fw,
                      fmt::format("{}/{}", fr ? "SIGBUS" : "no fault", fw ? "SIGBUS" : "no fault"));
        }
        cases.finish(c, c.expected);
    });
}

// ---- fallocate -----------------------------------------------------------

void check_fallocate(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const uint64_t total = 4 * p;
    const int keep = FALLOC_FL_KEEP_SIZE;
    const int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

    // One file per check, flags 0: the fallocate rules do not depend on flags.
    auto with_file = [&](const std::string& name, auto&& body) {
        r.run(name, [&](Check& c) {
            kvm::Vm vm = env.new_vm();
            kvm::ObservedGmem g = env.create(vm, total, 0);
            body(c, g.gmem);
        });
    };

    with_file("fallocate.allocate_keep_size", [&](Check& c, kvm::GuestMemfd& g) {
        expect_errno(c, 0, g.try_fallocate(keep, 0, total),
                     "kvm_gmem_allocate; selftest test_fallocate");
    });

    with_file("fallocate.mode0_refused", [&](Check& c, kvm::GuestMemfd& g) {
        expect_errno(c, EOPNOTSUPP, g.try_fallocate(0, 0, p),
                     "kvm_gmem_fallocate: FALLOC_FL_KEEP_SIZE is required, the size is "
                     "immutable; since 6.8");
    });

    with_file("fallocate.punch_hole_requires_keep_size", [&](Check& c, kvm::GuestMemfd& g) {
        expect_errno(c, EOPNOTSUPP, g.try_fallocate(FALLOC_FL_PUNCH_HOLE, 0, p),
                     "vfs_fallocate: PUNCH_HOLE without KEEP_SIZE");
    });

    with_file("fallocate.unsupported_modes", [&](Check& c, kvm::GuestMemfd& g) {
        const std::pair<int, const char*> modes[] = {
            {kFallocCollapseRange, "COLLAPSE_RANGE"},
            {kFallocZeroRange, "ZERO_RANGE"},
            {kFallocZeroRange | keep, "ZERO_RANGE|KEEP_SIZE"},
            {kFallocInsertRange, "INSERT_RANGE"},
            {kFallocUnshareRange, "UNSHARE_RANGE"},
            {kFallocUnshareRange | keep, "UNSHARE_RANGE|KEEP_SIZE"},
            {kFallocWriteZeroes, "WRITE_ZEROES"},
        };
        Cases cases;
        for (auto [mode, name] : modes) {
            int e = g.try_fallocate(mode, 0, p);
            cases.add(name, e == EOPNOTSUPP, result_str(e));
        }
        cases.finish(c, "EOPNOTSUPP (kvm_gmem_fallocate accepts only KEEP_SIZE and "
                        "PUNCH_HOLE|KEEP_SIZE; vfs_fallocate refuses some first, also "
                        "with EOPNOTSUPP)");
    });

    with_file("fallocate.misaligned", [&](Check& c, kvm::GuestMemfd& g) {
        const std::pair<uint64_t, uint64_t> ranges[] = {
            {0, 1}, {0, p - 1}, {0, p + 1}, {1, 1},     {1, p - 1},
            {1, p}, {1, p + 1}, {p, 1},     {p, p - 1}, {p, p + 1},
        };
        Cases cases;
        for (int mode : {punch, keep})
            for (auto [off, len] : ranges) {
                int e = g.try_fallocate(mode, off, len);
                cases.add(fmt::format("{} off={:#x} len={:#x}",
                                      mode == punch ? "PUNCH_HOLE" : "ALLOCATE", off, len),
                          e == EINVAL, result_str(e));
            }
        cases.finish(c,
                     "EINVAL (kvm_gmem_fallocate: offset and len must be page aligned; "
                     "selftest test_invalid_punch_hole)",
                     0);
    });

    with_file("fallocate.allocate_beyond_eof", [&](Check& c, kvm::GuestMemfd& g) {
        const std::pair<uint64_t, uint64_t> ranges[] = {
            {total, p}, {total + p, p}, {total - p, 2 * p}};
        Cases cases;
        for (auto [off, len] : ranges) {
            int e = g.try_fallocate(keep, off, len);
            cases.add(fmt::format("off={:#x} len={:#x}", off, len), e == EINVAL, result_str(e));
        }
        cases.finish(c, "EINVAL (kvm_gmem_allocate: offset + len > i_size; selftest "
                        "test_fallocate)");
    });

    with_file("fallocate.punch_hole_beyond_eof", [&](Check& c, kvm::GuestMemfd& g) {
        Cases cases;
        for (uint64_t off : {total, total + p}) {
            int e = g.try_fallocate(punch, off, p);
            cases.add(fmt::format("off={:#x} len={:#x}", off, p), e == 0, result_str(e));
        }
        cases.finish(c, "success (punching past EOF is a no-op; selftest test_fallocate)");
    });

    with_file("fallocate.punch_then_reallocate", [&](Check& c, kvm::GuestMemfd& g) {
        Cases cases;
        int e = g.try_fallocate(keep, 0, total);
        cases.add("allocate all", e == 0, result_str(e));
        e = g.try_fallocate(punch, p, p);
        cases.add("punch page 1", e == 0, result_str(e));
        e = g.try_fallocate(keep, p, p);
        cases.add("reallocate page 1", e == 0, result_str(e));
        struct stat st = fstat_or_throw(g.fd());
        cases.add("st_size", static_cast<uint64_t>(st.st_size) == total, hex(st.st_size));
        cases.finish(c, "success for each step and st_size unchanged (selftest test_fallocate)");
    });

    r.run("fallocate.punch_hole_zeroes", [&](Check& c) {
        c.expected = "after PUNCH_HOLE of page 1, page 1 reads zero, other pages keep 0xaa, "
                     "page 1 is writable again (selftest test_mmap_supported)";
        if (!env.has(kMapShared))
            return set_skip(c, c.expected, env.lacks(kMapShared) + " (needed to see the contents)");
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, kMapShared);
        kvm::Mapping m = kvm::Mapping::map(g.gmem.fd(), total, PROT_READ | PROT_WRITE, MAP_SHARED);
        SigbusGuard guard;
        for (uint64_t off = 0; off < total; off += p)
            if (guard.write_faults(m.data() + off, 0xaa)) {
                c.observed = fmt::format("SIGBUS writing offset {:#x} before the punch", off);
                c.outcome = Outcome::fail;
                return;
            }
        std::memset(m.data(), 0xaa, total);
        if (int e = g.gmem.try_fallocate(punch, p, p)) {
            c.observed = "PUNCH_HOLE failed: " + errno_name(e);
            c.outcome = Outcome::fail;
            return;
        }
        for (uint64_t off = 0; off < total; off += p)
            if (guard.read_faults(m.data() + off)) {
                c.observed = fmt::format("SIGBUS reading offset {:#x} after the punch", off);
                c.outcome = Outcome::fail;
                return;
            }
        for (uint64_t i = 0; i < total; ++i) {
            uint8_t want = (i >= p && i < 2 * p) ? 0 : 0xaa;
            if (m.data()[i] != want) {
                c.observed = fmt::format("offset {:#x} reads {:#04x}, expected {:#04x}", i,
                                         m.data()[i], want);
                c.outcome = Outcome::fail;
                return;
            }
        }
        std::memset(m.data() + p, 0xbb, p);
        bool ok = std::all_of(m.data() + p, m.data() + 2 * p, [](uint8_t v) { return v == 0xbb; });
        c.observed = ok ? "page 1 zero after the punch, others intact, rewrite reads back"
                        : "page 1 zero after the punch, but the rewrite did not read back";
        c.outcome = ok ? Outcome::pass : Outcome::fail;
    });
}

// ---- read/write ----------------------------------------------------------

void check_io(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const uint64_t total = 4 * p;
    const bool write_flag = env.has(env.write_flag());

    auto per_flags = [&](const std::string& name, const std::string& expected, int want,
                         auto&& call) {
        r.run(name, [&](Check& c) {
            kvm::Vm vm = env.new_vm();
            Cases cases;
            for (uint64_t flags : env.flag_sets()) {
                kvm::ObservedGmem g = env.create(vm, total, flags);
                char buf[64] = {};
                ssize_t n = call(g.gmem.fd(), buf, sizeof(buf));
                int e = n < 0 ? errno : 0;
                bool ok = want ? e == want : n < 0;
                cases.add("flags=" + env.flags_str(flags), ok,
                          n < 0 ? errno_name(e) : fmt::format("success ({} bytes)", n));
            }
            cases.finish(c, expected);
        });
    };

    per_flags("io.read_refused",
              "EINVAL (no read_iter in kvm_gmem_fops, so vfs_read refuses; selftest "
              "test_file_read_write)",
              EINVAL, [](int fd, char* b, size_t n) { return ::read(fd, b, n); });
    if (write_flag)
        per_flags("io.write_refused",
                  std::string(kVersionDependentTag) +
                      "failure, any errno (write() without the WRITE flag, on a kernel that "
                      "advertises WRITE: patch series \"guest_memfd write() support\")",
                  0, [](int fd, char* b, size_t n) { return ::write(fd, b, n); });
    else
        per_flags("io.write_refused",
                  "EINVAL (no write_iter in kvm_gmem_fops, so vfs_write refuses; selftest "
                  "test_file_read_write)",
                  EINVAL, [](int fd, char* b, size_t n) { return ::write(fd, b, n); });
    per_flags("io.pread_refused",
              "failure, any errno (selftest test_file_read_write asserts only that pread fails)", 0,
              [](int fd, char* b, size_t n) { return ::pread(fd, b, n, 0); });
    per_flags("io.pwrite_refused",
              write_flag ? std::string(kVersionDependentTag) +
                               "failure, any errno (pwrite without the WRITE flag; patch series)"
                         : "failure, any errno (selftest test_file_read_write asserts only that "
                           "pwrite fails)",
              0, [](int fd, char* b, size_t n) { return ::pwrite(fd, b, n, 0); });

    r.run("io.write_flag_populates", [&](Check& c) {
        const uint64_t wf = env.write_flag();
        c.expected = std::string(kVersionDependentTag) +
                     "pwrite of one page at offset page returns page size and the data reads "
                     "back through mmap (patch series \"guest_memfd write() support\")";
        if (!write_flag)
            return set_skip(c, c.expected,
                            env.lacks(wf) + fmt::format(" (WRITE flag, bit {} per profile "
                                                        "bits.write; patch series only)",
                                                        env.opt.bits.write));
        if (!env.has(kMapShared))
            return set_skip(c, c.expected,
                            env.lacks(kMapShared) + " (needed to read the data back)");
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, total, kMapShared | wf);
        std::vector<uint8_t> buf(p);
        for (uint64_t i = 0; i < p; ++i)
            buf[i] = static_cast<uint8_t>(i * 7 + 1);
        ssize_t n = g.gmem.try_pwrite(buf.data(), p, p);
        if (n != static_cast<ssize_t>(p)) {
            c.observed = n < 0 ? "pwrite: " + errno_name(static_cast<int>(-n))
                               : fmt::format("pwrite returned {}", n);
            c.outcome = Outcome::fail;
            return;
        }
        kvm::Mapping m = kvm::Mapping::map(g.gmem.fd(), total, PROT_READ, MAP_SHARED);
        SigbusGuard guard;
        if (guard.read_faults(m.data() + p)) {
            c.observed = "SIGBUS reading the written page";
            c.outcome = Outcome::fail;
            return;
        }
        bool ok = std::memcmp(m.data() + p, buf.data(), p) == 0;
        c.observed = ok ? "pwrite wrote one page, mmap reads it back"
                        : "pwrite succeeded but the mapping shows other data";
        c.outcome = ok ? Outcome::pass : Outcome::fail;
    });
}

// ---- file attributes -----------------------------------------------------

void check_file(Runner& r, const Env& env) {
    const uint64_t p = page_size();

    r.run("fstat.size", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        Cases cases;
        for (uint64_t size : {p, 4 * p, uint64_t(2) << 20, uint64_t(1) << 40}) {
            kvm::ObservedGmem g = env.create(vm, size, 0);
            struct stat st = fstat_or_throw(g.gmem.fd());
            cases.add(fmt::format("size {:#x}", size), static_cast<uint64_t>(st.st_size) == size,
                      "st_size " + hex(st.st_size));
        }
        cases.finish(c, "st_size equals the size given to KVM_CREATE_GUEST_MEMFD, sparse sizes "
                        "included (selftest test_file_size)");
    });

    r.run("fstat.blksize", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, 4 * p, 0);
        struct stat st = fstat_or_throw(g.gmem.fd());
        c.expected = fmt::format("st_blksize {} (page size; selftest test_file_size)", p);
        c.observed = fmt::format("st_blksize {}", st.st_blksize);
        c.outcome = static_cast<uint64_t>(st.st_blksize) == p ? Outcome::pass : Outcome::fail;
    });

    r.run("fstat.regular_file", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        kvm::ObservedGmem g = env.create(vm, p, 0);
        struct stat st = fstat_or_throw(g.gmem.fd());
        c.expected = "S_ISREG (__kvm_gmem_create sets S_IFREG; fallocate() needs it)";
        c.observed = fmt::format("st_mode {:#o}", st.st_mode);
        c.outcome = S_ISREG(st.st_mode) ? Outcome::pass : Outcome::fail;
    });

    r.run("fstat.blocks", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        const uint64_t total = 16 * p;
        kvm::ObservedGmem g = env.create(vm, total, 0);
        struct stat before = fstat_or_throw(g.gmem.fd());
        int e = g.gmem.try_fallocate(FALLOC_FL_KEEP_SIZE, 0, total);
        if (e)
            throw SysError("fallocate",
                           fmt::format("guest_memfd={}, KEEP_SIZE, 0, {:#x}", g.gmem.fd(), total),
                           e);
        struct stat after = fstat_or_throw(g.gmem.fd());
        // Upstream guest_memfd does not account i_blocks (it stays 0); the ABI
        // only bounds it by what the file can hold.
        c.expected = fmt::format("st_blocks*512 <= {:#x} before and after allocating every page "
                                 "(no block accounting is promised)",
                                 total);
        c.observed = fmt::format("st_blocks {} before, {} after allocating {} pages",
                                 before.st_blocks, after.st_blocks, total / p);
        bool ok = static_cast<uint64_t>(before.st_blocks) * 512 <= total &&
                  static_cast<uint64_t>(after.st_blocks) * 512 <= total;
        c.outcome = ok ? Outcome::pass : Outcome::fail;
    });

    r.run("file.ftruncate_refused", [&](Check& c) {
        kvm::Vm vm = env.new_vm();
        const uint64_t total = 4 * p;
        kvm::ObservedGmem g = env.create(vm, total, 0);
        Cases cases;
        for (uint64_t len : {2 * total, total + p, total, p, uint64_t(0)}) {
            int e = ::ftruncate(g.gmem.fd(), static_cast<off_t>(len)) == 0 ? 0 : errno;
            cases.add(fmt::format("len {:#x}", len), e == EINVAL, result_str(e));
        }
        struct stat st = fstat_or_throw(g.gmem.fd());
        cases.add("st_size afterwards", static_cast<uint64_t>(st.st_size) == total,
                  hex(st.st_size));
        cases.finish(c, "EINVAL for every length and st_size unchanged (kvm_gmem_setattr "
                        "returns -EINVAL: the size is fixed at creation)");
    });
}

// ---- memslot binding -----------------------------------------------------

// A binding that should be refused; if the kernel accepts it, it is deleted
// again so that later cases start from the same state.
int try_bad_binding(kvm::Vm& vm, const kvm::Memslot& m) {
    int e = vm.try_set_region_raw(m);
    if (e == 0) {
        kvm::Memslot d = m;
        d.size = 0;
        vm.try_set_region_raw(d);
    }
    return e;
}

std::string region_str(const kvm::Memslot& m) {
    return fmt::format("slot={} gpa={:#x} size={:#x} offset={:#x}", m.slot, m.gpa, m.size,
                       m.gmem_offset);
}

// The VM, file and host mapping every memslot check starts from.
struct SlotFixture {
    static constexpr uint64_t kPages = 16;
    uint64_t file_size;
    kvm::Mapping host;      // userspace_addr of the slots (declared first: outlives the VM)
    kvm::ObservedGmem file; // the VM and the guest_memfd bound to it
    uint64_t uaddr() const { return reinterpret_cast<uint64_t>(host.data()); }
    kvm::Vm& vm() { return file.vm; }
    int fd() const { return file.gmem.fd(); }

    explicit SlotFixture(const Env& env)
        : file_size(kPages * page_size()), host(kvm::Mapping::anonymous(4 * file_size)) {
        file.vm = env.new_vm();
        file.create_gmem(file.vm, file_size, 0, env.observer());
    }
};

constexpr uint64_t kGpaA = 0x10000000; // 256 MiB
constexpr uint64_t kGpaB = 0x20000000; // 512 MiB

void check_memslots(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const std::string no_slots =
        !env.memory2 ? "KVM_CAP_USER_MEMORY2 not supported: no KVM_SET_USER_MEMORY_REGION2" : "";
    auto slot_check = [&](const std::string& name, const std::string& expected, auto&& body) {
        r.run(name, [&](Check& c) {
            c.expected = expected;
            if (!no_slots.empty())
                return set_skip(c, expected, no_slots);
            SlotFixture fx(env);
            body(c, fx);
        });
    };
    // One refused binding and its expected errno. A valid binding of the same
    // file on the same VM afterwards shows the refusal was about the one input
    // under test, not about the fixture.
    auto refused = [&](const std::string& name, int want, const std::string& source,
                       auto&& make_region) {
        slot_check(name, errno_expectation(want, source), [&](Check& c, SlotFixture& fx) {
            kvm::Memslot reg = make_region(fx);
            expect_errno(c, want, try_bad_binding(fx.vm(), reg), source);
            c.observed += " for " + region_str(reg);
            fx.vm().add_memslot(
                {9, uapi::kMemGuestMemfd, kGpaA, fx.file_size, fx.uaddr(), fx.fd(), 0});
        });
    };

    slot_check("memslot.bind_valid",
               "success (whole file bound at offset 0; api.rst KVM_SET_USER_MEMORY_REGION2)",
               [&](Check& c, SlotFixture& fx) {
                   int e = fx.vm().try_add_memslot(
                       {1, uapi::kMemGuestMemfd, kGpaA, fx.file_size, fx.uaddr(), fx.fd(), 0});
                   expect_errno(c, 0, e,
                                "whole file bound at offset 0; api.rst "
                                "KVM_SET_USER_MEMORY_REGION2");
               });

    slot_check("memslot.delete_and_rebind",
               "success for each step (kvm_gmem_unbind clears the range on delete)",
               [&](Check& c, SlotFixture& fx) {
                   Cases cases;
                   kvm::Memslot m{1, uapi::kMemGuestMemfd, kGpaA, fx.file_size, fx.uaddr(), fx.fd(),
                                  0};
                   int e = fx.vm().try_add_memslot(m);
                   cases.add("bind", e == 0, result_str(e));
                   e = fx.vm().try_remove_memslot(1);
                   cases.add("delete (memory_size 0)", e == 0, result_str(e));
                   // The binding is gone, so the same file range can be bound again.
                   m.slot = 2;
                   e = fx.vm().try_add_memslot(m);
                   cases.add("bind the same range in a new slot", e == 0, result_str(e));
                   cases.finish(c, c.expected);
               });

    refused("memslot.offset_misaligned", EINVAL,
            "guest_memfd_offset not page aligned; __kvm_set_memory_region", [&](SlotFixture& fx) {
                return kvm::Memslot{1, uapi::kMemGuestMemfd, kGpaB, p, fx.uaddr(), fx.fd(), p / 2};
            });
    refused("memslot.offset_beyond_file", EINVAL, "offset + size > file size; kvm_gmem_bind",
            [&](SlotFixture& fx) {
                return kvm::Memslot{
                    1, uapi::kMemGuestMemfd, kGpaB, fx.file_size, fx.uaddr(), fx.fd(), p};
            });
    refused("memslot.offset_at_eof", EINVAL, "offset == file size; kvm_gmem_bind",
            [&](SlotFixture& fx) {
                return kvm::Memslot{1,       uapi::kMemGuestMemfd, kGpaB, p, fx.uaddr(),
                                    fx.fd(), fx.file_size};
            });
    refused("memslot.size_beyond_file", EINVAL, "size > file size; kvm_gmem_bind",
            [&](SlotFixture& fx) {
                return kvm::Memslot{
                    1, uapi::kMemGuestMemfd, kGpaB, fx.file_size + p, fx.uaddr(), fx.fd(), 0};
            });
    refused("memslot.offset_uint64_max", EINVAL,
            "offset UINT64_MAX is not page aligned; __kvm_set_memory_region", [&](SlotFixture& fx) {
                return kvm::Memslot{1,         uapi::kMemGuestMemfd, kGpaB, p, fx.uaddr(), fx.fd(),
                                    UINT64_MAX};
            });
    refused("memslot.offset_negative", EINVAL,
            "offset 1<<63 is negative as loff_t; kvm_gmem_bind: offset < 0", [&](SlotFixture& fx) {
                return kvm::Memslot{1,         uapi::kMemGuestMemfd, kGpaB, p, fx.uaddr(), fx.fd(),
                                    1ull << 63};
            });
    refused("memslot.offset_size_overflow", EINVAL,
            "offset + size wraps around; __kvm_set_memory_region", [&](SlotFixture& fx) {
                return kvm::Memslot{1,       uapi::kMemGuestMemfd, kGpaB, 2 * p, fx.uaddr(),
                                    fx.fd(), UINT64_MAX - p + 1};
            });
    refused("memslot.size_uint64_max", EINVAL,
            "memory_size not page aligned; __kvm_set_memory_region", [&](SlotFixture& fx) {
                return kvm::Memslot{1, uapi::kMemGuestMemfd, kGpaB, UINT64_MAX, fx.uaddr(), fx.fd(),
                                    0};
            });
    refused("memslot.size_huge", EINVAL,
            "memory_size 1<<63: beyond KVM_MEM_MAX_NR_PAGES and the address space; "
            "__kvm_set_memory_region",
            [&](SlotFixture& fx) {
                return kvm::Memslot{1, uapi::kMemGuestMemfd, kGpaB, 1ull << 63, fx.uaddr(), fx.fd(),
                                    0};
            });
    refused("memslot.readonly_refused", EINVAL,
            "check_memory_region_flags: GUEST_MEMFD with READONLY; since 6.8 (commit "
            "e563592224e0)",
            [&](SlotFixture& fx) {
                return kvm::Memslot{1,          uapi::kMemGuestMemfd | kMemReadonly,
                                    kGpaB,      fx.file_size,
                                    fx.uaddr(), fx.fd(),
                                    0};
            });
    refused("memslot.dirty_log_refused", EINVAL,
            "check_memory_region_flags: dirty logging of guest_memfd memslots is not "
            "supported",
            [&](SlotFixture& fx) {
                return kvm::Memslot{1,          uapi::kMemGuestMemfd | kMemLogDirtyPages,
                                    kGpaB,      fx.file_size,
                                    fx.uaddr(), fx.fd(),
                                    0};
            });

    // The refusal is the ABI (api.rst: "the bound ranges must not overlap");
    // its errno is not: kvm_gmem_bind gives EINVAL up to 6.18, Debian's 7.3.4
    // was measured giving EEXIST for the same geometry (GPAs disjoint).
    slot_check("memslot.overlapping_file_range",
               "refused: EINVAL (kvm_gmem_bind, 6.8..6.18) or EEXIST (measured on 7.3.4); a "
               "file range may be bound to one memslot only (api.rst \"the bound ranges must not "
               "overlap\")",
               [&](Check& c, SlotFixture& fx) {
                   fx.vm().add_memslot(
                       {1, uapi::kMemGuestMemfd, kGpaA, fx.file_size, fx.uaddr(), fx.fd(), 0});
                   Cases cases;
                   // Different, non-overlapping GPAs: only the file ranges collide.
                   const std::pair<uint64_t, uint64_t> ranges[] = {
                       {0, fx.file_size}, {p, p}, {fx.file_size - p, p}};
                   for (auto [off, size] : ranges) {
                       auto reg = kvm::Memslot{
                           2, uapi::kMemGuestMemfd, kGpaB, size, fx.uaddr(), fx.fd(), off};
                       int e = try_bad_binding(fx.vm(), reg);
                       cases.add(fmt::format("offset={:#x} size={:#x}", off, size),
                                 e == EINVAL || e == EEXIST, result_str(e));
                   }
                   cases.finish(c, c.expected);
               });

    slot_check("memslot.disjoint_file_ranges",
               "success (api.rst: any number of memslots can be bound to one guest_memfd file "
               "as long as the ranges do not overlap)",
               [&](Check& c, SlotFixture& fx) {
                   const uint64_t half = fx.file_size / 2;
                   Cases cases;
                   int e = fx.vm().try_add_memslot(
                       {1, uapi::kMemGuestMemfd, kGpaA, half, fx.uaddr(), fx.fd(), 0});
                   cases.add("first half", e == 0, result_str(e));
                   e = fx.vm().try_add_memslot(
                       {2, uapi::kMemGuestMemfd, kGpaB, half, fx.uaddr() + half, fx.fd(), half});
                   cases.add("second half", e == 0, result_str(e));
                   cases.finish(c, c.expected);
               });

    const std::string gpa_src = "kvm_set_memory_region: GPA range overlaps another memslot";
    slot_check(
        "memslot.overlapping_gpa", errno_expectation(EEXIST, gpa_src),
        [&](Check& c, SlotFixture& fx) {
            const uint64_t half = fx.file_size / 2;
            fx.vm().add_memslot({1, uapi::kMemGuestMemfd, kGpaA, half, fx.uaddr(), fx.fd(), 0});
            // A disjoint file range, but at a GPA inside slot 1.
            auto reg = kvm::Memslot{
                2, uapi::kMemGuestMemfd, kGpaA + p, p, fx.uaddr() + half, fx.fd(), half};
            expect_errno(c, EEXIST, try_bad_binding(fx.vm(), reg), gpa_src);
            c.observed += " for " + region_str(reg);
        });

    const std::string modify_src =
        "kvm_set_memory_region: guest_memfd memslots are immutable, they can only be deleted";
    slot_check("memslot.modify_refused", errno_expectation(EINVAL, modify_src),
               [&](Check& c, SlotFixture& fx) {
                   fx.vm().add_memslot(
                       {1, uapi::kMemGuestMemfd, kGpaA, fx.file_size, fx.uaddr(), fx.fd(), 0});
                   // Moving the slot to another GPA.
                   auto reg = kvm::Memslot{
                       1, uapi::kMemGuestMemfd, kGpaB, fx.file_size, fx.uaddr(), fx.fd(), 0};
                   expect_errno(c, EINVAL, try_bad_binding(fx.vm(), reg), modify_src);
                   c.observed += " for a move of slot 1 to " + hex(kGpaB);
               });

    const std::string foreign_src = "kvm_gmem_bind: the guest_memfd belongs to another VM";
    slot_check("memslot.foreign_vm_guest_memfd", errno_expectation(EINVAL, foreign_src),
               [&](Check& c, SlotFixture& fx) {
                   kvm::Vm other = env.new_vm();
                   kvm::ObservedGmem foreign = env.create(other, fx.file_size, 0);
                   auto reg = kvm::Memslot{1,          uapi::kMemGuestMemfd, kGpaB, fx.file_size,
                                           fx.uaddr(), foreign.gmem.fd(),    0};
                   expect_errno(c, EINVAL, try_bad_binding(fx.vm(), reg), foreign_src);
               });

    auto non_gmem = [&](const std::string& name, const std::string& what, auto&& open_fd) {
        const std::string src = "kvm_gmem_bind: " + what + " is not a guest_memfd";
        slot_check(name, errno_expectation(EINVAL, src), [&](Check& c, SlotFixture& fx) {
            UniqueFd fd(open_fd());
            if (!fd)
                throw SysError("open", what, errno);
            auto reg =
                kvm::Memslot{1, uapi::kMemGuestMemfd, kGpaB, fx.file_size, fx.uaddr(), fd.get(), 0};
            expect_errno(c, EINVAL, try_bad_binding(fx.vm(), reg), src);
        });
    };
    non_gmem("memslot.non_gmem_fd.memfd", "a memfd",
             [] { return ::memfd_create("gms-conformance", MFD_CLOEXEC); });
    // A nameless regular file in the first writable temporary directory
    // ($TMPDIR first: /tmp can be read-only, e.g. inside the lab's chroot).
    non_gmem("memslot.non_gmem_fd.regular_file", "a regular file", [] {
        int fd = -1;
        const char* tmpdir = std::getenv("TMPDIR");
        for (const char* dir : {tmpdir, "/tmp", "/dev/shm", "/run"}) {
            if (!dir || !*dir)
                continue;
            fd = ::open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
            if (fd >= 0)
                break;
            std::string path = std::string(dir) + "/gms-conformance-XXXXXX";
            fd = ::mkostemp(path.data(), O_CLOEXEC);
            if (fd >= 0) {
                ::unlink(path.c_str());
                break;
            }
        }
        return fd;
    });
    non_gmem("memslot.non_gmem_fd.dev_null", "/dev/null",
             [] { return ::open("/dev/null", O_RDWR | O_CLOEXEC); });

    const std::string badf_src = "kvm_gmem_bind: fget() of a closed fd fails";
    slot_check(
        "memslot.closed_fd", errno_expectation(EBADF, badf_src), [&](Check& c, SlotFixture& fx) {
            // An fd number that is certainly not open: dup one, then close it.
            int fd = ::dup(fx.fd());
            if (fd < 0)
                throw SysError("dup", fmt::format("fd={}", fx.fd()), errno);
            ::close(fd);
            auto reg =
                kvm::Memslot{1, uapi::kMemGuestMemfd, kGpaB, fx.file_size, fx.uaddr(), fd, 0};
            expect_errno(c, EBADF, try_bad_binding(fx.vm(), reg), badf_src);
        });
}

// ---- memory attributes ---------------------------------------------------

void check_attributes(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const bool priv = env.attributes & uapi::kMemoryAttributePrivate;
    const std::string why = fmt::format(
        "KVM_CAP_MEMORY_ATTRIBUTES={:#x} on this VM type: no PRIVATE attribute", env.attributes);
    auto attr_check = [&](const std::string& name, const std::string& expected, auto&& body) {
        r.run(name, [&](Check& c) {
            c.expected = expected;
            if (!priv)
                return set_skip(c, expected, why);
            kvm::Vm vm = env.new_vm();
            body(c, vm);
        });
    };
    attr_check("attributes.set_private_and_shared",
               "success (KVM_SET_MEMORY_ATTRIBUTES with a supported attribute, then 0)",
               [&](Check& c, kvm::Vm& vm) {
                   Cases cases;
                   int e = vm.try_set_memory_attributes(0, 4 * p, uapi::kMemoryAttributePrivate);
                   cases.add("private", e == 0, result_str(e));
                   e = vm.try_set_memory_attributes(0, 4 * p, 0);
                   cases.add("shared", e == 0, result_str(e));
                   cases.finish(c, c.expected);
               });
    const std::string bits_src =
        "kvm_vm_ioctl_set_mem_attributes: attributes outside KVM_CAP_MEMORY_ATTRIBUTES";
    attr_check("attributes.unsupported_bits", errno_expectation(EINVAL, bits_src),
               [&](Check& c, kvm::Vm& vm) {
                   expect_errno(c, EINVAL, vm.try_set_memory_attributes(0, p, ~env.attributes),
                                bits_src);
               });
    attr_check(
        "attributes.misaligned",
        "EINVAL (kvm_vm_ioctl_set_mem_attributes: address and size page aligned, size "
        "non-zero)",
        [&](Check& c, kvm::Vm& vm) {
            Cases cases;
            const std::pair<uint64_t, uint64_t> ranges[] = {{1, p}, {0, 1}, {0, 0}, {p, p - 1}};
            for (auto [addr, size] : ranges) {
                int e = vm.try_set_memory_attributes(addr, size, uapi::kMemoryAttributePrivate);
                cases.add(fmt::format("address={:#x} size={:#x}", addr, size), e == EINVAL,
                          result_str(e));
            }
            cases.finish(c, c.expected);
        });
    const std::string flags_src = "kvm_vm_ioctl_set_mem_attributes: flags must be 0";
    attr_check("attributes.nonzero_flags", errno_expectation(EINVAL, flags_src),
               [&](Check& c, kvm::Vm& vm) {
                   uapi::kvm_memory_attributes a{};
                   a.address = 0;
                   a.size = p;
                   a.attributes = uapi::kMemoryAttributePrivate;
                   a.flags = 1;
                   int e = ::ioctl(vm.fd(), uapi::kSetMemoryAttributes, &a) == 0 ? 0 : errno;
                   expect_errno(c, EINVAL, e, flags_src);
               });
}

} // namespace

report::Outcome overall_outcome(const std::vector<report::Check>& checks) {
    bool error = false;
    for (const auto& c : checks) {
        if (c.outcome == Outcome::fail)
            return Outcome::fail;
        error |= c.outcome == Outcome::error;
    }
    return error ? Outcome::error : Outcome::pass;
}

std::vector<report::Check> run_checks(const kvm::Kvm& kvm, const Options& opt) {
    Env env{kvm, opt};
    {
        kvm::Vm probe;
        if (int e = kvm::Vm::try_create(probe, kvm, opt.vm_type))
            throw EnvError(
                fmt::format("KVM_CREATE_VM type={} failed: {}", opt.vm_type, errno_name(e)));
        long v = probe.check_extension(uapi::kCapGuestMemfdFlags);
        env.supported = v > 0 ? static_cast<uint64_t>(v) : 0;
        v = probe.check_extension(uapi::kCapMemoryAttributes);
        env.attributes = v > 0 ? static_cast<uint64_t>(v) : 0;
        env.gmem = probe.check_extension(uapi::kCapGuestMemfd) > 0;
        env.memory2 = probe.check_extension(uapi::kCapUserMemory2) > 0;
    }
    std::vector<report::Check> checks;
    if (!env.gmem) {
        Check c;
        c.name = "guest_memfd.supported";
        c.observed = "KVM_CAP_GUEST_MEMFD=0";
        set_skip(c, "KVM_CAP_GUEST_MEMFD on this VM type (every other check needs it)",
                 fmt::format("KVM_CAP_GUEST_MEMFD is 0 on a VM of type {}", opt.vm_type));
        checks.push_back(std::move(c));
        return checks;
    }
    Runner runner(checks);
    using Group = void (*)(Runner&, const Env&);
    const Group groups[] = {check_flags, check_sizes, check_mmap,     check_fallocate,
                            check_io,    check_file,  check_memslots, check_attributes};
    for (Group g : groups) {
        if (opt.should_stop && opt.should_stop())
            break;
        g(runner, env);
    }
    return checks;
}

} // namespace gms::workloads::conformance
