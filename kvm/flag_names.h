// Names of guest_memfd flag sets and x86 VM types as profiles spell them
// (the conformance workload's vm_types and flag_sets, the profile's vm.type).
// Header-only plain data, like kvm/flags.h.
#pragma once

#include "kvm/flags.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace gms::kvm {

// Flag names joined by '+' ("mmap+init_shared"; "none" for 0), as the
// conformance workload's flag_sets parameter spells a flag set.
inline std::optional<uint64_t> flag_set_from_name(const std::string& name, const FlagBits& bits) {
    if (name == "none")
        return 0;
    uint64_t flags = 0;
    size_t start = 0;
    for (;;) {
        size_t plus = name.find('+', start);
        auto f = flag_from_name(name.substr(start, plus - start), bits);
        if (!f)
            return std::nullopt;
        flags |= *f;
        if (plus == std::string::npos)
            return flags;
        start = plus + 1;
    }
}

// x86 VM type names as profiles spell them ("default", "sw_protected", ...,
// or a number 0..63).
inline std::optional<unsigned long> vm_type_from_name(const std::string& s) {
    static const std::pair<const char*, unsigned long> names[] = {
        {"default", uapi::kX86DefaultVm}, {"sw_protected", uapi::kX86SwProtectedVm},
        {"sev", uapi::kX86SevVm},         {"sev_es", uapi::kX86SevEsVm},
        {"snp", uapi::kX86SnpVm},         {"tdx", uapi::kX86TdxVm}};
    for (const auto& [n, v] : names)
        if (s == n)
            return v;
    char* end = nullptr;
    unsigned long v = std::strtoul(s.c_str(), &end, 0);
    if (!s.empty() && end && *end == '\0' && v < 64)
        return v;
    return std::nullopt;
}

inline std::string vm_type_to_name(unsigned long t) {
    static const char* names[] = {"default", "sw_protected", "sev", "sev_es", "snp", "tdx"};
    return t < 6 ? names[t] : "type" + std::to_string(t);
}

} // namespace gms::kvm
