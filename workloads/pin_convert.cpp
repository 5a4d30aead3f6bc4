// pin-convert: split failures of in-place conversion. Pages of a shared
// guest_memfd range are pinned by someone other than KVM (a pipe holding
// page references after vmsplice; io_uring fixed buffers, which pin with
// FOLL_PIN | FOLL_LONGTERM), then the range is converted to private with
// KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd (the in-place conversion
// series, v8). The kernel cannot take a page away from its other users, so
// it must refuse: EAGAIN, error_offset naming the first pinned page, the
// attributes of the whole range unchanged; a range without pinned pages
// converts meanwhile; after unpinning, the same conversion succeeds, the
// page raises SIGBUS through the mapping, and it converts back to shared.
// The verdict is workloads/pin_judge.h's; this file only observes.
//
// Needs the series (the ioctl answers something other than ENOTTY on a
// guest_memfd: it does not exist, or kvm.gmem_in_place_conversion is off),
// a VM type with private memory (KVM_X86_SW_PROTECTED_VM) and
// GUEST_MEMFD_FLAG_MMAP on it; elsewhere it skips, each missing piece named.
#include "core/error.h"
#include "core/fd.h"
#include "core/util.h"
#include "kvm/series.h"
#include "workloads/host_common.h"
#include "workloads/pin_judge.h"
#include "workloads/sigbus.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <linux/io_uring.h>
#include <memory>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <thread>
#include <unistd.h>

