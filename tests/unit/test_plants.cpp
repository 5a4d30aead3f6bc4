// lab plants: the names `gmemstress lab --plant` takes and the bits of
// kvm.gms_plant= that lab/patches/gmemstress-plants.patch defines agree.
#include "core/error.h"
#include "lab/lab.h"

#include <catch2/catch_test_macros.hpp>
#include <fmt/format.h>
#include <fstream>
#include <regex>
#include <sstream>

using namespace gms::lab;

namespace {

std::string read_patch() {
    std::ifstream f(std::string(GMS_TEST_DATA) + "/../../lab/patches/gmemstress-plants.patch");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

} // namespace

TEST_CASE("plants: every name has its bit in the patch's header and its #define", "[plants]") {
    const std::string patch = read_patch();
    REQUIRE(!patch.empty());
    std::map<uint32_t, std::string> defines; // bit value -> GMS_PLANT_ name
    static const std::regex def(R"(\+#define GMS_PLANT_(\w+)\s+BIT\((\d+)\))");
    for (std::sregex_iterator it(patch.begin(), patch.end(), def), end; it != end; ++it)
        defines[1u << std::stoul((*it)[2].str())] = (*it)[1].str();
    REQUIRE(defines.size() == plants().size());
    uint32_t all = 0;
    for (const auto& p : plants()) {
        INFO(p.name);
        CHECK((p.bit & (p.bit - 1)) == 0); // one bit each
        CHECK((all & p.bit) == 0);
        all |= p.bit;
        REQUIRE(defines.count(p.bit));
        // nozero <-> NOZERO, not-uptodate <-> NOT_UPTODATE
        std::string upper;
        for (char c : std::string(p.name))
            upper += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        CHECK(defines[p.bit] == upper);
        CHECK(patch.find(fmt::format("0x{:02x} {}", p.bit, p.name)) != std::string::npos);
    }
}

TEST_CASE("plants: names map to a mask; an unknown name is a usage error naming it",
          "[plants]") {
    CHECK(plant_mask({}) == 0);
    CHECK(plant_mask({"nozero"}) == 0x01);
    CHECK(plant_mask({"warn", "punch-leaves"}) == 0x24);
    CHECK_THROWS_AS(plant_mask({"nozero", "bogus"}), gms::UsageError);
    try {
        plant_mask({"bogus"});
    } catch (const gms::UsageError& e) {
        CHECK(std::string(e.what()).find("--plant bogus") != std::string::npos);
        CHECK(std::string(e.what()).find("stale-guest") != std::string::npos);
    }
}
