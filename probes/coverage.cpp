// Coverage and Expectations (see coverage.h), with their JSON form in
// recorded streams.
#include "probes/coverage.h"

#include "core/util.h"

#include <algorithm>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace gms::probes {

bool Coverage::has_any(const std::vector<std::string>& points) const {
    return std::any_of(points.begin(), points.end(), [this](const auto& p) { return has(p); });
}

std::string Coverage::why_missing(const std::vector<std::string>& points) const {
    std::vector<std::pair<std::string, std::string>> why;
    bool only_excluded = true; // left out on purpose: the lockdown is not why
    for (const auto& p : points) {
        if (has(p))
            continue;
        auto it = missing.find(p);
        why.push_back({p, it == missing.end() ? "not attached" : it->second});
        only_excluded &= why.back().second == kExcludedReason;
    }
    std::string s = group_by_reason(why, "; ");
    if (!only_excluded && !lockdown.empty() && lockdown != "none" && lockdown != "unknown" &&
        s.find("lockdown") == std::string::npos)
        s += fmt::format(" (kernel lockdown={})", lockdown);
    return s;
}

nlohmann::json Coverage::to_json() const {
    return {{"attached", attached},
            {"missing", missing},
            {"lost_events", lost_events},
            {"filter_full", filter_full},
            {"departed_full", departed_full},
            {"parse_errors", parse_errors},
            {"stash_lost", stash_lost},
            {"calibration_ran", calibration_ran},
            {"calibration_ok", calibration_ok},
            {"calibration_reason", calibration_reason},
            {"lockdown", lockdown},
            {"pfn_correction", pfn_correction},
            {"addr_pfn_correction", addr_pfn_correction},
            {"handouts_judged_in_bpf",
             {{"enabled", bpf_judges_handouts},
              {"get_pfn", judged_get_pfn},
              {"user_fault", judged_user_fault}}}};
}

Coverage Coverage::from_json(const nlohmann::json& j) {
    Coverage c;
    c.attached = j.value("attached", std::map<std::string, std::string>{});
    c.missing = j.value("missing", std::map<std::string, std::string>{});
    c.lost_events = j.value("lost_events", uint64_t(0));
    c.filter_full = j.value("filter_full", uint64_t(0));
    c.departed_full = j.value("departed_full", uint64_t(0));
    c.parse_errors = j.value("parse_errors", uint64_t(0));
    c.stash_lost = j.value("stash_lost", uint64_t(0));
    c.calibration_ran = j.value("calibration_ran", false);
    c.calibration_ok = j.value("calibration_ok", false);
    c.calibration_reason = j.value("calibration_reason", std::string());
    c.lockdown = j.value("lockdown", std::string());
    c.pfn_correction = j.value("pfn_correction", int64_t(0));
    c.addr_pfn_correction = j.value("addr_pfn_correction", int64_t(0));
    // Absent in streams recorded before hand-outs were judged in BPF.
    if (j.contains("handouts_judged_in_bpf")) {
        const auto& h = j.at("handouts_judged_in_bpf");
        if (!h.is_object())
            throw std::invalid_argument("coverage.handouts_judged_in_bpf: not an object");
        c.bpf_judges_handouts = h.value("enabled", true);
        c.judged_get_pfn = h.value("get_pfn", uint64_t(0));
        c.judged_user_fault = h.value("user_fault", uint64_t(0));
    }
    return c;
}

Expectations Expectations::from_workloads(const std::vector<report::WorkloadResult>& w) {
    Expectations x;
    auto add = [](std::optional<uint64_t>& into, const std::optional<uint64_t>& v) {
        if (v)
            into = into.value_or(0) + *v;
    };
    // A sum is only comparable when every workload that touched guest_memfd
    // files knows its count: one that does not (racing threads) voids it.
    bool files_known = true, added_known = true, removed_known = true;
    for (const auto& r : w) {
        const report::ProbeExpectations& e = r.expect;
        bool touched = !e.gmem_files || *e.gmem_files > 0;
        if (r.outcome == report::Outcome::skip && !e.gmem_files)
            touched = false; // never ran
        files_known &= e.gmem_files || !touched;
        added_known &= e.pages_added || !touched;
        removed_known &= e.pages_removed || !touched;
        add(x.gmem_files, e.gmem_files);
        add(x.pages_added, e.pages_added);
        add(x.pages_removed, e.pages_removed);
        x.min_handouts_user += e.min_handouts_to_user.value_or(0);
        x.min_handouts_guest += e.min_handouts_to_guest.value_or(0);
        x.pages_verified += r.verification.pages_checked;
        x.verify_mismatches += r.verification.mismatches;
        for (const auto& m : r.verification.first_mismatches)
            if (x.mismatch_examples.size() < kMaxViolations)
                x.mismatch_examples.push_back(
                    fmt::format("{}: {}", r.label.empty() ? r.name : r.label, m));
    }
    if (!files_known)
        x.gmem_files.reset();
    if (!added_known)
        x.pages_added.reset();
    if (!removed_known)
        x.pages_removed.reset();
    return x;
}

nlohmann::json Expectations::to_json() const {
    nlohmann::json j = nlohmann::json::object();
    if (gmem_files)
        j["gmem_files"] = *gmem_files;
    if (pages_added)
        j["expected_pages_added"] = *pages_added;
    if (pages_removed)
        j["expected_pages_removed"] = *pages_removed;
    j["min_handouts_to_user"] = min_handouts_user;
    j["min_handouts_to_guest"] = min_handouts_guest;
    j["pages_verified"] = pages_verified;
    j["verify_mismatches"] = verify_mismatches;
    j["mismatch_examples"] = mismatch_examples;
    return j;
}

Expectations Expectations::from_json(const nlohmann::json& j) {
    Expectations x;
    if (j.contains("gmem_files"))
        x.gmem_files = j["gmem_files"].get<uint64_t>();
    if (j.contains("expected_pages_added"))
        x.pages_added = j["expected_pages_added"].get<uint64_t>();
    if (j.contains("expected_pages_removed"))
        x.pages_removed = j["expected_pages_removed"].get<uint64_t>();
    x.min_handouts_user = j.value("min_handouts_to_user", uint64_t(0));
    x.min_handouts_guest = j.value("min_handouts_to_guest", uint64_t(0));
    x.pages_verified = j.value("pages_verified", uint64_t(0));
    x.verify_mismatches = j.value("verify_mismatches", uint64_t(0));
    x.mismatch_examples = j.value("mismatch_examples", std::vector<std::string>{});
    return x;
}

} // namespace gms::probes
