// The running kernel's version from its release string, for expectations
// that changed between releases (conformance). Header-only.
#pragma once

#include <optional>
#include <string_view>
#include <utility>

namespace gms {

// (major, minor) of a kernel release string ("7.3.4+deb13-amd64" -> 7, 3);
// nullopt when it does not start with N.N.
inline std::optional<std::pair<int, int>> kernel_version(std::string_view release) {
    int v[2] = {0, 0};
    size_t i = 0;
    for (int part = 0; part < 2; ++part) {
        size_t start = i;
        while (i < release.size() && release[i] >= '0' && release[i] <= '9' && i - start < 6)
            v[part] = v[part] * 10 + (release[i++] - '0');
        if (i == start)
            return std::nullopt;
        if (part == 0) {
            if (i >= release.size() || release[i] != '.')
                return std::nullopt;
            ++i;
        }
    }
    return std::make_pair(v[0], v[1]);
}

// The release is at least major.minor (false when it cannot be parsed).
inline bool kernel_at_least(std::string_view release, int major, int minor) {
    auto v = kernel_version(release);
    return v && *v >= std::make_pair(major, minor);
}

} // namespace gms