namespace gms::workloads {

namespace {

constexpr uint64_t kPage = kvm::kPageSize;
constexpr const char* kVmType = "sw_protected";
constexpr const char* kInPlaceParam = "/sys/module/kvm/parameters/gmem_in_place_conversion";

struct Params {
    uint64_t pages = 0;
    std::vector<uint64_t> pinned; // page indices, ascending
    std::vector<std::string> methods;
    double unpin_wait_s = 0;
};

// The ABI as the convert workload uses it: the layout from the kernel's
// fingerprint, the ioctl number and capability as the profile has them.
kvm::SeriesAbi abi_of(const Context& ctx) {
    kvm::SeriesAbi abi = ctx.caps.series.abi;
    abi.attrs2_nr = ctx.profile.attrs2_ioctl_nr;
    abi.cap_attrs2 = ctx.profile.cap_memory_attributes2;
    return abi;
}

std::optional<std::string> read_first_line(const char* path) {
    std::ifstream in(path);
    std::string s;
    if (!in || !std::getline(in, s))
        return std::nullopt;
    return s;
}

// Why KVM_SET_MEMORY_ATTRIBUTES2 answered ENOTTY, as precisely as the kernel
// lets us tell: the mode switched off, or the series absent.
std::string no_ioctl_reason(const Context& ctx, const kvm::SeriesAbi& abi, const char* vm) {
    const auto& fp = ctx.caps.series.fingerprint;
    const std::string ioctl =
        fmt::format("KVM_SET_MEMORY_ATTRIBUTES2 ({:#x}: nr {:#x}, {} bytes) on a guest_memfd of a "
                    "{} VM gives ENOTTY",
                    abi.attrs2_request(), abi.attrs2_nr, abi.attrs2.size, vm);
    auto param = read_first_line(kInPlaceParam);
    if (fp.conversion.present || param)
        return fmt::format("in-place conversion disabled: {}; the kernel {}; {}", ioctl,
                           fp.conversion.present
                               ? "carries the series (" +
                                     fmt::format("{}", fmt::join(fp.conversion.evidence, ", ")) +
                                     ")"
                               : "has the module parameter",
                           param ? fmt::format("{} = {}", kInPlaceParam, *param)
                                 : fmt::format("{} is absent", kInPlaceParam));
    if (fp.source == "none")
        return fmt::format("no KVM_SET_MEMORY_ATTRIBUTES2: {} (whether the kernel carries the "
                           "in-place conversion series cannot be told: no BTF, no kallsyms)",
                           ioctl);
    return fmt::format(
        "no KVM_SET_MEMORY_ATTRIBUTES2: {}; the kernel does not carry the in-place "
        "conversion series (its fingerprint, from {}: no struct kvm_memory_attributes2, "
        "no kvm_gmem_set_attributes())",
        ioctl, fp.source);
}

struct Plan {
    std::vector<std::string> why_not; // empty: runnable
    uint64_t gmem_flags = 0;          // MMAP, and INIT_SHARED where offered
};

// Every missing piece, each with its evidence: the ioctl (probed on a VM with
// private memory where there is one, else a default VM: the handler exists
// or not whatever the VM type), the VM type, the mmap flag.
Plan plan(const Context& ctx, const kvm::SeriesAbi& abi) {
    Plan pl;
    const bool sw = ctx.caps.vm_type_supported(uapi::kX86SwProtectedVm);
    const unsigned long type = sw ? uapi::kX86SwProtectedVm : uapi::kX86DefaultVm;
    const char* name = sw ? kVmType : "default";
    kvm::Vm vm;
    if (int e = kvm::Vm::try_create(vm, ctx.kvm, type)) {
        pl.why_not.push_back(fmt::format("KVM_CREATE_VM({}) failed: {}", name, errno_name(e)));
        return pl;
    }
    long gflags = vm.check_extension(uapi::kCapGuestMemfdFlags);
    const uint64_t offered = gflags > 0 ? uint64_t(gflags) : 0;
    int fd = vm.try_create_guest_memfd_raw(kPage, offered & uapi::kGuestMemfdFlagMmap);
    if (fd < 0) {
        pl.why_not.push_back(fmt::format("KVM_CREATE_GUEST_MEMFD on a {} VM failed: {} (so whether "
                                         "KVM_SET_MEMORY_ATTRIBUTES2 exists could not be asked)",
                                         name, errno_name(-fd)));
    } else {
        UniqueFd owner(fd);
        if (kvm::probe_set_memory_attributes2(fd, abi) == ENOTTY)
            pl.why_not.push_back(no_ioctl_reason(ctx, abi, name));
    }
    if (!sw)
        pl.why_not.push_back(fmt::format(
            "VM type lacks private memory: KVM_X86_SW_PROTECTED_VM is not offered "
            "(KVM_CAP_VM_TYPES={:#x}; CONFIG_KVM_SW_PROTECTED_VM), and a conversion to private "
            "needs a VM with private memory",
            ctx.caps.vm_types));
    else if (!(offered & uapi::kGuestMemfdFlagMmap))
        pl.why_not.push_back(
            fmt::format("no mmap flag: KVM_CAP_GUEST_MEMFD_FLAGS={:#x} on a {} VM lacks "
                        "GUEST_MEMFD_FLAG_MMAP, so shared pages cannot be mapped and pinned",
                        offered, kVmType));
    pl.gmem_flags = offered & (uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared);
    return pl;
}

// ---- pins ---------------------------------------------------------------------------

// References on pages held by someone other than KVM until release().
class Pin {
  public:
    virtual ~Pin() = default;
    virtual void release() = 0;
};

// vmsplice() without SPLICE_F_GIFT: the pipe's buffers hold a reference on
// each page until the pipe is drained or closed.
class PipePin : public Pin {
  public:
    void release() override {
        rd_.reset();
        wr_.reset();
    }
    // "" or why the pages could not be pinned.
    std::string pin(uint8_t* base, const std::vector<uint64_t>& pages) {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0)
            return "pipe2: " + errno_name(errno);
        rd_ = UniqueFd(p[0]);
        wr_ = UniqueFd(p[1]);
        for (uint64_t pg : pages) {
            iovec iov{base + pg * kPage, kPage};
            ssize_t n = ::vmsplice(wr_.get(), &iov, 1, 0);
            if (n != ssize_t(kPage))
                return fmt::format("vmsplice of page {} into a pipe: {}", pg,
                                   n < 0 ? errno_name(errno) : fmt::format("{} bytes", n));
        }
        return "";
    }

  private:
    UniqueFd rd_, wr_;
};

// IORING_REGISTER_BUFFERS: io_uring pins each buffer's pages (FOLL_PIN |
// FOLL_LONGTERM) until they are unregistered.
class RingPin : public Pin {
  public:
    void release() override {
        if (ring_.get() >= 0)
            ::syscall(__NR_io_uring_register, ring_.get(), IORING_UNREGISTER_BUFFERS, nullptr, 0);
        ring_.reset();
    }
    std::string pin(uint8_t* base, const std::vector<uint64_t>& pages) {
        io_uring_params p{};
        long fd = ::syscall(__NR_io_uring_setup, 4, &p);
        if (fd < 0) {
            int e = errno;
            auto disabled = read_first_line("/proc/sys/kernel/io_uring_disabled");
            return fmt::format("io_uring_setup: {}{}", errno_name(e),
                               disabled ? " (kernel.io_uring_disabled = " + *disabled + ")" : "");
        }
        ring_ = UniqueFd(int(fd));
        std::vector<iovec> iov;
        for (uint64_t pg : pages)
            iov.push_back({base + pg * kPage, kPage});
        if (::syscall(__NR_io_uring_register, ring_.get(), IORING_REGISTER_BUFFERS, iov.data(),
                      unsigned(iov.size())) != 0)
            return fmt::format("IORING_REGISTER_BUFFERS of {} guest_memfd page(s): {}", iov.size(),
                               errno_name(errno));
        return "";
    }

