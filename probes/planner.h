// The attach planner: for every attach point, which variant (tracepoint,
// fentry, kprobe) and which kernel target to use, or why none. Pure: it reads
// what the kernel offers through KernelView, so a test can hand it a fake
// kernel (KernelView, probes/attach_points.h). Loading and attaching are the loader's
// (probes/loader.h).
#pragma once

#include "probes/attach_points.h"
#include "probes/bpf_util.h"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace gms::probes {

// Variants ruled out after planning (a verifier rejection, a link the kernel
// never calls): (point name, backend) -> why. The next plan skips them.
using RuledOut = std::map<std::pair<std::string, Backend>, std::string>;

struct PlanRequest {
    std::map<Backend, BackendStatus> usable; // what this kernel allows at all
    std::optional<Backend> forced;           // --probe-backend other than auto
    std::set<std::string> excluded;          // probes.exclude (by point name)
    RuledOut ruled_out;
};

struct PlannedPoint {
    const AttachPointDef* def = nullptr;
    std::optional<Backend> chosen;     // unset: the point is skipped, see reason
    std::string target;                // function or "category/name" tracepoint
    std::vector<std::string> progs;    // programs of gmem.bpf.c to load and attach
    std::string reason;                // why not chosen
    std::vector<std::string> rejected; // better variants that could not be used
    ArgForm form = ArgForm::fixed;     // how the programs read the target's arguments
};

// How the programs must read `fn`'s arguments on this kernel, from its BTF
// parameter types (`params`, nullopt when not in BTF); nullopt and *why when
// they cannot (an unknown prototype, or no BTF for a point whose arguments
// changed across kernels).
std::optional<ArgForm> classify_signature(const AttachPointDef& def, const std::string& fn,
                                          const std::optional<std::vector<std::string>>& params,
                                          std::string* why);

// One entry per definition, in the same order.
std::vector<PlannedPoint> plan_attach_points(const std::vector<AttachPointDef>& defs,
                                             const KernelView& kernel, const PlanRequest& req);

} // namespace gms::probes
