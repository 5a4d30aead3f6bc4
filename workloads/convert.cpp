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
//
// Then, on the first mechanism that runs (each its own Check): layouts (a
// range across a 2 MiB boundary, page-granular interleaving), races
// (conversions against a vCPU writing the range, and against punch holes)
// and the layouts again with every guest_memfd flag set the VM type offers,
// all driven by Runner's per-page model (m_convert / m_write / m_check).
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
#include <mutex>
#include <random>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <thread>
#include <unistd.h>
#include <unordered_set>

namespace gms::workloads {

namespace {

using namespace guest;

constexpr uint32_t kDataSlot = 1;
constexpr uint32_t kTagHost = 11, kTagGuest = 12;
// Keys of the extended checks (layouts, races): each its own data.
constexpr uint32_t kTagStraddle = 13, kTagInterleave = 14, kTagRaceFaults = 15, kTagRacePunch = 16;
// Page index of the first 2 MiB boundary above kDataGpa (2 MiB aligned).
constexpr uint64_t kHugeBoundaryPage = (2ull << 20) / kvm::kPageSize;
static_assert(kDataGpa % (2ull << 20) == 0, "the straddle layout needs a 2 MiB aligned slot");

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
    uint64_t straddle_pages = 0, interleave_pages = 0;
    double race_s = 0;
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
    // Shared pages are host-accessible through file.map (INIT_SHARED); else
    // the mapping (MMAP without INIT_SHARED) only serves the SIGBUS checks of
    // private pages.
    bool shared_mappable = false;
    // The host sees what the guest sees in shared pages: not so with a
    // guest_memfd that has MMAP but not INIT_SHARED (the memslot is
    // guest_memfd-only, 6.18+, yet its pages cannot be mapped).
    bool host_view = true;
    uint64_t npages = 0;

