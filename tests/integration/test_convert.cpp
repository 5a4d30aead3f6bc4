// convert against the real /dev/kvm. Each mode is a Check of its own; on a
// kernel without any conversion mechanism the workload skips with the reasons
// (and this test SKIPs after checking them). A wrong cap number in the
// profile makes a mode run for real up to its first conversion and fail:
// that shows the mode's code runs guest code and reports failures, not only skips.
#include "host_test_util.h"
#include "workloads/guest_common.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace gms;
using namespace host_test;
namespace guest = gms::workloads::guest;

namespace {

profile::Profile convert_profile(const std::string& params, const std::string& extra = "",
                                 const std::string& vm_type = "default") {
    std::string text =
        fmt::format("name = \"test\"\nseed = 3\nduration = \"30s\"\n{}\n"
                    "[vm]\ncount = 1\nvcpus = 1\ntype = \"{}\"\n[guest_memfd]\nsize = \"1MiB\"\n"
                    "flags = [\"mmap\", \"init_shared\"]\n[[workload]]\nkind = \"convert\"\n{}\n",
                    extra, vm_type, params);
    return profile::parse_profile(text, "test", {}, workloads::schemas());
}

const report::Check* find_check(const report::WorkloadResult& r, const std::string& name) {
    for (const auto& c : r.checks)
        if (c.name == name)
            return &c;
    return nullptr;
}

// Hardware virtualization behind /dev/kvm (VMX/SVM in cpuinfo); without it
// KVM here is a paravirtual module that emulates guest code.
bool hardware_virt() {
    auto info = read_file("/proc/cpuinfo");
    return info &&
           (info->find(" vmx") != std::string::npos || info->find(" svm") != std::string::npos);
}

} // namespace

TEST_CASE("convert: each mode passes or skips with the kernel's reason", "[convert]") {
    auto p = convert_profile("ops = 2\npages = 8\nrace_time = \"1s\"");
    if (auto why = skip_reason(p))
        SKIP(*why);
    RecordingObserver obs;
    auto o = run(p, obs, 20);
    const auto& r = o.result;
    INFO(summary(r));
    REQUIRE(r.outcome != report::Outcome::error);
    unsigned ran = 0;
    for (std::string mode : {"attributes", "hypercall", "in_place"}) {
        const report::Check* c = find_check(r, "convert." + mode);
        REQUIRE(c != nullptr);
        if (c->outcome == report::Outcome::skip) {
            CHECK_FALSE(c->reason.empty());
        } else {
            ++ran;
            CHECK(c->outcome == report::Outcome::pass);
        }
    }
    // The extended checks: each present, passing or skipping with a reason.
    for (std::string name : {"convert.layout.straddle_2m", "convert.layout.interleave",
                             "convert.race.faults", "convert.race.punch", "convert.flags.none",
                             "convert.flags.mmap", "convert.flags.mmap_init_shared"}) {
        const report::Check* c = find_check(r, name);
        INFO(name);
        REQUIRE(c != nullptr);
        if (c->outcome == report::Outcome::skip)
            CHECK_FALSE(c->reason.empty());
        else
            CHECK(c->outcome == report::Outcome::pass);
    }
    const auto& caps = host_test::caps();
    const report::Check* attrs = find_check(r, "convert.attributes");
    if (!(caps.memory_attributes & uapi::kMemoryAttributePrivate) &&
        !caps.vm_type_supported(uapi::kX86SwProtectedVm)) {
        CHECK(attrs->outcome == report::Outcome::skip);
        CHECK_THAT(attrs->reason, Catch::Matchers::ContainsSubstring("KVM_CAP_MEMORY_ATTRIBUTES"));
    }
    if (!caps.memory_attributes2) {
        const report::Check* ip = find_check(r, "convert.in_place");
        CHECK(ip->outcome == report::Outcome::skip);
        CHECK_THAT(ip->reason, Catch::Matchers::ContainsSubstring("KVM_SET_MEMORY_ATTRIBUTES2"));
    }
    CHECK(obs.created == obs.released);
    CHECK(obs.violations.empty());
    if (ran == 0) {
        CHECK(r.outcome == report::Outcome::skip);
        CHECK_THAT(r.reason, Catch::Matchers::ContainsSubstring("no conversion mode can run"));
        SKIP("no conversion mode on this kernel: " + r.reason);
    }
    CHECK(r.outcome == report::Outcome::pass);
}

