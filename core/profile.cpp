#include "core/profile.h"

#include "core/error.h"
#include "core/util.h"
#include "kvm/flag_names.h"

#include <algorithm>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace gms::profile {

std::string to_string(ProbesMode m) {
    switch (m) {
    case ProbesMode::automatic:
        return "auto";
    case ProbesMode::on:
        return "on";
    case ProbesMode::off:
        return "off";
    }
    return "?";
}

std::string to_string(ProbeBackendRequest b) {
    switch (b) {
    case ProbeBackendRequest::automatic:
        return "auto";
    case ProbeBackendRequest::fentry:
        return "fentry";
    case ProbeBackendRequest::kprobe:
        return "kprobe";
    case ProbeBackendRequest::tracepoint:
        return "tracepoint";
    }
    return "?";
}

std::optional<ProbesMode> probes_mode_from_string(std::string_view s) {
    for (auto m : {ProbesMode::automatic, ProbesMode::on, ProbesMode::off})
        if (s == to_string(m))
            return m;
    return std::nullopt;
}

std::optional<ProbeBackendRequest> probe_backend_from_string(std::string_view s) {
    for (auto b : {ProbeBackendRequest::automatic, ProbeBackendRequest::fentry,
                   ProbeBackendRequest::kprobe, ProbeBackendRequest::tracepoint})
        if (s == to_string(b))
            return b;
    return std::nullopt;
}

namespace {

// ---- where things came from ------------------------------------------------

// Error locations: file:line for keys in the file, the flag for overrides.
class Origins {
  public:
    explicit Origins(std::string source) : source_(std::move(source)) {}
    void overridden(const std::string& path, const std::string& origin) {
        overrides_[path] = origin;
    }
    bool is_overridden(const std::string& path) const { return overrides_.count(path) > 0; }
    std::string where(const std::string& path, const toml::node* node) const {
        if (auto it = overrides_.find(path); it != overrides_.end())
            return it->second;
        if (node && node->source().begin.line > 0)
            return fmt::format("{}:{}", source_, node->source().begin.line);
        return source_;
    }
    const std::string& source() const { return source_; }

