#include "engine/exit_codes.h"

#include <catch2/catch_test_macros.hpp>

using namespace gms::engine;

TEST_CASE("exit codes: the standard style is the identity", "[exit]") {
    for (int code :
         {kExitPass, kExitFailures, kExitUsage, kExitEnvironment, kExitToolError, kExitInterrupted})
        CHECK(map_exit_code(code, ExitCodeStyle::standard,
                            {.boot_failure = true, .boot_failure_is = BootFailure::bad}) == code);
}

TEST_CASE("exit codes: bisect speaks git bisect run", "[exit]") {
    auto bisect = [](int code, ExitContext ctx = {}) {
        return map_exit_code(code, ExitCodeStyle::bisect, ctx);
    };
    CHECK(bisect(kExitPass) == 0);
    CHECK(bisect(kExitFailures) == 1);      // a kernel problem: bad
    CHECK(bisect(kExitEnvironment) == 125); // untestable: skip the commit
    CHECK(bisect(kExitUsage) == 129);       // > 127: aborts the bisection
    CHECK(bisect(kExitToolError) == 128);   // > 127 too
    CHECK(bisect(kExitInterrupted) == 130); // > 127 too
    CHECK(bisect(77) == 128);               // an unknown code is never good or bad
    // A kernel that does not boot: untestable unless --boot-failure=bad.
    CHECK(bisect(kExitEnvironment, {.boot_failure = true}) == 125);
    CHECK(bisect(kExitEnvironment, {.boot_failure = true, .boot_failure_is = BootFailure::bad}) ==
          1);
    // --boot-failure=bad alone does not make other untestable runs bad.
    CHECK(bisect(kExitEnvironment, {.boot_failure_is = BootFailure::bad}) == 125);
    // lab --exec: the guest command's own status passes through.
    CHECK(bisect(kExitUsage, {.passthrough = true}) == kExitUsage);
    for (int code : {kExitPass, kExitFailures, kExitUsage, kExitEnvironment, kExitToolError,
                     kExitInterrupted}) {
        int b = bisect(code);
        CHECK((b == 0 || b == 1 || b == 125 || b > 127));
    }
}

TEST_CASE("exit codes: kselftest reads 4 as skip, 2 and 3 as xfail/xpass", "[exit]") {
    auto ksft = [](int code, ExitContext ctx = {}) {
        return map_exit_code(code, ExitCodeStyle::kselftest, ctx);
    };
    CHECK(ksft(kExitPass) == 0);
    CHECK(ksft(kExitFailures) == 1);
    CHECK(ksft(kExitEnvironment) == 4);
    CHECK(ksft(kExitToolError) == 1); // never read as a skip
    CHECK(ksft(kExitUsage) == 1);     // never read as an xfail
    CHECK(ksft(kExitInterrupted) == 130);
    CHECK(ksft(kExitEnvironment, {.boot_failure = true}) == 4);
    CHECK(ksft(kExitEnvironment, {.boot_failure = true, .boot_failure_is = BootFailure::bad}) == 1);
}

TEST_CASE("exit codes: style names", "[exit]") {
    CHECK(parse_exit_code_style("standard") == ExitCodeStyle::standard);
    CHECK(parse_exit_code_style("bisect") == ExitCodeStyle::bisect);
    CHECK(parse_exit_code_style("kselftest") == ExitCodeStyle::kselftest);
    CHECK(!parse_exit_code_style("git"));
    static_assert(map_exit_code(kExitEnvironment, ExitCodeStyle::bisect) == kBisectSkip);
}