  private:
    UniqueFd ring_;
};

const char* method_name(const std::string& m) {
    return m == "vmsplice" ? "vmsplice" : "io_uring_fixed_buffers";
}

std::string pin_words(const std::string& m, const std::vector<uint64_t>& pages) {
    return m == "vmsplice"
               ? fmt::format("vmsplice of {} page(s) into a pipe, held until the pipe is closed",
                             pages.size())
               : fmt::format("IORING_REGISTER_BUFFERS of {} page(s) (FOLL_PIN | FOLL_LONGTERM), "
                             "held until IORING_UNREGISTER_BUFFERS",
                             pages.size());
}

// ---- one case ----------------------------------------------------------------------

uint8_t fill_byte(uint64_t seed, uint64_t pg) {
    return uint8_t(0x5a ^ seed ^ (pg * 37));
}

struct Case {
    Context& ctx;
    kvm::Vm& vm;
    const kvm::SeriesAbi& abi;
    const Params& prm;
    uint64_t gmem_flags;
    host::WorkerResult& w;
    kvm::ObservedGmem f;

    int conv(uint64_t first, uint64_t n, bool to_private, uint64_t* error_offset = nullptr) {
        host::Timer t;
        int e = kvm::try_set_memory_attributes2(f.gmem.fd(), abi, first * kPage, n * kPage,
                                                to_private ? uapi::kMemoryAttributePrivate : 0,
                                                error_offset);
        auto& s = w.ops[to_private ? "to_private" : "to_shared"];
        if (e)
            s.record_error(e);
        else
            s.record(t.ns(), n * kPage);
        return e;
    }

    // A fresh guest_memfd, shared and filled through its mapping. "" or why not.
    std::string setup(uint64_t& gmem_files) {
        const uint64_t size = prm.pages * kPage;
        if (int e = f.try_create_gmem(vm, size, gmem_flags, ctx.observer))
            throw SysError(
                "ioctl",
                fmt::format("KVM_CREATE_GUEST_MEMFD size {:#x} flags {:#x}", size, gmem_flags), e);
        ++gmem_files;
        // Without INIT_SHARED the file starts private: make it shared first.
        if (!(gmem_flags & uapi::kGuestMemfdFlagInitShared))
            if (int e = conv(0, prm.pages, false))
                return fmt::format("KVM_SET_MEMORY_ATTRIBUTES2 to shared of a fresh guest_memfd "
                                   "(no INIT_SHARED): {}",
                                   errno_name(e));
        f.map = f.gmem.map_shared();
        for (uint64_t pg = 0; pg < prm.pages; ++pg) {
            uint8_t* p = f.page(pg);
            const uint8_t b = fill_byte(ctx.seed, pg);
            if (!sigbus_guarded([&] { std::memset(p, b, kPage); }, nullptr, p))
                return fmt::format("writing page {} of the shared guest_memfd raised SIGBUS", pg);
        }
        return "";
    }

    // Whether page pg is shared with its data: readable through the mapping
    // and as filled.
    bool shared_intact(uint64_t pg) {
        const uint8_t* p = f.page(pg);
        const uint8_t b = fill_byte(ctx.seed, pg);
        bool same = false;
        if (!sigbus_guarded(
                [&] {
                    same = true;
                    for (uint64_t i = 0; i < kPage; ++i)
                        same &= p[i] == b;
                },
                nullptr, p))
            return false;
        ++w.verification.pages_checked;
        if (!same)
            w.verification.mismatch(fmt::format("page {} changed while it stayed shared", pg));
        return same;
    }

