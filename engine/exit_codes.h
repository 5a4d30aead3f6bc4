// The tool's exit codes (README "Exit codes"): one contract for every
// command, so the engine and main map outcomes and errors the same way.
#pragma once

namespace gms::engine {

inline constexpr int kExitPass = 0;
inline constexpr int kExitFailures = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitEnvironment = 3;
inline constexpr int kExitToolError = 4;
inline constexpr int kExitInterrupted = 130;

} // namespace gms::engine