    uint64_t gpa(uint64_t page) const { return kDataGpa + page * kPage; }
};

// `npages` of guest memory at kDataGpa (2 MiB aligned) backed by a
// guest_memfd with `gmem_flags`; shared pages in it when `in_place` (which a
// guest_memfd with MMAP implies: KVM takes its memslot as guest_memfd-only).
void setup(Context& ctx, ConvVm& cv, unsigned long vm_type, uint64_t gmem_flags, bool in_place,
           uint64_t npages, Mode mode, uint64_t& gmem_files) {
    cv.gvm = std::make_unique<GuestVm>(ctx.kvm, vm_type, 1);
    cv.pages_entry = cv.gvm->load(pages_program());
    cv.hc_entry = cv.gvm->load(hypercall_program(cpu_vendor()));
    kvm::Vm& vm = cv.gvm->vm();
    cv.npages = npages;
    cv.in_place = in_place;
    cv.shared_mappable = in_place && (gmem_flags & uapi::kGuestMemfdFlagInitShared);
    cv.host_view = !in_place || cv.shared_mappable;
    const uint64_t size = npages * kPage;
    cv.file.create_gmem(vm, size, gmem_flags, ctx.observer);
    ++gmem_files;
    kvm::Memslot m;
    m.slot = kDataSlot;
    m.flags = uapi::kMemGuestMemfd;
    m.gpa = kDataGpa;
    m.size = size;
    m.gmem_fd = cv.file.gmem.fd();
    if (cv.shared_mappable) {
        cv.file.map = cv.file.gmem.map_shared();
        cv.shared_view = cv.file.map.data();
    } else {
        cv.shared_mem =
            kvm::Mapping::map(-1, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
        cv.shared_view = cv.shared_mem.data();
        if (gmem_flags & uapi::kGuestMemfdFlagMmap)
            cv.file.map = cv.file.gmem.map_shared(); // for SIGBUS checks only
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

    // Runs guest_pages over `descs` (in batches the descriptor table holds);
    // returns the mismatches the guest reported.
    std::vector<GuestMismatch> guest(const std::string& step, const std::vector<PageDesc>& descs) {
        std::vector<GuestMismatch> out;
        for (size_t at = 0; at < descs.size(); at += kMaxDescs) {
            size_t n = std::min<size_t>(kMaxDescs, descs.size() - at);
            guest_batch(step, descs.data() + at, n, out);
        }
        return out;
    }

    // While conversions race the vCPU (race checks): a private/shared
    // mismatch seen by a fault (KVM_EXIT_MEMORY_FAULT) is counted and the
    // access retried; otherwise it fails the step.
    bool accept_memory_faults = false;
    uint64_t memory_fault_exits = 0;

    void guest_batch(const std::string& step, const PageDesc* descs, size_t count,
                     std::vector<GuestMismatch>& out) {
        PageDesc* table = cv.gvm->descs(0);
        std::copy(descs, descs + count, table);
        GuestCall c;
        c.rip = cv.pages_entry;
        c.rsp = cv.gvm->stack_top(0);
        c.rsi = cv.gvm->descs_gpa(0);
        c.rcx = count;
        enter(*cv.vcpu, c);
        auto on_exit = [&](kvm::Vcpu& v, kvm_run& run) -> std::string {
            if (run.exit_reason == uapi::kExitMemoryFault && accept_memory_faults) {
                ++memory_fault_exits;
                return "";
            }
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
        w.ops["guest_round"].record(t.ns(), count * kPage);
        w.verification.pages_checked += count;
    }

    // The guest checks pages [first, first+n) against `expect` (0 = zero) and writes `write` (0 =
    // no).
    void guest_expect(const std::string& step, uint64_t first, uint64_t n,
                      const std::function<uint32_t(uint64_t)>& expect,
                      const std::function<uint32_t(uint64_t)>& write) {
        guest_expect(step, range(first, n), expect, write);
    }
    static std::vector<uint64_t> range(uint64_t first, uint64_t n) {
        std::vector<uint64_t> v(n);
        for (uint64_t i = 0; i < n; ++i)
            v[i] = first + i;
        return v;
    }
    void guest_expect(const std::string& step, const std::vector<uint64_t>& pages,
                      const std::function<uint32_t(uint64_t)>& expect,
                      const std::function<uint32_t(uint64_t)>& write) {
        std::vector<PageDesc> d;
        for (uint64_t pg : pages) {
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
        guest_write(step, range(first, n), write);
    }
    void guest_write(const std::string& step, const std::vector<uint64_t>& pages,
                     const std::function<uint32_t(uint64_t)>& write) {
        std::vector<PageDesc> d;
        for (uint64_t pg : pages)
            d.push_back({static_cast<uint32_t>(cv.gpa(pg)), kNoCheck | kWrite, 0, write(pg)});
        for (const auto& m : guest(step, d))
            w.verification.mismatch(
                fmt::format("{} iteration {} step '{}': unexpected mismatch report "
                            "for page {} from a write-only batch",
                            mode_name(mode), iteration, step, m.page));
    }

    // In place, data across a conversion is either kept or zeroed (a policy
    // the series may choose); a mix of both, or anything else, is corruption.
    // Returns whether the data was kept (else zeroed); a mismatch otherwise.
    bool guest_expect_kept_or_zero(const std::string& step, uint64_t first, uint64_t n,
                                   const std::function<uint32_t(uint64_t)>& before) {
        return guest_expect_kept_or_zero(step, range(first, n), before);
    }
    bool guest_expect_kept_or_zero(const std::string& step, const std::vector<uint64_t>& pages,
                                   const std::function<uint32_t(uint64_t)>& before) {
        const uint64_t n = pages.size();
        std::vector<PageDesc> d;
        for (uint64_t pg : pages)
            d.push_back({static_cast<uint32_t>(cv.gpa(pg)), kExpectPattern, before(pg), 0});
        auto kept_bad = guest(step + " (kept?)", d);
        if (kept_bad.empty()) {
            note_policy("preserved");
            return true;
        }
        for (auto& x : d)
            x.flags = 0; // now expect zero
        auto zero_bad = guest(step + " (zeroed?)", d);
        if (zero_bad.empty() && kept_bad.size() == n) {
            note_policy("zeroed");
            return false;
        }
        w.verification.mismatch(
            fmt::format("{} iteration {} step '{}': after in-place conversion {} of {} pages lost "
                        "their data and {} "
                        "are not zero either (first: page {} read {:#010x})",
                        mode_name(mode), iteration, step, kept_bad.size(), n, zero_bad.size(),
                        zero_bad.empty() ? kept_bad.front().page : zero_bad.front().page,
                        zero_bad.empty() ? kept_bad.front().got : zero_bad.front().got));
        return true;
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
        host_expect(step, range(first, n), key);
    }
    void host_expect(const std::string& step, const std::vector<uint64_t>& pages,
                     const std::function<uint32_t(uint64_t)>& key) {
        const uint64_t n = pages.size();
        host::Timer t;
        for (uint64_t pg : pages) {
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
        if (!cv.file.map.valid() || (!private_ && !cv.shared_mappable))
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

    // ---- extended scenarios on a per-page model -----------------------------------
    // The model says, for every page, its attribute and what each copy holds
    // (a page key, 0 = zero). Separate backing: a shared copy (shared_view)
    // and a private copy (the guest_memfd: zero until the guest writes it,
    // zero again after a punch). In place: one copy (shared_k), whose data a
    // conversion keeps or zeroes (resolved at the next guest read).
    struct Model {
        std::vector<uint8_t> priv, converted;
        std::vector<uint32_t> shared_k, private_k;
    };
    Model model;
    uint64_t model_conversions = 0;

    void model_reset() {
        model.priv.assign(cv.npages, 0);
        model.converted.assign(cv.npages, 0);
        model.shared_k.assign(cv.npages, 0);
        model.private_k.assign(cv.npages, 0);
    }
    uint32_t guest_key(uint64_t pg) const {
        if (!cv.in_place && model.priv[pg])
            return model.private_k[pg];
        return model.shared_k[pg];
    }
    void m_convert(const std::string& step, uint64_t first, uint64_t n, bool to_private) {
        convert(step, first, n, to_private);
        ++model_conversions;
        for (uint64_t pg = first; pg < first + n; ++pg) {
            model.converted[pg] |= model.priv[pg] != uint8_t(to_private);
            model.priv[pg] = to_private;
        }
    }
    void m_host_fill(const std::vector<uint64_t>& pages, uint32_t tag, uint64_t s) {
        if (!cv.host_view)
            return; // the guest would not see it
        for (uint64_t pg : pages) {
            fill_page(cv.shared_view + pg * kPage, key(tag, s, pg));
            model.shared_k[pg] = key(tag, s, pg);
        }
    }
    // Every page of `pages`: host access through the guest_memfd mapping, the
    // guest's view, and the host's view of the shared copies (separate
    // backing: of private pages too, which private writes must not reach).
    void m_check(const std::string& step, const std::vector<uint64_t>& pages) {
        for (uint64_t pg : pages)
            sigbus_expect(step + ": host access", pg, 1, model.priv[pg]);
        std::vector<uint64_t> exact, moved;
        for (uint64_t pg : pages)
            (cv.in_place && model.converted[pg] ? moved : exact).push_back(pg);
        guest_expect(
            step + ": guest reads", exact, [this](uint64_t pg) { return guest_key(pg); }, nullptr);
        if (!moved.empty()) {
            bool kept =
                guest_expect_kept_or_zero(step + ": guest reads converted pages", moved,
                                          [this](uint64_t pg) { return model.shared_k[pg]; });
            for (uint64_t pg : moved) {
                if (!kept)
                    model.shared_k[pg] = 0;
                model.converted[pg] = 0;
            }
        }
        std::vector<uint64_t> host;
        for (uint64_t pg : pages)
            if (cv.host_view && (!cv.in_place || !model.priv[pg]))
                host.push_back(pg);
        host_expect(step + ": host reads the shared view", host,
                    [this](uint64_t pg) { return model.shared_k[pg]; });
    }
    void m_write(const std::string& step, const std::vector<uint64_t>& pages, uint32_t tag,
                 uint64_t s) {
        guest_write(step + ": guest writes", pages, [&](uint64_t pg) { return key(tag, s, pg); });
        for (uint64_t pg : pages) {
            (!cv.in_place && model.priv[pg] ? model.private_k[pg] : model.shared_k[pg]) =
                key(tag, s, pg);
            model.converted[pg] = 0;
        }
    }
    // Writes, then checks every page.
    void m_step(const std::string& step, const std::vector<uint64_t>& pages, uint32_t tag,
                uint64_t s) {
        m_check(step, pages);
        m_write(step, pages, tag, s);
        m_check(step + " (after the guest wrote)", pages);
    }
    // [first, first+n) back to shared, the guest_memfd punched (separate
    // backing: the private copies), and, converted once more, zero.
    void m_finish(const std::string& name, uint64_t first, uint64_t n) {
        auto pages = range(first, n);
        m_convert(name + ": all shared", first, n, false);
        m_check(name + ": all shared", pages);
        if (int e = cv.file.gmem.try_punch_hole(first * kPage, n * kPage))
            fail(name + ": punch the guest_memfd", "PUNCH_HOLE failed: " + errno_name(e));
        for (uint64_t pg : pages)
            (cv.in_place ? model.shared_k[pg] : model.private_k[pg]) = 0;
        m_convert(name + ": private after punch", first, n, true);
        m_check(name + ": private after punch reads zero", pages);
        m_convert(name + ": shared again", first, n, false);
        m_check(name + ": shared again", pages);
    }

    // 4*s pages around the first 2 MiB boundary; the middle 2*s cross it,
    // converted in halves and whole, so an attribute range is split and
    // merged right at the boundary (where KVM tracks huge-page mixing).
    void layout_straddle(uint64_t s) {
        const uint64_t b = kHugeBoundaryPage;
        const auto win = range(b - 2 * s, 4 * s);
        const uint32_t t = kTagStraddle;
        model_reset();
        m_host_fill(win, t, 0);
        m_step("straddle: all shared", win, t, 1);
        m_convert("straddle: below the boundary to private", b - s, s, true);
        m_convert("straddle: above the boundary to private", b, s, true);
        m_step("straddle: private across the boundary", win, t, 2);
        m_convert("straddle: across the boundary to shared in one call", b - s, 2 * s, false);
        m_step("straddle: shared again", win, t, 3);
        m_convert("straddle: across the boundary to private in one call", b - s, 2 * s, true);
        m_step("straddle: private in one call", win, t, 4);
        m_convert("straddle: below the boundary to shared", b - s, s, false);
        m_step("straddle: shared below, private above the boundary", win, t, 5);
        m_convert("straddle: above the boundary to shared", b, s, false);
        m_step("straddle: shared in two calls", win, t, 6);
        m_finish("straddle", b - 2 * s, 4 * s);
    }

    // Every other page private (one conversion per page), then flipped, then
    // the whole mixed range shared in one call.
    void layout_interleave() {
        const uint64_t n = cv.npages;
        const auto all = range(0, n);
        const uint32_t t = kTagInterleave;
        model_reset();
        m_host_fill(all, t, 0);
        m_step("interleave: all shared", all, t, 1);
        for (uint64_t pg = 0; pg < n; pg += 2)
            m_convert(fmt::format("interleave: page {} to private", pg), pg, 1, true);
        m_step("interleave: even pages private", all, t, 2);
        for (uint64_t pg = 0; pg < n; ++pg)
            m_convert(fmt::format("interleave: flip page {}", pg), pg, 1, pg % 2 == 1);
        m_step("interleave: odd pages private", all, t, 3);
        m_finish("interleave", 0, n);
    }

    // Conversions (and punches) from another thread while the vCPU writes
    // every page in a loop. Then, settled: every word of every shared copy is
    // zero, the host's fill or a key the guest wrote to that page (never
    // another page's or stale data), and the page model holds again.
    struct RaceResult {
        uint64_t rounds = 0, conversions = 0, retried = 0, punches = 0, memory_faults = 0,
                 words_checked = 0;
    };
    RaceResult race(double seconds, bool with_punch, const std::function<bool()>& stop) {
        const uint64_t n = cv.npages;
        const auto all = range(0, n);
        const uint32_t t = with_punch ? kTagRacePunch : kTagRaceFaults;
        const std::string name = with_punch ? "race with punch" : "race with faults";
        RaceResult rr;
        model_reset();
        m_host_fill(all, t, 0);
        m_step(name + ": before", all, t, 1);

        std::atomic<bool> done{false};
        std::atomic<uint64_t> convs{0}, retried{0}, punches{0};
        std::mutex mu;
        std::string thread_failure;
        auto thread_fail = [&](std::string what) {
            std::lock_guard lock(mu);
            if (thread_failure.empty())
                thread_failure = std::move(what);
            done = true;
        };
        auto converter = [&, seed = ctx.seed] {
            std::mt19937_64 rng(seed ^ 0xc0c0);
            while (!done) {
                uint64_t first = rng() % n, len = 1 + rng() % (n - first);
                bool to_private = rng() & 1;
                int e = mode == Mode::in_place
                            ? attrs2(first, len, to_private, nullptr)
                            : cv.gvm->vm().try_set_memory_attributes(
                                  cv.gpa(first), len * kPage,
                                  to_private ? uapi::kMemoryAttributePrivate : 0);
                if (e == EAGAIN || e == EINTR) {
                    ++retried;
                    continue;
                }
                if (e)
                    return thread_fail(fmt::format("converting [{}, {}) to {} failed: {}", first,
                                                   first + len, to_private ? "private" : "shared",
                                                   errno_name(e)));
                ++convs;
            }
        };
        auto puncher = [&, seed = ctx.seed] {
            std::mt19937_64 rng(seed ^ 0x9a9a);
            while (!done) {
                uint64_t first = rng() % n, len = 1 + rng() % std::min<uint64_t>(4, n - first);
                if (int e = cv.file.gmem.try_punch_hole(first * kPage, len * kPage))
                    return thread_fail(fmt::format("PUNCH_HOLE [{}, {}) failed: {}", first,
                                                   first + len, errno_name(e)));
                ++punches;
            }
        };
        uint64_t r = 1;
        {
            std::vector<std::thread> hosts;
            auto join = [&] {
                done = true;
                for (auto& th : hosts)
                    th.join();
                hosts.clear();
                accept_memory_faults = false;
            };
            hosts.emplace_back(converter);
            if (with_punch)
                hosts.emplace_back(puncher);
            accept_memory_faults = true;
            const uint64_t end = now_ns() + static_cast<uint64_t>(seconds * 1e9);
            try {
                while (!done && now_ns() < end && !stop()) {
                    ++r;
                    guest_write(fmt::format("{}: round {}", name, r), all,
                                [&](uint64_t pg) { return key(t, r, pg); });
                }
            } catch (...) {
                join();
                throw;
            }
            join();
        }
        rr.rounds = r - 1;
        rr.conversions = convs;
        rr.retried = retried;
        rr.punches = punches;
        rr.memory_faults = memory_fault_exits;
        if (!thread_failure.empty())
            fail(name, thread_failure);

        // Settle: all shared, then every word of every shared copy.
        convert(name + ": settle to shared", 0, n, false);
        ++rr.conversions;
        for (uint64_t pg = 0; pg < n && cv.host_view; ++pg) {
            std::unordered_set<uint32_t> keys;
            for (uint64_t s = 0; s <= r; ++s)
                keys.insert(key(t, s, pg));
            const uint8_t* page = cv.shared_view + pg * kPage;
            host::compiler_barrier();
            for (uint32_t i = 0; i < kWordsPerPage; ++i) {
                uint32_t word;
                std::memcpy(&word, page + i * 4, 4);
                ++rr.words_checked;
                if (word != 0 && !keys.count(word ^ (i * 0x9e3779b1u))) {
                    w.verification.mismatch(fmt::format(
                        "{}: page {} word {} of the shared view holds {:#010x}: neither zero, the "
                        "host's fill nor any of the {} keys the guest wrote to this page",
                        name, pg, i, word, r));
                    break;
                }
            }
        }
        if (cv.host_view)
            w.verification.pages_checked += n;
        // The model holds again once the guest has written every page.
        for (uint64_t pg = 0; pg < n; ++pg) {
            model.priv[pg] = 0;
            model.converted[pg] = 0;
        }
        m_write(name + ": settled", all, t, r + 1);
        m_check(name + ": settled", all);
        m_convert(name + ": settled to private", 0, n, true);
        m_write(name + ": settled private", all, t, r + 2);
        m_check(name + ": settled private", all);
        m_finish(name, 0, n);
        return rr;
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
        setup(ctx, *vms.back(), pl.vm_type, pl.gmem_flags, pl.in_place, prm.pages, mode,
              gmem_files);
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

// ---- extended checks: layouts, races, guest_memfd flag sets -------------------------

// Where the extended checks run: the VM type and converter of the first mode
// that runs here, with a guest_memfd of these flags.
struct ExtSetup {
    unsigned long vm_type = 0;
    Mode converter = Mode::attributes;
    uint64_t gmem_flags = 0;
    bool in_place = false;
};

std::string flags_name(uint64_t f) {
    if (f == 0)
        return "none";
    std::string s;
    if (f & uapi::kGuestMemfdFlagMmap)
        s += "mmap";
    if (f & uapi::kGuestMemfdFlagInitShared)
        s += s.empty() ? "init_shared" : "_init_shared";
    return s;
}

// Runs `body` on a fresh VM of `npages` in a vCPU thread; the check passes
// when the body returns (its text is what was observed) with no data mismatch.
report::Check run_ext(Context& ctx, const std::string& name, const std::string& expected,
                      const ExtSetup& es, uint64_t npages, const Params& prm, uint64_t& gmem_files,
                      std::vector<host::WorkerResult>& outs,
                      const std::function<std::string(struct Runner&)>& body) {
    report::Check c;
    c.name = name;
    c.expected = expected;
    auto cv = std::make_unique<ConvVm>();
    setup(ctx, *cv, es.vm_type, es.gmem_flags, es.in_place, npages, es.converter, gmem_files);
    host::WorkerResult out;
    std::string failure, observed;
    bool interrupted = false;
    {
        VcpuThreads threads(prm.run_timeout_s, 0.5);
        threads.spawn([&](RunSlot& slot) {
            Runner run{ctx, *cv, slot, out, prm, es.converter, es.converter, {}};
            run.attrs2_abi = in_place_abi(ctx);
            try {
                observed = body(run);
            } catch (const StepFailed& f) {
                failure = f.what;
            } catch (const Interrupted&) {
                interrupted = true;
            } catch (const std::exception& e) {
                out.error = e.what();
            }
            out.flush_progress(ctx);
        });
        threads.supervise([&] { return ctx.should_stop(); });
    }
    cv.reset();
    const std::string where = fmt::format(
        "{} VM, guest_memfd flags {}, shared memory {}", vm_type_name(es.vm_type),
        flags_name(es.gmem_flags),
        !es.in_place ? "separate"
        : (es.gmem_flags & uapi::kGuestMemfdFlagInitShared)
            ? "in the guest_memfd"
            : "in the guest_memfd (memslot guest_memfd-only; not mappable without INIT_SHARED)");
    c.observed = observed.empty() ? where : where + ": " + observed;
    if (!out.error.empty()) {
        c.outcome = report::Outcome::error;
        c.reason = out.error;
    } else if (!failure.empty()) {
        c.outcome = report::Outcome::fail;
        c.reason = failure;
    } else if (out.verification.mismatches) {
        c.outcome = report::Outcome::fail;
        c.reason = fmt::format("{} data mismatch(es); first: {}", out.verification.mismatches,
                               out.verification.first_mismatches.front());
    } else if (interrupted) {
        c.outcome = report::Outcome::skip;
        c.reason = "stopped before the check finished";
    }
    outs.push_back(std::move(out));
    return c;
}

report::Check skipped(const std::string& name, const std::string& reason) {
    report::Check c;
    c.name = name;
    c.outcome = report::Outcome::skip;
    c.reason = reason;
    return c;
}

std::string straddle_body(Runner& run, uint64_t s) {
    const uint64_t c0 = run.model_conversions, s0 = run.sigbus_checks;
    run.layout_straddle(s);
    return fmt::format("{} conversions of pages [{}, {}) around the 2 MiB boundary at gpa {:#x}, "
                       "{} SIGBUS checks",
                       run.model_conversions - c0, kHugeBoundaryPage - s, kHugeBoundaryPage + s,
                       kDataGpa + kHugeBoundaryPage * kPage, run.sigbus_checks - s0);
}

std::string interleave_body(Runner& run) {
    const uint64_t c0 = run.model_conversions, s0 = run.sigbus_checks;
    run.layout_interleave();
    return fmt::format("{} conversions of {} interleaved pages, {} SIGBUS checks",
                       run.model_conversions - c0, run.cv.npages, run.sigbus_checks - s0);
}

void run_extended(Context& ctx, const Plan* base, const std::string& why_not, const Params& prm,
                  report::WorkloadResult& r, uint64_t& gmem_files,
                  std::vector<host::WorkerResult>& outs) {
    const char* names[] = {"convert.layout.straddle_2m", "convert.layout.interleave",
                           "convert.race.faults", "convert.race.punch"};
    if (!base) {
        for (const char* n : names)
            r.checks.push_back(skipped(n, "no conversion mechanism here: " + why_not));
    } else {
        ExtSetup es{base->vm_type, base->converter, base->gmem_flags, base->in_place};
        r.checks.push_back(run_ext(
            ctx, names[0],
            "every page keeps its data and accessibility while ranges crossing a 2 MiB boundary "
            "are converted in halves and whole",
            es, 2 * kHugeBoundaryPage, prm, gmem_files, outs,
            [&](Runner& run) { return straddle_body(run, prm.straddle_pages); }));
        r.checks.push_back(run_ext(
            ctx, names[1],
            "every page keeps its data and accessibility with every other page private, then "
            "flipped",
            es, prm.interleave_pages, prm, gmem_files, outs,
            [&](Runner& run) { return interleave_body(run); }));
        for (bool punch : {false, true}) {
            r.checks.push_back(run_ext(
                ctx, names[2 + punch],
                std::string("no crash or hang while conversions race a vCPU writing the range") +
                    (punch ? " and punch holes" : "") +
                    "; afterwards every shared word is zero or a value written to that page, and "
                    "every page holds what was last written",
                es, prm.pages, prm, gmem_files, outs, [&](Runner& run) {
                    auto rr = run.race(prm.race_s, punch, [&] { return ctx.should_stop(); });
                    // The workload's time ran out before anything raced (a
                    // short profile under TCG): not a finding, a skip.
                    if ((rr.rounds == 0 || rr.conversions == 0) && ctx.should_stop())
                        throw Interrupted();
                    if (rr.rounds == 0 || rr.conversions == 0)
                        throw StepFailed{
                            fmt::format("nothing raced: {} guest rounds, {} conversions", rr.rounds,
                                        rr.conversions)};
                    return fmt::format(
                        "{:.1f}s: {} conversions ({} EAGAIN/EINTR retried){}, {} guest rounds "
                        "over {} pages, {} KVM_EXIT_MEMORY_FAULT exits retried, {} words checked",
                        prm.race_s, rr.conversions, rr.retried,
                        punch ? fmt::format(", {} punches", rr.punches) : std::string(), rr.rounds,
                        run.cv.npages, rr.memory_faults, rr.words_checked);
                }));
        }
    }

    // Flag sets: the layouts again with a guest_memfd of each set, converted
    // with KVM_SET_MEMORY_ATTRIBUTES (in-place conversion has its own mode).
    const uint64_t sets[] = {0, uapi::kGuestMemfdFlagMmap,
                             uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared};
    for (uint64_t f : sets) {
        const std::string name = "convert.flags." + flags_name(f);
        if (!base || base->converter != Mode::attributes || base->in_place) {
            r.checks.push_back(skipped(
                name, base ? "KVM_SET_MEMORY_ATTRIBUTES with PRIVATE on a VM whose guest_memfd "
                             "has no shared pages is not offered here (only in-place conversion)"
                           : "no conversion mechanism here: " + why_not));
            continue;
        }
        kvm::Vm vm;
        if (int e = kvm::Vm::try_create(vm, ctx.kvm, base->vm_type)) {
            r.checks.push_back(skipped(name, "KVM_CREATE_VM failed: " + errno_name(e)));
            continue;
        }
        long offered = vm.check_extension(uapi::kCapGuestMemfdFlags);
        if (f && (offered < 0 || (uint64_t(offered) & f) != f)) {
            // Ask anyway: the refusal is part of the reason (and a kernel that
            // accepts what it does not advertise is worth a look).
            int fd = vm.try_create_guest_memfd_raw(kPage, f);
            if (fd >= 0)
                ::close(fd);
            r.checks.push_back(skipped(
                name, fmt::format("KVM_CAP_GUEST_MEMFD_FLAGS={:#x} on a {} VM does not offer {}; "
                                  "KVM_CREATE_GUEST_MEMFD({}) {}{}",
                                  offered, vm_type_name(base->vm_type), flags_name(f),
                                  flags_name(f), fd >= 0 ? "succeeded anyway" : errno_name(-fd),
                                  (f & uapi::kGuestMemfdFlagInitShared)
                                      ? " (upstream: INIT_SHARED only for VMs without private "
                                        "memory, kvm_arch_supports_gmem_init_shared)"
                                      : "")));
            continue;
        }
        vm = kvm::Vm();
        ExtSetup es{base->vm_type, Mode::attributes, f, (f & uapi::kGuestMemfdFlagMmap) != 0};
        r.checks.push_back(run_ext(
            ctx, name,
            "conversions across a 2 MiB boundary and interleaved keep every page's data and "
            "accessibility (private pages SIGBUS through the guest_memfd mapping)",
            es, 2 * kHugeBoundaryPage, prm, gmem_files, outs, [&](Runner& run) {
                std::string a = straddle_body(run, prm.straddle_pages);
                // The interleaving on the first pages of the same VM.
                run.cv.npages = prm.interleave_pages;
                std::string b = interleave_body(run);
                run.cv.npages = 2 * kHugeBoundaryPage;
                return "straddle: " + a + "; interleave: " + b;
            }));
    }
}

report::WorkloadResult run(Context& ctx) {
    const uint64_t t0 = now_ns();
    report::WorkloadResult r = host::start_result(ctx, "convert");
    Params prm;
    prm.pages = static_cast<uint64_t>(ctx.spec.integer("pages"));
    prm.run_timeout_s = ctx.spec.number("run_timeout");
    prm.straddle_pages = static_cast<uint64_t>(ctx.spec.integer("straddle_pages"));
    prm.interleave_pages = static_cast<uint64_t>(ctx.spec.integer("interleave_pages"));
    prm.race_s = ctx.spec.number("race_time");

    Plan attrs = plan_attributes(ctx);
    Plan in_place = plan_in_place(ctx);
    Plan hc = plan_hypercall(ctx, attrs, in_place);
    std::vector<std::pair<Mode, Plan>> modes = {
        {Mode::attributes, attrs}, {Mode::hypercall, hc}, {Mode::in_place, in_place}};
    unsigned runnable = 0;
    for (auto& [m, pl] : modes)
        runnable += pl.runnable;

    const uint64_t ops = static_cast<uint64_t>(ctx.spec.integer("ops"));
    // The modes share half the budget; the extended checks (layouts, races,
    // flag sets: bounded by their own parameters) get the rest.
    const double budget = (ctx.time_budget_s > 0 ? ctx.time_budget_s : 1e9) / 2;
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
    const Plan* base = attrs.runnable ? &attrs : in_place.runnable ? &in_place : nullptr;
    if (!ctx.should_stop())
        run_extended(ctx, base,
                     attrs.reason == in_place.reason ? attrs.reason
                                                     : attrs.reason + " | " + in_place.reason,
                     prm, r, gmem_files, outs);
    r.expect.gmem_files = gmem_files;
    r.params["pages"] = prm.pages;
    r.params["run_timeout"] = prm.run_timeout_s;
    r.params["straddle_pages"] = prm.straddle_pages;
    r.params["interleave_pages"] = prm.interleave_pages;
    r.params["race_time"] = prm.race_s;
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
        // 4 * straddle_pages around the boundary go through one guest batch.
        {"straddle_pages", ParamType::integer, int64_t(16),
         "pages converted on each side of a 2 MiB boundary (layout check)", 1,
         double(kMaxDescs / 4)},
        {"interleave_pages",
         ParamType::integer,
         int64_t(32),
         "pages converted one by one, every other page private, then flipped (even)",
         2,
         double(kMaxDescs),
         {},
         {profile::multiple_of(2, "even")}},
        {"race_time", ParamType::duration, 3.0,
         "how long conversions race guest faults, and again with punch holes", 0.1, 600},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile&, const profile::WorkloadSpec&) {
        // Per-mode reasons need a VM of each type: run() reports them as checks.
        return kvm_skip_reason(caps);
    };
    w.memory_estimate = [](const profile::Profile&, const profile::WorkloadSpec& s) {
        auto pages = static_cast<uint64_t>(s.integer("pages"));
        auto threads = static_cast<uint64_t>(s.integer("threads"));
        // The modes' VMs; the extended checks run one VM at a time, the
        // largest with 4 MiB (the 2 MiB boundary in its middle).
        return threads * (2 * pages * kPage + GuestVm::code_slot_size(1)) + 2 * (4ull << 20) +
               GuestVm::code_slot_size(1);
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
