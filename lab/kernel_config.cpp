#include "lab/kernel_config.h"

#include <fstream>
#include <sstream>
#include <sys/utsname.h>
#include <zlib.h>

namespace gms::lab {

extern const char* const kGmemstressConfig;
extern const char* const kGmemstressDebugConfig;
extern const char* const kGmemstressSanitizersConfig;

std::vector<FragmentOption> parse_fragment(const std::string& text, const std::string& layer) {
    std::vector<FragmentOption> out;
    std::istringstream in(text);
    std::string why;
    int n = 0;
    for (std::string line; std::getline(in, line);) {
        ++n;
        if (line.empty()) {
            why.clear();
        } else if (line[0] == '#') {
            std::string c = line.substr(line.find_first_not_of("# ") == std::string::npos
                                            ? line.size()
                                            : line.find_first_not_of("# "));
            why += (why.empty() ? "" : " ") + c;
        } else if (auto eq = line.find('=');
                   line.rfind("CONFIG_", 0) == 0 && eq != std::string::npos) {
            out.push_back({line.substr(0, eq), line.substr(eq + 1), why, layer, n});
        }
    }
    return out;
}

std::vector<FragmentOption> gmemstress_fragments() {
    auto all = parse_fragment(kGmemstressConfig, "required");
    auto debug = parse_fragment(kGmemstressDebugConfig, "debug");
    all.insert(all.end(), debug.begin(), debug.end());
    auto sanitizers = parse_fragment(kGmemstressSanitizersConfig, "sanitizers");
    all.insert(all.end(), sanitizers.begin(), sanitizers.end());
    return all;
}

std::map<std::string, std::string> parse_config(const std::string& text) {
    std::map<std::string, std::string> m;
    std::istringstream in(text);
    const std::string unset_prefix = "# CONFIG_", unset_suffix = " is not set";
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("CONFIG_", 0) == 0) {
            if (auto eq = line.find('='); eq != std::string::npos)
                m[line.substr(0, eq)] = line.substr(eq + 1);
        } else if (line.rfind(unset_prefix, 0) == 0 && line.size() > unset_suffix.size() &&
                   line.compare(line.size() - unset_suffix.size(), unset_suffix.size(),
                                unset_suffix) == 0) {
            m[line.substr(2, line.size() - unset_suffix.size() - 2)] = "n";
        }
    }
    return m;
}

std::vector<ConfigGap> config_gaps(const std::vector<FragmentOption>& want,
                                   const std::map<std::string, std::string>& config) {
    std::vector<ConfigGap> gaps;
    for (const auto& o : want) {
        auto it = config.find(o.name);
        std::string have = it == config.end() ? "" : it->second;
        // A module serves the running kernel as well as built-in code does
        // (only the lab's test kernel must have everything built in).
        bool same = have == o.value || (o.value == "y" && have == "m") ||
                    (o.value == "n" && (have.empty() || have == "n"));
        if (!same)
            gaps.push_back({o, have});
    }
    return gaps;
}

namespace {

std::optional<std::string> read_gzip(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f)
        return std::nullopt;
    std::string out;
    char buf[65536];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0)
        out.append(buf, n);
    bool ok = n == 0;
    gzclose(f);
    return ok ? std::optional(out) : std::nullopt;
}

} // namespace

std::optional<RunningConfig> read_running_config() {
    if (auto text = read_gzip("/proc/config.gz"))
        return RunningConfig{"/proc/config.gz", parse_config(*text)};
    utsname u{};
    if (uname(&u) == 0) {
        std::string path = std::string("/boot/config-") + u.release;
        std::ifstream in(path);
        if (in) {
            std::stringstream ss;
            ss << in.rdbuf();
            return RunningConfig{path, parse_config(ss.str())};
        }
    }
    return std::nullopt;
}

} // namespace gms::lab