    report::PinCase run(const std::string& method, uint64_t& gmem_files) {
        report::PinCase skipped;
        skipped.method = method_name(method);
        skipped.pin = pin_words(method, prm.pinned);
        skipped.range_size = prm.pages * kPage;
        for (uint64_t pg : prm.pinned)
            skipped.pinned_offsets.push_back(pg * kPage);
        if (auto why = setup(gmem_files); !why.empty()) {
            skipped.outcome = report::Outcome::error;
            skipped.reason = why;
            return skipped;
        }
        std::unique_ptr<Pin> pin;
        std::string why;
        if (method == "vmsplice") {
            auto p = std::make_unique<PipePin>();
            why = p->pin(f.map.data(), prm.pinned);
            pin = std::move(p);
        } else {
            auto p = std::make_unique<RingPin>();
            why = p->pin(f.map.data(), prm.pinned);
            pin = std::move(p);
        }
        if (!why.empty()) {
            skipped.outcome = report::Outcome::skip;
            skipped.reason = "could not pin: " + why;
            return skipped;
        }

        PinObservation o;
        o.range_offset = 0;
        o.range_size = prm.pages * kPage;
        o.pinned_offsets = skipped.pinned_offsets;
        uint64_t eo = ~0ull;
        o.while_pinned_errno = conv(0, prm.pages, true, &eo);
        if (abi.attrs2.error_offset)
            o.error_offset = eo;
        if (o.while_pinned_errno) {
            for (uint64_t pg = 0; pg < prm.pages; ++pg)
                if (!shared_intact(pg))
                    o.not_shared_after_error.push_back(pg * kPage);
            const uint64_t first = prm.pinned.front();
            if (first > 0) {
                int e = conv(0, first, true);
                if (!e)
                    e = conv(0, first, false);
                o.unpinned_subrange_errno = e;
            }
        }
        pin->release();
        // Unpinning may finish after the call returns (io_uring drops its
        // buffers' pins when the last reference to them goes): retry EAGAIN
        // for up to unpin_wait, and say how often.
        const auto until =
            std::chrono::steady_clock::now() + std::chrono::duration<double>(prm.unpin_wait_s);
        o.after_unpin_errno = conv(0, prm.pages, true);
        while (o.after_unpin_errno == EAGAIN && std::chrono::steady_clock::now() < until &&
               !ctx.control.should_stop()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            ++o.after_unpin_retries;
            o.after_unpin_errno = conv(0, prm.pages, true);
        }
        if (!o.after_unpin_errno) {
            SigbusGuard guard;
            o.private_after_unpin = guard.read_faults(f.page(prm.pinned.front()));
            o.back_to_shared_errno = conv(0, prm.pages, false);
        }
        PinJudgement j = judge_pin_conversion(o);
        return pin_case(method_name(method), pin_words(method, prm.pinned), o, j);
    }
};

report::Check check_of(const report::PinCase& c) {
    report::Check k;
    k.name = std::string("pin-convert.") + c.method;
    k.outcome = c.outcome;
    k.reason = c.reason;
    k.expected = fmt::format(
        "with {} pinned, KVM_SET_MEMORY_ATTRIBUTES2 [{:#x}, {:#x}) to private fails with EAGAIN "
        "and error_offset {} (the first pinned page), the range stays shared; it succeeds after "
        "unpinning",
        c.pin, c.range_offset, c.range_offset + c.range_size,
        c.expected_error_offset ? fmt::format("{:#x}", *c.expected_error_offset)
                                : std::string("?"));
    k.observed = fmt::format("{}", fmt::join(c.evidence, "; "));
    return k;
}

report::WorkloadResult run(Context& ctx) {
    Params prm;
    prm.pages = uint64_t(ctx.spec.integer("pages"));
    const auto first = uint64_t(ctx.spec.integer("pin_first"));
    const auto stride = uint64_t(ctx.spec.integer("pin_stride"));
    const auto count = uint64_t(ctx.spec.integer("pin_count"));
    for (uint64_t i = 0; i < count; ++i)
        prm.pinned.push_back(first + i * stride);
    prm.methods = ctx.spec.list("methods");
    prm.unpin_wait_s = ctx.spec.number("unpin_wait");

    const kvm::SeriesAbi abi = abi_of(ctx);
    report::PinConvert sec;
    sec.vm_type = kVmType;
    sec.attrs2_request = abi.attrs2_request();
    sec.attrs2_source = abi.attrs2_source;
    sec.pages = prm.pages;

    Plan pl = plan(ctx, abi);
    if (!pl.why_not.empty()) {
        report::WorkloadResult r = host::start_result(ctx, "pin-convert");
        r.outcome = report::Outcome::skip;
        r.reason = fmt::format("{}", fmt::join(pl.why_not, "; "));
        sec.skip_reason = r.reason;
        r.pin_convert = std::move(sec);
        r.expect.gmem_files = 0;
        return r;
    }
    sec.gmem_flags = pl.gmem_flags;
    uint64_t gmem_files = 0;
    auto r = host::run_host_workload(
        ctx, "pin-convert", [&](report::WorkloadResult& r, std::vector<host::WorkerResult>& ws) {
            auto& w = ws.emplace_back();
            kvm::Vm vm = kvm::Vm::create(ctx.kvm, uapi::kX86SwProtectedVm);
            for (const auto& m : prm.methods) {
                if (ctx.control.should_stop())
                    break;
                Case c{ctx, vm, abi, prm, pl.gmem_flags, w, {}};
                sec.cases.push_back(c.run(m, gmem_files));
                r.checks.push_back(check_of(sec.cases.back()));
            }
        });
    r.expect.gmem_files = gmem_files;
    for (const auto& c : sec.cases)
        if (c.outcome == report::Outcome::error && r.outcome != report::Outcome::error) {
            r.outcome = report::Outcome::error;
            r.reason = "pin-convert." + c.method + ": " + c.reason;
        }
    // Every case skipped (no pin could be taken): the workload tested nothing.
    if (r.outcome == report::Outcome::pass &&
        std::none_of(sec.cases.begin(), sec.cases.end(),
                     [](const auto& c) { return c.outcome == report::Outcome::pass; })) {
        std::vector<std::string> why;
        for (const auto& c : sec.cases)
            why.push_back(c.method + ": " + c.reason);
        r.outcome = report::Outcome::skip;
        r.reason = why.empty() ? "stopped before any case ran"
                               : fmt::format("no case ran: {}", fmt::join(why, "; "));
    }
    r.pin_convert = std::move(sec);
    r.params["attrs2_request"] = abi.attrs2_request();
    return r;
}

} // namespace

