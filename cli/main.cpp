// gmemstress: stress and diagnose KVM guest_memfd.
// main only parses, dispatches and maps typed errors to exit codes.
#include "cli/commands.h"
#include "core/error.h"
#include "core/run_control.h"

#include <fmt/format.h>
#include <version.h>

int main(int argc, char** argv) {
    using namespace gms;
    CLI::App app{"gmemstress: stress and diagnose Linux KVM guest_memfd", "gmemstress"};
    app.set_version_flag("--version", GMS_VERSION);
    app.require_subcommand(1);
    cli::Action action;
    cli::add_caps_command(app, action);
    cli::add_run_command(app, action);
    cli::add_profiles_command(app, action);
    cli::add_watch_command(app, action);
    cli::add_lab_command(app, action);

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
