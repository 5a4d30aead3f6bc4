// `gmemstress caps`: what this machine offers and lacks, and why each matters.
#include "cli/commands.h"
#include "core/caps.h"
#include "core/util.h"
#include "lab/kernel_config.h"
#include "probes/session.h"
#include "reports/render.h"

#include <fmt/format.h>

namespace gms::cli {

namespace {

struct Item {
    std::string name;
    bool ok;
    std::string value;
    std::string why; // what is lost without it
};

// A patch-series flag: its bit as the fingerprint decided it, advertised or not.
Item series_flag(const Caps& c, const std::string& title, const std::string& name, unsigned bit,
                 const std::string& why) {
    if (auto u = c.series.abi.unknown_bits.find(name); u != c.series.abi.unknown_bits.end())
        return {title, false, "bit unknown: " + u->second, why};
    bool adv = c.has_gmem_flag(1ull << bit);
    return {title, adv,
            fmt::format("bit {} ({}) {}", bit, c.series.abi.bit_source.at(name),
                        adv ? "advertised" : "not advertised"),
            why};
}

std::vector<Item> items(const Caps& c) {
    auto yes = [](bool b) { return std::string(b ? "yes" : "no"); };
    std::vector<Item> v = {
        {"/dev/kvm", c.kvm_accessible, c.kvm_accessible ? "accessible" : c.kvm_error,
         "every workload needs it"},
        {"KVM API version", c.api_version == 12, std::to_string(c.api_version), "must be 12"},
        {"VM types", true, fmt::format("{:#x}", c.vm_types),
         "private-memory VM types enable conversion"},
        {"guest_memfd", c.guest_memfd, yes(c.guest_memfd),
         "KVM_CREATE_GUEST_MEMFD: every workload"},
        {"guest_memfd flags",
         c.has_gmem_flag(uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared),
         fmt::format("{:#x} ({})", c.guest_memfd_flags,
                     kvm::flags_to_string(c.guest_memfd_flags, c.bits)),
         "MMAP|INIT_SHARED: host-fault, punch-hole, guest-fault data checks"},
        {"series (fingerprint)", c.series.notes.empty() && c.series.abi.unknown_bits.empty(),
         report::series_line(c.series),
         "the patch-series flag bits and ioctls (kvm/series.h); set [flag_bits]/[abi] in a "
         "profile"},
        series_flag(c, "NO_DIRECT_MAP flag", "no_direct_map", c.bits.no_direct_map,
                    "direct-map removal workloads and the direct-map invariant (patch series)"),
        series_flag(c, "WRITE flag", "write", c.bits.write,
                    "write()/pwrite() population (patch series)"),
        series_flag(c, "HUGETLB flag", "hugetlb", c.bits.hugetlb,
                    "HugeTLB-backed guest_memfd (patch series)"),
        {"memory attributes", (c.memory_attributes & uapi::kMemoryAttributePrivate) != 0,
         fmt::format("{:#x}", c.memory_attributes), "KVM_SET_MEMORY_ATTRIBUTES conversion"},
        {"memory attributes2 (in-place)", c.memory_attributes2,
         fmt::format("{}: {}", yes(c.memory_attributes2), c.memory_attributes2_how),
         "in-place conversion on the guest_memfd (patch series)"},
        {"pre-fault memory", c.pre_fault_memory, yes(c.pre_fault_memory),
         "KVM_PRE_FAULT_MEMORY populate path"},
        {"memslot v2", c.user_memory2, yes(c.user_memory2), "guest_memfd memslots"},
        {"MAP_GPA_RANGE exits", c.exit_hypercall, yes(c.exit_hypercall),
         "guest-initiated conversion"},
        {"vCPUs", c.max_vcpus > 0, fmt::format("recommended {}, max {}", c.nr_vcpus, c.max_vcpus),
         "vcpus per VM"},
        {"memslots", c.nr_memslots > 0, std::to_string(c.nr_memslots), "memslot binding workloads"},
        {"kernel", true, c.kernel_release, ""},
        {"lockdown", c.lockdown != "confidentiality", c.lockdown,
         "confidentiality lockdown forbids fentry/kprobe BPF and reading kernel memory"},
        {"BTF", c.btf_vmlinux, yes(c.btf_vmlinux), "CO-RE BPF programs and fentry"},
        {"fault injection", c.fail_nth && c.debugfs && c.failslab && c.fail_page_alloc,
         fmt::format("fail-nth {}, debugfs {}, failslab {}, fail_page_alloc {}", yes(c.fail_nth),
                     yes(c.debugfs), yes(c.failslab), yes(c.fail_page_alloc)),
         "fault-inject (CONFIG_FAULT_INJECTION, FAILSLAB, FAIL_PAGE_ALLOC, debugfs)"},
        {"MemAvailable", c.mem_available > 0, format_size(c.mem_available),
         "runs are refused above it"},
    };
    return v;
}

// The one rule for both outputs, so a script reading the JSON and a person
// reading the table get the same answer: without a usable /dev/kvm this
// machine cannot run anything (3).
int exit_code(const Caps& c) {
    return c.kvm_accessible ? kExitPass : kExitEnvironment;
}

void print_text(const Caps& c) {
    for (const auto& i : items(c))
        fmt::print("{:<30} {:<4} {}{}\n", i.name, i.ok ? "ok" : "--", i.value,
                   i.ok || i.why.empty() ? "" : "  [needed for: " + i.why + "]");
    for (const auto& n : c.series.notes)
        fmt::print("{:<30} {:<4} {}\n", "series note", "--", n);
    if (c.bpf.is_object())
        for (auto& [name, b] : c.bpf.items())
            if (b.is_object())
                fmt::print("{:<30} {:<4} {}\n", "BPF " + name,
                           b.value("usable", false) ? "ok" : "--",
                           b.value("reason", std::string()));
}

// The running kernel's .config against lab/kconfig's fragments: what it lacks
// and what each option would add (issue: users building their own kernels).
nlohmann::json kernel_config_json() {
    auto running = lab::read_running_config();
    if (!running)
        return {{"source", nullptr},
                {"reason", "the kernel's configuration is not readable (no /proc/config.gz: "
                           "CONFIG_IKCONFIG_PROC; no /boot/config-<release>)"}};
    nlohmann::json gaps = nlohmann::json::array();
    for (const auto& g : lab::config_gaps(lab::gmemstress_fragments(), running->options))
        gaps.push_back({{"option", g.option.name},
                        {"want", g.option.value},
                        {"have", g.have},
                        {"layer", g.option.layer},
                        {"adds", g.option.why}});
    return {{"source", running->source}, {"gaps", gaps}};
}

void print_kernel_config(const nlohmann::json& k) {
    if (k["source"].is_null()) {
        fmt::print("\nkernel config: {}\n", k["reason"].get<std::string>());
        return;
    }
    const auto& gaps = k["gaps"];
    fmt::print("\nkernel config ({}): {} option(s) of gmemstress.config / "
               "gmemstress-debug.config / gmemstress-sanitizers.config differ{}\n",
               k["source"].get<std::string>(), gaps.size(), gaps.empty() ? "" : ":");
    for (const auto& g : gaps)
        fmt::print("  {:<34} want {}, have {:<6} [{}] {}\n", g["option"].get<std::string>(),
                   g["want"].get<std::string>(),
                   g["have"].get<std::string>().empty() ? "unset" : g["have"].get<std::string>(),
                   g["layer"].get<std::string>(), g["adds"].get<std::string>());
}

int run_caps(bool json) {
    Caps c = detect_caps();
    c.bpf = probes::detect_backends();
    nlohmann::json kconfig = kernel_config_json();
    if (json) {
        nlohmann::json j = c.to_json();
        j["series"] = report::series_json(c.series);
        j["kernel_config"] = kconfig;
        fmt::print("{}\n", j.dump(2));
    } else {
        print_text(c);
        print_kernel_config(kconfig);
    }
    return exit_code(c);
}

} // namespace

void add_caps_command(CLI::App& app, Action& action) {
    auto* cmd = app.add_subcommand("caps", "Show what this machine's kernel offers and lacks");
    static bool json_flag = false;
    bool* json = &json_flag;
    cmd->add_flag("--json", *json, "machine-readable output");
    cmd->callback([&action, json] { action = [json] { return run_caps(*json); }; });
}

} // namespace gms::cli
