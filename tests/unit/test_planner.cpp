// The attach planner against fake kernels, and the secretmem calibration's
// evaluation fed event lists: both pure, no BPF, no kernel.
#include "probes/calibration.h"
#include "probes/events.h"
#include "probes/planner.h"
#include "probes/point_names.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace gms::probes;
using Catch::Matchers::ContainsSubstring;

namespace {

struct FakeKernel final : KernelView {
    std::map<std::string, int> btf; // function -> number of arguments
    // function -> parameter C types, for the functions whose arguments
    // changed across kernels (the others: `btf` only)
    std::map<std::string, std::vector<std::string>> params;
    std::set<std::string> kprobe_funcs; // available_filter_functions
    std::set<std::string> tracepoints;  // "category/name"
    std::string tracefs_dir = "/sys/kernel/tracing";

    std::optional<int> btf_func_args(const std::string& fn) const override {
        auto it = btf.find(fn);
        return it == btf.end() ? std::nullopt : std::optional<int>(it->second);
    }
    std::optional<std::vector<std::string>> btf_param_types(const std::string& fn) const override {
        if (!btf.count(fn))
            return std::nullopt;
        auto it = params.find(fn);
        return it == params.end() ? std::nullopt : std::optional(it->second);
    }
    void set_params(const std::string& fn, std::vector<std::string> p) {
        btf[fn] = int(p.size());
        params[fn] = std::move(p);
    }
    bool kprobe_target(const std::string& fn) const override { return kprobe_funcs.count(fn); }
    std::string kprobe_source() const override { return "available_filter_functions"; }
    bool tracepoint_exists(const std::string& t) const override { return tracepoints.count(t); }
    std::string tracefs() const override { return tracefs_dir; }
    std::string tracefs_error() const override { return "not mounted (fake)"; }
};

PlanRequest all_usable() {
    PlanRequest r;
    for (Backend b : {Backend::fentry, Backend::kprobe, Backend::tracepoint})
        r.usable[b] = BackendStatus{true, 0, "", ""};
    return r;
}

const PlannedPoint& find(const std::vector<PlannedPoint>& plan, const std::string& name) {
    for (const auto& p : plan)
        if (p.def->name == name)
            return p;
    FAIL("no planned point " << name);
    return plan.front();
}

// The prototypes of Debian's 7.3.4 for the functions whose arguments changed.
void linux_7_3_prototypes(FakeKernel& k) {
    k.set_params("set_direct_map_invalid_noflush", {"struct page *"});
    k.set_params("set_direct_map_default_noflush", {"struct page *"});
    k.set_params("set_direct_map_valid_noflush", {"struct page *", "unsigned int", "bool"});
    k.set_params("kvm_gmem_get_pfn", {"struct kvm *", "struct kvm_memory_slot *", "gfn_t",
                                      "kvm_pfn_t *", "struct page **", "int *"});
}

// NO_DIRECT_MAP v12: the set_direct_map_*_noflush() functions take an address.
void ndm_v12_prototypes(FakeKernel& k) {
    k.set_params("set_direct_map_invalid_noflush", {"const void *"});
    k.set_params("set_direct_map_default_noflush", {"const void *"});
    k.set_params("set_direct_map_valid_noflush", {"const void *", "long unsigned int", "bool"});
}

// A kernel like Debian's 7.3.4: every function in BTF with the arity the
// programs expect, every tracepoint present.
FakeKernel full_kernel() {
    FakeKernel k;
    for (const auto& def : attach_points()) {
        for (const auto& fn : def.functions) {
            k.btf[fn] = def.nargs >= 0 ? def.nargs : 1;
            k.kprobe_funcs.insert(fn);
        }
        if (!def.tracepoint.empty())
            k.tracepoints.insert(def.tracepoint);
    }
    linux_7_3_prototypes(k);
    return k;
}

} // namespace

TEST_CASE("planner: fentry first, tracepoints as tracepoints, one entry per point", "[planner]") {
    auto k = full_kernel();
    auto plan = plan_attach_points(attach_points(), k, all_usable());
    REQUIRE(plan.size() == attach_points().size());
    CHECK(find(plan, "pc_add").chosen == Backend::tracepoint);
    const auto& gp = find(plan, "get_pfn");
    CHECK(gp.chosen == Backend::fentry);
    CHECK(gp.target == "kvm_gmem_get_pfn");
    CHECK(gp.progs == find_attach_point("get_pfn")->fentry_progs);
    CHECK(gp.rejected.empty());
    CHECK(gp.form == ArgForm::pfn_and_page);
    CHECK(find(plan, "dm_invalid").form == ArgForm::page);
    CHECK(find(plan, "dm_valid").form == ArgForm::page);
    CHECK(find(plan, "user_fault").form == ArgForm::fixed);
}

