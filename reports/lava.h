// LAVA (Linaro's automated validation) results of the report model: the
// calls a LAVA test shell expects, `lava-test-set start|stop NAME` and
// `lava-test-case NAME --result pass|fail|skip|unknown [--measurement V
// --units U]`, made through LAVA's helpers when they are on PATH, else
// printed as the signal lines those helpers print
// (`<LAVA_SIGNAL_TESTSET START NAME>`, `<LAVA_SIGNAL_TESTSET STOP>`,
// `<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=NAME RESULT=R [MEASUREMENT=V UNITS=U]>`).
// A case's diagnostics are printed between `<LAVA_SIGNAL_STARTTC NAME>` and
// `<LAVA_SIGNAL_ENDTC NAME>`, so LAVA links those log lines to the case.
//
// Sets and cases (names [A-Za-z0-9_.+-], unique over the run: LAVA rejects
// a repeated test case id within a definition):
//   set workload.LABEL:  workload.LABEL.run, workload.LABEL.CHECK,
//                        workload.LABEL.OP.METRIC (result pass, with the
//                        measurement: throughput ops/s, bandwidth B/s,
//                        latency_p50|p99|max ns)
//   set conformance, set invariants, set tool_errors (when there are any)
//   set kernel_log:      kernel_log.clean (pass) or kernel_log.scan (skip:
//                        not scanned), kernel_log.KIND (fail) per finding,
//                        kernel_log.waived.KIND (pass, its log names the
//                        waiver) per waived finding
//   no set: gmemstress, the verdict
// Results: pass pass, fail fail, skip skip, error unknown; invariants
// verified pass, violated fail, unverifiable skip, incomplete unknown.
#pragma once

#include "reports/model.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gms::report {

struct LavaCase {
    std::string name;
    std::string result; // pass | fail | skip | unknown
    std::optional<double> measurement;
    std::string units;
    std::vector<std::string> log; // between STARTTC and ENDTC
};

// A test set; an empty name holds the cases outside any set.
struct LavaSet {
    std::string name;
    std::vector<LavaCase> cases;
};

std::vector<LavaSet> to_lava(const Report& r);

// A run that produced no report (a lab kernel that did not boot, crashed,
// lost the results): one case "gmemstress" with this outcome.
std::vector<LavaSet> lava_single(Outcome outcome, const std::string& reason,
                                 const std::vector<std::string>& diagnostics = {});

// Everything as signal lines (what the helpers would print).
std::string lava_signal_lines(const std::vector<LavaSet>& sets);

// The sets as JSON, for the lab to carry the guest's results to the host
// (whose PATH has LAVA's helpers); from_json throws Error on malformed input.
nlohmann::json lava_to_json(const std::vector<LavaSet>& sets);
std::vector<LavaSet> lava_from_json(const nlohmann::json& j);

// Makes the calls: each helper that is on PATH is run (stdout shared),
// else its signal line is printed on stdout. Returns the helper calls that
// failed, in words (for the caller to report).
std::vector<std::string> emit_lava(const std::vector<LavaSet>& sets);

} // namespace gms::report
