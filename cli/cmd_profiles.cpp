// `gmemstress profiles [show NAME]`: built-in profiles.
#include "cli/commands.h"
#include "core/error.h"
#include "core/profile.h"
#include "workloads/workload.h"

#include <fmt/format.h>
#include <toml++/toml.h>

namespace gms::cli {

namespace {

int list_profiles() {
    for (const auto& [name, text] : profile::builtin_profiles()) {
        std::string desc;
        try {
            desc = toml::parse(text)["description"].value_or(std::string());
        } catch (const toml::parse_error&) {
        }
        fmt::print("{:<14} {}\n", name, desc);
    }
    fmt::print("\nWorkload kinds:\n");
    for (const auto& w : workloads::registry())
        fmt::print("  {:<12} {}\n    needs: {}\n", w.name, w.description, w.needs);
    return kExitPass;
}

int show_profile(const std::string& name) {
    const auto& all = profile::builtin_profiles();
    auto it = all.find(name);
    if (it == all.end())
        throw UsageError(fmt::format("profiles show {}: no such built-in profile", name));
    fmt::print("{}", it->second);
    return kExitPass;
}

} // namespace

void add_profiles_command(CLI::App& app, Action& action) {
    auto* cmd = app.add_subcommand("profiles", "List built-in profiles and workload kinds");
    auto* show = cmd->add_subcommand("show", "Print a built-in profile as TOML to copy and edit");
    static std::string show_name;
    auto* name = &show_name;
    show->add_option("name", *name, "profile name")->required();
    cmd->callback([&action, show, name] {
        if (show->parsed())
            action = [name] { return show_profile(*name); };
        else
            action = list_profiles;
    });
}

} // namespace gms::cli
