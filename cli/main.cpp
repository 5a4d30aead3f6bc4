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
ExitPolicy g_exit_policy;
std::string g_exit_codes = "standard";
} // namespace
ExitPolicy& exit_policy() {
    return g_exit_policy;
}
void add_exit_codes_flag(CLI::App* cmd) {
    cmd->add_option("--exit-codes", g_exit_codes,
                    "how the exit code is spelt: standard (README \"Exit codes\"); bisect "
                    "(git bisect run: 0 good, 1 bad, 125 untestable, 128+ tool or usage "
                    "error); kselftest (0 pass, 1 fail, 4 skip)")
        ->check(CLI::IsMember({"standard", "bisect", "kselftest"}))
        ->each([](const std::string& v) {
            if (auto s = engine::parse_exit_code_style(v))
                g_exit_policy.style = *s;
        });
}
void set_invocation(int argc, char** argv) {
    g_invocation.assign(argv, argv + argc);
}
const std::vector<std::string>& invocation() {
    return g_invocation;
}
// --exit-codes as typed, for errors found before the command's options are
// parsed (a usage error must still abort a bisection). Not after `--`.
engine::ExitCodeStyle exit_style_in(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--")
            break;
        std::optional<engine::ExitCodeStyle> s;
        if (a.starts_with("--exit-codes="))
            s = engine::parse_exit_code_style(a.substr(a.find('=') + 1));
        else if (a == "--exit-codes" && i + 1 < argc)
            s = engine::parse_exit_code_style(argv[i + 1]);
        if (s)
            return *s;
    }
    return engine::ExitCodeStyle::standard;
}

} // namespace gms::cli

namespace {

// The command's outcome, or the error's standard exit code, in the asked style.
int exit_with(int code) {
    const auto& p = gms::cli::exit_policy();
    return gms::engine::map_exit_code(code, p.style, p.context);
}

} // namespace

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
    cli::add_compare_command(app, action);
    cli::add_report_command(app, action);

    // CLI11 would only say "A subcommand is required" for a misspelt command.
    std::vector<std::string> names;
    for (const auto* sub : app.get_subcommands({}))
        names.push_back(sub->get_name());
    if (argc > 1 && argv[1][0] != '-' &&
        std::find(names.begin(), names.end(), argv[1]) == names.end()) {
        fmt::print(stderr, "gmemstress: error: unknown command '{}' (commands: {})\n", argv[1],
                   fmt::join(names, ", "));
        cli::exit_policy().style = cli::exit_style_in(argc, argv);
        return exit_with(cli::kExitUsage);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        cli::exit_policy().style = cli::exit_style_in(argc, argv);
        return exit_with(rc == 0 ? cli::kExitPass : cli::kExitUsage);
    }

    RunControl::install_signal_handlers();
    try {
        return exit_with(action ? action() : cli::kExitUsage);
    } catch (const UsageError& e) {
        fmt::print(stderr, "gmemstress: error: {}\n", e.what());
        return exit_with(cli::kExitUsage);
    } catch (const EnvError& e) {
        fmt::print(stderr, "gmemstress: cannot run here: {}\n", e.what());
        return exit_with(cli::kExitEnvironment);
    } catch (const Interrupted&) {
        fmt::print(stderr, "gmemstress: interrupted\n");
        return exit_with(cli::kExitInterrupted);
    } catch (const std::exception& e) {
        fmt::print(stderr, "gmemstress: internal error: {}\n", e.what());
        return exit_with(cli::kExitToolError);
    }
}