  private:
    std::string source_;
    std::map<std::string, std::string> overrides_;
};

[[noreturn]] void fail(const std::string& where, const std::string& msg) {
    throw UsageError(fmt::format("{}: {}", where, msg));
}

std::string type_name(const toml::node& n) {
    switch (n.type()) {
    case toml::node_type::table:
        return "table";
    case toml::node_type::array:
        return "array";
    case toml::node_type::string:
        return "string";
    case toml::node_type::integer:
        return "integer";
    case toml::node_type::floating_point:
        return "float";
    case toml::node_type::boolean:
        return "boolean";
    default:
        return "date/time";
    }
}

std::string type_name(ParamType t) {
    switch (t) {
    case ParamType::boolean:
        return "a boolean";
    case ParamType::integer:
        return "an integer";
    case ParamType::number:
        return "a number";
    case ParamType::string:
        return "a string";
    case ParamType::size:
        return "a size (integer bytes or a string like \"16MiB\")";
    case ParamType::duration:
        return "a duration (seconds or a string like \"10s\", \"500ms\")";
    case ParamType::string_list:
        return "an array of strings";
    case ParamType::choice:
        return "one of the listed strings";
    }
    return "?";
}

// Converts and range-checks one TOML value against its spec.
ParamValue convert(const ParamSpec& spec, const toml::node& n, const std::string& where,
                   const std::string& key) {
    auto wrong = [&]() -> ParamValue {
        fail(where,
             fmt::format("'{}' must be {}, got {}", key, type_name(spec.type), type_name(n)));
    };
    auto range = [&](double v) {
        if (v < spec.min || v > spec.max)
            fail(where,
                 fmt::format("'{}' = {} is out of range [{}, {}]", key, v, spec.min, spec.max));
    };
    switch (spec.type) {
    case ParamType::boolean:
        if (auto v = n.value_exact<bool>())
            return *v;
        return wrong();
    case ParamType::integer:
        if (auto v = n.value_exact<int64_t>()) {
            range(double(*v));
            return *v;
        }
        return wrong();
    case ParamType::number:
        if (n.is_number()) {
            double v = *n.value<double>();
            range(v);
            return v;
        }
        return wrong();
    case ParamType::size: {
        std::optional<uint64_t> v;
        if (auto i = n.value_exact<int64_t>(); i && *i >= 0)
            v = uint64_t(*i);
        else if (auto s = n.value_exact<std::string>())
            v = parse_size(*s);
        else
            return wrong();
        if (!v)
            fail(where, fmt::format(
                            "'{}' is not a valid size (examples: 4096, \"4KiB\", \"16MiB\")", key));
        range(double(*v));
        return int64_t(*v);
    }
    case ParamType::duration: {
        std::optional<double> v;
        if (n.is_number())
            v = *n.value<double>();
        else if (auto s = n.value_exact<std::string>())
            v = parse_duration(*s);
        else
            return wrong();
        if (!v || *v < 0)
            fail(where,
                 fmt::format(
                     "'{}' is not a valid duration (examples: 30, \"10s\", \"500ms\", \"2m\")",
                     key));
        range(*v);
        return *v;
    }
    case ParamType::string:
        if (auto v = n.value_exact<std::string>())
            return *v;
        return wrong();
    case ParamType::choice:
        if (auto v = n.value_exact<std::string>()) {
            for (const auto& c : spec.choices)
                if (c == *v)
                    return *v;
            fail(where, fmt::format("'{}' = \"{}\" is not one of: {}", key, *v,
                                    fmt::join(spec.choices, ", ")));
        }
        return wrong();
    case ParamType::string_list:
        if (auto* arr = n.as_array()) {
            std::vector<std::string> out;
            for (const auto& e : *arr) {
                auto s = e.value_exact<std::string>();
                if (!s)
                    return wrong();
                if (!spec.choices.empty() &&
                    std::find(spec.choices.begin(), spec.choices.end(), *s) == spec.choices.end())
                    fail(where, fmt::format("'{}' has \"{}\", which is not one of: {}", key, *s,
                                            fmt::join(spec.choices, ", ")));
                out.push_back(*s);
            }
            return out;
        }
        return wrong();
    }
    return wrong();
}

// A value as a profile would spell it, for messages.
std::string show(const ParamValue& v) {
    struct {
        std::string operator()(bool b) const { return b ? "true" : "false"; }
        std::string operator()(int64_t i) const { return std::to_string(i); }
        std::string operator()(double d) const { return fmt::format("{}", d); }
        std::string operator()(const std::string& s) const { return "\"" + s + "\""; }
        std::string operator()(const std::vector<std::string>& l) const {
            std::vector<std::string> q;
            for (const auto& s : l)
                q.push_back((*this)(s));
            return fmt::format("[{}]", fmt::join(q, ", "));
        }
    } visitor;
    return std::visit(visitor, v);
}

// Where a rule's error points: a flag that set the parameter or a key the
// rule uses (the user's latest word), else the parameter's line if the file
// sets it, else the line of the first key the rule uses that it sets, else
// the table itself.
std::string rule_location(const toml::table& t, const std::string& key, const ParamRule& rule,
                          const std::string& prefix, const Origins& origins) {
    std::vector<std::string> keys{key};
    keys.insert(keys.end(), rule.uses.begin(), rule.uses.end());
    for (const auto& k : keys)
        if (origins.is_overridden(prefix + k))
            return origins.where(prefix + k, t.get(k));
    for (const auto& k : keys)
        if (const toml::node* n = t.get(k))
            return origins.where(prefix + k, n);
    return origins.where(prefix, &t);
}

// Runs every parameter's rules once the whole table is known (defaults
// included: a relation can be broken by the other key alone).
void check_rules(const toml::table& t, const std::vector<ParamSpec>& specs,
                 const ParamTable& values, const std::string& prefix, const Origins& origins) {
    for (const auto& s : specs)
        for (const auto& rule : s.rules)
            if (auto why = rule.check(values.at(s.key), values))
                fail(rule_location(t, s.key, rule, prefix, origins),
                     fmt::format("'{}{}' = {} {}", prefix, s.key, show(values.at(s.key)), *why));
}

// Top-level schema (non-workload keys).
const std::vector<ParamSpec>& top_params() {
    static const std::vector<ParamSpec> p = {
        {"name", ParamType::string, std::string(), "profile name"},
        {"description", ParamType::string, std::string(), "what the profile is for"},
        {"seed", ParamType::integer, int64_t(1), "seed of every random choice", 0, 9.2e18},
        {"duration", ParamType::duration, 15.0, "hard cap on the whole run (seconds)", 0.001,
         86400 * 7},
        {"memory_limit", ParamType::size, int64_t(0),
         "refuse runs estimated above this (0: MemAvailable only)", 0, 1e15},
    };
    return p;
}

const std::map<std::string, std::vector<ParamSpec>>& section_params() {
    static const std::map<std::string, std::vector<ParamSpec>> p = {
        {"vm",
         {{"count", ParamType::integer, int64_t(1), "VMs per workload", 1, 64},
          {"vcpus", ParamType::integer, int64_t(1), "vCPUs per VM", 1, 256},
          {"type", ParamType::string, std::string("default"),
           "VM type: default, sw_protected, sev, sev_es, snp, tdx, or a number"}}},
        {"guest_memfd",
         {{"size",
           ParamType::size,
           int64_t(16 << 20),
           "bytes per guest_memfd",
           4096,
           double(1ull << 46),
           {},
           {multiple_of(4096, "the page size")}},
          {"flags", ParamType::string_list, std::vector<std::string>{"mmap", "init_shared"},
           "mmap, init_shared, no_direct_map, write, hugetlb, bit:N"}}},
        {"flag_bits",
         {{"no_direct_map", ParamType::integer, int64_t(uapi::kDefaultNoDirectMapBit),
           "bit of GUEST_MEMFD_FLAG_NO_DIRECT_MAP (patch series; unset: from the kernel's "
           "series fingerprint)",
           0, 63},
          {"write", ParamType::integer, int64_t(uapi::kDefaultWriteBit),
           "bit of GUEST_MEMFD_FLAG_WRITE (patch series; unset: from the fingerprint)", 0, 63},
          {"hugetlb", ParamType::integer, int64_t(uapi::kDefaultHugetlbBit),
           "bit of GUEST_MEMFD_FLAG_HUGETLB (patch series; unset: from the fingerprint)", 0, 63}}},
        {"abi",
         {{"set_memory_attributes2_nr", ParamType::integer,
           int64_t(uapi::kDefaultSetMemoryAttributes2Nr),
           "ioctl number of KVM_SET_MEMORY_ATTRIBUTES2 (patch series; the struct size in the "
           "request comes from the kernel's BTF)",
           0, 255},
          {"cap_memory_attributes2", ParamType::integer,
           int64_t(uapi::kDefaultCapMemoryAttributes2),
           "capability to ask for in-place conversion (patch series; 0: none, the ioctl itself "
           "is probed)",
           0, 100000}}},
        // The watchdog (engine/watchdog.h): a blocking call longer than
        // stall_threshold is a stall, reported while it lasts; a run whose
        // calls have not all returned `grace` after its duration is written
        // up without them and the process exits.
        {"run",
         {{"stall_threshold", ParamType::duration, 5.0,
           "a blocking kernel call (KVM_RUN, guest_memfd fallocate/pwrite/ioctl, mmap access) "
           "longer than this is a stall: reported with its kernel stack, a failure",
           0.05, 3600},
          {"grace", ParamType::duration, 10.0,
           "time after the run's duration for every call to return; then the report is "
           "written without the stuck ones (incomplete) and gmemstress exits",
           0.1, 3600}}},
        {"probes",
         {{"mode",
           ParamType::choice,
           std::string("auto"),
           "auto: attach what can be; on: required; off",
           0,
           0,
           {"auto", "on", "off"}},
          {"backend",
           ParamType::choice,
           std::string("auto"),
           "attach method",
           0,
           0,
           {"auto", "fentry", "kprobe", "tracepoint"}},
          {"all", ParamType::boolean, false, "observe every guest_memfd on the machine"},
          // The kernel only creates ring buffers of a power-of-two size.
          {"ringbuf_size",
           ParamType::size,
           int64_t(8 << 20),
           "BPF ring buffer bytes (a power of two)",
           4096,
           double(1u << 30),
           {},
           {power_of_two()}},
          {"exclude", ParamType::string_list, std::vector<std::string>{},
           "attach points not to attach (names as in the report's probes.attach_points)"},
          // Off by default: fentry/fexit on every rwsem operation of the
          // kernel cost host faults ~20% in the lab (docs/LOCKS.md, "Cost").
          {"locks", ParamType::boolean, false,
           "measure guest_memfd invalidate_lock hold and wait times (fentry on the rwsem "
           "functions; the report's locks section)"},
          // A hold over it is the invalidate_lock_hold finding.
          {"lock_threshold", ParamType::duration, 1.0,
           "an invalidate_lock hold longer than this is a finding", 0.000001, 3600.0},
          // Off by default: the kernel then reads the clock twice per program run.
          {"program_stats", ParamType::boolean, false,
           "count each BPF program's runs and run time (kernel BPF stats while attached; "
           "the report's probes.program_stats)"}}},
    };
    return p;
}

const ParamSpec* find_spec(const std::vector<ParamSpec>& specs, const std::string& key) {
    for (const auto& s : specs)
        if (s.key == key)
            return &s;
    return nullptr;
}

std::vector<std::string> spec_keys(const std::vector<ParamSpec>& specs) {
    std::vector<std::string> out;
    for (const auto& s : specs)
        out.push_back(s.key);
    return out;
}

// Reads a table against specs: unknown keys and bad values are errors; missing keys get defaults.
ParamTable read_table(const toml::table& t, const std::vector<ParamSpec>& specs,
                      const std::string& path_prefix, const Origins& origins,
                      const std::set<std::string>& ignore = {}) {
    ParamTable out;
    for (const auto& s : specs)
        out[s.key] = s.default_value;
    for (auto&& [k, v] : t) {
        std::string key(k.str());
        if (ignore.count(key))
            continue;
        std::string path = path_prefix + key;
        const ParamSpec* spec = find_spec(specs, key);
        if (!spec)
            fail(origins.where(path, &v), fmt::format("unknown key '{}' (known: {})", path,
                                                      fmt::join(spec_keys(specs), ", ")));
        out[key] = convert(*spec, v, origins.where(path, &v), path);
    }
    check_rules(t, specs, out, path_prefix, origins);
    return out;
}

template <class T> T get(const std::map<std::string, ParamValue>& m, const std::string& k) {
    return std::get<T>(m.at(k));
}

// ---- overrides -------------------------------------------------------------

std::unique_ptr<toml::node> parse_value(const std::string& value) {
    try {
        toml::table t = toml::parse("v = " + value);
        std::unique_ptr<toml::node> out;
        t.get("v")->visit([&](auto&& n) { out = std::make_unique<std::decay_t<decltype(n)>>(n); });
        return out;
    } catch (const toml::parse_error&) {
        // A bare word ("random", "16MiB") is a string.
        return std::make_unique<toml::value<std::string>>(value);
    }
}

std::vector<std::string> split_dots(const std::string& s) {
    std::vector<std::string> parts;
    std::stringstream ss(s);
    std::string p;
    while (std::getline(ss, p, '.'))
        parts.push_back(p);
    return parts;
}

void assign(toml::table& t, const std::string& key, const toml::node& n) {
    n.visit([&](auto&& v) { t.insert_or_assign(key, v); });
}

// Applies one override to the document; records its origin for messages.
void apply_override(toml::table& doc, const Override& o, Origins& origins) {
    auto parts = split_dots(o.key);
    for (const auto& p : parts)
        if (p.empty())
            fail(o.origin, fmt::format("bad key '{}'", o.key));
    auto value = parse_value(o.value);
    if (parts[0] == "workload") {
        if (parts.size() != 3)
            fail(o.origin, "workload overrides look like workload.<label|kind|index|*>.<key>");
        auto* arr = doc["workload"].as_array();
        bool matched = false;
        if (arr) {
            for (size_t i = 0; i < arr->size(); ++i) {
                auto* w = (*arr)[i].as_table();
                if (!w)
                    continue;
                std::string kind = (*w)["kind"].value_or(std::string());
                std::string label = (*w)["label"].value_or(kind);
                const std::string& sel = parts[1];
                if (sel == "*" || sel == kind || sel == label || sel == std::to_string(i)) {
                    assign(*w, parts[2], *value);
                    origins.overridden(fmt::format("workload[{}].{}", i, parts[2]), o.origin);
                    matched = true;
                }
            }
        }
        if (!matched)
            fail(o.origin, fmt::format("no workload in the profile matches '{}'", parts[1]));
        return;
    }
    toml::table* t = &doc;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto* sub = (*t)[parts[i]].as_table();
        if (!sub) {
            t->insert_or_assign(parts[i], toml::table{});
            sub = (*t)[parts[i]].as_table();
        }
        t = sub;
    }
    assign(*t, parts.back(), *value);
    origins.overridden(o.key, o.origin);
}

