// The attach points the probes know, their variants per attach method, and
// how to tell whether the running kernel has each target.
#pragma once

#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace gms::kvm {
class KernelBtf;
}

namespace gms::probes {

enum class Backend { fentry, kprobe, tracepoint };
std::string to_string(Backend b);

// Functions whose arguments changed across kernels: the programs read either
// form, told which one by the planner from the BTF prototype.
enum class ArgDecoding {
    fixed,      // one form (checked against `nargs` where BTF has the function)
    direct_map, // set_direct_map_*_noflush(struct page * | const void *addr, ...)
    get_pfn,    // kvm_gmem_get_pfn with 5 (6.12) or 6 (6.13+: struct page **) arguments
};
// The form found on this kernel.
enum class ArgForm { fixed, page, address, pfn_only, pfn_and_page };
std::string to_string(ArgForm f);

struct AttachPointDef {
    std::string name; // "pc_add", "dm_invalid", ... (Coverage keys)
    std::string what; // one line for describe()
    // Kernel functions, first one present wins (empty for tracepoints).
    std::vector<std::string> functions;
    std::string tracepoint; // "category/name" (empty for function probes)
    // Programs in gmem.bpf.c (empty: no such variant).
    std::vector<std::string> fentry_progs; // fentry and/or fexit
    std::string kprobe_prog;
    std::string kretprobe_prog;
    std::string tp_prog;
    int nargs = -1; // the programs assume this many arguments (-1: any)
    ArgDecoding decoding = ArgDecoding::fixed;
    // Missing on kernels without the feature (NO_DIRECT_MAP series, SNP/TDX
    // populate): reported, never an error.
    bool where_present = false;
};

const std::vector<AttachPointDef>& attach_points();
const AttachPointDef* find_attach_point(const std::string& name);
std::vector<std::string> attach_point_names();

// What the running kernel offers as targets. Reads BTF (vmlinux + KVM
// modules), available_filter_functions (or kallsyms) and tracefs.
// Functions with a BPF trampoline (an ftrace direct call) in the text of
// <tracefs>/enabled_functions: a line "name [module] (count) flags ...", then
// "\tdirect-->..." (or "\tdirect(jmp)-->...") for the direct call.
std::set<std::string> functions_with_bpf_trampoline(std::istream& enabled_functions);

// What the attach planner needs to know about the running kernel: an
// interface so that a test can plan against a fake kernel.
class KernelView {
  public:
    virtual ~KernelView() = default;
    // Number of arguments of a BTF function, nullopt if not in BTF.
    virtual std::optional<int> btf_func_args(const std::string& fn) const = 0;
    // C types of its parameters ("struct page *", "const void *", ...),
    // nullopt if not in BTF (then an ArgDecoding other than fixed cannot be
    // decided).
    virtual std::optional<std::vector<std::string>> btf_param_types(const std::string& fn) const {
        (void)fn;
        return std::nullopt;
    }
    // kprobe-able: in available_filter_functions (or kallsyms text symbols).
    virtual bool kprobe_target(const std::string& fn) const = 0;
    // Where kprobe_target() looked: "available_filter_functions", "kallsyms" or "".
    virtual std::string kprobe_source() const = 0;
    virtual bool tracepoint_exists(const std::string& cat_name) const = 0;
    virtual std::string tracefs() const = 0; // "" when unavailable
    virtual std::string tracefs_error() const = 0;
    // ftrace patches this function (it is in available_filter_functions), so
    // a BPF trampoline on it shows in <tracefs>/enabled_functions.
    virtual bool ftrace_managed(const std::string& fn) const {
        return kprobe_source() == "available_filter_functions" && kprobe_target(fn);
    }
};

class KernelTargets final : public KernelView {
  public:
    KernelTargets();
    ~KernelTargets() override;
    KernelTargets(const KernelTargets&) = delete;
    KernelTargets& operator=(const KernelTargets&) = delete;

    std::optional<int> btf_func_args(const std::string& fn) const override;
    std::optional<std::vector<std::string>> btf_param_types(const std::string& fn) const override;
    bool kprobe_target(const std::string& fn) const override;
    std::string kprobe_source() const override { return kprobe_source_; }
    bool tracepoint_exists(const std::string& cat_name) const override;
    std::string tracefs() const override { return tracefs_; }
    std::string tracefs_error() const override { return tracefs_error_; }

  private:
    std::unique_ptr<kvm::KernelBtf> btf_;
    std::set<std::string> ftrace_funcs_;
    std::string kprobe_source_;
    std::string tracefs_;
    std::string tracefs_error_;
};

// Mounts tracefs at /sys/kernel/tracing when nothing is there; returns the
// directory holding events/ or "" (and the reason in *err).
std::string ensure_tracefs(std::string* err);

} // namespace gms::probes
