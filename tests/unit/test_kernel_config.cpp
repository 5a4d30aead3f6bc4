// lab/kernel_config: the fragments gmemstress keeps, parsed, and compared with
// a kernel's .config (what `caps` tells users building their own kernels).
#include "lab/kernel_config.h"

#include <algorithm>
#include <catch2/catch_test_macros.hpp>

using namespace gms::lab;

TEST_CASE("kernel config: a fragment's comment block is the reason of the options below it",
          "[kconfig]") {
    auto opts = parse_fragment("# header\n\n# KVM, built in.\n# (the lab has no modules)\n"
                               "CONFIG_KVM=y\nCONFIG_KVM_AMD=y\n\nCONFIG_X=n\n",
                               "required");
    REQUIRE(opts.size() == 3);
    CHECK(opts[0].name == "CONFIG_KVM");
    CHECK(opts[0].why == "KVM, built in. (the lab has no modules)");
    CHECK(opts[0].line == 5);
    CHECK(opts[1].why == opts[0].why);
    CHECK(opts[2].value == "n");
    CHECK(opts[2].why.empty()); // a blank line ends a block
}

TEST_CASE("kernel config: gaps are options set otherwise, unset, or on when they must be off",
          "[kconfig]") {
    auto want = parse_fragment(
        "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=n\nCONFIG_D=n\nCONFIG_E=y\nCONFIG_F=y\n", "required");
    auto have = parse_config("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n# CONFIG_E is "
                             "not set\nCONFIG_E=m\n");
    // E: a module does; F: unset does not.
    auto gaps = config_gaps(want, have);
    std::vector<std::string> names;
    for (const auto& g : gaps)
        names.push_back(g.option.name + "=" + g.have);
    CHECK(names == std::vector<std::string>{"CONFIG_B=n", "CONFIG_C=y", "CONFIG_F="});
}

TEST_CASE("kernel config: the carried fragments parse, every option explained", "[kconfig]") {
    auto opts = gmemstress_fragments();
    REQUIRE(opts.size() > 30);
    for (const auto& o : opts) {
        INFO(o.name << " (" << o.layer << ")");
        CHECK(!o.why.empty());
        CHECK((o.layer == "required" || o.layer == "debug" || o.layer == "sanitizers"));
    }
    auto has = [&](const char* n) {
        return std::any_of(opts.begin(), opts.end(), [&](auto& o) { return o.name == n; });
    };
    CHECK(has("CONFIG_KVM"));
    CHECK(has("CONFIG_DEBUG_INFO_BTF"));
    CHECK(has("CONFIG_KVM_SW_PROTECTED_VM"));
    CHECK(has("CONFIG_FAULT_INJECTION"));
    // The sanitizers: what the lock-order and use-after-free plants need.
    for (const char* n : {"CONFIG_PROVE_LOCKING", "CONFIG_KASAN", "CONFIG_DEBUG_ATOMIC_SLEEP"}) {
        INFO(n);
        auto it = std::find_if(opts.begin(), opts.end(), [&](auto& o) { return o.name == n; });
        REQUIRE(it != opts.end());
        CHECK(it->layer == "sanitizers");
    }
}
