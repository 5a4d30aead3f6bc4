// Flags that fit gmemstress into other tools' results (KCIDB, LAVA) and
// kernel-log waivers, shared by run and lab.
#include "cli/commands.h"
#include "core/error.h"
#include "core/kmsg.h"
#include "core/profile.h"

#include <fmt/format.h>

namespace gms::cli {

void add_ecosystem_flags(CLI::App* cmd, std::string& kcidb_path, std::string& kcidb_origin,
                         std::string& kcidb_build_id, bool& lava) {
    cmd->add_option("--kcidb", kcidb_path,
                    "also write the results as KCIDB v5.3 tests (KernelCI) here; needs "
                    "--kcidb-origin");
    cmd->add_option("--kcidb-origin", kcidb_origin,
                    "the KCIDB origin (your CI system: lowercase letters, digits, '_')");
    cmd->add_option("--kcidb-build-id", kcidb_build_id,
                    "the KCIDB build the kernel under test came from (ORIGIN:ID, or ID; "
                    "default ORIGIN:KERNEL_RELEASE)");
    cmd->add_flag("--lava", lava,
                  "also report to LAVA: lava-test-set/lava-test-case when on PATH, else their "
                  "signal lines on stdout");
}

report::KcidbOptions check_kcidb_flags(const std::string& path, const std::string& origin,
                                       const std::string& build_id) {
    if (path.empty()) {
        if (!origin.empty() || !build_id.empty())
            throw UsageError(fmt::format("{}: only with --kcidb FILE",
                                         origin.empty() ? "--kcidb-build-id" : "--kcidb-origin"));
        return {};
    }
    if (origin.empty())
        throw UsageError(fmt::format("--kcidb {}: needs --kcidb-origin NAME (the CI system "
                                     "submitting the tests, e.g. my_lab)",
                                     path));
    return report::kcidb_options(origin, build_id);
}

void add_waiver_flags(CLI::App* cmd, std::vector<std::string>& waive,
                      std::vector<std::string>& waivers) {
    // One value per occurrence: a list option would swallow what follows.
    cmd->add_option("--waive", waive,
                    "a known kernel message (ECMAScript regex, searched in each kernel log "
                    "finding): reported as waived, not as a finding (repeatable)")
        ->allow_extra_args(false);
    cmd->add_option("--waivers", waivers,
                    "a file of such regexes, one a line ('#' comments) (repeatable)")
        ->allow_extra_args(false);
}

void add_waivers(profile::Profile& p, const std::vector<std::string>& waive,
                 const std::vector<std::string>& waivers) {
    for (const auto& re : waive)
        p.kernel_log_waivers.push_back(make_waiver(re, "--waive"));
    for (const auto& file : waivers) {
        auto more = read_waivers_file(file);
        p.kernel_log_waivers.insert(p.kernel_log_waivers.end(), more.begin(), more.end());
    }
}

} // namespace gms::cli
