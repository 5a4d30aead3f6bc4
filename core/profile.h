// Profiles: TOML files (built-in or user) resolved into a validated Profile.
// Every error names file:line and the key (or the --set flag).
#pragma once

#include "core/kmsg.h"
#include "kvm/flags.h"
#include "kvm/series.h"

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace gms::profile {

enum class ParamType { boolean, integer, number, string, size, duration, string_list, choice };

// Integers, sizes (bytes) and durations (seconds, as double) are stored typed.
using ParamValue = std::variant<bool, int64_t, double, std::string, std::vector<std::string>>;
// The resolved values of one table (a workload, a section), defaults included.
using ParamTable = std::map<std::string, ParamValue>;

// A constraint beyond type, range and choices, declared with its parameter so
// that loading the profile rejects a bad value (file:line or the flag, exit 2)
// instead of the run failing on it later.
struct ParamRule {
    // What is wrong with `value` ("is not a power of two"), or nullopt.
    std::function<std::optional<std::string>(const ParamValue& value, const ParamTable& all)> check;
    // Other keys of the table the rule reads. When the parameter itself is
    // left at its default, the error points at the first of these the profile sets.
    std::vector<std::string> uses;
};

// Integers (and sizes) that are powers of two.
ParamRule power_of_two();
// Integers (and sizes) that are multiples of `n`; 0 passes (it means "default" where allowed).
ParamRule multiple_of(int64_t n, const std::string& what = "");
// An integer at most the integer parameter `other` of the same table.
ParamRule at_most(const std::string& other);

struct ParamSpec {
    std::string key;
    ParamType type;
    ParamValue default_value;
    std::string help;
    double min = 0; // for integer/number/size/duration
    double max = 1e18;
    // choice: the allowed values; string_list: the allowed elements (empty: any).
    std::vector<std::string> choices;
    std::vector<ParamRule> rules; // checked after every key of the table is read
};

struct WorkloadSpec {
    std::string kind;
    std::string label;
    int line = 0; // where it was declared, for messages
    std::map<std::string, ParamValue> params;

    int64_t integer(const std::string& key) const;
    uint64_t size(const std::string& key) const { return static_cast<uint64_t>(integer(key)); }
    double number(const std::string& key) const; // also durations, in seconds
    bool flag(const std::string& key) const;
    const std::string& str(const std::string& key) const;
    const std::vector<std::string>& list(const std::string& key) const;
};

// probes.mode: attach what can be attached (auto), require it (on: a failure
// to attach is an error, never a silent off), or not at all (off).
enum class ProbesMode { automatic, on, off };
// probes.backend: the attach method asked for; automatic lets the planner
// pick per attach point (fentry, else kprobe; tracepoints stay tracepoints).
enum class ProbeBackendRequest { automatic, fentry, kprobe, tracepoint };
std::string to_string(ProbesMode m);
std::string to_string(ProbeBackendRequest b);
// The spellings of profiles and flags ("auto", "on", "off"; "auto", "fentry", ...).
std::optional<ProbesMode> probes_mode_from_string(std::string_view s);
std::optional<ProbeBackendRequest> probe_backend_from_string(std::string_view s);

struct ProbeSettings {
    ProbesMode mode = ProbesMode::automatic;
    ProbeBackendRequest backend = ProbeBackendRequest::automatic;
    bool all_guest_memfds = false;
    uint64_t ringbuf_size = 8ull << 20;
    std::vector<std::string> exclude; // attach points left out (probes/attach_points.cpp names)
    bool locks = true;                // the invalidate_lock probes
    double lock_threshold_s = 1.0;    // a longer hold is a finding
    bool program_stats = false;       // BPF run counts and times per program
};

struct Profile {
    std::string name;
    std::string description;
    std::string source; // "builtin:smoke" or a path
    uint64_t seed = 1;
    double duration_s = 15;
    uint64_t memory_limit = 0; // 0: MemAvailable decides alone
    unsigned vm_count = 1;
    unsigned vcpus = 1;
    unsigned long vm_type = 0;
    std::string vm_type_name = "default";
    uint64_t gmem_size = 16ull << 20;
    std::vector<std::string> gmem_flag_names{"mmap", "init_shared"};
    uint64_t gmem_flags = 0; // resolved from names with bits
    kvm::FlagBits bits;
    // In-place conversion ioctl (KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd): patch series only.
    unsigned attrs2_ioctl_nr = uapi::kDefaultSetMemoryAttributes2Nr;
    unsigned cap_memory_attributes2 = uapi::kDefaultCapMemoryAttributes2;
    // The [flag_bits] and [abi] values the profile or the command line set:
    // they win over the series fingerprint (kvm/series.h); the others are
    // taken from it once the kernel is known (apply_series_abi()).
    kvm::AbiOverrides abi_overrides;
    ProbeSettings probes;
    // [run]: the watchdog's stall threshold and the grace after `duration`.
    double stall_threshold_s = 5;
    double grace_s = 10;
    // [kernel_log] waive: known kernel messages reported as waived, not as
    // findings; commands append --waive / --waivers ones.
    std::vector<KmsgWaiver> kernel_log_waivers;
    std::vector<WorkloadSpec> workloads;

    nlohmann::json to_json() const;
};

// Built-in profile names and their TOML text.
const std::map<std::string, std::string>& builtin_profiles();

// A command-line override: `key` is a dotted path ("vm.count",
// "workload.host-fault.threads", "workload.*.ops", "workload.0.pattern"),
// `value` TOML syntax or a bare string; `origin` names the flag in errors.
struct Override {
    std::string key;
    std::string value;
    std::string origin; // e.g. "--set vm.count=2" or "--vms 2"
};
// Parses "key=value" as given to --set.
Override parse_set_flag(const std::string& arg);

// Parameter schemas of the known workload kinds (the registry's), so the
// parser can reject unknown keys and wrong types with file:line.
using WorkloadSchemas = std::map<std::string, std::vector<ParamSpec>>;

// Loads a built-in (by name) or a file (by path), applies overrides,
// validates everything. Throws UsageError naming file:line and key.
// `probe_points`: the attach point names probes.exclude may name (empty:
// not checked here; the probes check them when they attach).
Profile load_profile(const std::string& name_or_path, const std::vector<Override>& overrides,
                     const WorkloadSchemas& schemas,
                     const std::vector<std::string>& probe_points = {});

// Takes the flag bits and the in-place conversion ABI the running kernel's
// series fingerprint gave (overrides already applied) and resolves
// guest_memfd.flags again with them. Throws UsageError when the profile names
// a flag whose bit this kernel leaves unknown, naming the override to set.
void apply_series_abi(Profile& p, const kvm::SeriesAbi& abi);

// Parses TOML text (exposed for tests): `source` names it in messages.
Profile parse_profile(const std::string& text, const std::string& source,
                      const std::vector<Override>& overrides, const WorkloadSchemas& schemas,
                      const std::vector<std::string>& probe_points = {});

} // namespace gms::profile
