// convert: private <-> shared conversion of guest_memfd-backed guest memory.
//
// Three modes, each its own Check (pass / fail / skip with the reason):
//  attributes  KVM_SET_MEMORY_ATTRIBUTES on the VM (needs the PRIVATE bit in
//              KVM_CAP_MEMORY_ATTRIBUTES, e.g. on a KVM_X86_SW_PROTECTED_VM);
//  hypercall   the guest asks with KVM_HC_MAP_GPA_RANGE (VMCALL/VMMCALL), the
//              host sees KVM_EXIT_HYPERCALL and converts with one of the others;
//  in_place    KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd (patch series:
//              ioctl number and cap number come from the profile), including
//              the -EAGAIN + error_offset answer while a page is pinned.
//
// One scenario serves every mode. N pages, P = the first half, S = the rest:
//  0. all shared: the host fills every page, the guest checks and rewrites it,
//     the host checks what the guest wrote;
//  1. P -> private: private pages are not host-accessible (SIGBUS through the
//     guest_memfd mapping, when it can be mapped); the guest sees in P zero
//     (fresh guest_memfd pages, separate shared backing) or its old data
//     (in place: preserved or zeroed, anything else is corruption); S keeps its data;
//     guest writes go to guest_memfd and never show in the shared view;
//  2. P -> shared: accessible again; the guest sees the shared data again;
//  3. (separate backing) the host punched P's private copies: P -> private
//     reads zero, then back to shared for the next iteration.
// Where shared memory lives: in place (the guest_memfd itself, mapped with
// MMAP) when the VM's guest_memfd can be mapped, else ordinary shared memory
// as userspace_addr with the private copy in the guest_memfd (upstream 6.8+).
#include "core/error.h"
#include "core/fd.h"
#include "kvm/series.h"
#include "workloads/guest_common.h"
#include "workloads/host_common.h"
#include "workloads/sigbus.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <memory>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

