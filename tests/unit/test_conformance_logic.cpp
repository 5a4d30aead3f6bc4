// The pure parts of the conformance workload: kernel version gating, flag
// set names and their expansion, and the parameters' validation at load.
#include "core/error.h"
#include "core/kernel_version.h"
#include "core/profile.h"
#include "core/util.h"
#include "kvm/flag_names.h"
#include "workloads/conformance_checks.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace gms;
using Catch::Matchers::ContainsSubstring;
namespace conf = gms::workloads::conformance;

TEST_CASE("kernel_version parses releases and compares major.minor", "[conformance]") {
    CHECK(kernel_version("7.3.4+deb13-amd64") == std::make_pair(7, 3));
    CHECK(kernel_version("6.12.48+deb13-amd64") == std::make_pair(6, 12));
    CHECK(kernel_version("6.18") == std::make_pair(6, 18));
    CHECK(kernel_version("7.3.0-rc1-gms") == std::make_pair(7, 3));
    CHECK_FALSE(kernel_version("unknown"));
    CHECK_FALSE(kernel_version("7"));
    CHECK_FALSE(kernel_version("7."));
    CHECK(kernel_at_least("7.2.0", 7, 2));
    CHECK(kernel_at_least("7.3.4+deb13-amd64", 6, 18));
    CHECK_FALSE(kernel_at_least("7.1.9", 7, 2));
    CHECK_FALSE(kernel_at_least("6.12.48+deb13-amd64", 6, 18));
    CHECK(kernel_at_least("6.18.1", 6, 18));
    CHECK_FALSE(kernel_at_least("garbage", 0, 0));
}

TEST_CASE("flag sets and VM types are named as profiles spell them", "[conformance]") {
    kvm::FlagBits bits; // defaults: no_direct_map 2, write 3, hugetlb 4
    CHECK(kvm::flag_set_from_name("none", bits) == 0u);
    CHECK(kvm::flag_set_from_name("mmap", bits) == 1u);
    CHECK(kvm::flag_set_from_name("mmap+init_shared", bits) == 3u);
    CHECK(kvm::flag_set_from_name("no_direct_map+mmap+init_shared", bits) == 7u);
    CHECK(kvm::flag_set_from_name("write", bits) == 8u);
    CHECK(kvm::flag_set_from_name("bit:9", bits) == (1u << 9));
    CHECK_FALSE(kvm::flag_set_from_name("mmap+", bits));
    CHECK_FALSE(kvm::flag_set_from_name("", bits));
    CHECK_FALSE(kvm::flag_set_from_name("mmap+shiny", bits));
    CHECK(kvm::vm_type_from_name("default") == 0u);
    CHECK(kvm::vm_type_from_name("sw_protected") == 1u);
    CHECK(kvm::vm_type_from_name("tdx") == 5u);
    CHECK(kvm::vm_type_from_name("17") == 17u);
    CHECK_FALSE(kvm::vm_type_from_name("64"));
    CHECK_FALSE(kvm::vm_type_from_name("protected"));
    CHECK(kvm::vm_type_to_name(1) == "sw_protected");
}

TEST_CASE("advertised flag sets: upstream's three, then each with every series subset",
          "[conformance]") {
    kvm::FlagBits bits;
    const std::vector<std::string> adv{conf::kAdvertised};
    // Linux 7.3 default VM: MMAP|INIT_SHARED.
    CHECK(conf::expand_flag_sets(adv, 0x3, bits) == std::vector<uint64_t>{0, 1, 3});
    // A KVM_X86_SW_PROTECTED_VM: MMAP only.
    CHECK(conf::expand_flag_sets(adv, 0x1, bits) == std::vector<uint64_t>{0, 1});
    // Before 6.18: no flags at all.
    CHECK(conf::expand_flag_sets(adv, 0, bits) == std::vector<uint64_t>{0});
    // NO_DIRECT_MAP v12 (bit 2): combined with each base set (its selftest's sets).
    CHECK(conf::expand_flag_sets(adv, 0x7, bits) == std::vector<uint64_t>{0, 1, 3, 4, 5, 7});
    // NO_DIRECT_MAP and WRITE (bit 3): every combination, 12 sets.
    auto both = conf::expand_flag_sets(adv, 0xf, bits);
    CHECK(both.size() == 12);
    CHECK(both.back() == 0xf);
    // Explicit sets are kept as given (even if not advertised: those checks skip), deduplicated.
    CHECK(conf::expand_flag_sets({"mmap", "none", "mmap", "no_direct_map+mmap"}, 0x3, bits) ==
          std::vector<uint64_t>{1, 0, 5});
    // A bit shared with MMAP (a wrong --flag-bit write=0) adds no new set.
    kvm::FlagBits wrong;
    wrong.write = 0;
    CHECK(conf::expand_flag_sets(adv, 0x3, wrong) == std::vector<uint64_t>{0, 1, 3});
}

TEST_CASE("conformance vm_types and flag_sets are validated when the profile loads",
          "[conformance]") {
    auto error_of = [](const std::string& key, const std::string& value) -> std::string {
        std::string text =
            "name = \"t\"\n[[workload]]\nkind = \"conformance\"\n" + key + " = " + value + "\n";
        try {
            profile::parse_profile(text, "c.toml", {}, workloads::schemas());
        } catch (const UsageError& e) {
            return e.what();
        }
        return "";
    };
    CHECK(error_of("vm_types", "[\"default\", \"sw_protected\"]").empty());
    CHECK(error_of("flag_sets", "[\"none\", \"mmap+init_shared+no_direct_map\"]").empty());
    CHECK_THAT(error_of("vm_types", "[\"protected\"]"), ContainsSubstring("c.toml:4"));
    CHECK_THAT(error_of("vm_types", "[\"protected\"]"),
               ContainsSubstring("unknown VM type 'protected'"));
    CHECK_THAT(error_of("vm_types", "[]"), ContainsSubstring("is empty"));
    CHECK_THAT(error_of("flag_sets", "[\"mmap+shiny\"]"),
               ContainsSubstring("unknown flag set 'mmap+shiny'"));
    CHECK_THAT(error_of("flag_sets", "[\"mmap+shiny\"]"), ContainsSubstring("c.toml:4"));
    // The defaults are declared once, in the registry.
    auto p = profile::parse_profile("name = \"t\"\n[[workload]]\nkind = \"conformance\"\n",
                                    "c.toml", {}, workloads::schemas());
    CHECK(p.workloads.at(0).list("vm_types") == std::vector<std::string>{"supported"});
    CHECK(p.workloads.at(0).list("flag_sets") == std::vector<std::string>{"advertised"});
}
