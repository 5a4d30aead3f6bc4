#include "core/util.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <sstream>

namespace gms {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

// Splits "16MiB" into 16 and "MiB"; nullopt if no leading number.
std::optional<std::pair<double, std::string>> split_number(std::string_view s) {
    s = trim(s);
    size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.'))
        ++i;
    if (i == 0)
        return std::nullopt;
    std::string num(s.substr(0, i));
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(num.c_str(), &end);
    if (errno || !end || *end != '\0' || !std::isfinite(v))
        return std::nullopt;
    std::string unit(trim(s.substr(i)));
    for (auto& c : unit)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return std::make_pair(v, unit);
}

} // namespace

namespace {

struct TscCalibration {
    bool use_tsc = false;
    double ns_per_tick = 1.0;
};

bool cpu_has_constant_tsc() {
    auto info = read_file("/proc/cpuinfo");
    return info && info->find(" constant_tsc") != std::string::npos &&
           info->find(" nonstop_tsc") != std::string::npos;
}

const TscCalibration& tsc_calibration() {
    static const TscCalibration cal = [] {
        TscCalibration c;
#if defined(__x86_64__)
        if (!cpu_has_constant_tsc())
            return c;
        uint64_t n0 = now_ns(), t0 = __builtin_ia32_rdtsc();
        while (now_ns() - n0 < 20'000'000) // 20 ms: error well under 0.1%
            ;
        uint64_t n1 = now_ns(), t1 = __builtin_ia32_rdtsc();
        if (t1 > t0) {
            c.use_tsc = true;
            c.ns_per_tick = double(n1 - n0) / double(t1 - t0);
        }
#endif
        return c;
    }();
    return cal;
}

} // namespace

uint64_t LatencyTimer::ticks() {
#if defined(__x86_64__)
    if (tsc_calibration().use_tsc)
        return __builtin_ia32_rdtsc();
#endif
    return now_ns();
}

uint64_t LatencyTimer::to_ns(uint64_t ticks) {
    const auto& c = tsc_calibration();
    return c.use_tsc ? static_cast<uint64_t>(double(ticks) * c.ns_per_tick) : ticks;
}

bool LatencyTimer::uses_tsc() {
    return tsc_calibration().use_tsc;
}

std::optional<uint64_t> parse_size(std::string_view s) {
    auto p = split_number(s);
    if (!p)
        return std::nullopt;
    auto [v, unit] = *p;
    double mult;
    if (unit.empty() || unit == "b")
        mult = 1;
    else if (unit == "k" || unit == "kb" || unit == "kib")
        mult = 1024.0;
    else if (unit == "m" || unit == "mb" || unit == "mib")
        mult = 1024.0 * 1024;
    else if (unit == "g" || unit == "gb" || unit == "gib")
        mult = 1024.0 * 1024 * 1024;
    else if (unit == "t" || unit == "tb" || unit == "tib")
        mult = 1024.0 * 1024 * 1024 * 1024;
    else
        return std::nullopt;
    double bytes = v * mult;
    if (bytes > double(std::numeric_limits<uint64_t>::max() / 2) || bytes != std::floor(bytes))
        return std::nullopt;
    return static_cast<uint64_t>(bytes);
}

std::optional<double> parse_duration(std::string_view s) {
    auto p = split_number(s);
    if (!p)
        return std::nullopt;
    auto [v, unit] = *p;
    if (unit.empty() || unit == "s" || unit == "sec")
        return v;
    if (unit == "ms")
        return v / 1000.0;
    if (unit == "m" || unit == "min")
        return v * 60;
    if (unit == "h")
        return v * 3600;
    return std::nullopt;
}

std::string group_by_reason(const std::vector<std::pair<std::string, std::string>>& items,
                            const std::string& sep) {
    std::vector<std::pair<std::string, std::string>> groups; // reason -> "a, b"
    for (const auto& [name, reason] : items) {
        auto g = std::find_if(groups.begin(), groups.end(),
                              [&](const auto& x) { return x.first == reason; });
        if (g == groups.end())
            groups.push_back({reason, name});
        else
            g->second += ", " + name;
    }
    std::string s;
    for (const auto& [reason, names] : groups)
        s += (s.empty() ? "" : sep) + names + ": " + reason;
    return s;
}

std::string format_size(uint64_t b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    double v = double(b);
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    if (u == 0 || v == std::floor(v))
        return fmt::format("{}{}", static_cast<uint64_t>(v), units[u]);
    return fmt::format("{:.1f}{}", v, units[u]);
}

std::string errno_name(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    if (const char* n = strerrorname_np(err))
        return n;
#endif
    return fmt::format("errno#{}", err);
}

std::string utc_timestamp() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream f(path);
    if (!f)
        return std::nullopt;
    std::stringstream ss;
    ss << f.rdbuf();
    if (f.bad())
        return std::nullopt;
    return ss.str();
}

uint64_t mem_available_bytes() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t kb;
    std::string unit;
    while (f >> key >> kb) {
        std::getline(f, unit);
        if (key == "MemAvailable:")
            return kb * 1024;
    }
    return 0;
}

namespace {
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}
} // namespace

Rng::Rng(uint64_t seed) {
    for (auto& s : s_)
        s = splitmix64(seed);
}

uint64_t Rng::next() {
    uint64_t result = rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

uint64_t Rng::below(uint64_t n) {
    // Lemire's multiply-shift; bias is negligible for our ranges.
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
}

uint64_t Rng::derive(uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    return splitmix64(x);
}

} // namespace gms