unsigned long vm_type_from(const std::string& s, const std::string& where) {
    if (auto v = kvm::vm_type_from_name(s))
        return *v;
    fail(where,
         fmt::format(
             "unknown VM type '{}' (default, sw_protected, sev, sev_es, snp, tdx, or 0..63)", s));
}

// [kernel_log] waive = ["regex", { regex = "...", reason = "..." }, ...]:
// each regex compiled here, so a bad one is an error at its own line.
std::vector<KmsgWaiver> read_kernel_log(const toml::table& doc, const Origins& origins) {
    std::vector<KmsgWaiver> out;
    const toml::node* n = doc.get("kernel_log");
    if (!n)
        return out;
    const toml::table* t = n->as_table();
    if (!t)
        fail(origins.where("kernel_log", n), "'kernel_log' must be a table ([kernel_log])");
    for (auto&& [k, v] : *t)
        if (k.str() != "waive")
            fail(origins.where("kernel_log." + std::string(k.str()), &v),
                 fmt::format("unknown key 'kernel_log.{}' (known: waive)", k.str()));
    const toml::node* waive = t->get("waive");
    if (!waive)
        return out;
    std::string where = origins.where("kernel_log.waive", waive);
    const toml::array* arr = waive->as_array();
    if (!arr)
        fail(where, "'kernel_log.waive' must be an array of regular expressions (strings, or "
                    "tables { regex = \"...\", reason = \"...\" })");
    for (const auto& e : *arr) {
        // An override has no lines of its own: its flag names it.
        std::string at = origins.is_overridden("kernel_log.waive") ? where : origins.where("", &e);
        if (auto re = e.value_exact<std::string>()) {
            out.push_back(make_waiver(*re, at));
            continue;
        }
        const toml::table* w = e.as_table();
        if (!w)
            fail(at, fmt::format("kernel_log.waive: expected a string or a table, got {}",
                                 type_name(e)));
        std::string regex, reason;
        for (auto&& [k, v] : *w) {
            auto s = v.value_exact<std::string>();
            if ((k.str() != "regex" && k.str() != "reason") || !s)
                fail(at, fmt::format("kernel_log.waive: '{}' is not a string key of a waiver "
                                     "(regex, reason)",
                                     k.str()));
            (k.str() == "regex" ? regex : reason) = *s;
        }
        if (regex.empty() && !w->get("regex"))
            fail(at, "kernel_log.waive: a waiver table needs 'regex'");
        out.push_back(make_waiver(regex, at, reason));
    }
    return out;
}

} // namespace

