// gmemstress: stress and diagnose KVM guest_memfd.
// main only parses, dispatches and maps typed errors to exit codes.
#include "cli/commands.h"
#include "core/error.h"
#include "core/run_control.h"

#include <algorithm>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <version.h>

namespace gms::cli {
namespace {
std::vector<std::string> g_invocation;
}
void set_invocation(int argc, char** argv) {
    g_invocation.assign(argv, argv + argc);
}
const std::vector<std::string>& invocation() {
    return g_invocation;
}
} // namespace gms::cli

int main(int argc, char** argv) {
    using namespace gms;
    cli::set_invocation(argc, argv);
    CLI::App app{"gmemstress: stress and diagnose Linux KVM guest_memfd", "gmemstress"};
    app.set_version_flag("--version", GMS_VERSION);
    app.require_subcommand(1);
    cli::Action action;
    cli::add_caps_command(app, action);
    cli::add_run_command(app, action);
    cli::add_profiles_command(app, action);
    cli::add_watch_command(app, action);
    cli::add_probe_cost_command(app, action);
    cli::add_lab_command(app, action);

    // CLI11 would only say "A subcommand is required" for a misspelt command.
    std::vector<std::string> names;
    for (const auto* sub : app.get_subcommands({}))
        names.push_back(sub->get_name());
    if (argc > 1 && argv[1][0] != '-' &&
        std::find(names.begin(), names.end(), argv[1]) == names.end()) {
        fmt::print(stderr, "gmemstress: error: unknown command '{}' (commands: {})\n", argv[1],
                   fmt::join(names, ", "));
        return cli::kExitUsage;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? cli::kExitPass : cli::kExitUsage;
    }

    RunControl::install_signal_handlers();
    try {
        return action ? action() : cli::kExitUsage;
    } catch (const UsageError& e) {
        fmt::print(stderr, "gmemstress: error: {}\n", e.what());
        return cli::kExitUsage;
    } catch (const EnvError& e) {
        fmt::print(stderr, "gmemstress: cannot run here: {}\n", e.what());
        return cli::kExitEnvironment;
    } catch (const Interrupted&) {
        fmt::print(stderr, "gmemstress: interrupted\n");
        return cli::kExitInterrupted;
    } catch (const std::exception& e) {
        fmt::print(stderr, "gmemstress: internal error: {}\n", e.what());
        return cli::kExitToolError;
    }
}