namespace gms::workloads {

namespace {

using namespace guest;

constexpr uint32_t kDataSlot = 1;
constexpr uint32_t kTagHost = 11, kTagGuest = 12;

enum class Mode { attributes, hypercall, in_place };
const char* mode_name(Mode m) {
    switch (m) {
    case Mode::attributes:
        return "attributes";
    case Mode::hypercall:
        return "hypercall";
    default:
        return "in_place";
    }
}

const char* vm_type_name(unsigned long t) {
    switch (t) {
    case uapi::kX86DefaultVm:
        return "default";
    case uapi::kX86SwProtectedVm:
        return "sw_protected";
    case uapi::kX86SevVm:
        return "sev";
    case uapi::kX86SevEsVm:
        return "sev_es";
    case uapi::kX86SnpVm:
        return "sev_snp";
    case uapi::kX86TdxVm:
        return "tdx";
    default:
        return "?";
    }
}

// ---- planning: which mode can run here, on which VM type ---------------------------

struct Plan {
    bool runnable = false;
    std::string reason; // why not
    unsigned long vm_type = 0;
    bool in_place = false; // shared pages live in the guest_memfd (MMAP)
    uint64_t gmem_flags = 0;
    Mode converter = Mode::attributes; // hypercall: who applies the conversion
};

// VM types worth trying: the profile's, then sw_protected (the one type that
// offers private memory to plain guest code).
std::vector<unsigned long> vm_candidates(const Caps& caps, const profile::Profile& p) {
    std::vector<unsigned long> out;
    if (caps.vm_type_supported(p.vm_type) &&
        (p.vm_type == uapi::kX86DefaultVm || p.vm_type == uapi::kX86SwProtectedVm))
        out.push_back(p.vm_type);
    if (p.vm_type != uapi::kX86SwProtectedVm && caps.vm_type_supported(uapi::kX86SwProtectedVm))
        out.push_back(uapi::kX86SwProtectedVm);
    return out;
}

std::string tried(const Caps& caps, const profile::Profile& p) {
    std::string s = fmt::format("KVM_CAP_VM_TYPES={:#x}", caps.vm_types);
    if (!caps.vm_type_supported(uapi::kX86SwProtectedVm))
        s += " (no KVM_X86_SW_PROTECTED_VM)";
    if (p.vm_type != uapi::kX86DefaultVm && p.vm_type != uapi::kX86SwProtectedVm)
        s += fmt::format("; profile VM type {} cannot run plain guest code", p.vm_type_name);
    return s;
}

Plan plan_attributes(const Context& ctx) {
    Plan pl;
    std::vector<std::string> seen;
    for (unsigned long t : vm_candidates(ctx.caps, ctx.profile)) {
        kvm::Vm vm;
        if (int e = kvm::Vm::try_create(vm, ctx.kvm, t)) {
            seen.push_back(
                fmt::format("KVM_CREATE_VM({}) failed: {}", vm_type_name(t), errno_name(e)));
            continue;
        }
        long attrs = vm.check_extension(uapi::kCapMemoryAttributes);
        if (attrs < 0 || !(uint64_t(attrs) & uapi::kMemoryAttributePrivate)) {
            seen.push_back(
                fmt::format("KVM_CAP_MEMORY_ATTRIBUTES={:#x} on a {} VM (no PRIVATE bit)", attrs,
                            vm_type_name(t)));
            continue;
        }
        long gflags = vm.check_extension(uapi::kCapGuestMemfdFlags);
        pl.runnable = true;
        pl.vm_type = t;
        pl.in_place = gflags > 0 && (uint64_t(gflags) & host::kMmapFlags) == host::kMmapFlags;
        pl.gmem_flags = pl.in_place ? host::kMmapFlags : 0;
        return pl;
    }
    if (seen.empty())
        seen.push_back("no VM type to try");
    pl.reason = fmt::format("{}; {}", fmt::join(seen, "; "), tried(ctx.caps, ctx.profile));
    return pl;
}

// The in-place conversion ABI: the layout from the kernel's fingerprint, the
// ioctl number and capability as the profile has them (engine::detect put
// the fingerprint's there unless the profile set its own).
kvm::SeriesAbi in_place_abi(const Context& ctx) {
    kvm::SeriesAbi abi = ctx.caps.series.abi;
    abi.attrs2_nr = ctx.profile.attrs2_ioctl_nr;
    abi.cap_attrs2 = ctx.profile.cap_memory_attributes2;
    return abi;
}

// Whether a VM of this type converts in place: the capability the profile
// names, else the ioctl itself on a guest_memfd (ENOTTY: not there). "" or why not.
std::string in_place_support(const Context& ctx, kvm::Vm& vm, unsigned long t) {
    const kvm::SeriesAbi abi = in_place_abi(ctx);
    if (abi.cap_attrs2 != uapi::kCapMemoryAttributes2None) {
        long c2 = vm.check_extension(abi.cap_attrs2);
        if (c2 <= 0)
            return fmt::format("KVM_CAP_MEMORY_ATTRIBUTES2 (cap {}, abi.cap_memory_attributes2) = "
                               "{} on a {} VM",
                               abi.cap_attrs2, c2, vm_type_name(t));
        if (!(uint64_t(c2) & uapi::kMemoryAttributePrivate))
            return fmt::format("KVM_CAP_MEMORY_ATTRIBUTES2 (cap {}) = {:#x} on a {} VM: no "
                               "PRIVATE bit",
                               abi.cap_attrs2, c2, vm_type_name(t));
        return "";
    }
    int fd = vm.try_create_guest_memfd_raw(kPage, host::kMmapFlags);
    if (fd < 0)
        return fmt::format("KVM_CREATE_GUEST_MEMFD(MMAP|INIT_SHARED) on a {} VM failed: {}",
                           vm_type_name(t), errno_name(-fd));
    UniqueFd owner(fd);
    if (kvm::probe_set_memory_attributes2(fd, abi) == ENOTTY)
        return fmt::format("KVM_SET_MEMORY_ATTRIBUTES2 ({:#x}: nr {:#x}, {} bytes; patch series) "
                           "on a guest_memfd of a {} VM: ENOTTY (no such ioctl)",
                           abi.attrs2_request(), abi.attrs2_nr, abi.attrs2.size, vm_type_name(t));
    return "";
}

Plan plan_in_place(const Context& ctx) {
    Plan pl;
    std::vector<std::string> seen;
    for (unsigned long t : vm_candidates(ctx.caps, ctx.profile)) {
        kvm::Vm vm;
        if (int e = kvm::Vm::try_create(vm, ctx.kvm, t)) {
            seen.push_back(
                fmt::format("KVM_CREATE_VM({}) failed: {}", vm_type_name(t), errno_name(e)));
            continue;
        }
        long gflags = vm.check_extension(uapi::kCapGuestMemfdFlags);
        if (gflags < 0 || (uint64_t(gflags) & host::kMmapFlags) != host::kMmapFlags) {
            seen.push_back(
                fmt::format("in-place conversion needs guest_memfd MMAP|INIT_SHARED on a {} VM "
                            "(KVM_CAP_GUEST_MEMFD_FLAGS={:#x})",
                            vm_type_name(t), gflags));
            continue;
        }
        if (auto why = in_place_support(ctx, vm, t); !why.empty()) {
            seen.push_back(why);
            continue;
        }
        pl.runnable = true;
        pl.vm_type = t;
        pl.in_place = true;
        pl.gmem_flags = host::kMmapFlags;
        return pl;
    }
    if (seen.empty())
        seen.push_back("no VM type to try");
    pl.reason = fmt::format("{}; {}", fmt::join(seen, "; "), tried(ctx.caps, ctx.profile));
    return pl;
}

Plan plan_hypercall(const Context& ctx, const Plan& attrs, const Plan& in_place) {
    Plan pl;
    const Plan* base = attrs.runnable ? &attrs : in_place.runnable ? &in_place : nullptr;
    if (!base) {
        // Their own reasons are reported with them.
        pl.reason = "no conversion mechanism to apply the guest's request (needs the attributes "
                    "or in_place mode)";
        return pl;
    }
    kvm::Vm vm;
    if (int e = kvm::Vm::try_create(vm, ctx.kvm, base->vm_type)) {
        pl.reason =
            fmt::format("KVM_CREATE_VM({}) failed: {}", vm_type_name(base->vm_type), errno_name(e));
        return pl;
    }
    long mask = vm.check_extension(uapi::kCapExitHypercall);
    if (mask <= 0 || !(uint64_t(mask) & (1ull << uapi::kHcMapGpaRange))) {
        pl.reason = fmt::format("KVM_CAP_EXIT_HYPERCALL={:#x}: no KVM_HC_MAP_GPA_RANGE exit", mask);
        return pl;
    }
    if (cpu_vendor() == CpuVendor::other) {
        pl.reason = "unknown CPU vendor: neither VMCALL nor VMMCALL is known to be native";
        return pl;
    }
    pl = *base;
    pl.converter = attrs.runnable ? Mode::attributes : Mode::in_place;
    return pl;
}

// ---- one VM running the scenario -----------------------------------------------------

// Defaults and limits live in the ParamSpecs (convert_workload()); the
// profile loader has filled in and checked every one of them.
struct Params {
    uint64_t pages = 0; // even
    double run_timeout_s = 0;
};

// VM + one vCPU + guest_memfd (+ mappings). Members go in reverse order:
// the VM (vCPU, memslots, VM fd) with its code memory, the separate shared
// memory, then the guest_memfd and its mapping, whose release the observer
// hears of last, no reference being left.
struct ConvVm {
    kvm::ObservedGmem file;  // created on gvm's VM; in place, file.map is the
                             // shared view and where SIGBUS is checked
    kvm::Mapping shared_mem; // separate backing: the shared view
    std::unique_ptr<GuestVm> gvm;
    kvm::Vcpu* vcpu = nullptr;
    uint64_t pages_entry = 0, hc_entry = 0;
    uint8_t* shared_view = nullptr;
    bool in_place = false;
    uint64_t npages = 0;