// ---- rules -------------------------------------------------------------------

ParamRule power_of_two() {
    return {[](const ParamValue& v, const ParamTable&) -> std::optional<std::string> {
                int64_t i = std::get<int64_t>(v);
                if (i > 0 && (i & (i - 1)) == 0)
                    return std::nullopt;
                return "is not a power of two (1, 2, 4, 8, ...)";
            },
            {}};
}

ParamRule multiple_of(int64_t n, const std::string& what) {
    return {[n, what](const ParamValue& v, const ParamTable&) -> std::optional<std::string> {
                if (std::get<int64_t>(v) % n == 0)
                    return std::nullopt;
                return what.empty() ? fmt::format("is not a multiple of {}", n)
                                    : fmt::format("is not a multiple of {} ({})", n, what);
            },
            {}};
}

ParamRule at_most(const std::string& other) {
    return {[other](const ParamValue& v, const ParamTable& all) -> std::optional<std::string> {
                int64_t limit = std::get<int64_t>(all.at(other));
                if (std::get<int64_t>(v) <= limit)
                    return std::nullopt;
                return fmt::format("is above {} = {}", other, limit);
            },
            {other}};
}

// ---- WorkloadSpec accessors ------------------------------------------------

int64_t WorkloadSpec::integer(const std::string& key) const {
    return std::get<int64_t>(params.at(key));
}
double WorkloadSpec::number(const std::string& key) const {
    const auto& v = params.at(key);
    if (auto* i = std::get_if<int64_t>(&v))
        return double(*i);
    return std::get<double>(v);
}
bool WorkloadSpec::flag(const std::string& key) const {
    return std::get<bool>(params.at(key));
}
const std::string& WorkloadSpec::str(const std::string& key) const {
    return std::get<std::string>(params.at(key));
}
const std::vector<std::string>& WorkloadSpec::list(const std::string& key) const {
    return std::get<std::vector<std::string>>(params.at(key));
}

