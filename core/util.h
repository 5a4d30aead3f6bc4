// Small shared helpers: time, sizes, durations, deterministic RNG, errno names.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gms {

using Clock = std::chrono::steady_clock;

inline uint64_t now_ns() {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count());
}

// Cheap elapsed-time measurement for per-operation latencies: the TSC where
// it is constant (about 3x cheaper than clock_gettime on paravirtual
// clocks), clock_gettime otherwise. Calibrated once against CLOCK_MONOTONIC.
class LatencyTimer {
  public:
    LatencyTimer() : t0_(ticks()) {}
    uint64_t ns() const { return to_ns(ticks() - t0_); }
    static uint64_t ticks();
    static uint64_t to_ns(uint64_t ticks);
    static bool uses_tsc();

  private:
    uint64_t t0_;
};

// The start of each plain progress line a run prints on a stderr that is not
// a terminal (engine::ProgressPrinter); the lab relays the guest's lines
// that start with it as they come.
inline constexpr std::string_view kProgressLinePrefix = "gmemstress: progress ";

// "16MiB", "4k", "1G", "4096" -> bytes. nullopt on bad syntax or overflow.
std::optional<uint64_t> parse_size(std::string_view s);
// "10s", "500ms", "2m", "1h", "30" (seconds) -> seconds. nullopt on bad syntax.
std::optional<double> parse_duration(std::string_view s);
// (name, reason) pairs as "a, b: reason<sep>c: other reason": names that
// share a reason are listed together, in first-seen order.
std::string group_by_reason(const std::vector<std::pair<std::string, std::string>>& items,
                            const std::string& sep);

std::string format_size(uint64_t bytes);

// "EINVAL" for EINVAL, "errno#N" for unknown values.
std::string errno_name(int err);

// ISO 8601 UTC timestamp of now.
std::string utc_timestamp();

// Reads a whole small file (procfs/sysfs); nullopt if it cannot be read.
std::optional<std::string> read_file(const std::string& path);

// MemAvailable from /proc/meminfo in bytes; 0 if unknown.
uint64_t mem_available_bytes();

// Deterministic, seedable PRNG (SplitMix64 seeding a xoshiro256**): the same
// seed gives the same operation sequence on every machine.
class Rng {
  public:
    explicit Rng(uint64_t seed);
    uint64_t next();
    // Uniform in [0, n) (n > 0).
    uint64_t below(uint64_t n);
    // Independent stream for a sub-task (thread, vCPU), derived from this seed.
    static uint64_t derive(uint64_t seed, uint64_t stream);

  private:
    uint64_t s_[4];
};

} // namespace gms
