// The conformance checks: shared helpers and the order in which the groups
// run (per VM type, per flag set). The groups live in conformance_*.cpp.
#include "workloads/conformance_checks.h"

#include "core/error.h"
#include "core/kernel_version.h"
#include "core/util.h"
#include "workloads/conformance_common.h"

#include <algorithm>
#include <set>
#include <sys/utsname.h>
#include <unistd.h>

namespace gms::workloads::conformance {

// ---- helpers ---------------------------------------------------------------------

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
    if (c.expected.empty())
        c.expected = errno_expectation(want, source);
    c.observed = result_str(got);
    c.outcome = got == want ? Outcome::pass : Outcome::fail;
    if (c.outcome == Outcome::fail)
        c.reason = fmt::format("kernel returned {} where {} says {}", result_str(got), source,
                               result_str(want));
}

std::string with_tag(bool version_dependent, const std::string& s) {
    return version_dependent ? std::string(kVersionDependentTag) + s : s;
}

void Cases::add(const std::string& label, bool ok, const std::string& observed) {
    ++total_;
    if (!ok)
        ++bad_;
    lines_.push_back({label + ": " + observed + (ok ? "" : " (!)"), ok});
}

void Cases::finish(Check& c, std::string expected, size_t list_all_up_to) {
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

void Runner::finish(Check c) {
    if (c.expected.empty())
        c.expected = "(not stated)";
    if (c.observed.empty())
        c.observed = "(nothing observed)";
    out_.push_back(std::move(c));
}

std::string Env::lacks(uint64_t f) const {
    return fmt::format("KVM_CAP_GUEST_MEMFD_FLAGS={:#x} on a {} VM does not advertise {}",
                       supported, vm_name, flags_str(f));
}

bool Env::write_series() const {
    return (opt.caps && opt.caps->series.fingerprint.write.present) || has(write_flag());
}

std::string Env::release() const {
    if (opt.caps && !opt.caps->kernel_release.empty())
        return opt.caps->kernel_release;
    struct utsname u {};
    return ::uname(&u) == 0 ? std::string(u.release) : std::string("unknown");
}

bool Env::release_at_least(int major, int minor) const {
    return kernel_at_least(release(), major, minor);
}

kvm::GmemObserver& Env::observer() const {
    static kvm::GmemObserver nobody;
    return opt.observer ? *opt.observer : nobody;
}

std::string flag_set_name(const Env& env, uint64_t flags) {
    if (flags == 0)
        return "none";
    std::string s = env.flags_str(flags);
    std::replace(s.begin(), s.end(), '|', '-');
    s.erase(std::remove(s.begin(), s.end(), ':'), s.end());
    return s;
}

std::vector<uint64_t> expand_flag_sets(const std::vector<std::string>& specs, uint64_t supported,
                                       const kvm::FlagBits& bits) {
    constexpr uint64_t kMmap = uapi::kGuestMemfdFlagMmap;
    constexpr uint64_t kShared = kMmap | uapi::kGuestMemfdFlagInitShared;
    std::vector<uint64_t> out;
    auto add = [&](uint64_t f) {
        if (std::find(out.begin(), out.end(), f) == out.end())
            out.push_back(f);
    };
    for (const auto& spec : specs) {
        if (spec != kAdvertised) {
            if (auto f = kvm::flag_set_from_name(spec, bits))
                add(*f);
            continue;
        }
        std::vector<uint64_t> base{0};
        if ((supported & kMmap) == kMmap)
            base.push_back(kMmap);
        if ((supported & kShared) == kShared)
            base.push_back(kShared);
        std::vector<uint64_t> series;
        for (unsigned b : {bits.no_direct_map, bits.write, bits.hugetlb}) {
            uint64_t f = 1ull << b;
            if ((supported & f) && !(f & kShared) &&
                std::find(series.begin(), series.end(), f) == series.end())
                series.push_back(f);
        }
        // Every subset of the series flags, with each base set.
        for (uint64_t mask = 0; mask < (1ull << series.size()); ++mask) {
            uint64_t extra = 0;
            for (size_t i = 0; i < series.size(); ++i)
                if (mask & (1ull << i))
                    extra |= series[i];
            for (uint64_t b : base)
                add(b | extra);
        }
    }
    return out;
}

report::Outcome overall_outcome(const std::vector<report::Check>& checks) {
    bool error = false;
    for (const auto& c : checks) {
        if (c.outcome == Outcome::fail)
            return Outcome::fail;
        error |= c.outcome == Outcome::error;
    }
    return error ? Outcome::error : Outcome::pass;
}

// ---- the order of the groups -------------------------------------------------------

namespace {

// The VM types to check: the named ones, or every bit of KVM_CAP_VM_TYPES.
std::vector<unsigned long> resolve_vm_types(const kvm::Kvm& kvm, const Options& opt) {
    std::vector<unsigned long> out;
    auto add = [&](unsigned long t) {
        if (std::find(out.begin(), out.end(), t) == out.end())
            out.push_back(t);
    };
    for (const auto& name : opt.vm_types) {
        if (name == kAllSupported) {
            long types = kvm.check_extension(uapi::kCapVmTypes);
            if (types <= 0)
                types = 1; // no KVM_CAP_VM_TYPES: only the default type
            for (unsigned t = 0; t < 64; ++t)
                if (uint64_t(types) & (1ull << t))
                    add(t);
        } else if (auto t = kvm::vm_type_from_name(name)) {
            add(*t);
        } else {
            throw UsageError(fmt::format("conformance: unknown VM type '{}'", name));
        }
    }
    return out;
}

// What a VM of `type` advertises; nullopt (and why) if none can be created.
std::optional<std::string> probe_env(Env& env) {
    kvm::Vm vm;
    if (int e = kvm::Vm::try_create(vm, env.kvm, env.vm_type))
        return fmt::format("KVM_CREATE_VM type={} failed: {}", env.vm_type, errno_name(e));
    auto cap = [&](unsigned n) {
        long v = vm.check_extension(n);
        return v > 0 ? static_cast<uint64_t>(v) : 0;
    };
    env.supported = cap(uapi::kCapGuestMemfdFlags);
    env.attributes = cap(uapi::kCapMemoryAttributes);
    env.gmem = cap(uapi::kCapGuestMemfd) > 0;
    env.memory2 = cap(uapi::kCapUserMemory2) > 0;
    env.pre_fault = cap(uapi::kCapPreFaultMemory) > 0;
    return std::nullopt;
}

} // namespace

std::vector<report::Check> run_checks(const kvm::Kvm& kvm, const Options& opt) {
    std::vector<report::Check> checks;
    Runner runner(checks);
    auto stopped = [&] { return opt.should_stop && opt.should_stop(); };
    long types = std::max(1L, kvm.check_extension(uapi::kCapVmTypes));
    const bool all =
        std::find(opt.vm_types.begin(), opt.vm_types.end(), kAllSupported) != opt.vm_types.end();
    size_t usable = 0;
    std::vector<std::string> unusable;

    for (unsigned long type : resolve_vm_types(kvm, opt)) {
        Env env{kvm, opt, type, kvm::vm_type_to_name(type)};
        if (stopped())
            break;
        if (type != 0 && !(uint64_t(types) & (1ull << type)) && !all) {
            // Named in the profile, not listed by this kernel: every check of it skips.
            runner.run(env.name("vm_type.supported"), [&](Check& c) {
                set_skip(c,
                         "KVM_CAP_VM_TYPES lists this VM type (the profile's vm_types asks for it)",
                         fmt::format("KVM_CAP_VM_TYPES={:#x} does not list type {} ({})", types,
                                     type, env.vm_name));
            });
            unusable.push_back(env.vm_name + ": not in KVM_CAP_VM_TYPES");
            continue;
        }
        if (auto why = probe_env(env)) {
            unusable.push_back(env.vm_name + ": " + *why);
            continue;
        }
        ++usable;
        if (!env.gmem) {
            runner.run(env.name("guest_memfd.supported"), [&](Check& c) {
                c.observed = "KVM_CAP_GUEST_MEMFD=0";
                set_skip(c, "KVM_CAP_GUEST_MEMFD on this VM type (every other check needs it)",
                         fmt::format("KVM_CAP_GUEST_MEMFD is 0 on a VM of type {} ({})", type,
                                     env.vm_name));
            });
            continue;
        }
        using Group = void (*)(Runner&, const Env&);
        for (Group g : {check_flags, check_memslots, check_attributes, check_memory_fault_exits,
                        check_pre_fault}) {
            if (stopped())
                break;
            g(runner, env);
        }
        for (uint64_t flags : expand_flag_sets(opt.flag_sets, env.supported, opt.bits)) {
            if (stopped())
                break;
            if ((flags & env.supported) != flags) {
                runner.run(env.name(flag_set_name(env, flags) + ".flag_set.supported"),
                           [&](Check& c) {
                               set_skip(c,
                                        "the profile's flag set is advertised on this VM type "
                                        "(every file check of it needs that)",
                                        env.lacks(flags & ~env.supported));
                           });
                continue;
            }
            check_file(runner, env, flags);
        }
    }
    if (usable == 0 && !unusable.empty() && !all)
        throw EnvError("conformance: no VM of the types asked for can be created (" +
                       fmt::format("{}", fmt::join(unusable, "; ")) + ")");
    if (!stopped()) {
        Env def{kvm, opt, uapi::kX86DefaultVm, "default"};
        check_default_vm(runner, def);
    }
    return checks;
}

} // namespace gms::workloads::conformance