TEST_CASE("planner: a function with another arity is skipped with the reason", "[planner]") {
    auto k = full_kernel();
    const auto* def = find_attach_point("user_fault");
    REQUIRE(def->nargs == 1);
    k.btf["kvm_gmem_fault_user_mapping"] = 2;
    auto plan = plan_attach_points(attach_points(), k, all_usable());
    const auto& uf = find(plan, "user_fault");
    CHECK_FALSE(uf.chosen);
    CHECK_THAT(uf.reason, ContainsSubstring("kvm_gmem_fault_user_mapping takes 2 arguments, the "
                                            "program expects 1"));
}

TEST_CASE("planner: kvm_gmem_get_pfn with 5 (6.12) or 6 (7.x) arguments", "[planner]") {
    // Debian's 6.12: no struct page ** parameter; the programs take the page
    // from the pfn (it was left unattached before).
    auto k = full_kernel();
    k.set_params("kvm_gmem_get_pfn",
                 {"struct kvm *", "struct kvm_memory_slot *", "gfn_t", "kvm_pfn_t *", "int *"});
    for (auto forced : {Backend::fentry, Backend::kprobe}) {
        auto req = all_usable();
        req.forced = forced;
        const auto& gp = find(plan_attach_points(attach_points(), k, req), "get_pfn");
        CHECK(gp.chosen == forced);
        CHECK(gp.form == ArgForm::pfn_only);
    }
    // A prototype neither form matches is not read blind.
    k.set_params("kvm_gmem_get_pfn", {"struct kvm *", "struct kvm_memory_slot *", "gfn_t",
                                      "kvm_pfn_t *", "struct folio **", "int *", "bool"});
    const auto& gp = find(plan_attach_points(attach_points(), k, all_usable()), "get_pfn");
    CHECK_FALSE(gp.chosen);
    CHECK_THAT(gp.reason, ContainsSubstring("neither the 5-argument"));
}

TEST_CASE("planner: set_direct_map_* take a page, or an address with NO_DIRECT_MAP v12",
          "[planner]") {
    auto k = full_kernel();
    ndm_v12_prototypes(k);
    auto plan = plan_attach_points(attach_points(), k, all_usable());
    for (const char* n : {"dm_invalid", "dm_default", "dm_valid"}) {
        CHECK(find(plan, n).chosen == Backend::fentry);
        CHECK(find(plan, n).form == ArgForm::address);
    }
    CHECK(find(plan, "folio_zap").chosen == Backend::fentry);
    CHECK(find(plan, "folio_restore").chosen == Backend::fentry);

    // A first parameter of another kind: not attached, and says so.
    k.set_params("set_direct_map_default_noflush", {"struct folio *"});
    plan = plan_attach_points(attach_points(), k, all_usable());
    CHECK_FALSE(find(plan, "dm_default").chosen);
    CHECK_THAT(find(plan, "dm_default").reason,
               ContainsSubstring("neither a struct page * nor a direct-map address"));
}

TEST_CASE("planner: without BTF the changed prototypes are not read blind", "[planner]") {
    // kprobes need no BTF, but which form the arguments have does.
    auto k = full_kernel();
    for (const char* fn :
         {"set_direct_map_invalid_noflush", "kvm_gmem_get_pfn", "kvm_gmem_fault_user_mapping"}) {
        k.btf.erase(fn);
        k.params.erase(fn);
    }
    auto req = all_usable();
    req.usable[Backend::fentry] = BackendStatus{false, 1, "load", "EPERM (lockdown)"};
    auto plan = plan_attach_points(attach_points(), k, req);
    CHECK_FALSE(find(plan, "dm_invalid").chosen);
    CHECK_THAT(find(plan, "dm_invalid").reason, ContainsSubstring("parameter types are unknown"));
    CHECK_FALSE(find(plan, "get_pfn").chosen);
    CHECK(find(plan, "user_fault").chosen == Backend::kprobe); // one form only: as before
}

