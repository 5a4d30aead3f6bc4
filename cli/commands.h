// Each subcommand lives in its own file and registers itself on the app.
// The selected command's action runs after parsing; main maps exceptions
// to exit codes.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

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

} // namespace gms::cli
