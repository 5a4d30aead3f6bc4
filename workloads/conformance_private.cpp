// Private memory, once per VM type: KVM_SET_MEMORY_ATTRIBUTES rules,
// KVM_EXIT_MEMORY_FAULT on private accesses (private_mem_kvm_exits_test.c),
// KVM_PRE_FAULT_MEMORY (pre_fault_memory_test.c); and once, what the default
// VM type advertises (guest_memfd_test.c's test_guest_memfd_guest).
#include "core/error.h"
#include "core/util.h"
#include "workloads/conformance_common.h"
#include "workloads/guest_common.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <sys/ioctl.h>
#include <thread>

namespace gms::workloads::conformance {

namespace {

using namespace guest;

constexpr uint64_t kExitFlagPrivate = 1ull << 3; // KVM_MEMORY_EXIT_FLAG_PRIVATE
constexpr uint32_t kTestSlot = 10;

// Guest code (32-bit flat mode): `1: mov eax, [ebx]; jmp 1b`, reading the GPA
// in EBX forever, as the selftest's guest_repeatedly_read().
constexpr uint8_t kReadLoop[] = {0x8b, 0x03, 0xeb, 0xfc};

struct VcpuExit {
    bool exited = false; // KVM_RUN returned with something other than EINTR / KVM_EXIT_INTR
    int err = 0;         // its errno
    uint32_t reason = 0; // kvm_run.exit_reason
    uapi::kvm_memory_fault_exit fault{};
    std::string describe;
};

// Runs the read loop on `gpa` until KVM_RUN returns for real or `limit_s`
// passes (then the vCPU is kicked out); `meanwhile` runs on this thread
// while the vCPU runs.
VcpuExit run_read_loop(GuestVm& gvm, kvm::Vcpu& v, uint64_t gpa, double limit_s,
                       const std::function<void()>& meanwhile) {
    uint64_t entry = gvm.load({kReadLoop, kReadLoop + sizeof kReadLoop});
    GuestCall call;
    call.rip = entry;
    call.rsp = gvm.stack_top(0);
    call.rbx = gpa;
    enter(v, call);
    VcpuExit out;
    {
        VcpuThreads threads(0, 0);
        threads.spawn([&](RunSlot& slot) {
            kvm_run* run = v.run_state();
            slot.run.store(run);
            for (;;) {
                if (slot.kick.load())
                    return;
                run->immediate_exit = 0;
                slot.run_since_ns.store(now_ns());
                int e = v.try_run();
                slot.run_since_ns.store(0);
                if (e == EINTR || (e == 0 && run->exit_reason == KVM_EXIT_INTR))
                    continue;
                out.exited = true;
                out.err = e;
                out.reason = run->exit_reason;
                std::memcpy(&out.fault, &run->hw, sizeof out.fault); // the union starts at run.hw
                out.describe = describe_exit(v);
                return;
            }
        });
        if (meanwhile)
            meanwhile();
        const uint64_t deadline = now_ns() + uint64_t(limit_s * 1e9);
        threads.supervise([&] { return now_ns() > deadline; });
    }
    return out;
}

// The selftest's assertions on a private access that must exit to userspace.
void judge_private_fault(Check& c, const VcpuExit& x, uint64_t gpa, double limit_s) {
    Cases cases;
    if (!x.exited) {
        cases.add("KVM_RUN returned", false, fmt::format("still running after {}s", limit_s));
    } else {
        cases.add("KVM_RUN result", x.err == 0 || x.err == EFAULT, result_str(x.err));
        cases.add("exit_reason", x.reason == uapi::kExitMemoryFault,
                  kvm::exit_reason_name(x.reason));
        if (x.reason == uapi::kExitMemoryFault) {
            cases.add("memory_fault.flags", x.fault.flags == kExitFlagPrivate, hex(x.fault.flags));
            cases.add("memory_fault.gpa", x.fault.gpa == gpa, hex(x.fault.gpa));
            cases.add("memory_fault.size", x.fault.size == page_size(), hex(x.fault.size));
        } else {
            cases.add("exit", false, x.describe);
        }
    }
    cases.finish(c, c.expected);
}

// KVM_PRE_FAULT_MEMORY of [gpa, gpa+size) as the selftest's pre_fault_memory()
// drives it (without the racing deletion): retried while it makes progress,
// each call either shrinking the range or failing, never both or neither.
void pre_fault_case(Cases& cases, kvm::Vcpu& v, const std::string& label, uint64_t gpa,
                    uint64_t size, uint64_t want_left, bool& unsupported) {
    uint64_t left = size;
    int e = 0;
    std::string bad_call;
    for (int calls = 0; calls < 1024; ++calls) {
        uint64_t rem = left;
        e = v.try_pre_fault(gpa, left, &rem);
        const bool progressed = rem < left;
        if (e == EOPNOTSUPP && calls == 0) {
            unsupported = true;
            return;
        }
        if (progressed == (e != 0) && bad_call.empty())
            bad_call = fmt::format("; call {} returned {} with size {:#x} -> {:#x}", calls + 1,
                                   result_str(e), left, rem);
        gpa += left - rem;
        left = rem;
        if (e == EINTR)
            continue;
        if (e || !left)
            break;
    }
    const int want = want_left ? ENOENT : 0;
    cases.add(label, e == want && left == want_left && bad_call.empty(),
              fmt::format("{}, {:#x} left{}", result_str(e), left, bad_call));
}

} // namespace

void check_attributes(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const bool priv = env.attributes & uapi::kMemoryAttributePrivate;
    const std::string why = fmt::format(
        "KVM_CAP_MEMORY_ATTRIBUTES={:#x} on this VM type: no PRIVATE attribute", env.attributes);
    auto attr_check = [&](const std::string& name, const std::string& expected, auto&& body) {
        r.run(env.name(name), [&](Check& c) {
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

void check_memory_fault_exits(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const double limit_s = 20;
    const std::string no_private = fmt::format(
        "KVM_CAP_MEMORY_ATTRIBUTES={:#x} on this VM type: no PRIVATE attribute, so no private "
        "access (the selftest needs KVM_X86_SW_PROTECTED_VM)",
        env.attributes);

    r.run(env.name("exits.private_access_not_private_slot"), [&](Check& c) {
        c.expected = "a guest read of a PRIVATE GPA backed by a memslot without guest_memfd: "
                     "KVM_RUN fails with EFAULT, exit KVM_EXIT_MEMORY_FAULT, flags PRIVATE, that "
                     "GPA, one page (test_private_access_memslot_not_private)";
        if (!env.private_attr())
            return set_skip(c, c.expected, no_private);
        GuestVm gvm(env.kvm, env.vm_type, 1);
        kvm::Mapping mem = kvm::Mapping::anonymous(p);
        gvm.vm().add_memslot({kTestSlot, 0, kDataGpa, p, reinterpret_cast<uint64_t>(mem.data())});
        gvm.vm().set_memory_attributes(kDataGpa, p, uapi::kMemoryAttributePrivate);
        kvm::Vcpu& v = gvm.add_vcpu(0, env.kvm);
        judge_private_fault(c, run_read_loop(gvm, v, kDataGpa, limit_s, {}), kDataGpa, limit_s);
    });

    r.run(env.name("exits.private_access_slot_deleted"), [&](Check& c) {
        c.expected = "a guest reading a PRIVATE guest_memfd page in a loop while the memslot is "
                     "deleted: KVM_RUN fails with EFAULT, exit KVM_EXIT_MEMORY_FAULT, flags "
                     "PRIVATE, that GPA, one page (test_private_access_memslot_deleted)";
        if (!env.private_attr())
            return set_skip(c, c.expected, no_private);
        if (!env.memory2)
            return set_skip(c, c.expected, "KVM_CAP_USER_MEMORY2 not supported");
        GuestVm gvm(env.kvm, env.vm_type, 1);
        kvm::Mapping shared = kvm::Mapping::anonymous(p);
        kvm::ObservedGmem g = env.create(gvm.vm(), p, 0);
        gvm.vm().add_memslot({kTestSlot, uapi::kMemGuestMemfd, kDataGpa, p,
                              reinterpret_cast<uint64_t>(shared.data()), g.gmem.fd(), 0});
        gvm.vm().set_memory_attributes(kDataGpa, p, uapi::kMemoryAttributePrivate);
        kvm::Vcpu& v = gvm.add_vcpu(0, env.kvm);
        int del = -1;
        VcpuExit x = run_read_loop(gvm, v, kDataGpa, limit_s, [&] {
            // Let the guest fault the page in privately first (not required:
            // the exit is the same either way, as in the selftest's race).
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            del = gvm.vm().try_remove_memslot(kTestSlot);
        });
        judge_private_fault(c, x, kDataGpa, limit_s);
        if (del != 0) {
            c.outcome = Outcome::fail;
            c.observed += "; deleting the memslot: " + result_str(del);
        }
    });
}

void check_pre_fault(Runner& r, const Env& env) {
    const uint64_t p = page_size();
    const uint64_t two_m = 2ull << 20;
    const uint64_t test_size = two_m + p; // the selftest's TEST_SIZE
    const uint64_t gpa = kDataGpa;        // 2 MiB aligned
    const std::string expected =
        "[gpa, +2M) all done, success; [+2M, +2 pages) one page done, then ENOENT with one page "
        "left (past the slot's end: emulated MMIO); [+2M+page, +page) ENOENT with it left; "
        "every call either shrinks the range or fails (pre_fault_memory_test.c)";

    for (bool priv : {false, true}) {
        r.run(env.name(priv ? "pre_fault.private" : "pre_fault.shared"), [&](Check& c) {
            c.expected = expected;
            if (!env.pre_fault)
                return set_skip(c, expected,
                                "KVM_CAP_PRE_FAULT_MEMORY is 0 on this VM type (6.11+, TDP only)");
            if (priv && !env.private_attr())
                return set_skip(c, expected,
                                fmt::format("KVM_CAP_MEMORY_ATTRIBUTES={:#x} on this VM type: no "
                                            "PRIVATE attribute",
                                            env.attributes));
            if (priv && !env.memory2)
                return set_skip(c, expected, "KVM_CAP_USER_MEMORY2 not supported");
            kvm::Vm vm = env.new_vm();
            kvm::Mapping host = kvm::Mapping::anonymous(test_size);
            kvm::ObservedGmem g;
            kvm::Memslot m{kTestSlot, 0, gpa, test_size, reinterpret_cast<uint64_t>(host.data())};
            if (priv) {
                g = env.create(vm, test_size, 0);
                m.flags = uapi::kMemGuestMemfd;
                m.gmem_fd = g.gmem.fd();
            }
            vm.add_memslot(m);
            if (priv)
                vm.set_memory_attributes(gpa, test_size, uapi::kMemoryAttributePrivate);
            kvm::Vcpu& v = vm.add_vcpu(0, env.kvm);
            Cases cases;
            bool unsupported = false;
            pre_fault_case(cases, v, "[0, 2M)", gpa, two_m, 0, unsupported);
            if (unsupported)
                return set_skip(c, expected,
                                "KVM_PRE_FAULT_MEMORY returned EOPNOTSUPP on this VM (no TDP)");
            pre_fault_case(cases, v, "[2M, 2M+2 pages)", gpa + two_m, 2 * p, p, unsupported);
            pre_fault_case(cases, v, "[2M+page, +page)", gpa + test_size, p, p, unsupported);
            cases.finish(c, expected);
        });
    }
}

void check_default_vm(Runner& r, const Env& env) {
    r.run("kvm.default_vm.guest_memfd_flags", [&](Check& c) {
        const uint64_t want = uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared;
        const bool ndm = env.opt.caps && env.opt.caps->series.fingerprint.no_direct_map.present;
        const uint64_t all = want | (ndm ? env.no_direct_map_flag() : 0);
        c.expected = with_tag(
            ndm, fmt::format("the default VM type advertises {} in KVM_CAP_GUEST_MEMFD_FLAGS on "
                             "6.18+ (test_guest_memfd_guest{})",
                             env.flags_str(all), ndm ? "; NO_DIRECT_MAP v12 adds its flag" : ""));
        if (!env.release_at_least(6, 18))
            return set_skip(c, c.expected,
                            fmt::format("kernel {} is older than 6.18, which added MMAP and "
                                        "INIT_SHARED",
                                        env.release()));
        kvm::Vm vm = kvm::Vm::create(env.kvm, uapi::kX86DefaultVm);
        long gm = vm.check_extension(uapi::kCapGuestMemfd);
        long v = vm.check_extension(uapi::kCapGuestMemfdFlags);
        c.observed = fmt::format("KVM_CAP_GUEST_MEMFD={}, KVM_CAP_GUEST_MEMFD_FLAGS={:#x} ({})", gm,
                                 v, env.flags_str(v > 0 ? uint64_t(v) : 0));
        c.outcome = gm > 0 && v > 0 && (uint64_t(v) & all) == all ? Outcome::pass : Outcome::fail;
    });
}

} // namespace gms::workloads::conformance