WorkloadInfo pin_convert_workload() {
    using profile::ParamType;
    WorkloadInfo w;
    w.name = "pin-convert";
    w.description =
        "split failures: pins pages of a shared guest_memfd range (vmsplice, io_uring fixed "
        "buffers) and converts it to private in place; expects EAGAIN with error_offset naming "
        "the first pinned page, the range unchanged, success after unpinning";
    w.needs = "the in-place conversion series (KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, "
              "kvm.gmem_in_place_conversion on), KVM_X86_SW_PROTECTED_VM, GUEST_MEMFD_FLAG_MMAP";
    w.params = {
        {"pages", ParamType::integer, int64_t(16), "pages of the guest_memfd converted", 2, 1024},
        {"pin_first",
         ParamType::integer,
         int64_t(3),
         "the first pinned page (the one error_offset must name)",
         0,
         1023,
         {},
         {{[](const profile::ParamValue&,
              const profile::ParamTable& all) -> std::optional<std::string> {
               const int64_t last = std::get<int64_t>(all.at("pin_first")) +
                                    (std::get<int64_t>(all.at("pin_count")) - 1) *
                                        std::get<int64_t>(all.at("pin_stride"));
               const int64_t pages = std::get<int64_t>(all.at("pages"));
               if (last < pages)
                   return std::nullopt;
               return fmt::format("pins page {} (pin_first + (pin_count - 1) * pin_stride), "
                                  "beyond pages = {}",
                                  last, pages);
           },
           {"pin_count", "pin_stride", "pages"}}}},
        {"pin_stride", ParamType::integer, int64_t(5), "pages between two pinned pages", 1, 1023},
        // A pipe holds 16 buffers by default.
        {"pin_count", ParamType::integer, int64_t(2), "pages pinned", 1, 16},
        {"methods",
         ParamType::string_list,
         std::vector<std::string>{"vmsplice", "io_uring"},
         "how the pages are pinned, one case each",
         0,
         0,
         {"vmsplice", "io_uring"}},
        {"unpin_wait", ParamType::duration, 2.0,
         "how long EAGAIN after unpinning is retried before it counts", 0, 60},
    };
    w.skip_reason = [](const Caps& caps, const profile::Profile&, const profile::WorkloadSpec&) {
        // The series, the VM type and the flag need a VM to ask: run() says.
        return kvm_skip_reason(caps);
    };
    w.memory_estimate = [](const profile::Profile&, const profile::WorkloadSpec& s) {
        return uint64_t(s.integer("pages")) * kPage;
    };
    w.run = run;
    return w;
}

} // namespace gms::workloads
