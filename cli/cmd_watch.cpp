// PLACEHOLDER: replaced by the real 'watch' command.
#include "cli/commands.h"

namespace gms::cli {

void add_watch_command(CLI::App& app, Action& action) {
    auto* cmd = app.add_subcommand("watch", "(not built yet)");
    cmd->callback([&action] { action = [] { return kExitToolError; }; });
}

} // namespace gms::cli