TEST_CASE("classify_signature: the forms, and why not", "[planner]") {
    std::string why;
    const auto* dm = find_attach_point("dm_valid");
    CHECK(classify_signature(*dm, "f",
                             std::vector<std::string>{"struct page *", "unsigned int", "bool"},
                             &why) == ArgForm::page);
    CHECK(classify_signature(*dm, "f",
                             std::vector<std::string>{"void *", "long unsigned int", "bool"},
                             &why) == ArgForm::address);
    CHECK_FALSE(classify_signature(*dm, "f", std::vector<std::string>{"const void *"}, &why));
    CHECK_THAT(why, ContainsSubstring("takes 1 arguments, the program expects 3"));
    const auto* gp = find_attach_point("get_pfn");
    CHECK_FALSE(classify_signature(*gp, "kvm_gmem_get_pfn", std::nullopt, &why));
    CHECK_THAT(why, ContainsSubstring("not in kernel BTF"));
    CHECK(classify_signature(*find_attach_point("release"), "kvm_gmem_release", std::nullopt,
                             &why) == ArgForm::fixed);
}

TEST_CASE("planner: unusable fentry falls back to kprobe and says why", "[planner]") {
    auto k = full_kernel();
    auto req = all_usable();
    req.usable[Backend::fentry] = BackendStatus{false, 1, "load", "EPERM (lockdown)"};
    auto plan = plan_attach_points(attach_points(), k, req);
    const auto& uf = find(plan, "user_fault");
    CHECK(uf.chosen == Backend::kprobe);
    REQUIRE(uf.rejected.size() == 1);
    CHECK_THAT(uf.rejected[0], ContainsSubstring("fentry unusable here: EPERM (lockdown)"));
    CHECK(uf.progs.size() == 2); // kprobe + kretprobe
}

TEST_CASE("planner: ruled-out variants, exclusions, forced tracepoint, missing tracefs",
          "[planner]") {
    auto k = full_kernel();
    auto req = all_usable();
    req.ruled_out[{"get_pfn", Backend::fentry}] = "no BPF trampoline";
    req.excluded = {"user_fault"};
    auto plan = plan_attach_points(attach_points(), k, req);
    CHECK(find(plan, "get_pfn").chosen == Backend::kprobe);
    CHECK_THAT(find(plan, "get_pfn").rejected.at(0), ContainsSubstring("no BPF trampoline"));
    CHECK_FALSE(find(plan, "user_fault").chosen);
    CHECK(find(plan, "user_fault").reason == kExcludedReason);

    req = all_usable();
    req.forced = Backend::tracepoint;
    plan = plan_attach_points(attach_points(), k, req);
    CHECK_FALSE(find(plan, "get_pfn").chosen);
    CHECK_THAT(find(plan, "get_pfn").reason, ContainsSubstring("forced to tracepoint"));
    CHECK(find(plan, "pc_del").chosen == Backend::tracepoint);

    k.tracefs_dir.clear();
    plan = plan_attach_points(attach_points(), k, all_usable());
    CHECK_FALSE(find(plan, "pc_add").chosen);
    CHECK_THAT(find(plan, "pc_add").reason, ContainsSubstring("tracefs unavailable"));
}

TEST_CASE("planner: a function missing from BTF and symbols is skipped for both backends",
          "[planner]") {
    auto k = full_kernel();
    for (const auto& fn : find_attach_point("split")->functions) {
        k.btf.erase(fn);
        k.kprobe_funcs.erase(fn);
    }
    auto plan = plan_attach_points(attach_points(), k, all_usable());
    const auto& sp = find(plan, "split");
    CHECK_FALSE(sp.chosen);
    CHECK_THAT(sp.reason, ContainsSubstring("fentry:"));
    CHECK_THAT(sp.reason, ContainsSubstring("not in kernel BTF"));
    CHECK_THAT(sp.reason, ContainsSubstring("kprobe:"));
}

namespace {
Event ev(EventType t, uint64_t pfn, uint32_t dev = 0, uint64_t ino = 0, bool valid = false) {
    Event e;
    e.type = t;
    e.pfn = pfn;
    e.dev = dev;
    e.ino = ino;
    e.nr = 1;
    if (valid)
        e.flags |= GMS_F_VALID;
    return e;
}

// A direct-map record as the BPF side sends it.
Event dm(uint16_t src, uint64_t pfn, uint16_t derivation, bool valid) {
    Event e = ev(EventType::direct_map, pfn, 0, 0, valid);
    e.src = src;
    e.flags |= derivation | GMS_F_RETURN;
    return e;
}
} // namespace

