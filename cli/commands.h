// Each subcommand lives in its own file and registers itself on the app: it
// maps its flags to options and calls the engine (engine/engine.h). The
// selected command's action runs after parsing; main maps exceptions to exit
// codes.
#pragma once

#include "engine/exit_codes.h"
#include "reports/kcidb.h"

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace gms::lab {
struct Options;
}
namespace gms::profile {
struct Profile;
}

namespace gms::cli {

// Exit codes (documented in README.md), the engine's.
using engine::kExitEnvironment;
using engine::kExitFailures;
using engine::kExitInterrupted;
using engine::kExitPass;
using engine::kExitToolError;
using engine::kExitUsage;

using Action = std::function<int()>;

// How this process's exit code is spelt, and what the mapping needs beyond
// the standard code (engine::map_exit_code()). Commands return standard
// codes; run and lab fill this from --exit-codes (and lab's --boot-failure,
// and what happened to its kernel); main maps once, at the end.
struct ExitPolicy {
    engine::ExitCodeStyle style = engine::ExitCodeStyle::standard;
    engine::ExitContext context;
};
ExitPolicy& exit_policy();
// --exit-codes standard|bisect|kselftest, into exit_policy().style.
void add_exit_codes_flag(CLI::App* cmd);

// --kcidb FILE, --kcidb-origin, --kcidb-build-id and --lava, spelt the same
// on run and lab (cli/ecosystem.cpp).
void add_ecosystem_flags(CLI::App* cmd, std::string& kcidb_path, std::string& kcidb_origin,
                         std::string& kcidb_build_id, bool& lava);
// The KCIDB options of those flags: UsageError for an origin KCIDB rejects,
// an origin or build id without --kcidb, --kcidb without an origin.
report::KcidbOptions check_kcidb_flags(const std::string& path, const std::string& origin,
                                       const std::string& build_id);
// --waive REGEX and --waivers FILE (both repeatable).
void add_waiver_flags(CLI::App* cmd, std::vector<std::string>& waive,
                      std::vector<std::string>& waivers);
// Appends them to the profile's [kernel_log] waivers, each checked
// (UsageError naming --waive, or FILE:LINE).
void add_waivers(profile::Profile& p, const std::vector<std::string>& waive,
                 const std::vector<std::string>& waivers);

void add_caps_command(CLI::App& app, Action& action);
void add_run_command(CLI::App& app, Action& action);
void add_profiles_command(CLI::App& app, Action& action);
void add_watch_command(CLI::App& app, Action& action); // probes/ side
void add_probe_cost_command(CLI::App& app, Action& action);
void add_lab_command(CLI::App& app, Action& action); // lab/ side
void add_compare_command(CLI::App& app, Action& action);
void add_report_command(CLI::App& app, Action& action); // report html

// The probe flags, spelt the same in every command. `watch` used to spell
// them --backend and --all: those stay as hidden aliases. Return both options
// (the flag, then its alias) for checks and exclusions.
template <class T>
std::pair<CLI::Option*, CLI::Option*> add_probe_backend_flag(CLI::App* cmd, T& backend) {
    return {cmd->add_option("--probe-backend", backend,
                            "eBPF attach method: auto, fentry, kprobe, tracepoint"),
            cmd->add_option("--backend", backend)->group("")};
}
inline std::pair<CLI::Option*, CLI::Option*> add_all_guest_memfds_flag(CLI::App* cmd, bool& all) {
    return {cmd->add_flag("--all-guest-memfds", all, "observe every guest_memfd on the machine"),
            cmd->add_flag("--all", all)->group("")};
}

// Boots the lab, passes the guest's output through, returns the exit code
// (`gmemstress lab`, and `run --where lab|auto` without a usable /dev/kvm).
int run_in_lab(const lab::Options& o);

// The command line as typed (main records it), for messages that repeat it.
void set_invocation(int argc, char** argv);
const std::vector<std::string>& invocation();

} // namespace gms::cli
