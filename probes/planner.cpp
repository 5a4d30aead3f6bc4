#include "probes/planner.h"

#include "probes/checkers.h" // kExcludedReason

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace gms::probes {

namespace {

PlannedPoint plan_tracepoint(const AttachPointDef& def, const KernelView& kernel,
                             const PlanRequest& req) {
    PlannedPoint p;
    p.def = &def;
    auto ruled = req.ruled_out.find({def.name, Backend::tracepoint});
    if (kernel.tracefs().empty())
        p.reason = "tracefs unavailable: " + kernel.tracefs_error();
    else if (!kernel.tracepoint_exists(def.tracepoint))
        p.reason = fmt::format("tracepoint {} not in this kernel ({}/events/{} missing)",
                               def.tracepoint, kernel.tracefs(), def.tracepoint);
    else if (!req.usable.at(Backend::tracepoint).usable)
        p.reason = "tracepoint programs unusable: " + req.usable.at(Backend::tracepoint).reason;
    else if (ruled != req.ruled_out.end())
        p.reason = ruled->second;
    else {
        p.chosen = Backend::tracepoint;
        p.target = def.tracepoint;
        p.progs = {def.tp_prog};
    }
    return p;
}

// The first of the point's functions this backend can reach, or why none.
std::optional<std::string> function_for(const AttachPointDef& def, Backend b,
                                        const KernelView& kernel, std::string* why) {
    std::vector<std::string> whys;
    for (const auto& fn : def.functions) {
        auto nargs = kernel.btf_func_args(fn);
        if (b == Backend::fentry && !nargs) {
            whys.push_back(fmt::format("{} not in kernel BTF (missing or inlined)", fn));
            continue;
        }
        if (b == Backend::kprobe && !kernel.kprobe_target(fn)) {
            whys.push_back(fmt::format("{} not in {} (missing, inlined or notrace)", fn,
                                       kernel.kprobe_source().empty() ? "the symbol lists"
                                                                      : kernel.kprobe_source()));
            continue;
        }
        if (nargs && def.nargs >= 0 && *nargs != def.nargs) {
            whys.push_back(fmt::format("{} takes {} arguments, the program expects {}", fn, *nargs,
                                       def.nargs));
            continue;
        }
        return fn;
    }
    *why = fmt::format("{}", fmt::join(whys, ", "));
    return std::nullopt;
}

PlannedPoint plan_function(const AttachPointDef& def, const KernelView& kernel,
                           const PlanRequest& req) {
    PlannedPoint p;
    p.def = &def;
    if (req.forced == Backend::tracepoint) {
        p.reason = fmt::format("backend forced to tracepoint: there is no tracepoint for {}",
                               fmt::join(def.functions, "/"));
        return p;
    }
    const std::vector<Backend> order = req.forced
                                           ? std::vector<Backend>{*req.forced}
                                           : std::vector<Backend>{Backend::fentry, Backend::kprobe};
    std::vector<std::string> why;
    for (Backend b : order) {
        const auto& st = req.usable.at(b);
        if (!st.usable) {
            why.push_back(fmt::format("{} unusable here: {}", to_string(b), st.reason));
            continue;
        }
        if (auto ruled = req.ruled_out.find({def.name, b}); ruled != req.ruled_out.end()) {
            why.push_back(fmt::format("{}: {}", to_string(b), ruled->second));
            continue;
        }
        std::string fnwhy;
        auto fn = function_for(def, b, kernel, &fnwhy);
        if (!fn) {
            why.push_back(fmt::format("{}: {}", to_string(b), fnwhy));
            continue;
        }
        p.chosen = b;
        p.target = *fn;
        p.rejected = why;
        if (b == Backend::fentry)
            p.progs = def.fentry_progs;
        else
            for (const auto& n : {def.kprobe_prog, def.kretprobe_prog})
                if (!n.empty())
                    p.progs.push_back(n);
        return p;
    }
    p.reason = fmt::format("{}", fmt::join(why, "; "));
    return p;
}

} // namespace

std::vector<PlannedPoint> plan_attach_points(const std::vector<AttachPointDef>& defs,
                                             const KernelView& kernel, const PlanRequest& req) {
    std::vector<PlannedPoint> out;
    out.reserve(defs.size());
    for (const auto& def : defs) {
        if (req.excluded.count(def.name)) {
            PlannedPoint p;
            p.def = &def;
            p.reason = kExcludedReason;
            out.push_back(std::move(p));
        } else if (!def.tracepoint.empty()) {
            out.push_back(plan_tracepoint(def, kernel, req));
        } else {
            out.push_back(plan_function(def, kernel, req));
        }
    }
    return out;
}

} // namespace gms::probes