TEST_CASE("calibration: matched pairs pass, with the pfn correction learned", "[calibration]") {
    std::vector<Event> evs;
    for (uint64_t i = 0; i < 4; ++i) {
        evs.push_back(ev(EventType::pc_add, 0x1000 + i, 5, 42));
        // zap, pointer-derived pfn
        evs.push_back(dm(GMS_SRC_SET_DM_INVALID, 0x1000 + i - 0x10, GMS_F_PTR_PFN, false));
    }
    for (uint64_t i = 0; i < 4; ++i) {
        evs.push_back(dm(GMS_SRC_SET_DM_DEFAULT, 0x1000 + i - 0x10, GMS_F_PTR_PFN, true));
        evs.push_back(ev(EventType::pc_del, 0x1000 + i, 5, 42));
    }
    auto c = evaluate_calibration(evs, 5, 42, 4);
    CHECK(c.ok);
    CHECK(c.pfn_correction == 0x10);
    CHECK(c.zaps_matched == 4);
    CHECK(c.restores_matched == 4);
    CHECK_THAT(c.reason, ContainsSubstring("pfn correction 16"));
    CHECK(to_json(c).at("ok") == true);
}

TEST_CASE("calibration: NO_DIRECT_MAP v12's secretmem, decoded by address", "[calibration]") {
    // v12: secretmem zaps with folio_zap_direct_map(folio) (-> set_direct_map_
    // valid_noflush(addr, 1, false)) and frees with set_direct_map_default_
    // noflush(addr). The folio records are pointer-derived, the others
    // address-derived, each with its own correction.
    std::vector<Event> evs;
    for (uint64_t i = 0; i < 4; ++i) {
        evs.push_back(ev(EventType::pc_add, 0x3000 + i, 5, 44));
        evs.push_back(dm(GMS_SRC_SET_DM_VALID, 0x3000 + i + 7, GMS_F_ADDR_PFN, false));
        evs.push_back(dm(GMS_SRC_FOLIO_ZAP, 0x3000 + i, GMS_F_PTR_PFN, false));
    }
    for (uint64_t i = 0; i < 4; ++i) {
        evs.push_back(ev(EventType::pc_del, 0x3000 + i, 5, 44));
        evs.push_back(dm(GMS_SRC_SET_DM_DEFAULT, 0x3000 + i + 7, GMS_F_ADDR_PFN, true));
    }
    auto c = evaluate_calibration(evs, 5, 44, 4);
    CHECK(c.ok);
    CHECK(c.zaps_matched == 4);
    CHECK(c.restores_matched == 4);
    CHECK(c.pfn_correction == 0);
    CHECK(c.addr_pfn_correction == -7);
    CHECK(c.direct_map_events_by_source.at("folio_zap_direct_map") == 4);
    CHECK(c.direct_map_events_by_source.at("set_direct_map_default_noflush") == 4);
    CHECK_THAT(c.reason, ContainsSubstring("address pfn correction -7"));
    CHECK(to_json(c).at("addr_pfn_correction") == -7);
}

TEST_CASE("calibration: restores by address the probes cannot read fail it", "[calibration]") {
    // NO_DIRECT_MAP v12: secretmem restores with set_direct_map_default_noflush(addr);
    // a program reading a struct page * sees other pfns: 4 zaps, 0 restores.
    std::vector<Event> evs;
    for (uint64_t i = 0; i < 4; ++i) {
        evs.push_back(ev(EventType::pc_add, 0x2000 + i, 5, 43));
        evs.push_back(ev(EventType::direct_map, 0x2000 + i));
        evs.push_back(ev(EventType::direct_map, 0xdead0000 + i, 0, 0, true));
    }
    auto c = evaluate_calibration(evs, 5, 43, 4);
    CHECK_FALSE(c.ok);
    CHECK(c.zaps_matched == 4);
    CHECK(c.restores_matched == 0);
    CHECK_THAT(c.reason, ContainsSubstring("4 zaps and 0 restores matched"));
    // Another file's insertions do not count.
    CHECK(evaluate_calibration(evs, 5, 99, 4).page_cache_adds == 0);
}

TEST_CASE("attach points: the table and the name constants agree", "[planner]") {
    std::vector<std::string> names(gms::probes::point::all.begin(), gms::probes::point::all.end());
    CHECK(names == attach_point_names());
    for (const auto& n : names)
        CHECK(find_attach_point(n) != nullptr);
}
