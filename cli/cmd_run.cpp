// `gmemstress run`: flags -> profile, then the engine's passes (detect ->
// attach -> run -> finish -> write) on this host, or the same run in the lab.
#include "cli/commands.h"
#include "core/error.h"
#include "core/profile.h"
#include "engine/engine.h"
#include "lab/lab.h"
#include "probes/attach_points.h"
#include "probes/lock_probes.h"
#include "workloads/workload.h"

#include <fmt/format.h>
#include <unistd.h>

namespace gms::cli {

namespace {

struct RunOptions {
    std::string profile = "smoke";
    std::string report_path = "gmemstress-report.json";
    std::string junit_path;
    std::string html_path;
    std::string ktap_path; // "-": stdout
    std::string kcidb_path, kcidb_origin, kcidb_build_id;
    bool lava = false;
    std::string lava_json_path;              // hidden: the lab's guest
    std::vector<std::string> waive, waivers; // regexes, files of regexes
    std::string record_path;
    std::vector<std::string> sets;
    std::optional<uint64_t> seed;
    std::optional<std::string> duration;
    std::optional<int64_t> vms, vcpus, threads, ops;
    std::optional<std::string> gmem_size, gmem_flags, probes_mode, probe_backend, vm_type;
    std::vector<std::string> flag_bits;
    bool all_guest_memfds = false;
    bool quiet = false;
    bool no_progress = false;
    std::string where = "host"; // host | lab | auto
};

// A TOML basic string holding `s` (quotes and backslashes escaped).
std::string toml_string(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\')
            out += '\\';
        out += c;
    }
    return out + "\"";
}

// Shorthand flags become overrides that name the flag in any error.
std::vector<profile::Override> overrides_from(const RunOptions& o) {
    std::vector<profile::Override> out;
    // `value` is TOML; `shown` is what the user typed, for messages.
    auto add = [&](const std::string& key, const std::string& value, const std::string& flag,
                   const std::optional<std::string>& shown = std::nullopt) {
        out.push_back({key, value, fmt::format("{} {}", flag, shown.value_or(value))});
    };
    auto quoted = [](const std::string& s) { return toml_string(s); };
    if (o.seed)
        add("seed", std::to_string(*o.seed), "--seed");
    if (o.duration)
        add("duration", quoted(*o.duration), "--duration", *o.duration);
    if (o.vms)
        add("vm.count", std::to_string(*o.vms), "--vms");
    if (o.vcpus)
        add("vm.vcpus", std::to_string(*o.vcpus), "--vcpus");
    if (o.vm_type)
        add("vm.type", quoted(*o.vm_type), "--vm-type", *o.vm_type);
    if (o.gmem_size)
        add("guest_memfd.size", quoted(*o.gmem_size), "--gmem-size", *o.gmem_size);
    if (o.gmem_flags) {
        std::string arr = "[";
        std::string s = *o.gmem_flags;
        size_t start = 0;
        while (start <= s.size()) {
            size_t comma = s.find(',', start);
            std::string f =
                s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
            if (!f.empty())
                arr += (arr.size() > 1 ? ", " : "") + toml_string(f);
            if (comma == std::string::npos)
                break;
            start = comma + 1;
        }
        out.push_back({"guest_memfd.flags", arr + "]", "--gmem-flags " + *o.gmem_flags});
    }
    if (o.threads)
        add("workload.*.threads", std::to_string(*o.threads), "--threads");
    if (o.ops)
        add("workload.*.ops", std::to_string(*o.ops), "--ops");
    if (o.probes_mode)
        add("probes.mode", quoted(*o.probes_mode), "--probes", *o.probes_mode);
    if (o.probe_backend)
        add("probes.backend", quoted(*o.probe_backend), "--probe-backend", *o.probe_backend);
    if (o.all_guest_memfds)
        add("probes.all", "true", "--all-guest-memfds");
    if (!o.record_path.empty()) { // a recording needs the probes: never silently empty
        if (o.probes_mode == "off")
            throw UsageError(
                fmt::format("--record {}: needs the probes, but --probes off", o.record_path));
        add("probes.mode", quoted("on"), "--record", o.record_path);
    }
    for (const auto& fb : o.flag_bits) {
        auto eq = fb.find('=');
        if (eq == std::string::npos)
            throw UsageError(
                fmt::format("--flag-bit {}: expected NAME=BIT (e.g. no_direct_map=2)", fb));
        out.push_back({"flag_bits." + fb.substr(0, eq), fb.substr(eq + 1), "--flag-bit " + fb});
    }
    for (const auto& s : o.sets)
        out.push_back(profile::parse_set_flag(s));
    return out;
}

// run's own options that `gmemstress lab` takes itself (with host paths);
// every other argument is passed to run in the guest after `--`.
const std::vector<std::string> kLabOwnOptions = {
    "-p",     "--profile",    "-r",      "--report",       "--junit",          "--record",
    "--ktap", "--exit-codes", "--kcidb", "--kcidb-origin", "--kcidb-build-id", "--waivers",
    "--html"};
// ... and its flags (no value).
const std::vector<std::string> kLabOwnFlags = {"--lava"};

// The same run in the lab: `gmemstress lab` with run's arguments, as typed.
struct LabEquivalent {
    std::vector<std::string> own;   // options for lab itself
    std::vector<std::string> guest; // after `--`
};
LabEquivalent lab_equivalent(const std::vector<std::string>& argv) {
    LabEquivalent eq;
    auto run_at = std::find(argv.begin() + std::min<size_t>(1, argv.size()), argv.end(), "run");
    for (auto it = run_at == argv.end() ? argv.end() : run_at + 1; it != argv.end(); ++it) {
        const std::string& a = *it;
        std::string name = a.substr(0, a.find('='));
        bool joined = name.size() < a.size();
        if (name == "--where") {
            it += !joined && it + 1 != argv.end();
            continue;
        }
        bool flag = std::find(kLabOwnFlags.begin(), kLabOwnFlags.end(), name) != kLabOwnFlags.end();
        bool own = flag || std::find(kLabOwnOptions.begin(), kLabOwnOptions.end(), name) !=
                               kLabOwnOptions.end();
        auto& to = own ? eq.own : eq.guest;
        if (flag) {
            to.push_back(a);
            continue;
        }
        to.push_back(a);
        if (own && !joined && it + 1 != argv.end())
            to.push_back(*++it);
    }
    return eq;
}

std::string lab_command_line(const RunOptions& o) {
    const auto& argv = invocation();
    LabEquivalent eq = lab_equivalent(argv);
    std::string line = lab::shell_quote(argv.empty() ? "gmemstress" : argv[0]) + " lab";
    for (const auto& a : eq.own)
        line += " " + lab::shell_quote(a);
    if (std::find(eq.own.begin(), eq.own.end(), "-r") == eq.own.end() &&
        std::none_of(eq.own.begin(), eq.own.end(),
                     [](const std::string& a) { return a.rfind("--report", 0) == 0; }))
        line += " --report " + lab::shell_quote(o.report_path);
    if (!eq.guest.empty()) {
        line += " --";
        for (const auto& a : eq.guest)
            line += " " + lab::shell_quote(a);
    }
    return line;
}

// The run, in a VM: boots Debian's newest kernel and runs this profile there.
int run_in_lab_vm(const RunOptions& o, const profile::Profile& prof) {
    lab::Options lo;
    lo.profile = o.profile;
    lo.report_path = o.report_path;
    lo.junit_path = o.junit_path;
    lo.html_path = o.html_path;
    lo.record_path = o.record_path;
    lo.ktap_path = o.ktap_path;
    lo.kcidb_path = o.kcidb_path;
    lo.kcidb_origin = o.kcidb_origin;
    lo.kcidb_build_id = o.kcidb_build_id;
    lo.lava = o.lava;
    lo.waivers = o.waivers;
    lo.guest_args = lab_equivalent(invocation()).guest;
    // Room for the profile's own memory, and for booting under TCG.
    lo.memory = std::max<uint64_t>(2ull << 30, engine::peak_memory(prof).bytes + (1ull << 30));
    lo.timeout_s = prof.duration_s + 600;
    return run_in_lab(lo);
}

int run(const RunOptions& o) {
    // parse
    report::KcidbOptions kcidb = check_kcidb_flags(o.kcidb_path, o.kcidb_origin, o.kcidb_build_id);
    if (o.lava && o.ktap_path == "-")
        throw UsageError("--lava with --ktap -: both write to stdout; give --ktap a file");
    profile::Profile prof = profile::load_profile(
        o.profile, overrides_from(o), workloads::schemas(), probes::excludable_point_names());
    add_waivers(prof, o.waive, o.waivers);
    engine::check_output_paths({o.report_path, o.junit_path, o.html_path, o.record_path,
                                o.ktap_path == "-" ? "" : o.ktap_path, o.kcidb_path,
                                o.lava_json_path});
    if (o.where == "lab")
        return run_in_lab_vm(o, prof);

    // detect
    Caps caps = engine::detect(prof);
    if (!engine::host_can_run(caps)) {
        if (o.where == "auto") {
            if (!o.quiet)
                fmt::print(stderr,
                           "gmemstress: this host cannot run it ({}); running it in the "
                           "lab (a QEMU VM with nested KVM) instead\n",
                           engine::kvm_unusable_reason(caps));
            return run_in_lab_vm(o, prof);
        }
        throw EnvError(fmt::format("{}; run the same in a VM: {}",
                                   engine::kvm_unusable_reason(caps), lab_command_line(o)));
    }
    engine::check_memory(prof, caps);

    // Named fields: a member added to Output must not shift these.
    engine::Output out;
    out.json_path = o.report_path;
    out.junit_path = o.junit_path;
    out.summary = o.quiet ? engine::Summary::none : engine::Summary::text;
    out.ktap_path = o.ktap_path;
    out.kcidb_path = o.kcidb_path;
    out.kcidb = kcidb;
    out.html_path = o.html_path;
    out.lava = o.lava;
    out.lava_json_path = o.lava_json_path;

    // A call stuck in the kernel must not hold our exit status hostage: the
    // run goes on in a child, this process waits for its status (or for the
    // one it sends when it abandons stuck threads). No thread exists yet.
    engine::fork_supervisor();

    // attach -> run -> finish (the watchdog writes `out` itself if it must
    // abandon the run)
    engine::RunSpec spec;
    spec.record_path = o.record_path;
    // A terminal gets a live line, anything else plain lines (ProgressPrinter).
    spec.progress = !o.quiet && !o.no_progress && prof.duration_s > 3;
    spec.abandon_output = out;
    spec.map_exit_code = [](int code) {
        const auto& pol = exit_policy();
        return engine::map_exit_code(code, pol.style, pol.context);
    };
    report::Report rep = engine::run_profile(prof, caps, spec);

    // write
    return engine::write_reports(rep, out);
}

} // namespace

