// Every built-in profile is valid against the real workload registry, and
// every workload it names exists there.
#include "core/profile.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>

using namespace gms;

TEST_CASE("built-in profiles parse against the workload registry", "[profiles]") {
    auto schemas = workloads::schemas();
    REQUIRE(schemas.size() == workloads::registry().size());
    for (const auto& [name, text] : profile::builtin_profiles()) {
        INFO("profile " << name);
        profile::Profile p = profile::parse_profile(text, "builtin:" + name, {}, schemas);
        CHECK(p.name == name);
        CHECK_FALSE(p.description.empty());
        CHECK(p.duration_s > 0);
        for (const auto& w : p.workloads)
            CHECK(workloads::find(w.kind) != nullptr);
    }
}

TEST_CASE("every registry entry says what it needs and how it skips", "[profiles]") {
    for (const auto& w : workloads::registry()) {
        INFO("workload " << w.name);
        CHECK_FALSE(w.description.empty());
        CHECK_FALSE(w.needs.empty());
        CHECK(w.skip_reason);
        CHECK(w.memory_estimate);
        CHECK(w.run);
    }
}
