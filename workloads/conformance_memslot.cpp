// Memslot binding, once per VM type: KVM_SET_USER_MEMORY_REGION2 with
// KVM_MEM_GUEST_MEMFD (set_memory_region_test.c's guest_memfd part, and the
// binding rules of kvm_main.c and guest_memfd.c), and the v1 ioctl refusing it.
#include "core/error.h"
#include "core/fd.h"
#include "core/util.h"
#include "workloads/conformance_common.h"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace gms::workloads::conformance {

namespace {

constexpr uint32_t kMemLogDirtyPages = 1u << 0; // KVM_MEM_LOG_DIRTY_PAGES
constexpr uint32_t kMemReadonly = 1u << 1;      // KVM_MEM_READONLY

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

    explicit SlotFixture(const Env& env, uint64_t pages = kPages)
        : file_size(pages * page_size()), host(kvm::Mapping::anonymous(4 * file_size)) {
        file.vm = env.new_vm();
        file.create_gmem(file.vm, file_size, 0, env.observer());
    }
};

constexpr uint64_t kGpaA = 0x10000000; // 256 MiB
constexpr uint64_t kGpaB = 0x20000000; // 512 MiB

// KVM_SET_USER_MEMORY_REGION (v1): 0 or errno; an accepted region is deleted again.
int try_region_v1(kvm::Vm& vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
                  uint64_t uaddr) {
    kvm_userspace_memory_region m{slot, flags, gpa, size, uaddr};
    int e = ::ioctl(vm.fd(), KVM_SET_USER_MEMORY_REGION, &m) == 0 ? 0 : errno;
    if (e == 0) {
        m.memory_size = 0;
        ::ioctl(vm.fd(), KVM_SET_USER_MEMORY_REGION, &m);
    }
    return e;
}

} // namespace