TEST_CASE("convert: a mode that cannot convert fails with the step and errno", "[convert]") {
    // KVM_CAP_NR_MEMSLOTS (10) answers a large mask with bit 3 set, so a
    // profile that names it as KVM_CAP_MEMORY_ATTRIBUTES2 makes in-place
    // conversion look available: step 0 (host fills, guest checks and writes,
    // host checks, all through the shared guest_memfd) runs for real, then the
    // conversion ioctl, absent from this kernel, must fail the mode.
    auto p =
        convert_profile("ops = 1\npages = 4\nrun_timeout = \"1s\"",
                        "[abi]\ncap_memory_attributes2 = 10\nset_memory_attributes2_nr = 0xd6");
    if (auto why = skip_reason(p))
        SKIP(*why);
    kvm::Kvm k = kvm::Kvm::open();
    kvm::Vm vm = kvm::Vm::create(k);
    if (vm.check_extension(uapi::kCapNrMemslots) <= 0 ||
        !(uint64_t(vm.check_extension(uapi::kCapNrMemslots)) & uapi::kMemoryAttributePrivate))
        SKIP("KVM_CAP_NR_MEMSLOTS has no bit 3 here; cannot fake the in-place cap");
    if ((uint64_t(vm.check_extension(uapi::kCapGuestMemfdFlags)) & 3) != 3)
        SKIP("guest_memfd MMAP|INIT_SHARED not supported");
    if (host_test::caps().memory_attributes2)
        SKIP("this kernel may really have in-place conversion at ioctl 0xd6");
    RecordingObserver obs;
    auto o = run(p, obs, 20);
    const auto& r = o.result;
    INFO(summary(r));
    const report::Check* ip = find_check(r, "convert.in_place");
    REQUIRE(ip != nullptr);
    CHECK(ip->outcome == report::Outcome::fail);
    CHECK_THAT(ip->reason, Catch::Matchers::ContainsSubstring("step 'P to private'"));
    CHECK_THAT(ip->reason, Catch::Matchers::ContainsSubstring("KVM_SET_MEMORY_ATTRIBUTES2"));
    // Step 0 really ran: the guest checked and wrote 4 pages, the host checked them.
    CHECK(op_count(r, "guest_round") >= 1);
    CHECK(op_count(r, "host_verify") >= 1);
    CHECK(r.verification.mismatches == 0);
    CHECK(r.outcome == report::Outcome::fail);
    // The hypercall mode rides on the (fake) in-place converter: it either got
    // its exit and then failed converting, or its hypercall never exited.
    const report::Check* hc = find_check(r, "convert.hypercall");
    REQUIRE(hc != nullptr);
    CHECK(hc->outcome == report::Outcome::fail);
    CHECK(obs.created == obs.released);
    CHECK(obs.violations.empty());
}

TEST_CASE("convert: KVM_HC_MAP_GPA_RANGE reaches userspace as KVM_EXIT_HYPERCALL", "[convert]") {
    if (auto why = kvm_missing())
        SKIP(*why);
    kvm::Kvm k = kvm::Kvm::open();
    guest::GuestVm gvm(k, 0, 1);
    long mask = gvm.vm().check_extension(uapi::kCapExitHypercall);
    if (mask <= 0 || !(uint64_t(mask) & (1ull << uapi::kHcMapGpaRange)))
        SKIP(fmt::format("KVM_CAP_EXIT_HYPERCALL={:#x}: no KVM_HC_MAP_GPA_RANGE exit", mask));
    auto vendor = guest::cpu_vendor();
    if (vendor == guest::CpuVendor::other)
        SKIP("unknown CPU vendor");
    REQUIRE(gvm.vm().try_enable_cap(uapi::kCapExitHypercall, 1ull << uapi::kHcMapGpaRange) == 0);
    uint64_t entry = gvm.load(guest::hypercall_program(vendor));
    kvm::Vcpu& v = gvm.add_vcpu(0, k);
    guest::GuestCall c;
    c.rip = entry;
    c.rsp = gvm.stack_top(0);
    c.rbx = 0x10002000;
    c.rcx = 3;
    c.rdx = uapi::kMapGpaRangeEncrypted;
    guest::enter(v, c);
    int exits = 0;
    std::optional<uint32_t> result;
    std::string args;
    auto on_exit = [&](kvm::Vcpu& vc, kvm_run& run) -> std::string {
        if (run.exit_reason == KVM_EXIT_HYPERCALL) {
            ++exits;
            args = fmt::format("{} {:#x} {} {:#x}", run.hypercall.nr, run.hypercall.args[0],
                               run.hypercall.args[1], run.hypercall.args[2]);
            run.hypercall.ret = 0x1234; // handed back to the guest in RAX
            return "";
        }
        if (run.exit_reason == KVM_EXIT_IO && run.io.port == guest::kPortResult) {
            uint32_t v32;
            std::memcpy(&v32, reinterpret_cast<uint8_t*>(&run) + run.io.data_offset, 4);
            result = v32;
            return "";
        }
        return guest::describe_exit(vc);
    };
    guest::RunResult rr;
    report::OpStats stats;
    {
        guest::VcpuThreads th(2.0, 0.1);
        th.spawn([&](guest::RunSlot& slot) { rr = guest::run_vcpu(v, slot, stats, on_exit, 2.0); });
        th.supervise([] { return false; });
    }
    INFO(rr.failure);
    if (rr.kind == guest::RunResult::failed && exits == 0 && !hardware_virt() &&
        rr.failure.find("did not return within") != std::string::npos)
        SKIP(fmt::format(
            "{} never exits to userspace on this KVM without VMX/SVM (KVM_CAP_EXIT_HYPERCALL={:#x} "
            "is advertised and enabled): {}",
            vendor == guest::CpuVendor::amd ? "VMMCALL" : "VMCALL", mask, rr.failure));
    REQUIRE(rr.kind == guest::RunResult::halted);
    CHECK(exits == 1);
    CHECK(args == fmt::format("12 0x10002000 3 {:#x}", uapi::kMapGpaRangeEncrypted));
    REQUIRE(result.has_value());
    CHECK(*result == 0x1234);
}