    uint64_t gpa(uint64_t page) const { return kDataGpa + page * kPage; }
};

void setup(Context& ctx, ConvVm& cv, const Plan& pl, const Params& prm, Mode mode,
           uint64_t& gmem_files) {
    cv.gvm = std::make_unique<GuestVm>(ctx.kvm, pl.vm_type, 1);
    cv.pages_entry = cv.gvm->load(pages_program());
    cv.hc_entry = cv.gvm->load(hypercall_program(cpu_vendor()));
    kvm::Vm& vm = cv.gvm->vm();
    cv.npages = prm.pages;
    cv.in_place = pl.in_place;
    const uint64_t size = prm.pages * kPage;
    cv.file.create_gmem(vm, size, pl.gmem_flags, ctx.observer);
    ++gmem_files;
    kvm::Memslot m;
    m.slot = kDataSlot;
    m.flags = uapi::kMemGuestMemfd;
    m.gpa = kDataGpa;
    m.size = size;
    m.gmem_fd = cv.file.gmem.fd();
    if (cv.in_place) {
        cv.file.map = cv.file.gmem.map_shared();
        cv.shared_view = cv.file.map.data();
    } else {
        cv.shared_mem =
            kvm::Mapping::map(-1, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
        cv.shared_view = cv.shared_mem.data();
    }
    m.userspace_addr = reinterpret_cast<uint64_t>(cv.shared_view);
    vm.add_memslot(m);
    if (mode == Mode::hypercall) {
        if (int e = vm.try_enable_cap(uapi::kCapExitHypercall, 1ull << uapi::kHcMapGpaRange))
            throw SysError("ioctl", "KVM_ENABLE_CAP KVM_CAP_EXIT_HYPERCALL 1<<KVM_HC_MAP_GPA_RANGE",
                           e);
    }
    cv.vcpu = &cv.gvm->add_vcpu(0, ctx.kvm);
}

// Failure of one scenario step; the mode stops there.
struct StepFailed {
    std::string what;
};

struct Runner {
    Context& ctx;
    ConvVm& cv;
    RunSlot& slot;
    host::WorkerResult& w;
    const Params& prm;
    Mode mode;
    Mode converter;
    kvm::SeriesAbi attrs2_abi; // layout from the fingerprint, number from the profile
    uint64_t iteration = 0;
    uint64_t conversions = 0, hypercalls = 0, sigbus_checks = 0;
    std::string in_place_policy; // what in-place conversion did to data ("preserved", "zeroed")

    struct GuestMismatch {
        uint64_t page;
        uint32_t expected, got;
    };

    [[noreturn]] void fail(const std::string& step, const std::string& what) {
        throw StepFailed{fmt::format("iteration {} step '{}': {}", iteration, step, what)};
    }

    // Runs guest_pages over `descs`; returns the mismatches the guest reported.
    std::vector<GuestMismatch> guest(const std::string& step, const std::vector<PageDesc>& descs) {
        PageDesc* table = cv.gvm->descs(0);
        std::copy(descs.begin(), descs.end(), table);
        GuestCall c;
        c.rip = cv.pages_entry;
        c.rsp = cv.gvm->stack_top(0);
        c.rsi = cv.gvm->descs_gpa(0);
        c.rcx = descs.size();
        enter(*cv.vcpu, c);
        std::vector<GuestMismatch> out;
        auto on_exit = [&](kvm::Vcpu& v, kvm_run& run) -> std::string {
            if (run.exit_reason == KVM_EXIT_IO && run.io.port == kPortMismatch &&
                run.io.size == 4 && run.io.direction == KVM_EXIT_IO_OUT) {
                uint32_t gpa;
                std::memcpy(&gpa, reinterpret_cast<uint8_t*>(&run) + run.io.data_offset, 4);
                kvm_regs r = v.regs();
                out.push_back(
                    {(uint64_t(gpa) - kDataGpa) / kPage, uint32_t(r.rbx), uint32_t(r.rcx)});
                return "";
            }
            return "unexpected " + describe_exit(v);
        };
        host::Timer t;
        RunResult rr = run_vcpu(*cv.vcpu, slot, w.ops["KVM_RUN"], on_exit, prm.run_timeout_s);
        if (rr.kind == RunResult::stopped)
            throw Interrupted();
        if (rr.kind == RunResult::failed)
            fail(step, rr.failure);
        w.ops["guest_round"].record(t.ns(), descs.size() * kPage);
        w.verification.pages_checked += descs.size();
        return out;
    }

    // The guest checks pages [first, first+n) against `expect` (0 = zero) and writes `write` (0 =
    // no).
    void guest_expect(const std::string& step, uint64_t first, uint64_t n,
                      const std::function<uint32_t(uint64_t)>& expect,
                      const std::function<uint32_t(uint64_t)>& write) {
        std::vector<PageDesc> d;
        for (uint64_t pg = first; pg < first + n; ++pg) {
            PageDesc x{};
            x.gpa = static_cast<uint32_t>(cv.gpa(pg));
            if (uint32_t k = expect(pg)) {
                x.flags |= kExpectPattern;
                x.expect_key = k;
            }
            if (uint32_t k = write ? write(pg) : 0) {
                x.flags |= kWrite;
                x.write_key = k;
            }
            d.push_back(x);
        }
        for (const auto& m : guest(step, d))
            w.verification.mismatch(fmt::format(
                "{} iteration {} step '{}': guest read {:#010x} in page {} "
                "(gpa {:#x}), expected {:#010x}",
                mode_name(mode), iteration, step, m.got, m.page, cv.gpa(m.page), m.expected));
    }

    // The guest writes pages [first, first+n) without checking them first.
    void guest_write(const std::string& step, uint64_t first, uint64_t n,
                     const std::function<uint32_t(uint64_t)>& write) {
        std::vector<PageDesc> d;
        for (uint64_t pg = first; pg < first + n; ++pg)
            d.push_back({static_cast<uint32_t>(cv.gpa(pg)), kNoCheck | kWrite, 0, write(pg)});
        for (const auto& m : guest(step, d))
            w.verification.mismatch(
                fmt::format("{} iteration {} step '{}': unexpected mismatch report "
                            "for page {} from a write-only batch",
                            mode_name(mode), iteration, step, m.page));
    }

    // In place, data across a conversion is either kept or zeroed (a policy
    // the series may choose); a mix of both, or anything else, is corruption.
    void guest_expect_kept_or_zero(const std::string& step, uint64_t first, uint64_t n,
                                   const std::function<uint32_t(uint64_t)>& before) {
        std::vector<PageDesc> d;
        for (uint64_t pg = first; pg < first + n; ++pg)
            d.push_back({static_cast<uint32_t>(cv.gpa(pg)), kExpectPattern, before(pg), 0});
        auto kept_bad = guest(step + " (kept?)", d);
        if (kept_bad.empty()) {
            note_policy("preserved");
            return;
        }
        for (auto& x : d)
            x.flags = 0; // now expect zero
        auto zero_bad = guest(step + " (zeroed?)", d);
        if (zero_bad.empty() && kept_bad.size() == n) {
            note_policy("zeroed");
            return;
        }
        w.verification.mismatch(
            fmt::format("{} iteration {} step '{}': after in-place conversion {} of {} pages lost "
                        "their data and {} "
                        "are not zero either (first: page {} read {:#010x})",
                        mode_name(mode), iteration, step, kept_bad.size(), n, zero_bad.size(),
                        zero_bad.empty() ? kept_bad.front().page : zero_bad.front().page,
                        zero_bad.empty() ? kept_bad.front().got : zero_bad.front().got));
    }

    void note_policy(const std::string& p) {
        if (in_place_policy.empty())
            in_place_policy = p;
        else if (in_place_policy.find(p) == std::string::npos)
            in_place_policy += " and " + p; // inconsistent between steps: visible in the check
    }

    // The host checks the shared view of [first, first+n) against `key` (0 = zero).
    void host_expect(const std::string& step, uint64_t first, uint64_t n,
                     const std::function<uint32_t(uint64_t)>& key) {
        host::Timer t;
        for (uint64_t pg = first; pg < first + n; ++pg) {
            uint32_t k = key(pg);
            const uint8_t* page = cv.shared_view + pg * kPage;
            host::compiler_barrier();
            long bad = first_bad_word(page, k != 0, k);
            if (bad >= 0) {
                uint32_t got;
                std::memcpy(&got, page + bad * 4, 4);
                w.verification.mismatch(fmt::format("{} iteration {} step '{}': host read {:#010x} "
                                                    "at page {} word {} of the shared "
                                                    "view, expected {:#010x}",
                                                    mode_name(mode), iteration, step, got, pg, bad,
                                                    k ? pattern_word(k, uint32_t(bad)) : 0u));
            }
        }
        w.ops["host_verify"].record(t.ns(), n * kPage);
        w.verification.pages_checked += n;
    }

    // Host access through the guest_memfd mapping: private pages must raise
    // SIGBUS on read and write, shared pages must not.
    void sigbus_expect(const std::string& step, uint64_t first, uint64_t n, bool private_) {
        if (!cv.file.map.valid())
            return;
        SigbusGuard guard;
        for (uint64_t pg = first; pg < first + n; ++pg) {
            volatile uint8_t* p = cv.file.map.data() + pg * kPage;
            uint8_t v = 0;
            bool rf = guard.read_faults(p, &v);
            ++sigbus_checks;
            if (rf != private_)
                fail(step, fmt::format("host read of {} page {} through the guest_memfd mapping {}",
                                       private_ ? "private" : "shared", pg,
                                       rf ? "raised SIGBUS" : "succeeded (expected SIGBUS)"));
            if (private_) {
                bool wf = guard.write_faults(p, 0xa5);
                if (!wf)
                    fail(step, fmt::format(
                                   "host write to private page {} through the guest_memfd mapping "
                                   "succeeded (expected SIGBUS)",
                                   pg));
            }
        }
    }

    int attrs2(uint64_t first, uint64_t n, bool to_private, uint64_t* error_offset) {
        return kvm::try_set_memory_attributes2(
            cv.file.gmem.fd(), attrs2_abi, first * kPage, n * kPage,
            to_private ? uapi::kMemoryAttributePrivate : 0, error_offset);
    }

    int apply(Mode how, uint64_t first, uint64_t n, bool to_private,
              uint64_t* error_offset = nullptr) {
        host::Timer t;
        int e;
        if (how == Mode::attributes)
            e = cv.gvm->vm().try_set_memory_attributes(
                cv.gpa(first), n * kPage, to_private ? uapi::kMemoryAttributePrivate : 0);
        else
            e = attrs2(first, n, to_private, error_offset);
        auto& s = w.ops[to_private ? "to_private" : "to_shared"];
        if (e)
            s.record_error(e);
        else
            s.record(t.ns(), n * kPage);
        return e;
    }

    // Converts as the mode says; a failure ends the scenario.
    void convert(const std::string& step, uint64_t first, uint64_t n, bool to_private) {
        ++conversions;
        if (mode != Mode::hypercall) {
            if (int e = apply(mode, first, n, to_private))
                fail(step, fmt::format("{} [{}, {}) to {} failed: {}",
                                       mode == Mode::attributes ? "KVM_SET_MEMORY_ATTRIBUTES"
                                                                : "KVM_SET_MEMORY_ATTRIBUTES2",
                                       first, first + n, to_private ? "private" : "shared",
                                       errno_name(e)));
            return;
        }
        // The guest asks; we apply it on the hypercall exit and return the result.
        const uint64_t attrs = to_private ? uapi::kMapGpaRangeEncrypted : 0;
        GuestCall c;
        c.rip = cv.hc_entry;
        c.rsp = cv.gvm->stack_top(0);
        c.rbx = cv.gpa(first);
        c.rcx = n;
        c.rdx = attrs;
        enter(*cv.vcpu, c);
        unsigned exits = 0;
        int applied = -1;
        std::optional<uint64_t> guest_ret;
        auto on_exit = [&](kvm::Vcpu& v, kvm_run& run) -> std::string {
            if (run.exit_reason == KVM_EXIT_HYPERCALL) {
                ++exits;
                ++hypercalls;
                if (run.hypercall.nr != uapi::kHcMapGpaRange ||
                    run.hypercall.args[0] != cv.gpa(first) || run.hypercall.args[1] != n ||
                    run.hypercall.args[2] != attrs)
                    return fmt::format(
                        "KVM_EXIT_HYPERCALL carries nr {} args {:#x} {} {:#x}; the guest "
                        "asked nr {} args {:#x} {} {:#x}",
                        run.hypercall.nr, run.hypercall.args[0], run.hypercall.args[1],
                        run.hypercall.args[2], uapi::kHcMapGpaRange, cv.gpa(first), n, attrs);
                applied = apply(converter, first, n, to_private);
                run.hypercall.ret = applied ? uint64_t(-int64_t(applied)) : 0;
                return "";
            }
            if (run.exit_reason == KVM_EXIT_IO && run.io.port == kPortResult && run.io.size == 4 &&
                run.io.direction == KVM_EXIT_IO_OUT) {
                uint32_t v32;
                std::memcpy(&v32, reinterpret_cast<uint8_t*>(&run) + run.io.data_offset, 4);
                guest_ret = v32;
                return "";
            }
            return "unexpected " + describe_exit(v);
        };
        host::Timer t;
        RunResult rr = run_vcpu(*cv.vcpu, slot, w.ops["KVM_RUN"], on_exit, prm.run_timeout_s);
        if (rr.kind == RunResult::stopped)
            throw Interrupted();
        if (rr.kind == RunResult::failed)
            fail(step, "hypercall " + rr.failure);
        w.ops["hypercall_round"].record(t.ns());
        if (exits != 1)
            fail(step,
                 fmt::format("{} KVM_EXIT_HYPERCALL exits for one KVM_HC_MAP_GPA_RANGE", exits));
        if (applied != 0)
            fail(step,
                 fmt::format("applying the guest's request [{}, {}) to {} failed: {}", first,
                             first + n, to_private ? "private" : "shared", errno_name(applied)));
        if (!guest_ret || *guest_ret != 0)
            fail(step, guest_ret
                           ? fmt::format("the guest got {:#x} back from the hypercall, expected 0",
                                         *guest_ret)
                           : std::string("the guest never reported the hypercall's result"));
    }

    uint32_t key(uint32_t tag, uint64_t step, uint64_t pg) const {
        return page_key(ctx.seed, tag, iteration, step, pg);
    }

    void iterate() {
        const uint64_t n = cv.npages, half = n / 2;
        auto H = [&](uint64_t pg) { return key(kTagHost, 0, pg); };
        auto G = [&](uint64_t s) {
            return [this, s](uint64_t pg) { return key(kTagGuest, s, pg); };
        };
        auto zero = [](uint64_t) { return 0u; };

        // 0: all shared.
        for (uint64_t pg = 0; pg < n; ++pg)
            fill_page(cv.shared_view + pg * kPage, H(pg));
        guest_expect("shared: guest checks host data", 0, n, H, G(0));
        host_expect("shared: host checks guest data", 0, n, G(0));

        // 1: P -> private.
        convert("P to private", 0, half, true);
        sigbus_expect("P private: host access", 0, half, true);
        sigbus_expect("P private: S host access", half, n - half, false);
        if (cv.in_place)
            guest_expect_kept_or_zero("P private: guest reads", 0, half, G(0));
        else
            guest_expect("P private: guest reads fresh private pages", 0, half, zero, nullptr);
        guest_write("P private: guest writes P", 0, half, G(1));
        guest_expect("P private: guest checks and writes S", half, n - half, G(0), G(1));
        host_expect("P private: host checks S", half, n - half, G(1));
        if (!cv.in_place)
            host_expect("P private: private writes stay out of shared memory", 0, half, G(0));

        // 2: P -> shared.
        convert("P to shared", 0, half, false);
        sigbus_expect("P shared again: host access", 0, n, false);
        if (cv.in_place) {
            guest_expect_kept_or_zero("P shared again: guest reads", 0, half, G(1));
        } else {
            guest_expect("P shared again: guest reads the shared copy", 0, half, G(0), nullptr);
            if (int e = cv.file.gmem.try_punch_hole(0, half * kPage))
                fail("P shared again: discard private copies",
                     fmt::format("PUNCH_HOLE failed: {}", errno_name(e)));
        }
        guest_write("P shared again: guest writes P", 0, half, G(2));
        host_expect("P shared again: host checks P", 0, half, G(2));
        host_expect("P shared again: host checks S", half, n - half, G(1));

        // 3: separate backing: punched private pages come back zero.
        if (!cv.in_place) {
            convert("P to private after punch", 0, half, true);
            guest_expect("P private after punch: guest reads zero", 0, half, zero, nullptr);
            convert("P back to shared", 0, half, false);
        }
        ++iteration;
    }

    // In place only: a page pinned by a reference the kernel cannot drop
    // (vmsplice into a pipe) makes the conversion fail with EAGAIN at that page.
    report::Check eagain_check() {
        report::Check c;
        c.name = "convert.in_place.eagain";
        const uint64_t half = cv.npages / 2, pin = half / 2;
        c.expected = fmt::format(
            "KVM_SET_MEMORY_ATTRIBUTES2 [0, {}) to private fails with EAGAIN and "
            "error_offset {:#x} while page {} is pinned; succeeds after the pin is gone",
            half * kPage, pin * kPage, pin);
        int pipefd[2];
        if (::pipe2(pipefd, O_CLOEXEC) != 0)
            throw SysError("pipe2", "", errno);
        UniqueFd rd(pipefd[0]), wr(pipefd[1]);
        iovec iov{cv.file.map.data() + pin * kPage, kPage};
        ssize_t sp = ::vmsplice(wr.get(), &iov, 1, 0);
        if (sp != ssize_t(kPage)) {
            c.outcome = report::Outcome::skip;
            c.reason = fmt::format("could not pin a shared guest_memfd page with vmsplice: {}",
                                   sp < 0 ? errno_name(errno) : fmt::format("{} bytes", sp));
            return c;
        }
        uint64_t err_off = ~0ull;
        int e = apply(Mode::in_place, 0, half, true, &err_off);
        c.observed = e ? fmt::format("{}, error_offset {:#x}", errno_name(e), err_off)
                       : "success while pinned";
        bool ok = e == EAGAIN && err_off == pin * kPage;
        rd.reset();
        wr.reset(); // the pipe's page references go away with it
        int e2 = apply(Mode::in_place, 0, half, true);
        int e3 = e2 ? 0 : apply(Mode::in_place, 0, half, false);
        c.observed += fmt::format("; after unpinning: to private {}, back to shared {}",
                                  e2 ? errno_name(e2) : "ok", e3 ? errno_name(e3) : "ok");
        c.outcome = ok && !e2 && !e3 ? report::Outcome::pass : report::Outcome::fail;
        if (c.outcome == report::Outcome::fail)
            c.reason =
                !ok ? "the pinned page did not make the conversion fail with EAGAIN at its offset"
                    : "conversion still failed after the pin was released";
        return c;
    }
};

// What one worker (one VM) did in one mode.
struct ModeWorker {
    host::WorkerResult out;
    std::string failure; // first failed step
    uint64_t iterations = 0, conversions = 0, hypercalls = 0, sigbus_checks = 0;
    std::string policy;
    std::optional<report::Check> eagain;
    bool interrupted = false;
};

void run_mode(Context& ctx, Mode mode, const Plan& pl, const Params& prm, uint64_t deadline_ns,
              uint64_t iterations_limit, report::WorkloadResult& r, uint64_t& gmem_files,
              std::vector<host::WorkerResult>& outs) {
    report::Check c;
    c.name = std::string("convert.") + mode_name(mode);
    c.expected = "data and SIGBUS expectations hold across every private<->shared conversion";
    const auto nworkers = static_cast<unsigned>(ctx.spec.integer("threads"));
    std::vector<ModeWorker> ws(nworkers);
    std::vector<std::unique_ptr<ConvVm>> vms;
    for (unsigned i = 0; i < nworkers; ++i) {
        vms.push_back(std::make_unique<ConvVm>());
        setup(ctx, *vms.back(), pl, prm, mode, gmem_files);
    }
    auto stop = [&] { return ctx.should_stop() || now_ns() >= deadline_ns; };
    {
        VcpuThreads threads(prm.run_timeout_s, 0.5);
        for (unsigned i = 0; i < nworkers; ++i) {
            ModeWorker* mw = &ws[i];
            ConvVm* cv = vms[i].get();
            threads.spawn([&, mw, cv, i](RunSlot& slot) {
                Runner run{ctx, *cv, slot, mw->out, prm, mode, pl.converter, in_place_abi(ctx)};
                try {
                    do {
                        run.iterate();
                        mw->iterations = run.iteration;
                        mw->out.progress(ctx, 1, cv->npages * kPage);
                    } while (!stop() && (!iterations_limit || run.iteration < iterations_limit));
                    if (mode == Mode::in_place && i == 0 && !stop())
                        mw->eagain = run.eagain_check();
                } catch (const StepFailed& f) {
                    mw->failure = f.what;
                } catch (const Interrupted&) {
                    mw->interrupted = true;
                } catch (const std::exception& e) {
                    mw->out.error = e.what();
                }
                mw->conversions = run.conversions;
                mw->hypercalls = run.hypercalls;
                mw->sigbus_checks = run.sigbus_checks;
                mw->policy = run.in_place_policy;
                mw->out.flush_progress(ctx);
            });
        }
        threads.supervise(stop);
    }
    vms.clear();

    uint64_t iters = 0, convs = 0, hcs = 0, sig = 0, mism = 0;
    std::string failure, error, policy;
    bool interrupted = false;
    std::vector<report::Check> extra;
    for (auto& mw : ws) {
        iters += mw.iterations;
        convs += mw.conversions;
        hcs += mw.hypercalls;
        sig += mw.sigbus_checks;
        mism += mw.out.verification.mismatches;
        if (failure.empty())
            failure = mw.failure;
        if (error.empty())
            error = mw.out.error;
        if (policy.empty())
            policy = mw.policy;
        interrupted |= mw.interrupted;
        if (mw.eagain)
            extra.push_back(*mw.eagain);
        outs.push_back(std::move(mw.out));
    }
    c.observed =
        fmt::format("{} VM(s) on a {} VM type, shared memory {}: {} iterations, {} conversions",
                    nworkers, vm_type_name(pl.vm_type),
                    pl.in_place ? "in the guest_memfd (MMAP)"
                                : "separate (anonymous) with private "
                                  "copies in the guest_memfd",
                    iters, convs);
    if (mode == Mode::hypercall)
        c.observed += fmt::format(", {} KVM_EXIT_HYPERCALL exits (applied with {})", hcs,
                                  mode_name(pl.converter));
    if (pl.in_place)
        c.observed += fmt::format(", {} SIGBUS checks; data across in-place conversion: {}", sig,
                                  policy.empty() ? "not seen" : policy);
    if (!error.empty()) {
        c.outcome = report::Outcome::error;
        c.reason = error;
    } else if (!failure.empty() || mism) {
        c.outcome = report::Outcome::fail;
        c.reason = !failure.empty() ? failure : fmt::format("{} data mismatch(es)", mism);
    } else if (iters == 0) {
        c.outcome = report::Outcome::skip;
        c.reason = interrupted ? "stopped before the first iteration finished"
                               : "no time left for this mode";
    } else if (policy.find(" and ") != std::string::npos) {
        c.outcome = report::Outcome::fail;
        c.reason = "in-place conversion kept data in some steps and zeroed it in others: " + policy;
    }
    r.checks.push_back(c);
    r.checks.insert(r.checks.end(), extra.begin(), extra.end());
}

report::WorkloadResult run(Context& ctx) {
    const uint64_t t0 = now_ns();
    report::WorkloadResult r = host::start_result(ctx, "convert");
    Params prm;
    prm.pages = static_cast<uint64_t>(ctx.spec.integer("pages"));
    prm.run_timeout_s = ctx.spec.number("run_timeout");

    Plan attrs = plan_attributes(ctx);
    Plan in_place = plan_in_place(ctx);
    Plan hc = plan_hypercall(ctx, attrs, in_place);
    std::vector<std::pair<Mode, Plan>> modes = {
        {Mode::attributes, attrs}, {Mode::hypercall, hc}, {Mode::in_place, in_place}};
    unsigned runnable = 0;
    for (auto& [m, pl] : modes)
        runnable += pl.runnable;

    const uint64_t ops = static_cast<uint64_t>(ctx.spec.integer("ops"));
    const double budget = ctx.time_budget_s > 0 ? ctx.time_budget_s : 1e9;
    uint64_t gmem_files = 0;
    std::vector<host::WorkerResult> outs;
    unsigned k = 0;
    for (auto& [m, pl] : modes) {
        if (!pl.runnable) {
            report::Check c;
            c.name = std::string("convert.") + mode_name(m);
            c.outcome = report::Outcome::skip;
            c.reason = pl.reason;
            r.checks.push_back(c);
            continue;
        }
        ++k;
        // Each runnable mode gets an equal share of what is left of the budget.
        uint64_t deadline = ctx.started_ns + static_cast<uint64_t>(budget * 1e9 * k / runnable);
        uint64_t iter_limit = ops ? std::max<uint64_t>(1, ops / runnable) : 0;
        run_mode(ctx, m, pl, prm, deadline, iter_limit, r, gmem_files, outs);
    }
    r.expect.gmem_files = gmem_files;
    r.params["pages"] = prm.pages;
    r.params["run_timeout"] = prm.run_timeout_s;
    r.params["attrs2_request"] = in_place_abi(ctx).attrs2_request();
    r.params["attrs2_ioctl_nr"] = ctx.profile.attrs2_ioctl_nr;
    r.params["cap_memory_attributes2"] = ctx.profile.cap_memory_attributes2;
    r.params["cpu_vendor"] = to_string(cpu_vendor());

    if (runnable == 0) {
        r.outcome = report::Outcome::skip;
        // Modes that skip for the same reason are named once with it.
        std::vector<std::pair<std::string, std::string>> why;
        for (const auto& c : r.checks)
            why.push_back({c.name, c.reason});
        r.reason = "no conversion mode can run here (" + group_by_reason(why, " | ") + ")";
        r.duration_s = double(now_ns() - t0) / 1e9;
        return r;
    }
    host::finish_result(r, outs, t0);
    if (r.outcome == report::Outcome::pass) {
        bool any_pass = false;
        for (const auto& c : r.checks) {
            any_pass |= c.outcome == report::Outcome::pass;
            if (c.outcome == report::Outcome::error) {
                r.outcome = report::Outcome::error;
                r.reason = c.name + ": " + c.reason;
            }
        }
        if (r.outcome == report::Outcome::pass && !any_pass) {
            r.outcome = report::Outcome::skip;
            r.reason = "no conversion mode finished an iteration in the time given";
        }
    }
    return r;
}

} // namespace

WorkloadInfo convert_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "convert";
    w.description =
        "private<->shared conversion: KVM_SET_MEMORY_ATTRIBUTES, guest KVM_HC_MAP_GPA_RANGE "
        "hypercalls, in-place KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd; data and SIGBUS "
        "checked after every conversion";
    w.needs =
        "KVM_CAP_MEMORY_ATTRIBUTES with PRIVATE (e.g. sw_protected VMs), KVM_CAP_EXIT_HYPERCALL, "
        "or "
        "the in-place conversion series (KVM_CAP_MEMORY_ATTRIBUTES2); each mode skips on its own";
    w.params = {
        // Even: the conversions work on the two halves of the range.
        {"pages",
         ParamType::integer,
         int64_t(32),
         "pages converted back and forth per VM (even)",
         2,
         double(kMaxDescs),
         {},
         {profile::multiple_of(2, "even")}},
        {"run_timeout", ParamType::duration, 5.0, "a single KVM_RUN longer than this is a failure",
         0.1, 3600},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile&, const profile::WorkloadSpec&) {
        // Per-mode reasons need a VM of each type: run() reports them as checks.
        return kvm_skip_reason(caps);
    };
    w.memory_estimate = [](const profile::Profile&, const profile::WorkloadSpec& s) {
        auto pages = static_cast<uint64_t>(s.integer("pages"));
        auto threads = static_cast<uint64_t>(s.integer("threads"));
        return threads * (2 * pages * kPage + GuestVm::code_slot_size(1));
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