Override parse_set_flag(const std::string& arg) {
    auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0)
        throw UsageError(fmt::format("--set {}: expected key=value", arg));
    return Override{arg.substr(0, eq), arg.substr(eq + 1), "--set " + arg};
}

Profile parse_profile(const std::string& text, const std::string& source,
                      const std::vector<Override>& overrides, const WorkloadSchemas& schemas,
                      const std::vector<std::string>& probe_points) {
    toml::table doc;
    try {
        doc = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        fail(fmt::format("{}:{}", source, e.source().begin.line), std::string(e.description()));
    }
    Origins origins(source);
    for (const auto& o : overrides)
        apply_override(doc, o, origins);

    Profile p;
    p.source = source;
    std::set<std::string> sections = {"workload", "kernel_log"};
    for (const auto& [name, _] : section_params())
        sections.insert(name);
    auto top = read_table(doc, top_params(), "", origins, sections);
    p.name = get<std::string>(top, "name");
    p.description = get<std::string>(top, "description");
    p.seed = static_cast<uint64_t>(get<int64_t>(top, "seed"));
    p.duration_s = get<double>(top, "duration");
    p.memory_limit = static_cast<uint64_t>(get<int64_t>(top, "memory_limit"));

    std::map<std::string, std::map<std::string, ParamValue>> sec;
    for (const auto& [name, specs] : section_params()) {
        const toml::node* n = doc.get(name);
        if (n && !n->is_table())
            fail(origins.where(name, n), fmt::format("'{}' must be a table ([{}])", name, name));
        static const toml::table empty;
        sec[name] = read_table(n ? *n->as_table() : empty, specs, name + ".", origins);
    }
    p.vm_count = unsigned(get<int64_t>(sec["vm"], "count"));
    p.vcpus = unsigned(get<int64_t>(sec["vm"], "vcpus"));
    p.vm_type_name = get<std::string>(sec["vm"], "type");
    p.vm_type =
        vm_type_from(p.vm_type_name, origins.where("vm.type", doc.at_path("vm.type").node()));
    p.bits.no_direct_map = unsigned(get<int64_t>(sec["flag_bits"], "no_direct_map"));
    p.bits.write = unsigned(get<int64_t>(sec["flag_bits"], "write"));
    p.bits.hugetlb = unsigned(get<int64_t>(sec["flag_bits"], "hugetlb"));
    p.attrs2_ioctl_nr = unsigned(get<int64_t>(sec["abi"], "set_memory_attributes2_nr"));
    p.cap_memory_attributes2 = unsigned(get<int64_t>(sec["abi"], "cap_memory_attributes2"));
    // What was set explicitly (in the file or by an override) wins over the
    // fingerprint; the rest is decided once the kernel is known.
    auto given = [&](const char* path) { return bool(doc.at_path(path).node()); };
    if (given("flag_bits.no_direct_map"))
        p.abi_overrides.no_direct_map_bit = p.bits.no_direct_map;
    if (given("flag_bits.write"))
        p.abi_overrides.write_bit = p.bits.write;
    if (given("flag_bits.hugetlb"))
        p.abi_overrides.hugetlb_bit = p.bits.hugetlb;
    if (given("abi.set_memory_attributes2_nr"))
        p.abi_overrides.attrs2_nr = p.attrs2_ioctl_nr;
    if (given("abi.cap_memory_attributes2"))
        p.abi_overrides.cap_attrs2 = p.cap_memory_attributes2;
    p.gmem_size = static_cast<uint64_t>(get<int64_t>(sec["guest_memfd"], "size"));
    p.gmem_flag_names = get<std::vector<std::string>>(sec["guest_memfd"], "flags");
    p.gmem_flags = 0;
    for (const auto& f : p.gmem_flag_names) {
        auto v = kvm::flag_from_name(f, p.bits);
        if (!v)
            fail(origins.where("guest_memfd.flags", doc.at_path("guest_memfd.flags").node()),
                 fmt::format(
                     "unknown guest_memfd flag '{}' (mmap, init_shared, no_direct_map, write, "
                     "hugetlb, bit:N)",
                     f));
        p.gmem_flags |= *v;
    }
    // Choices were checked against the spec when the section was read.
    p.stall_threshold_s = get<double>(sec["run"], "stall_threshold");
    p.grace_s = get<double>(sec["run"], "grace");
    p.probes.mode = *probes_mode_from_string(get<std::string>(sec["probes"], "mode"));
    p.probes.backend = *probe_backend_from_string(get<std::string>(sec["probes"], "backend"));
    p.probes.all_guest_memfds = get<bool>(sec["probes"], "all");
    p.probes.ringbuf_size = static_cast<uint64_t>(get<int64_t>(sec["probes"], "ringbuf_size"));
    p.probes.exclude = get<std::vector<std::string>>(sec["probes"], "exclude");
    p.probes.locks = get<bool>(sec["probes"], "locks");
    p.probes.lock_threshold_s = get<double>(sec["probes"], "lock_threshold");
    p.probes.program_stats = get<bool>(sec["probes"], "program_stats");
    for (const auto& name : p.probes.exclude)
        if (!probe_points.empty() &&
            std::find(probe_points.begin(), probe_points.end(), name) == probe_points.end())
            fail(origins.where("probes.exclude", doc.at_path("probes.exclude").node()),
                 fmt::format("unknown attach point '{}' in probes.exclude (known: {})", name,
                             fmt::join(probe_points, ", ")));

    p.kernel_log_waivers = read_kernel_log(doc, origins);

    const toml::node* wl = doc.get("workload");
    if (!wl)
        fail(source, "the profile has no [[workload]] entries");
    const toml::array* arr = wl->as_array();
    if (!arr)
        fail(origins.where("workload", wl), "'workload' must be an array of tables ([[workload]])");
    std::set<std::string> labels;
    for (size_t i = 0; i < arr->size(); ++i) {
        const toml::node& n = (*arr)[i];
        std::string prefix = fmt::format("workload[{}].", i);
        const toml::table* t = n.as_table();
        if (!t)
            fail(origins.where(prefix, &n), "each workload must be a table");
        const toml::node* kind_node = t->get("kind");
        std::string where = origins.where(prefix + "kind", kind_node ? kind_node : &n);
        if (!kind_node || !kind_node->is_string())
            fail(where, fmt::format("{}kind is required (a string)", prefix));
        std::string kind = *kind_node->value<std::string>();
        auto schema = schemas.find(kind);
        if (schema == schemas.end()) {
            std::vector<std::string> known;
            for (const auto& [k, _] : schemas)
                known.push_back(k);
            fail(where, fmt::format("unknown workload kind '{}' (known: {})", kind,
                                    fmt::join(known, ", ")));
        }
        WorkloadSpec spec;
        spec.kind = kind;
        spec.line = int(n.source().begin.line);
        spec.params = read_table(*t, schema->second, prefix, origins, {"kind"});
        spec.label = spec.str("label").empty() ? kind : spec.str("label");
        if (!labels.insert(spec.label).second)
            fail(where, fmt::format("two workloads are labelled '{}'; give one a distinct 'label'",
                                    spec.label));
        p.workloads.push_back(std::move(spec));
    }
    if (p.workloads.empty())
        fail(source, "the profile has no [[workload]] entries");
    if (p.name.empty())
        p.name = source;
    return p;
}

