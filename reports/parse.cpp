#include "reports/parse.h"

#include "core/error.h"
#include "core/util.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>

namespace gms::report {

namespace {

using nlohmann::json;

// A position in the document, for errors: "FILE: workloads[0].ops.fault: ...".
struct At {
    const std::string& origin;
    std::string path;

    At operator[](const std::string& key) const {
        return {origin, path.empty() ? key : path + "." + key};
    }
    At operator[](size_t i) const { return {origin, fmt::format("{}[{}]", path, i)}; }
    [[noreturn]] void fail(const std::string& what) const {
        throw UsageError(fmt::format("{}: {}{}", origin, path.empty() ? "" : path + ": ", what));
    }
};

const json& field(const json& j, const std::string& key, const At& at) {
    if (!j.is_object())
        at.fail("expected an object");
    auto it = j.find(key);
    if (it == j.end())
        at.fail(fmt::format("missing \"{}\"", key));
    return *it;
}

template <class T> T as(const json& j, const At& at) {
    try {
        if constexpr (std::is_same_v<T, std::string>) {
            if (!j.is_string())
                at.fail("expected a string");
        } else if constexpr (std::is_same_v<T, bool>) {
            if (!j.is_boolean())
                at.fail("expected true or false");
        } else if constexpr (std::is_floating_point_v<T>) {
            if (!j.is_number())
                at.fail("expected a number");
        } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {
            if (!j.is_number_integer() || (!j.is_number_unsigned() && j.get<int64_t>() < 0))
                at.fail("expected a non-negative integer");
        } else if constexpr (std::is_integral_v<T>) {
            if (!j.is_number_integer())
                at.fail("expected an integer");
        }
        return j.get<T>();
    } catch (const json::exception& e) {
        at.fail(e.what());
    }
}

template <class T> T get(const json& j, const std::string& key, const At& at) {
    return as<T>(field(j, key, at), at[key]);
}

// An optional field: `def` when absent.
template <class T> T get_or(const json& j, const std::string& key, const At& at, T def) {
    return j.is_object() && j.contains(key) ? get<T>(j, key, at) : def;
}

const json& array_of(const json& j, const std::string& key, const At& at) {
    const json& a = field(j, key, at);
    if (!a.is_array())
        at[key].fail("expected an array");
    return a;
}

template <class T> std::vector<T> list(const json& j, const std::string& key, const At& at) {
    std::vector<T> out;
    const json& a = array_of(j, key, at);
    for (size_t i = 0; i < a.size(); ++i)
        out.push_back(as<T>(a[i], at[key][i]));
    return out;
}

template <class T>
std::map<std::string, T> map_of(const json& j, const std::string& key, const At& at) {
    const json& o = field(j, key, at);
    if (!o.is_object())
        at[key].fail("expected an object");
    std::map<std::string, T> out;
    for (auto it = o.begin(); it != o.end(); ++it)
        out[it.key()] = as<T>(it.value(), at[key][it.key()]);
    return out;
}

json object_of(const json& j, const std::string& key, const At& at) {
    const json& o = field(j, key, at);
    if (!o.is_object())
        at[key].fail("expected an object");
    return o;
}

Outcome outcome_of(const json& j, const std::string& key, const At& at) {
    std::string s = get<std::string>(j, key, at);
    for (Outcome o : {Outcome::pass, Outcome::fail, Outcome::skip, Outcome::error})
        if (to_string(o) == s)
            return o;
    at[key].fail(fmt::format("unknown outcome \"{}\"", s));
}

Verdict verdict_of(const json& j, const std::string& key, const At& at) {
    std::string s = get<std::string>(j, key, at);
    for (Verdict v :
         {Verdict::verified, Verdict::violated, Verdict::incomplete, Verdict::unverifiable})
        if (to_string(v) == s)
            return v;
    at[key].fail(fmt::format("unknown verdict \"{}\"", s));
}

Check check_of(const json& j, const At& at) {
    return {get<std::string>(j, "name", at), outcome_of(j, "outcome", at),
            get<std::string>(j, "expected", at), get<std::string>(j, "observed", at),
            get<std::string>(j, "reason", at)};
}

std::vector<Check> checks_of(const json& j, const std::string& key, const At& at) {
    std::vector<Check> out;
    const json& a = array_of(j, key, at);
    for (size_t i = 0; i < a.size(); ++i)
        out.push_back(check_of(a[i], at[key][i]));
    return out;
}

Histogram histogram_of(const json& j, const At& at) {
    Histogram::Parts parts;
    parts.min = get<uint64_t>(j, "min", at);
    parts.max = get<uint64_t>(j, "max", at);
    parts.sum = get<uint64_t>(j, "sum", at);
    const json& buckets = array_of(j, "buckets", at);
    for (size_t i = 0; i < buckets.size(); ++i) {
        At b = at["buckets"][i];
        const json& e = buckets[i];
        if (!e.is_array() || e.size() != 3)
            b.fail("expected [lower, upper, count]");
        uint64_t lo = as<uint64_t>(e[0], b), hi = as<uint64_t>(e[1], b), n = as<uint64_t>(e[2], b);
        unsigned idx = Histogram::index(lo);
        // Another bucket layout (a different kSubBits) cannot be merged.
        if (Histogram::lower_bound(idx) != lo || Histogram::upper_bound(idx) != hi)
            b.fail(fmt::format("[{}, {}] is not a bucket of this gmemstress's histograms", lo, hi));
        parts.buckets.push_back({idx, n});
    }
    auto h = Histogram::restore(parts);
    if (!h)
        at.fail("bucket out of range");
    if (h->count() != get<uint64_t>(j, "count", at))
        at.fail(fmt::format("buckets add up to {}, count says {}", h->count(),
                            get<uint64_t>(j, "count", at)));
    return *h;
}

Timeline timeline_of(const json& j, const At& at) {
    auto t = Timeline::restore(get<uint64_t>(j, "bucket_ns", at), list<uint64_t>(j, "counts", at));
    if (!t)
        at.fail(fmt::format("bucket_ns must be {} ns times a power of two, with at most {} buckets",
                            Timeline::kBaseBucketNs, Timeline::kMaxBuckets));
    return *t;
}

OpStats op_of(const json& j, const At& at) {
    OpStats s;
    s.count = get<uint64_t>(j, "count", at);
    s.bytes = get<uint64_t>(j, "bytes", at);
    s.errors = map_of<uint64_t>(j, "errors", at);
    s.latency_ns = histogram_of(field(j, "latency_ns", at), at["latency_ns"]);
    s.timeline = timeline_of(field(j, "timeline", at), at["timeline"]);
    return s;
}

// The counters object holds the probe expectations under their own names
// (render.cpp counters_json()): taken back out of it.
void counters_of(const json& j, const At& at, WorkloadResult& w) {
    auto all = map_of<uint64_t>(j, "counters", at);
    auto take = [&](const char* key, std::optional<uint64_t>& into) {
        if (auto it = all.find(key); it != all.end()) {
            into = it->second;
            all.erase(it);
        }
    };
    take("gmem_files", w.expect.gmem_files);
    take("expected_pages_added", w.expect.pages_added);
    take("expected_pages_removed", w.expect.pages_removed);
    take("min_handouts_to_user", w.expect.min_handouts_to_user);
    take("min_handouts_to_guest", w.expect.min_handouts_to_guest);
    w.counters = std::move(all);
}

RangeScaling range_scaling_of(const json& j, const At& at);
PinConvert pin_convert_of(const json& j, const At& at);

WorkloadResult workload_of(const json& j, const At& at) {
    WorkloadResult w;
    w.name = get<std::string>(j, "name", at);
    w.label = get<std::string>(j, "label", at);
    w.outcome = outcome_of(j, "outcome", at);
    w.reason = get<std::string>(j, "reason", at);
    w.duration_s = get<double>(j, "duration_s", at);
    json ops = object_of(j, "ops", at);
    for (auto it = ops.begin(); it != ops.end(); ++it)
        w.ops[it.key()] = op_of(it.value(), at["ops"][it.key()]);
    const json& v = field(j, "verification", at);
    w.verification.pages_checked = get<uint64_t>(v, "pages_checked", at["verification"]);
    w.verification.mismatches = get<uint64_t>(v, "mismatches", at["verification"]);
    w.verification.first_mismatches = list<std::string>(v, "first_mismatches", at["verification"]);
    w.checks = checks_of(j, "checks", at);
    counters_of(j, at, w);
    w.params = object_of(j, "params", at);
    if (j.contains("range_scaling"))
        w.range_scaling = range_scaling_of(j["range_scaling"], at["range_scaling"]);
    if (j.contains("pin_convert"))
        w.pin_convert = pin_convert_of(j["pin_convert"], at["pin_convert"]);
    return w;
}

InvariantResult invariant_of(const json& j, const At& at) {
    return {get<std::string>(j, "name", at),     verdict_of(j, "verdict", at),
            get<std::string>(j, "reason", at),   get<std::string>(j, "backend", at),
            map_of<uint64_t>(j, "evidence", at), list<std::string>(j, "violations", at)};
}

KmsgFinding finding_of(const json& j, const At& at) {
    KmsgFinding f{get<std::string>(j, "kind", at), get<std::string>(j, "line", at),
                  get<uint64_t>(j, "timestamp_us", at)};
    // The whole splat and its attribution (optional: older reports have none).
    if (j.contains("splat") && j["splat"].is_array())
        f.splat = j["splat"].get<std::vector<std::string>>();
    if (j.contains("task") && j["task"].is_string())
        f.task = j["task"].get<std::string>();
    if (j.contains("operations") && j["operations"].is_array())
        f.operations = j["operations"].get<std::vector<std::string>>();
    return f;
}

void kernel_log_of(const json& j, const At& at, Envelope& e) {
    e.kernel_log_available = get<bool>(j, "available", at);
    e.kernel_log_reason = get<std::string>(j, "reason", at);
    const json& f = array_of(j, "findings", at);
    for (size_t i = 0; i < f.size(); ++i)
        e.kernel_log.push_back(finding_of(f[i], at["findings"][i]));
    if (j.contains("waivers")) {
        const json& w = array_of(j, "waivers", at);
        for (size_t i = 0; i < w.size(); ++i) {
            At a = at["waivers"][i];
            e.kernel_log_waivers.push_back({get<std::string>(w[i], "regex", a),
                                            get<std::string>(w[i], "origin", a),
                                            get<std::string>(w[i], "reason", a)});
        }
    }
    if (j.contains("waived")) {
        const json& w = array_of(j, "waived", at);
        for (size_t i = 0; i < w.size(); ++i) {
            At a = at["waived"][i];
            std::string regex = get<std::string>(w[i], "waived_by", a);
            std::string origin = get<std::string>(w[i], "waiver_origin", a);
            size_t k = 0;
            while (k < e.kernel_log_waivers.size() && (e.kernel_log_waivers[k].regex != regex ||
                                                       e.kernel_log_waivers[k].origin != origin))
                ++k;
            if (k == e.kernel_log_waivers.size())
                a.fail(fmt::format("waived by /{}/ ({}), which is not among the waivers", regex,
                                   origin));
            e.kernel_log_waived.push_back({finding_of(w[i], a), k});
        }
    }
}

kvm::SeriesPresence presence_of(const json& j, const At& at) {
    return {get<bool>(j, "present", at), list<std::string>(j, "evidence", at)};
}

template <class T> std::optional<T> nullable(const json& j, const std::string& key, const At& at) {
    const json& v = field(j, key, at);
    return v.is_null() ? std::nullopt : std::optional<T>(as<T>(v, at[key]));
}

// The range-scaling section (reports/range_scaling.cpp to_json()). The
// derived fields (a sample's min/median/max) are recomputed from its times.
ScalingOp scaling_op_of(const json& j, const At& at) {
    ScalingOp o;
    o.name = get<std::string>(j, "name", at);
    o.x = get<std::string>(j, "x", at);
    o.skip_reason = get<std::string>(j, "skip_reason", at);
    const json& samples = array_of(j, "samples", at);
    for (size_t i = 0; i < samples.size(); ++i) {
        At a = at["samples"][i];
        ScalingSample s;
        s.range_bytes = get<uint64_t>(samples[i], "range_bytes", a);
        s.work_pages = get<uint64_t>(samples[i], "work_pages", a);
        s.sparse = get<bool>(samples[i], "sparse", a);
        s.ns = list<uint64_t>(samples[i], "ns", a);
        o.samples.push_back(std::move(s));
    }
    if (const json& l = field(j, "linear", at); !l.is_null()) {
        At a = at["linear"];
        o.linear = fit::LinearFit{get<double>(l, "intercept_ns", a),
                                  get<double>(l, "slope_ns_per_page", a), get<double>(l, "r2", a),
                                  get<size_t>(l, "points", a)};
    }
    if (const json& p = field(j, "power", at); !p.is_null()) {
        At a = at["power"];
        o.power = fit::PowerFit{get<double>(p, "coefficient", a), get<double>(p, "exponent", a),
                                get<double>(p, "r2", a), get<size_t>(p, "points", a)};
    }
    if (auto g = nullable<std::string>(j, "growth", at)) {
        for (fit::Growth c : {fit::Growth::constant, fit::Growth::linear, fit::Growth::n_log_n,
                              fit::Growth::superlinear})
            if (fit::to_string(c) == *g)
                o.growth = c;
        if (!o.growth)
            at["growth"].fail(fmt::format("unknown growth class \"{}\"", *g));
    }
    o.n_log_n_exponent = get<double>(j, "n_log_n_exponent", at);
    o.growth_reason = get<std::string>(j, "growth_reason", at);
    const json& proj = array_of(j, "projections", at);
    for (size_t i = 0; i < proj.size(); ++i) {
        At a = at["projections"][i];
        o.projections.push_back(
            {get<std::string>(proj[i], "threshold", a), get<double>(proj[i], "threshold_s", a),
             nullable<double>(proj[i], "pages", a), nullable<uint64_t>(proj[i], "bytes", a),
             get<std::string>(proj[i], "basis", a)});
    }
    const json& outl = array_of(j, "outliers", at);
    for (size_t i = 0; i < outl.size(); ++i) {
        At a = at["outliers"][i];
        o.outliers.push_back({get<uint64_t>(outl[i], "range_bytes", a),
                              get<unsigned>(outl[i], "rep", a), get<uint64_t>(outl[i], "ns", a),
                              get<double>(outl[i], "expected_ns", a)});
    }
    return o;
}

RangeScaling range_scaling_of(const json& j, const At& at) {
    RangeScaling s;
    s.mem_available = get<uint64_t>(j, "mem_available", at);
    s.memory_budget = get<uint64_t>(j, "memory_budget", at);
    s.min_size = get<uint64_t>(j, "min_size", at);
    s.max_size = get<uint64_t>(j, "max_size", at);
    s.dense_limit = get<uint64_t>(j, "dense_limit", at);
    s.sparse_stride = get<uint64_t>(j, "sparse_stride", at);
    s.growth_factor = get<double>(j, "growth_factor", at);
    s.reps = get<unsigned>(j, "reps", at);
    s.tolerance = get<double>(j, "tolerance", at);
    s.watchdog_thresh_s = get<double>(j, "watchdog_thresh_s", at);
    s.watchdog_source = get<std::string>(j, "watchdog_source", at);
    s.soft_lockup_s = get<double>(j, "soft_lockup_s", at);
    s.stall_s = get<double>(j, "stall_s", at);
    s.notes = list<std::string>(j, "notes", at);
    const json& ops = array_of(j, "ops", at);
    for (size_t i = 0; i < ops.size(); ++i)
        s.ops.push_back(scaling_op_of(ops[i], at["ops"][i]));
    return s;
}

// The pin-convert section (reports/pin_convert.cpp to_json()).
std::optional<uint64_t> opt_u64(const json& j, const std::string& key, const At& at) {
    const json& v = field(j, key, at);
    if (v.is_null())
        return std::nullopt;
    return as<uint64_t>(v, at[key]);
}

PinConvert pin_convert_of(const json& j, const At& at) {
    PinConvert s;
    s.vm_type = get<std::string>(j, "vm_type", at);
    s.gmem_flags = get<uint64_t>(j, "gmem_flags", at);
    s.attrs2_request = get<uint64_t>(j, "attrs2_request", at);
    s.attrs2_source = get<std::string>(j, "attrs2_source", at);
    s.pages = get<uint64_t>(j, "pages", at);
    s.skip_reason = get<std::string>(j, "skip_reason", at);
    const json& cases = array_of(j, "cases", at);
    for (size_t i = 0; i < cases.size(); ++i) {
        const json& c = cases[i];
        At a = at["cases"][i];
        PinCase p;
        p.method = get<std::string>(c, "method", a);
        p.outcome = outcome_of(c, "outcome", a);
        p.reason = get<std::string>(c, "reason", a);
        p.pin = get<std::string>(c, "pin", a);
        p.range_offset = get<uint64_t>(c, "range_offset", a);
        p.range_size = get<uint64_t>(c, "range_size", a);
        p.pinned_offsets = list<uint64_t>(c, "pinned_offsets", a);
        p.while_pinned = get<std::string>(c, "while_pinned", a);
        p.error_offset = opt_u64(c, "error_offset", a);
        p.expected_error_offset = opt_u64(c, "expected_error_offset", a);
        p.not_shared_after_error = list<uint64_t>(c, "not_shared_after_error", a);
        p.unpinned_subrange = get<std::string>(c, "unpinned_subrange", a);
        p.after_unpin = get<std::string>(c, "after_unpin", a);
        p.after_unpin_retries = get<uint64_t>(c, "after_unpin_retries", a);
        if (const json& v = field(c, "private_after_unpin", a); !v.is_null())
            p.private_after_unpin = as<bool>(v, a["private_after_unpin"]);
        p.back_to_shared = get<std::string>(c, "back_to_shared", a);
        p.evidence = list<std::string>(c, "evidence", a);
        s.cases.push_back(std::move(p));
    }
    return s;
}

// The fields series_json() writes; the fingerprint's BTF/kallsyms flags and
// the create_guest_memfd size, which it does not, stay unknown.
kvm::SeriesInfo series_of(const json& j, const At& at) {
    kvm::SeriesInfo s;
    auto& f = s.fingerprint;
    f.source = get<std::string>(j, "source", at);
    const json& ndm = field(j, "no_direct_map", at);
    f.no_direct_map = presence_of(ndm, at["no_direct_map"]);
    std::string arg = get<std::string>(ndm, "set_direct_map_arg", at["no_direct_map"]);
    f.set_direct_map_arg = arg == "page"      ? kvm::DirectMapArg::page
                           : arg == "address" ? kvm::DirectMapArg::address
                                              : kvm::DirectMapArg::unknown;
    f.set_direct_map_arg_type =
        get_or<std::string>(ndm, "set_direct_map_arg_type", at["no_direct_map"], "");
    f.as_no_direct_map = nullable<int64_t>(ndm, "as_no_direct_map", at["no_direct_map"]);
    f.write = presence_of(field(j, "write", at), at["write"]);
    const json& conv = field(j, "in_place_conversion", at);
    f.conversion = presence_of(conv, at["in_place_conversion"]);
    f.attrs2_problem = get_or<std::string>(conv, "problem", at["in_place_conversion"], "");
    const json& huge = field(j, "hugetlb", at);
    f.hugetlb = presence_of(huge, at["hugetlb"]);
    f.page_order_offset = nullable<uint32_t>(huge, "page_order_offset", at["hugetlb"]);

    At aa = at["abi"];
    const json& abi = field(j, "abi", at);
    const json& bits = field(abi, "flag_bits", aa);
    s.abi.bits.no_direct_map = get<unsigned>(bits, "no_direct_map", aa["flag_bits"]);
    s.abi.bits.write = get<unsigned>(bits, "write", aa["flag_bits"]);
    s.abi.bits.hugetlb = get<unsigned>(bits, "hugetlb", aa["flag_bits"]);
    s.abi.bit_source = map_of<std::string>(abi, "flag_bit_sources", aa);
    s.abi.unknown_bits = map_of<std::string>(abi, "unknown_flag_bits", aa);
    At am = aa["set_memory_attributes2"];
    const json& a2 = field(abi, "set_memory_attributes2", aa);
    s.abi.attrs2_nr = get<unsigned>(a2, "nr", am);
    s.abi.attrs2.size = get<uint32_t>(a2, "size", am);
    s.abi.attrs2_source = get<std::string>(a2, "layout", am);
    s.abi.attrs2.address = get_or<uint32_t>(a2, "offset_field", am, s.abi.attrs2.address);
    if (a2.contains("error_offset_field"))
        s.abi.attrs2.error_offset = nullable<uint32_t>(a2, "error_offset_field", am);
    auto cap = nullable<unsigned>(abi, "cap_memory_attributes2", aa);
    s.abi.cap_attrs2 = cap ? *cap : uapi::kCapMemoryAttributes2None;
    if (auto size = nullable<uint32_t>(conv, "struct_size", at["in_place_conversion"])) {
        f.attrs2 = s.abi.attrs2; // the layout the ABI took from it
        f.attrs2->size = *size;
    }
    s.notes = list<std::string>(j, "notes", at);
    return s;
}

AttachPointSummary attach_point_of(const json& j, const At& at) {
    AttachPointSummary a;
    a.name = get<std::string>(j, "name", at);
    a.what = get<std::string>(j, "what", at);
    a.attached = get<bool>(j, "attached", at);
    if (j.contains("backend")) {
        a.backend = get<std::string>(j, "backend", at);
        a.target = get<std::string>(j, "target", at);
        a.programs = list<std::string>(j, "programs", at);
    }
    a.reason = get_or<std::string>(j, "reason", at, "");
    a.optional = get_or<bool>(j, "optional", at, false);
    if (j.contains("rejected"))
        a.rejected = list<std::string>(j, "rejected", at);
    a.decoding = get_or<std::string>(j, "decoding", at, "");
    return a;
}

ProbesSummary summary_of(const json& j, const At& at) {
    ProbesSummary s;
    s.backend_requested = get<std::string>(j, "backend_requested", at);
    s.backends = field(j, "backends", at);
    s.lockdown = get<std::string>(j, "lockdown", at);
    s.tracefs = get<std::string>(j, "tracefs", at);
    s.kprobe_targets_from = get<std::string>(j, "kprobe_targets_from", at);
    s.load_attempts = get<int>(j, "load_attempts", at);
    s.attach_rounds = get<int>(j, "attach_rounds", at);
    s.attach_check = get<std::string>(j, "attach_check", at);
    if (j.contains("load_failures"))
        s.load_failures = j["load_failures"];
    s.ringbuf_size = get<uint64_t>(j, "ringbuf_size", at);
    const json& ap = array_of(j, "attach_points", at);
    for (size_t i = 0; i < ap.size(); ++i)
        s.attach_points.push_back(attach_point_of(ap[i], at["attach_points"][i]));
    for (const auto& b : list<std::string>(j, "backends_in_use", at))
        s.backends_in_use.insert(b);
    s.counters = map_of<uint64_t>(j, "counters", at);
    s.lock_contention_gmem_identifiable = get<bool>(j, "lock_contention_gmem_identifiable", at);
    s.losses = get<uint64_t>(j, "losses", at);
    const json& d = field(j, "drops", at);
    At ad = at["drops"];
    s.drops = {get<uint64_t>(d, "ringbuf_reserve_failures", ad),
               get<uint64_t>(d, "host_short_records", ad),
               get<uint64_t>(d, "host_unknown_types", ad),
               get<uint64_t>(d, "kprobe_stash_full", ad),
               get<uint64_t>(d, "watch_map_full", ad),
               get<uint64_t>(d, "recording_dropped", ad)};
    s.events = map_of<uint64_t>(j, "events", at);
    s.events_by_source = map_of<uint64_t>(j, "events_by_source", at);
    s.events_decoded = get<uint64_t>(j, "events_decoded", at);
    if (j.contains("consumer_cpu_s"))
        s.consumer_cpu_s = get<double>(j, "consumer_cpu_s", at);
    s.events_of_calibration_files = get<uint64_t>(j, "events_of_calibration_files", at);
    const json& f = field(j, "filter", at);
    At af = at["filter"];
    s.filter.all_guest_memfds = get<std::string>(f, "mode", af) == "all_guest_memfds";
    s.filter.files_watched = get<uint64_t>(f, "files_watched", af);
    s.filter.counters_tgid = get<uint32_t>(f, "counters_tgid", af);
    if (f.contains("gmem_dev"))
        s.filter.gmem_dev = get<std::string>(f, "gmem_dev", af);
    s.filter.gmem_dev_source = get_or<std::string>(f, "gmem_dev_source", af, "");
    s.calibration = field(j, "calibration", at);
    s.pfn_correction = get<int64_t>(j, "pfn_correction", at);
    s.thp_split_vmstat_delta = map_of<int64_t>(j, "thp_split_vmstat_delta", at);
    s.finished = get<bool>(j, "finished", at);
    return s;
}

ProbesSection probes_of(const json& j, const At& at) {
    ProbesSection p;
    if (!j.is_object())
        at.fail("expected an object");
    if (j.empty())
        return p; // never set
    std::string st = get<std::string>(j, "status", at);
    if (st == "attached")
        p.status = ProbesSection::Status::attached;
    else if (st == "unavailable")
        p.status = ProbesSection::Status::unavailable;
    else if (st != "off")
        at["status"].fail(fmt::format("unknown probes status \"{}\"", st));
    p.reason = get_or<std::string>(j, "reason", at, "");
    if (j.contains("watch"))
        p.watch = j["watch"];
    if (j.contains("backend_requested"))
        p.summary = summary_of(j, at);
    return p;
}

Stall stall_of(const json& j, const At& at) {
    Stall st;
    st.tid = get<uint64_t>(j, "tid", at);
    st.thread = get<std::string>(j, "thread", at);
    st.workload = get<std::string>(j, "workload", at);
    st.operation = get<std::string>(j, "operation", at);
    st.args = get<std::string>(j, "args", at);
    st.started_at = get<std::string>(j, "started_at", at);
    st.started_s = get<double>(j, "started_s", at);
    st.duration_s = get<double>(j, "duration_s", at);
    st.ended = get<bool>(j, "ended", at);
    st.task_state = get<std::string>(j, "task_state", at);
    st.wchan = get<std::string>(j, "wchan", at);
    st.kernel_stack = list<std::string>(j, "kernel_stack", at);
    st.stack_error = get<std::string>(j, "stack_error", at);
    if (j.contains("vcpu")) {
        const json& v = object_of(j, "vcpu", at);
        At av = at["vcpu"];
        VcpuStallState vs;
        vs.id = get<unsigned>(v, "id", av);
        vs.last_exit = get<std::string>(v, "last_exit", av);
        vs.kicked = get<bool>(v, "kicked", av);
        vs.left_kvm_run = get<bool>(v, "left_kvm_run", av);
        if (v.contains("guest_rip") && !v["guest_rip"].is_null())
            vs.guest_rip = get<uint64_t>(v, "guest_rip", av);
        vs.note = get<std::string>(v, "note", av);
        st.vcpu = vs;
    }
    return st;
}

} // namespace

Report parse_report(const json& j, const std::string& origin) {
    At at{origin, ""};
    if (!j.is_object())
        at.fail("not a gmemstress report (not a JSON object)");
    if (!j.contains("schema_version") || !j["schema_version"].is_number_integer())
        at.fail("not a gmemstress report (no schema_version)");
    int version = j["schema_version"].get<int>();
    if (version == 1)
        at.fail("schema_version 1: written by an older gmemstress, without latency buckets or "
                "throughput timelines, so it cannot be compared or drawn; rerun it with this "
                "gmemstress");
    if (version != kSchemaVersion)
        at.fail(fmt::format("schema_version {}: this gmemstress reads version {} only", version,
                            kSchemaVersion));
    Report r;
    const json& tool = field(j, "tool", at);
    if (get<std::string>(tool, "name", at["tool"]) != "gmemstress")
        at["tool"]["name"].fail("not a gmemstress report");
    r.tool_version = get<std::string>(tool, "version", at["tool"]);
    r.command = get<std::string>(j, "command", at);
    r.timestamp = get<std::string>(j, "timestamp", at);
    r.host = object_of(j, "host", at);
    r.profile = object_of(j, "profile", at);
    r.interrupted = get<bool>(j, "interrupted", at);
    r.interrupt_reason = get<std::string>(j, "interrupt_reason", at);
    kernel_log_of(field(j, "kernel_log", at), at["kernel_log"], r);
    r.errors = list<std::string>(j, "errors", at);
    if (j.contains("lab"))
        r.lab = object_of(j, "lab", at);
    if (j.contains("series"))
        r.series = series_of(j["series"], at["series"]);
    r.seed = get<uint64_t>(j, "seed", at);
    r.duration_s = get<double>(j, "duration_s", at);
    const json& ws = array_of(j, "workloads", at);
    for (size_t i = 0; i < ws.size(); ++i)
        r.workloads.push_back(workload_of(ws[i], at["workloads"][i]));
    r.conformance = checks_of(j, "conformance", at);
    const json& is = array_of(j, "invariants", at);
    for (size_t i = 0; i < is.size(); ++i)
        r.invariants.push_back(invariant_of(is[i], at["invariants"][i]));
    r.probes = probes_of(field(j, "probes", at), at["probes"]);
    // The watchdog's fields: absent from reports written before it.
    if (j.contains("stalls")) {
        const json& ss = array_of(j, "stalls", at);
        for (size_t i = 0; i < ss.size(); ++i)
            r.stalls.push_back(stall_of(ss[i], at["stalls"][i]));
    }
    r.stall_threshold_s = get_or<double>(j, "stall_threshold_s", at, 0);
    r.incomplete = get_or<bool>(j, "incomplete", at, false);
    r.incomplete_reason = get_or<std::string>(j, "incomplete_reason", at, "");
    // The verdict is derived; one that disagrees means the file was edited
    // into something this model cannot hold.
    std::string verdict = get<std::string>(j, "verdict", at);
    if (verdict != to_string(r.verdict()))
        at["verdict"].fail(
            fmt::format("says {}, but its contents make it {}", verdict, to_string(r.verdict())));
    return r;
}

Report read_report(const std::string& path) {
    std::ifstream f(path);
    if (!f)
        throw UsageError(fmt::format(
            "{}: cannot read the report: {}", path,
            std::filesystem::exists(path) ? "permission denied or not a file" : "no such file"));
    std::stringstream text;
    text << f.rdbuf();
    json j;
    try {
        j = json::parse(text.str());
    } catch (const json::exception& e) {
        throw UsageError(fmt::format("{}: not JSON: {}", path, e.what()));
    }
    return parse_report(j, path);
}

} // namespace gms::report
