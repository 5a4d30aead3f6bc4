// Each subcommand lives in its own file and registers itself on the app.
// The selected command's action runs after parsing; main maps exceptions
// to exit codes.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace gms::lab {
struct Options;
}

namespace gms::cli {

// Exit codes (documented in README.md).
inline constexpr int kExitPass = 0;
inline constexpr int kExitFailures = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitEnvironment = 3;
inline constexpr int kExitToolError = 4;
inline constexpr int kExitInterrupted = 130;

using Action = std::function<int()>;

void add_caps_command(CLI::App& app, Action& action);
void add_run_command(CLI::App& app, Action& action);
void add_profiles_command(CLI::App& app, Action& action);
void add_watch_command(CLI::App& app, Action& action); // probes/ side
void add_probe_cost_command(CLI::App& app, Action& action);
void add_lab_command(CLI::App& app, Action& action); // lab/ side

// Boots the lab, passes the guest's output through, returns the exit code
// (`gmemstress lab`, and `run --where lab|auto` without a usable /dev/kvm).
int run_in_lab(const lab::Options& o);

// The command line as typed (main records it), for messages that repeat it.
void set_invocation(int argc, char** argv);
const std::vector<std::string>& invocation();

} // namespace gms::cli