void add_run_command(CLI::App& app, Action& action) {
    static RunOptions o;
    auto* cmd = app.add_subcommand("run", "Run a workload profile against this machine's KVM");
    cmd->add_option("-p,--profile", o.profile,
                    "built-in profile name or TOML file (default: smoke)");
    cmd->add_option("-r,--report", o.report_path, "JSON report path (written atomically)");
    cmd->add_option("--junit", o.junit_path, "also write JUnit XML here");
    cmd->add_option("--html", o.html_path,
                    "also write a self-contained HTML report here (plots inline, no network)");
    cmd->add_option("--ktap", o.ktap_path,
                    "also write KTAP v1 here (kselftest format; '-': stdout, the summary then "
                    "goes to stderr)");
    add_exit_codes_flag(cmd);
    add_ecosystem_flags(cmd, o.kcidb_path, o.kcidb_origin, o.kcidb_build_id, o.lava);
    cmd->add_option("--lava-json", o.lava_json_path)->group(""); // the lab's guest
    add_waiver_flags(cmd, o.waive, o.waivers);
    cmd->add_option("--record", o.record_path,
                    "also save the probes' decoded event stream with the workloads' "
                    "expectations (JSON lines; implies --probes on)");
    cmd->add_option("--seed", o.seed, "seed of every random choice");
    cmd->add_option("--duration", o.duration, "hard cap on the run, e.g. 30s, 2m");
    cmd->add_option("--vms", o.vms, "VMs per workload");
    cmd->add_option("--vcpus", o.vcpus, "vCPUs per VM");
    cmd->add_option("--vm-type", o.vm_type,
                    "VM type: default, sw_protected, sev, snp, tdx or a number");
    cmd->add_option("--gmem-size", o.gmem_size, "bytes per guest_memfd, e.g. 64MiB");
    cmd->add_option(
        "--gmem-flags", o.gmem_flags,
        "comma-separated guest_memfd flags: mmap,init_shared,no_direct_map,write,hugetlb,bit:N");
    cmd->add_option("--flag-bit", o.flag_bits,
                    "bit number of a patch-series flag, NAME=BIT (no_direct_map, write, hugetlb)");
    cmd->add_option("--threads", o.threads, "worker threads of every workload");
    cmd->add_option("--ops", o.ops, "operations per workload (0 = until its time budget)");
    cmd->add_option("--probes", o.probes_mode, "eBPF probes: auto, on (required), off");
    add_probe_backend_flag(cmd, o.probe_backend);
    add_all_guest_memfds_flag(cmd, o.all_guest_memfds);
    cmd->add_option(
        "--set", o.sets,
        "override any profile key: KEY=VALUE (e.g. workload.host-fault.pattern=random)");
    cmd->add_flag("-q,--quiet", o.quiet, "no summary on stdout");
    cmd->add_flag(
        "--no-progress", o.no_progress,
        "no progress on stderr (a live line on a terminal, else a line every few seconds)");
    cmd->add_option("--where", o.where,
                    "host: this machine's /dev/kvm (default); lab: in a QEMU VM booting Debian's "
                    "newest kernel (gmemstress lab); auto: the host where its KVM can run the "
                    "profile, else the lab")
        ->check(CLI::IsMember({"host", "lab", "auto"}));
    cmd->callback([&action] { action = [] { return run(o); }; });
}

} // namespace gms::cli
