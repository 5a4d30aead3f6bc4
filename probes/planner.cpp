#include "probes/planner.h"

#include "kvm/series.h"      // direct_map_arg_of
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

// The first of the point's functions this backend can reach, and how to
// read its arguments, or why none.
std::optional<std::pair<std::string, ArgForm>>
function_for(const AttachPointDef& def, Backend b, const KernelView& kernel, std::string* why) {
    std::vector<std::string> whys;
    for (const auto& fn : def.functions) {
        auto params = kernel.btf_param_types(fn);
        auto nargs = params ? std::optional<int>(int(params->size())) : kernel.btf_func_args(fn);
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
        if (def.decoding == ArgDecoding::fixed) {
            if (nargs && def.nargs >= 0 && *nargs != def.nargs) {
                whys.push_back(fmt::format("{} takes {} arguments, the program expects {}", fn,
                                           *nargs, def.nargs));
                continue;
            }
            return std::make_pair(fn, ArgForm::fixed);
        }
        std::string fwhy;
        if (auto form = classify_signature(def, fn, params, &fwhy))
            return std::make_pair(fn, *form);
        whys.push_back(fwhy);
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
        p.target = fn->first;
        p.form = fn->second;
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

std::optional<ArgForm> classify_signature(const AttachPointDef& def, const std::string& fn,
                                          const std::optional<std::vector<std::string>>& params,
                                          std::string* why) {
    if (def.decoding == ArgDecoding::fixed)
        return ArgForm::fixed;
    if (!params) {
        *why = fmt::format("{}'s parameter types are unknown (not in kernel BTF): its arguments "
                           "changed across kernels and cannot be read blind",
                           fn);
        return std::nullopt;
    }
    const auto& p = *params;
    auto proto = [&] { return fmt::format("{}({})", fn, fmt::join(p, ", ")); };
    if (def.decoding == ArgDecoding::direct_map) {
        if (def.nargs >= 0 && int(p.size()) != def.nargs) {
            *why = fmt::format("{} takes {} arguments, the program expects {}", proto(), p.size(),
                               def.nargs);
            return std::nullopt;
        }
        switch (kvm::direct_map_arg_of(p.front())) {
        case kvm::DirectMapArg::page:
            return ArgForm::page;
        case kvm::DirectMapArg::address:
            return ArgForm::address;
        case kvm::DirectMapArg::unknown:
            break;
        }
        *why = fmt::format("{}: the first parameter is neither a struct page * nor a direct-map "
                           "address",
                           proto());
        return std::nullopt;
    }
    // get_pfn: (kvm, slot, gfn, kvm_pfn_t *pfn, [struct page **page,] int *max_order)
    auto is_ptr = [](const std::string& t) { return !t.empty() && t.back() == '*'; };
    if (p.size() == 5 && is_ptr(p[3]) && p[3] != "struct page **")
        return ArgForm::pfn_only;
    if (p.size() == 6 && is_ptr(p[3]) && p[4] == "struct page **")
        return ArgForm::pfn_and_page;
    *why = fmt::format("{}: neither the 5-argument (6.12) nor the 6-argument (6.13+: struct page "
                       "**) form the program reads",
                       proto());
    return std::nullopt;
}

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