Profile load_profile(const std::string& name_or_path, const std::vector<Override>& overrides,
                     const WorkloadSchemas& schemas, const std::vector<std::string>& probe_points) {
    const auto& builtins = builtin_profiles();
    if (auto it = builtins.find(name_or_path); it != builtins.end()) {
        Profile p =
            parse_profile(it->second, "builtin:" + it->first, overrides, schemas, probe_points);
        return p;
    }
    std::ifstream f(name_or_path);
    if (!f) {
        std::vector<std::string> names;
        for (const auto& [n, _] : builtins)
            names.push_back(n);
        throw UsageError(
            fmt::format("--profile {}: not a built-in profile ({}) and not a readable file",
                        name_or_path, fmt::join(names, ", ")));
    }
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_profile(ss.str(), name_or_path, overrides, schemas, probe_points);
}

// ---- resolved profile as JSON (for the report) -----------------------------

namespace {
nlohmann::json param_json(const ParamValue& v) {
    return std::visit([](auto&& x) { return nlohmann::json(x); }, v);
}
} // namespace

void apply_series_abi(Profile& p, const kvm::SeriesAbi& abi) {
    p.bits = abi.bits;
    p.attrs2_ioctl_nr = abi.attrs2_nr;
    p.cap_memory_attributes2 = abi.cap_attrs2;
    p.gmem_flags = 0;
    for (const auto& f : p.gmem_flag_names) {
        if (auto why = abi.unknown_bits.find(f); why != abi.unknown_bits.end())
            throw UsageError(
                fmt::format("{}: guest_memfd.flags names '{}', but {}", p.source, f, why->second));
        // Known names: checked when the profile was read.
        p.gmem_flags |= kvm::flag_from_name(f, p.bits).value_or(0);
    }
}

