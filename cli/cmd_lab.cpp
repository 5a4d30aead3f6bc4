// `gmemstress lab`: boot a kernel under QEMU (nested KVM), run this gmemstress
// (or, with --exec, any command) inside it, bring the report back. Exit
// status: the guest command's exit status when the guest ran it to the end;
// 1 when the guest kernel crashed (Oops, BUG, panic) after it booted: a
// finding about the kernel under test, with a report naming the splat; 3 when
// the lab could not run (boot failure, guest setup failure, --timeout); 4 when
// results were lost on the way back; 130 on SIGINT/SIGTERM. See docs/LAB.md.
// --exit-codes bisect|kselftest respell these in main (engine/exit_codes.h);
// this file says only whether the kernel failed to boot.
#include "cli/commands.h"
#include "core/error.h"
#include "core/kmsg.h"
#include "core/util.h"
#include "engine/engine.h"
#include "lab/lab.h"
#include "reports/html.h"
#include "reports/kcidb.h"
#include "reports/ktap.h"
#include "reports/lava.h"
#include "reports/parse.h"
#include "reports/render.h"

#include <fmt/format.h>

namespace gms::cli {

namespace {

struct LabCli {
    lab::Options o;
    std::string memory = "2G";
    std::string timeout = "10m";
    bool exec = false;
    std::string boot_failure = "skip";
};

// What the host writes for a run whose guest wrote no results.
struct Fallback {
    report::Outcome outcome;
    std::string reason;
    std::vector<std::string> diagnostics;
};

int exit_code_for(lab::Failure f) {
    switch (f) {
    case lab::Failure::none:
        return kExitPass;
    case lab::Failure::interrupted:
        return kExitInterrupted;
    case lab::Failure::transport:
        return kExitToolError;
    default:
        return kExitEnvironment;
    }
}

int run_lab_command(LabCli& c) {
    auto mem = parse_size(c.memory);
    if (!mem)
        throw UsageError(fmt::format("--memory {}: expected a size like 2G or 1536MiB", c.memory));
    c.o.memory = *mem;
    auto t = parse_duration(c.timeout);
    if (!t || *t <= 0)
        throw UsageError(
            fmt::format("--timeout {}: expected a duration like 300s or 10m", c.timeout));
    c.o.timeout_s = *t;
    exit_policy().context.boot_failure_is =
        c.boot_failure == "bad" ? engine::BootFailure::bad : engine::BootFailure::skip;
    check_kcidb_flags(c.o.kcidb_path, c.o.kcidb_origin, c.o.kcidb_build_id);
    if (c.o.lava && c.o.ktap_path == "-")
        throw UsageError("--lava with --ktap -: both write to stdout; give --ktap a file");
    for (const auto& f : c.o.waivers) // errors at FILE:LINE before anything boots
        read_waivers_file(f);
    if (c.exec) {
        if (c.o.guest_args.empty())
            throw UsageError("--exec: give the command after '--' (e.g. --exec -- uname -a)");
        c.o.exec_command = std::move(c.o.guest_args);
        c.o.guest_args.clear();
    }
    return run_in_lab(c.o);
}

// Why the guest wrote no results (its kernel did not boot, crashed, or the
// results were lost), in the standard code's terms: exit 1 a failure, 3 a
// skip (a boot failure a failure with --boot-failure=bad), others an error.
Fallback fallback(const lab::Options& o, const lab::Result& r, int code, const char* what) {
    Fallback f;
    f.reason = r.kernel_crashed ? "the guest kernel crashed: " + r.message
               : r.failure != lab::Failure::none
                   ? fmt::format("lab {} failure: {}", lab::to_string(r.failure), r.message)
                   : fmt::format("the guest's gmemstress {} wrote no {} (exit status {})",
                                 o.guest_command, what, r.guest_status.value_or(-1));
    for (const auto& k : r.kernel_findings)
        f.diagnostics.push_back(fmt::format("[{}] {}", k.kind, k.line));
    bool bad_boot = r.failure == lab::Failure::boot &&
                    exit_policy().context.boot_failure_is == engine::BootFailure::bad;
    f.outcome = code == kExitFailures || bad_boot ? report::Outcome::fail
                : code == kExitEnvironment        ? report::Outcome::skip
                                                  : report::Outcome::error;
    return f;
}

// The report (the guest's, or the one the host wrote for a crashed guest)
// as HTML; without a report there is nothing to draw: said, and a pass
// becomes a tool error.
int write_lab_html(const lab::Options& o, const lab::Result& r, int code) {
    if (o.html_path.empty())
        return code;
    if (!r.report) {
        fmt::print(stderr, "gmemstress lab: no report, so no HTML written to {}\n", o.html_path);
        return code == kExitPass ? kExitToolError : code;
    }
    report::write_atomically(
        o.html_path, report::to_html(report::parse_report(*r.report, "the guest's report")));
    if (!o.quiet)
        fmt::print(stderr, "lab: HTML report written to {}\n", o.html_path);
    return code;
}

// The guest's KTAP, or one test saying why there is none.
void write_lab_ktap(const lab::Options& o, const lab::Result& r, int code) {
    if (o.ktap_path.empty())
        return;
    std::string text;
    if (r.ktap) {
        text = *r.ktap;
    } else {
        Fallback f = fallback(o, r, code, "KTAP");
        text = report::ktap_single(f.outcome, f.reason, f.diagnostics);
    }
    if (o.ktap_path == "-") {
        std::fflush(stderr);
        fmt::print("{}", text);
        std::fflush(stdout);
    } else {
        report::write_atomically(o.ktap_path, text);
    }
}

// The guest's KCIDB tests, or one test saying why there are none.
void write_lab_kcidb(const lab::Options& o, const lab::Result& r, int code) {
    if (o.kcidb_path.empty())
        return;
    if (r.kcidb) {
        report::write_atomically(o.kcidb_path, *r.kcidb);
        return;
    }
    Fallback f = fallback(o, r, code, "KCIDB tests");
    auto opts = report::kcidb_options(o.kcidb_origin, o.kcidb_build_id);
    report::write_atomically(
        o.kcidb_path, report::kcidb_single(f.outcome, f.reason, f.diagnostics, opts,
                                           r.lab.value("kernel_release", std::string()), r.lab)
                              .dump(2) +
                          "\n");
}

// The guest's LAVA results, made on the host (whose PATH has LAVA's
// helpers), or one case saying why there are none.
int emit_lab_lava(const lab::Options& o, const lab::Result& r, int code) {
    if (!o.lava)
        return code;
    std::vector<report::LavaSet> sets;
    std::string lost;
    if (r.lava) {
        try {
            sets = report::lava_from_json(nlohmann::json::parse(*r.lava));
        } catch (const std::exception& e) {
            lost = fmt::format("the guest's LAVA results are unreadable: {}", e.what());
        }
    }
    if (!r.lava || !lost.empty()) {
        Fallback f = fallback(o, r, code, "LAVA results");
        if (!lost.empty()) {
            f = {report::Outcome::error, lost, {}};
            fmt::print(stderr, "gmemstress lab: {}\n", lost);
            if (code == kExitPass)
                code = kExitToolError;
        }
        sets = report::lava_single(f.outcome, f.reason, f.diagnostics);
    }
    return engine::emit_lava(sets, code);
}

// Says what went wrong, returns the standard exit code.
int lab_exit_code(const lab::Options& o, const lab::Result& r) {
    if (r.kernel_crashed) {
        fmt::print(stderr, "gmemstress lab: the guest kernel crashed: {}\n", r.message);
        for (const auto& f : r.kernel_findings)
            fmt::print(stderr, "  [{}] {}\n", f.kind, f.line);
        fmt::print(stderr, "gmemstress lab: last console lines:\n{}", r.console_tail);
        if (r.report && !o.report_path.empty())
            fmt::print(stderr, "gmemstress lab: report (verdict fail) written to {}\n",
                       o.report_path);
        if (!o.console_path.empty())
            fmt::print(stderr, "gmemstress lab: full console in {}\n", o.console_path);
        return kExitFailures;
    }
    if (r.failure != lab::Failure::none) {
        fmt::print(stderr, "gmemstress lab: {} failure: {}\n", lab::to_string(r.failure),
                   r.message);
        if (!r.console_tail.empty() && r.failure != lab::Failure::interrupted)
            fmt::print(stderr, "gmemstress lab: last console lines:\n{}", r.console_tail);
        if (!o.console_path.empty())
            fmt::print(stderr, "gmemstress lab: full console in {}\n", o.console_path);
        return exit_code_for(r.failure);
    }
    int status = r.guest_status.value_or(kExitToolError);
    if (o.exec_command.empty() && lab::takes_profile_and_report(o.guest_command) &&
        !o.report_path.empty()) {
        if (r.report) {
            if (!o.quiet)
                fmt::print(stderr, "lab: report written to {}\n", o.report_path);
        } else {
            fmt::print(stderr,
                       "gmemstress lab: the guest's gmemstress {} wrote no report (exit "
                       "status {})\n",
                       o.guest_command, status);
            if (status == kExitPass)
                return kExitToolError;
        }
    }
    return status;
}

} // namespace

int run_in_lab(const lab::Options& o) {
    lab::Result r = lab::run_lab(o);
    // What the exit code alone does not say, for --exit-codes bisect|kselftest.
    exit_policy().context.boot_failure = r.failure == lab::Failure::boot;
    exit_policy().context.passthrough = !o.exec_command.empty() && r.guest_status &&
                                        r.failure == lab::Failure::none && !r.kernel_crashed;

    // What the guest's gmemstress printed (its summary, JSON of `caps --json`, ...);
    // on stderr when the KTAP goes to stdout.
    if (!r.guest_stdout.empty())
        fmt::print(o.ktap_path == "-" ? stderr : stdout, "{}", r.guest_stdout);
    if (!r.guest_stderr.empty())
        fmt::print(stderr, "{}", r.guest_stderr);
    std::fflush(stdout);

    int code = lab_exit_code(o, r);
    code = write_lab_html(o, r, code);
    write_lab_ktap(o, r, code);
    write_lab_kcidb(o, r, code);
    return emit_lab_lava(o, r, code);
}

void add_lab_command(CLI::App& app, Action& action) {
    static LabCli c;
    auto* cmd = app.add_subcommand(
        "lab", "Boot a kernel under QEMU (nested KVM) and run gmemstress inside it");
    cmd->add_option("-k,--kernel", c.o.kernel,
                    "bzImage to boot (default: Debian's newest kernel, downloaded once and "
                    "cached)");
    cmd->add_option("--kernel-cache", c.o.kernel_cache,
                    "where downloaded kernels are cached (default $GMS_LAB_KERNEL_DIR, else "
                    "~/.cache/gmemstress/kernels)");
    cmd->add_flag("--offline", c.o.offline, "do not download: use the newest kernel in the cache");
    cmd->add_flag("--test-kernel", c.o.test_kernel,
                  "boot the project's test kernel: Debian's newest linux-source with the "
                  "lab/kconfig fragments (KVM_SW_PROTECTED_VM, FAULT_INJECTION, LOCK_STAT, ...), "
                  "everything built in; built once (tens of minutes), then cached");
    cmd->add_option("--kernel-tree", c.o.kernel_tree,
                    "like --test-kernel, built from this kernel tree (your series applied; out of "
                    "tree, incremental)");
    cmd->add_option("--plant", c.o.plants,
                    "plant a known bug in the test kernel (repeatable): nozero, not-uptodate, "
                    "punch-leaves, ref-leak, long-hold, warn, stale-guest (docs/DETECTION.md); "
                    "implies --test-kernel")
        ->allow_extra_args(false);
    cmd->add_flag("--sanitizers", c.o.sanitizers,
                  "the test kernel with lab/kconfig/gmemstress-sanitizers.config as well "
                  "(lockdep, KASAN, DEBUG_ATOMIC_SLEEP, DEBUG_LIST): finds lock-order "
                  "inversions and use-after-free; slower; its own cached build; implies "
                  "--test-kernel");
    cmd->add_option("--kconfig-fragment", c.o.kconfig_fragments,
                    "one more Kconfig fragment for the test kernel (repeatable)")
        ->allow_extra_args(false);
    auto* modules = cmd->add_option("--modules", c.o.modules_dir,
                                    "the kernel's modules (a lib/modules/<release> tree); default: "
                                    "next to the kernel, else /lib/modules/<release>");
    cmd->add_option("--kernel-deb", c.o.kernel_debs,
                    "linux-modules (and linux-binary/linux-image) .deb files to take modules "
                    "(and the kernel) from")
        ->excludes(modules);
    cmd->add_option("-p,--profile", c.o.profile,
                    "profile for gmemstress run / probe-cost in the guest (name or file; default: "
                    "the command's own, smoke for run)");
    cmd->add_option("--cpus", c.o.cpus, "virtual CPUs (default 2)");
    cmd->add_option("--memory", c.memory, "guest memory (default 2G)");
    cmd->add_option("--timeout", c.timeout,
                    "limit on boot + run + shutdown; QEMU is killed after it (default 10m)");
    cmd->add_option("-r,--report", c.o.report_path,
                    "write the guest's JSON report here, with a \"lab\" section added");
    cmd->add_option("--junit", c.o.junit_path, "write the guest's JUnit XML here");
    cmd->add_option("--html", c.o.html_path,
                    "write the report as a self-contained HTML page here (also the report the "
                    "host writes for a crashed guest)");
    cmd->add_option("--ktap", c.o.ktap_path,
                    "write the guest's KTAP v1 here ('-': stdout); a run that wrote none (boot "
                    "failure, crash) is one test saying why");
    add_exit_codes_flag(cmd);
    add_ecosystem_flags(cmd, c.o.kcidb_path, c.o.kcidb_origin, c.o.kcidb_build_id, c.o.lava);
    cmd->add_option("--waivers", c.o.waivers,
                    "a file of known kernel messages (regexes) for the guest's run (repeatable; "
                    "--waive REGEX goes after '--')")
        ->allow_extra_args(false);
    cmd->add_option("--boot-failure", c.boot_failure,
                    "with --exit-codes bisect|kselftest: a kernel that does not boot is skip "
                    "(untestable, default) or bad (a kernel problem)")
        ->check(CLI::IsMember({"skip", "bad"}));
    cmd->add_option("--record", c.o.record_path,
                    "write the guest's recorded probe event stream here (run --record)");
    cmd->add_option("--keep-console", c.o.console_path,
                    "write the full serial console (and QEMU's messages) here");
    cmd->add_option("--keep-dmesg", c.o.dmesg_path, "write the guest's kernel log here");
    cmd->add_option("--accel", c.o.accel,
                    "auto (KVM if it can run the kernel, else TCG), kvm or tcg")
        ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
    cmd->add_option("--guest-command", c.o.guest_command,
                    "gmemstress subcommand to run in the guest instead of run (e.g. caps)");
    cmd->add_flag("--exec", c.exec,
                  "run the command after '--' in the guest instead of gmemstress (host root "
                  "shared read-only, cwd kept); its output and exit status pass through");
    // One value per occurrence: a list option would also swallow the `--`
    // that starts the guest command, and its arguments with it.
    cmd->add_option("--writable", c.o.writable,
                    "a host directory the guest command may write, at the same path (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--env", c.o.env, "KEY=VALUE for the guest command's environment (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--before", c.o.before,
                    "shell command run in the guest right before the command (e.g. '(sleep 10; "
                    "echo c > /proc/sysrq-trigger) &')");
    cmd->add_option("--append", c.o.append,
                    "more kernel command line, e.g. loglevel=7 (default: quiet loglevel=4)");
    cmd->add_option("--qemu", c.o.qemu, "QEMU binary (default qemu-system-x86_64)");
    cmd->add_option("--busybox", c.o.busybox, "static busybox for the initramfs");
    cmd->add_flag("--keep-workdir", c.o.keep_workdir, "keep the initramfs and shares (debugging)");
    cmd->add_flag("-q,--quiet", c.o.quiet, "no progress lines on stderr");
    cmd->add_option("args", c.o.guest_args,
                    "after '--': more arguments for gmemstress run in the guest (with --exec: "
                    "the command)");
    cmd->callback([&action] { action = [] { return run_lab_command(c); }; });
}

} // namespace gms::cli
