// The kernel configuration gmemstress needs, as the fragments in lab/kconfig
// say it (gmemstress.config: required; gmemstress-debug.config: the debug
// layer), compared with a kernel's .config: which options it lacks and what
// each would add (the comment above the option in the fragment).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gms::lab {

struct FragmentOption {
    std::string name;  // CONFIG_KVM
    std::string value; // y, n, or a value
    std::string why;   // the fragment's comment block above it
    std::string layer; // "required" or "debug"
    int line = 0;      // in its fragment
};

// Options of one fragment, in order; comment blocks end at a blank line.
std::vector<FragmentOption> parse_fragment(const std::string& text, const std::string& layer);
// The fragments gmemstress carries (lab/kconfig/gmemstress*.config).
std::vector<FragmentOption> gmemstress_fragments();

// A .config as name -> value ("# CONFIG_X is not set" -> "n").
std::map<std::string, std::string> parse_config(const std::string& text);

struct ConfigGap {
    FragmentOption option;
    std::string have; // the kernel's value; "" when unset
};
// Options whose value in `config` differs from the fragment's.
std::vector<ConfigGap> config_gaps(const std::vector<FragmentOption>& want,
                                   const std::map<std::string, std::string>& config);

struct RunningConfig {
    std::string source; // /proc/config.gz or /boot/config-<release>
    std::map<std::string, std::string> options;
};
// The running kernel's configuration, where the kernel or /boot has it.
std::optional<RunningConfig> read_running_config();

} // namespace gms::lab