nlohmann::json Profile::to_json() const {
    nlohmann::json j;
    j["name"] = name;
    j["description"] = description;
    j["source"] = source;
    j["seed"] = seed;
    j["duration_s"] = duration_s;
    j["memory_limit"] = memory_limit;
    j["vm"] = {
        {"count", vm_count}, {"vcpus", vcpus}, {"type", vm_type_name}, {"type_value", vm_type}};
    j["guest_memfd"] = {{"size", gmem_size},
                        {"flags", gmem_flag_names},
                        {"flags_value", gmem_flags},
                        {"flags_decoded", kvm::flags_to_string(gmem_flags, bits)}};
    j["flag_bits"] = {
        {"no_direct_map", bits.no_direct_map}, {"write", bits.write}, {"hugetlb", bits.hugetlb}};
    j["abi"] = {{"set_memory_attributes2_nr", attrs2_ioctl_nr},
                {"cap_memory_attributes2", cap_memory_attributes2}};
    j["run"] = {{"stall_threshold_s", stall_threshold_s}, {"grace_s", grace_s}};
    j["probes"] = {{"mode", to_string(probes.mode)},
                   {"backend", to_string(probes.backend)},
                   {"all", probes.all_guest_memfds},
                   {"ringbuf_size", probes.ringbuf_size},
                   {"exclude", probes.exclude},
                   {"locks", probes.locks},
                   {"lock_threshold", probes.lock_threshold_s},
                   {"program_stats", probes.program_stats}};
    j["kernel_log"] = {{"waive", nlohmann::json::array()}};
    for (const auto& w : kernel_log_waivers)
        j["kernel_log"]["waive"].push_back(
            {{"regex", w.regex}, {"origin", w.origin}, {"reason", w.reason}});
    j["workloads"] = nlohmann::json::array();
    for (const auto& w : workloads) {
        nlohmann::json wj = {{"kind", w.kind}, {"label", w.label}};
        for (const auto& [k, v] : w.params)
            wj["params"][k] = param_json(v);
        j["workloads"].push_back(wj);
    }
    return j;
}

} // namespace gms::profile
