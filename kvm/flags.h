// guest_memfd flag names and the patch-series bit numbers, as plain data.
// Header-only and free of the KVM layer (only kvm/uapi.h's constants), so
// profiles and capability detection (core/) can name flags without linking
// the RAII layer that owns VMs.
#pragma once

#include "kvm/uapi.h"

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

namespace gms::kvm {

// Bit numbers of guest_memfd flags that are not upstream yet. Defaults come
// from uapi.h; profiles and --flag-bit override them.
struct FlagBits {
    unsigned no_direct_map = uapi::kDefaultNoDirectMapBit;
    unsigned write = uapi::kDefaultWriteBit;
    unsigned hugetlb = uapi::kDefaultHugetlbBit;
};

// Names a user can write in a profile: "mmap", "init_shared",
// "no_direct_map", "write", "hugetlb", or a raw "bit:N".
// Returns nullopt for an unknown name.
inline std::optional<uint64_t> flag_from_name(const std::string& name, const FlagBits& bits) {
    if (name == "mmap")
        return uapi::kGuestMemfdFlagMmap;
    if (name == "init_shared")
        return uapi::kGuestMemfdFlagInitShared;
    if (name == "no_direct_map")
        return 1ull << bits.no_direct_map;
    if (name == "write")
        return 1ull << bits.write;
    if (name == "hugetlb")
        return 1ull << bits.hugetlb;
    if (name.rfind("bit:", 0) == 0) {
        char* end = nullptr;
        unsigned long n = std::strtoul(name.c_str() + 4, &end, 10);
        if (end && *end == '\0' && end != name.c_str() + 4 && n < 64)
            return 1ull << n;
    }
    return std::nullopt;
}

inline std::string flags_to_string(uint64_t flags, const FlagBits& bits) {
    std::string out;
    auto add = [&](const std::string& s) { out += out.empty() ? s : "|" + s; };
    for (unsigned b = 0; b < 64; ++b) {
        uint64_t v = 1ull << b;
        if (!(flags & v))
            continue;
        if (v == uapi::kGuestMemfdFlagMmap)
            add("mmap");
        else if (v == uapi::kGuestMemfdFlagInitShared)
            add("init_shared");
        else if (b == bits.no_direct_map)
            add("no_direct_map");
        else if (b == bits.write)
            add("write");
        else if (b == bits.hugetlb)
            add("hugetlb");
        else
            add("bit:" + std::to_string(b));
    }
    return out.empty() ? "0" : out;
}

} // namespace gms::kvm
