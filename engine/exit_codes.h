// The tool's exit codes (README "Exit codes"): one contract for every
// command, so the engine and main map outcomes and errors the same way.
#pragma once

#include <optional>
#include <string_view>

namespace gms::engine {

inline constexpr int kExitPass = 0;
inline constexpr int kExitFailures = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitEnvironment = 3;
inline constexpr int kExitToolError = 4;
inline constexpr int kExitInterrupted = 130;

// How the process's exit code is spelt (`--exit-codes` of run and lab).
// Every command computes the standard code above; main maps it once, through
// map_exit_code(), so no command knows about the other styles.
enum class ExitCodeStyle {
    standard,  // the codes above
    bisect,    // `git bisect run`: 0 good, 1 bad, 125 skip, > 127 abort
    kselftest, // kselftest runners: 0 pass, 1 fail, 4 skip
};
constexpr std::optional<ExitCodeStyle> parse_exit_code_style(std::string_view s) {
    if (s == "standard")
        return ExitCodeStyle::standard;
    if (s == "bisect")
        return ExitCodeStyle::bisect;
    if (s == "kselftest")
        return ExitCodeStyle::kselftest;
    return std::nullopt;
}

// What a lab kernel that does not boot means (`lab --boot-failure`).
enum class BootFailure { skip, bad };

// What the standard code does not say and a style needs.
struct ExitContext {
    bool boot_failure = false; // exit 3 because the lab's kernel did not boot
    BootFailure boot_failure_is = BootFailure::skip;
    // The code is a guest command's own status (`lab --exec`), passed through
    // as it is in every style.
    bool passthrough = false;
};

// git bisect run: 125 skips the commit; anything above 127 aborts the bisection.
inline constexpr int kBisectSkip = 125;
inline constexpr int kBisectToolError = 128;
inline constexpr int kBisectUsage = 129;
// kselftest (tools/testing/selftests/kselftest.h): KSFT_SKIP. 2 and 3 are
// XFAIL and XPASS there, so usage errors cannot keep their standard code.
inline constexpr int kKselftestSkip = 4;

constexpr int map_exit_code(int code, ExitCodeStyle style, const ExitContext& ctx = {}) {
    if (style == ExitCodeStyle::standard || ctx.passthrough)
        return code;
    bool bad_boot = ctx.boot_failure && ctx.boot_failure_is == BootFailure::bad;
    bool bisect = style == ExitCodeStyle::bisect;
    switch (code) {
    case kExitPass:
        return kExitPass;
    case kExitFailures: // a kernel problem: bad commit / failed test
        return kExitFailures;
    case kExitEnvironment: // untestable here
        return bad_boot ? kExitFailures : bisect ? kBisectSkip : kKselftestSkip;
    case kExitUsage: // a broken invocation must stop a bisection, not mark a commit
        return bisect ? kBisectUsage : kExitFailures;
    case kExitInterrupted: // > 127 in both: aborts git bisect run, "not ok" for kselftest
        return kExitInterrupted;
    case kExitToolError:
    default:
        return bisect ? kBisectToolError : kExitFailures;
    }
}

} // namespace gms::engine