void check_memslots(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const std::string no_slots =
        !env.memory2 ? "KVM_CAP_USER_MEMORY2 not supported: no KVM_SET_USER_MEMORY_REGION2" : "";
    auto slot_check = [&](const std::string& name, const std::string& expected, auto&& body) {
        r.run(env.name(name), [&](Check& c) {
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

    slot_check("memslot.offset_misaligned",
               errno_expectation(EINVAL, "every guest_memfd_offset 1..page-1; "
                                         "__kvm_set_memory_region; test_add_private_memory_region"),
               [&](Check& c, SlotFixture& fx) {
                   Cases cases;
                   for (uint64_t off = 1; off < p; ++off) {
                       kvm::Memslot reg{1,  uapi::kMemGuestMemfd, kGpaB, p, fx.uaddr(), fx.fd(),
                                        off};
                       int e = try_bad_binding(fx.vm(), reg);
                       cases.add(fmt::format("offset {:#x}", off), e == EINVAL, result_str(e));
                   }
                   // The same file binds at offset 0 afterwards (the refusals were
                   // about the offset, not the fixture).
                   int e = fx.vm().try_add_memslot(
                       {1, uapi::kMemGuestMemfd, kGpaB, p, fx.uaddr(), fx.fd(), 0});
                   cases.add("offset 0", e == 0, result_str(e));
                   cases.finish(c, c.expected, 0);
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
    // its errno changed: kvm_gmem_bind gave EINVAL from 6.8, 7.2 moved the
    // check to kvm_gmem_commit_memory_region with EEXIST (KVM guest_memfd
    // changes for 7.2) and fixed the selftest that asserts it. Accepting
    // EINVAL on 7.2+ would hide that regression.
    {
        const bool eexist = env.release_at_least(7, 2);
        const int want = eexist ? EEXIST : EINVAL;
        const std::string expected = with_tag(
            true, fmt::format("{} for a file range bound twice with disjoint GPAs ({} on {}: "
                              "EEXIST since 7.2, EINVAL 6.8..7.1), EEXIST when the GPAs overlap "
                              "too (test_add_overlapping_private_memory_regions)",
                              errno_name(want), errno_name(want), env.release()));
        slot_check("memslot.overlapping_file_range", expected, [&](Check& c, SlotFixture& fx) {
            // The selftest's geometry in units of R = 2 pages: a 5R file, slot
            // A = file [0,2R) at G, slot B = file [2R,4R) at 2G; A deleted, then
            // bound again overlapping B in the file only, then in GPA too.
            const uint64_t R = 2 * p, G = kGpaA;
            kvm::Memslot a{1, uapi::kMemGuestMemfd, G, 2 * R, fx.uaddr(), fx.fd(), 0};
            fx.vm().add_memslot(a);
            fx.vm().add_memslot(
                {2, uapi::kMemGuestMemfd, 2 * G, 2 * R, fx.uaddr() + 2 * R, fx.fd(), 2 * R});
            fx.vm().remove_memslot(1);
            Cases cases;
            // A GPA overlap is EEXIST on every version (kvm_set_memory_region).
            const struct {
                const char* what;
                uint64_t gpa, off;
                int want;
            } tries[] = {{"file [R,3R) at G", G, R, want},
                         {"file [3R,5R) at G", G, 3 * R, want},
                         {"file [0,2R) at 2G-R (GPA overlap too)", 2 * G - R, 0, EEXIST},
                         {"file [0,2R) at 2G+R (GPA overlap too)", 2 * G + R, 0, EEXIST}};
            for (const auto& t : tries) {
                kvm::Memslot reg{1, uapi::kMemGuestMemfd, t.gpa, 2 * R, fx.uaddr(), fx.fd(), t.off};
                int e = try_bad_binding(fx.vm(), reg);
                cases.add(t.what, e == t.want, result_str(e));
            }
            cases.finish(c, c.expected);
        });
    }

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
    // The KVM device and the VM itself (test_add_private_memory_region).
    non_gmem("memslot.non_gmem_fd.kvm_fd", "the /dev/kvm fd", [&] { return ::dup(env.kvm.fd()); });
    slot_check("memslot.non_gmem_fd.vm_fd",
               errno_expectation(EINVAL, "kvm_gmem_bind: the VM's own fd is not a guest_memfd; "
                                         "test_add_private_memory_region"),
               [&](Check& c, SlotFixture& fx) {
                   auto reg = kvm::Memslot{1,          uapi::kMemGuestMemfd, kGpaB, fx.file_size,
                                           fx.uaddr(), fx.vm().fd(),         0};
                   expect_errno(c, EINVAL, try_bad_binding(fx.vm(), reg),
                                "the VM's own fd is not a guest_memfd");
               });

    // Memslot flags: KVM_SET_USER_MEMORY_REGION (v1) refuses the v2-only
    // GUEST_MEMFD and every unsupported bit, v2 every unsupported bit
    // (test_invalid_memory_region_flags). Supported on x86: LOG_DIRTY_PAGES,
    // READONLY, and GUEST_MEMFD on v2.
    r.run(env.name("memslot.region_flags_refused"), [&](Check& c) {
        c.expected = "EINVAL from v1 for GUEST_MEMFD and each bit 3..31, from v2 for each bit "
                     "3..31 (check_memory_region_flags; test_invalid_memory_region_flags)";
        kvm::Vm vm = env.new_vm();
        kvm::Mapping host = kvm::Mapping::anonymous(2ull << 20);
        const uint64_t ua = reinterpret_cast<uint64_t>(host.data());
        Cases cases;
        for (unsigned b = 2; b < 32; ++b) {
            int e = try_region_v1(vm, 0, 1u << b, 0, 2ull << 20, ua);
            cases.add(fmt::format("v1 bit {}", b), e == EINVAL, result_str(e));
            if (b == 2 || !env.memory2)
                continue;
            kvm::Memslot m{0, 1u << b, 0, 2ull << 20, ua, 0, 0};
            e = try_bad_binding(vm, m);
            cases.add(fmt::format("v2 bit {}", b), e == EINVAL, result_str(e));
        }
        cases.finish(c, c.expected, 0);
    });

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

} // namespace gms::workloads::conformance
