#include "reports/render.h"

#include "core/error.h"
#include "core/util.h"

#include <cerrno>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <optional>
#include <unistd.h>

namespace gms::report {

namespace {

using nlohmann::json;

// The non-empty buckets as [lower, upper, count] (bounds inclusive, ns):
// enough to merge runs and draw them without knowing the bucket layout.
json histogram_json(const Histogram& h) {
    json buckets = json::array();
    for (unsigned i = 0; i < Histogram::kBuckets; ++i)
        if (uint64_t n = h.bucket(i))
            buckets.push_back({Histogram::lower_bound(i), Histogram::upper_bound(i), n});
    return {{"count", h.count()},
            {"min", h.min()},
            {"mean", h.mean()},
            {"sum", h.sum()},
            {"p50", h.percentile(0.50)},
            {"p90", h.percentile(0.90)},
            {"p99", h.percentile(0.99)},
            {"p999", h.percentile(0.999)},
            {"max", h.max()},
            {"buckets", buckets}};
}

json timeline_json(const Timeline& t) {
    return {{"bucket_ns", t.bucket_ns()}, {"counts", t.counts()}};
}

json check_json(const Check& c) {
    return {{"name", c.name},
            {"outcome", to_string(c.outcome)},
            {"expected", c.expected},
            {"observed", c.observed},
            {"reason", c.reason}};
}

// The informational counters plus the set fields of w.expect, under the
// names the report has always used for them.
json counters_json(const WorkloadResult& w) {
    json j = w.counters;
    auto put = [&j](const char* key, const std::optional<uint64_t>& v) {
        if (v)
            j[key] = *v;
    };
    put("gmem_files", w.expect.gmem_files);
    put("expected_pages_added", w.expect.pages_added);
    put("expected_pages_removed", w.expect.pages_removed);
    put("min_handouts_to_user", w.expect.min_handouts_to_user);
    put("min_handouts_to_guest", w.expect.min_handouts_to_guest);
    return j;
}

json fault_sweep_json(const FaultSweep& f) {
    json j = {{"call", f.call},
              {"syscall", f.syscall},
              {"outcome", to_string(f.outcome)},
              {"reason", f.reason},
              {"attempts", f.attempts},
              {"faults_injected", f.faults_injected},
              {"n_range", {f.first_n, f.last_n}},
              {"exhausted", f.exhausted},
              {"bounded_by", f.bounded_by},
              {"succeeded_despite_fault", f.succeeded_despite_fault},
              {"errnos", f.errnos},
              {"leaks", f.leaks},
              {"first_leaks", f.first_leaks},
              {"failures", f.failures},
              {"first_failures", f.first_failures}};
    j["unevictable_delta_kb"] = f.unevictable_delta_kb ? json(*f.unevictable_delta_kb) : json();
    return j;
}

json workload_json(const WorkloadResult& w) {
    json ops = json::object();
    for (const auto& [name, s] : w.ops)
        ops[name] = {{"count", s.count},
                     {"bytes", s.bytes},
                     {"errors", s.errors},
                     {"latency_ns", histogram_json(s.latency_ns)},
                     {"timeline", timeline_json(s.timeline)}};
    json checks = json::array();
    for (const auto& c : w.checks)
        checks.push_back(check_json(c));
    json j = {{"name", w.name},
              {"label", w.label.empty() ? w.name : w.label},
              {"outcome", to_string(w.outcome)},
              {"reason", w.reason},
              {"duration_s", w.duration_s},
              {"ops", ops},
              {"verification",
               {{"pages_checked", w.verification.pages_checked},
                {"mismatches", w.verification.mismatches},
                {"first_mismatches", w.verification.first_mismatches}}},
              {"checks", checks},
              {"counters", counters_json(w)},
              {"params", w.params}};
    if (w.range_scaling)
        j["range_scaling"] = to_json(*w.range_scaling);
    if (!w.fault_sweeps.empty()) {
        j["fault_sweeps"] = json::array();
        for (const auto& f : w.fault_sweeps)
            j["fault_sweeps"].push_back(fault_sweep_json(f));
    }
    if (w.pin_convert)
        j["pin_convert"] = to_json(*w.pin_convert);
    return j;
}

} // namespace

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
        case '&':
            out += "&amp;";
            break;
        case '<':
            out += "&lt;";
            break;
        case '>':
            out += "&gt;";
            break;
        case '"':
            out += "&quot;";
            break;
        case '\'':
            out += "&apos;";
            break;
        default:
            // XML 1.0 forbids most control characters.
            if (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t' && c != '\r')
                out += '?';
            else
                out += c;
        }
    }
    return out;
}

namespace {

} // namespace

json stall_json(const Stall& st) {
    json j = {{"tid", st.tid},
              {"thread", st.thread},
              {"workload", st.workload},
              {"operation", st.operation},
              {"args", st.args},
              {"started_at", st.started_at},
              {"started_s", st.started_s},
              {"duration_s", st.duration_s},
              {"ended", st.ended},
              {"task_state", st.task_state},
              {"wchan", st.wchan},
              {"kernel_stack", st.kernel_stack},
              {"stack_error", st.stack_error}};
    if (st.vcpu) {
        const auto& v = *st.vcpu;
        j["vcpu"] = {{"id", v.id},
                     {"last_exit", v.last_exit},
                     {"kicked", v.kicked},
                     {"left_kvm_run", v.left_kvm_run},
                     {"guest_rip", v.guest_rip ? json(*v.guest_rip) : json(nullptr)},
                     {"note", v.note}};
    }
    return j;
}

std::string stall_line(const Stall& st) {
    std::string out =
        fmt::format("thread {} ({}) in {} {} for {:.1f}s since {}{}", st.tid,
                    st.thread.empty() ? "?" : st.thread, st.operation, st.args, st.duration_s,
                    st.started_at, st.ended ? ", then returned" : ", still running");
    if (!st.workload.empty())
        out += fmt::format(" [workload {}]", st.workload);
    return out;
}

json invariant_json(const InvariantResult& i) {
    return {{"name", i.name},         {"verdict", to_string(i.verdict)},
            {"reason", i.reason},     {"backend", i.backend},
            {"evidence", i.evidence}, {"violations", i.violations}};
}

namespace {
json kernel_log_json(const Envelope& e) {
    json list = json::array();
    for (const auto& f : e.kernel_log)
        list.push_back({{"kind", f.kind},
                        {"line", f.line},
                        {"timestamp_us", f.timestamp_us},
                        {"splat", f.splat},
                        {"task", f.task},
                        {"operations", f.operations}});
    json waivers = json::array();
    auto counts = e.waiver_counts();
    for (size_t i = 0; i < e.kernel_log_waivers.size(); ++i) {
        const auto& w = e.kernel_log_waivers[i];
        waivers.push_back({{"regex", w.regex},
                           {"origin", w.origin},
                           {"reason", w.reason},
                           {"waived", counts[i]}});
    }
    json waived = json::array();
    for (const auto& w : e.kernel_log_waived)
        waived.push_back({{"kind", w.finding.kind},
                          {"line", w.finding.line},
                          {"timestamp_us", w.finding.timestamp_us},
                          {"waived_by", e.waiver_of(w).regex},
                          {"waiver_origin", e.waiver_of(w).origin}});
    return {{"available", e.kernel_log_available},
            {"reason", e.kernel_log_reason},
            {"findings", list},
            {"waivers", waivers},
            {"waived", waived}};
}
} // namespace

namespace {
json presence_json(const kvm::SeriesPresence& p) {
    return {{"present", p.present}, {"evidence", p.evidence}};
}

json abi_json(const kvm::SeriesAbi& a) {
    json attrs2 = {{"nr", a.attrs2_nr},
                   {"size", a.attrs2.size},
                   {"request", a.attrs2_request()},
                   {"layout", a.attrs2_source},
                   {"offset_field", a.attrs2.address},
                   {"error_offset_field",
                    a.attrs2.error_offset ? json(*a.attrs2.error_offset) : json(nullptr)}};
    return {{"flag_bits",
             {{"no_direct_map", a.bits.no_direct_map},
              {"write", a.bits.write},
              {"hugetlb", a.bits.hugetlb}}},
            {"flag_bit_sources", a.bit_source},
            {"unknown_flag_bits", a.unknown_bits},
            {"set_memory_attributes2", attrs2},
            {"cap_memory_attributes2",
             a.cap_attrs2 == uapi::kCapMemoryAttributes2None ? json(nullptr) : json(a.cap_attrs2)}};
}
} // namespace

json series_json(const kvm::SeriesInfo& s) {
    const auto& f = s.fingerprint;
    json ndm = presence_json(f.no_direct_map);
    ndm["set_direct_map_arg"] = kvm::to_string(f.set_direct_map_arg);
    ndm["set_direct_map_arg_type"] = f.set_direct_map_arg_type;
    ndm["as_no_direct_map"] = f.as_no_direct_map ? json(*f.as_no_direct_map) : json(nullptr);
    json conv = presence_json(f.conversion);
    conv["struct_size"] = f.attrs2 ? json(f.attrs2->size) : json(nullptr);
    if (!f.attrs2_problem.empty())
        conv["problem"] = f.attrs2_problem;
    json huge = presence_json(f.hugetlb);
    huge["page_order_offset"] = f.page_order_offset ? json(*f.page_order_offset) : json(nullptr);
    return {{"source", f.source},          {"combination", f.combination()},
            {"no_direct_map", ndm},        {"write", presence_json(f.write)},
            {"in_place_conversion", conv}, {"hugetlb", huge},
            {"abi", abi_json(s.abi)},      {"notes", s.notes}};
}

std::string series_line(const kvm::SeriesInfo& s) {
    const auto& f = s.fingerprint;
    std::string out = f.combination() == "none" ? std::string("none") : f.combination();
    std::vector<std::string> bits;
    for (const auto& name : f.flag_series()) {
        if (s.abi.unknown_bits.count(name)) {
            bits.push_back(name + " bit unknown");
            continue;
        }
        unsigned b = name == "no_direct_map" ? s.abi.bits.no_direct_map
                     : name == "write"       ? s.abi.bits.write
                                             : s.abi.bits.hugetlb;
        bits.push_back(fmt::format("{} bit {}", name, b));
    }
    if (f.conversion.present)
        bits.push_back(fmt::format("KVM_SET_MEMORY_ATTRIBUTES2 {:#x} ({} bytes)",
                                   s.abi.attrs2_request(), s.abi.attrs2.size));
    if (!bits.empty())
        out += " [" + fmt::format("{}", fmt::join(bits, ", ")) + "]";
    out += " from " + f.source;
    return out;
}

json envelope_json(const Envelope& e) {
    json j = {{"schema_version", kSchemaVersion},
              {"tool", {{"name", "gmemstress"}, {"version", e.tool_version}}},
              {"command", e.command},
              {"timestamp", e.timestamp},
              {"host", e.host},
              {"profile", e.profile},
              {"interrupted", e.interrupted},
              {"interrupt_reason", e.interrupt_reason},
              {"kernel_log", kernel_log_json(e)},
              {"errors", e.errors}};
    if (e.lab)
        j["lab"] = *e.lab;
    if (e.series)
        j["series"] = series_json(*e.series);
    return j;
}

json to_json(const Report& r) {
    json j = envelope_json(r);
    j["seed"] = r.seed;
    j["duration_s"] = r.duration_s;
    j["workloads"] = json::array();
    for (const auto& w : r.workloads)
        j["workloads"].push_back(workload_json(w));
    j["conformance"] = json::array();
    for (const auto& c : r.conformance)
        j["conformance"].push_back(check_json(c));
    j["invariants"] = json::array();
    for (const auto& i : r.invariants)
        j["invariants"].push_back(invariant_json(i));
    j["probes"] = to_json(r.probes);
    if (r.locks)
        j["locks"] = to_json(*r.locks);
    j["stalls"] = json::array();
    for (const auto& st : r.stalls)
        j["stalls"].push_back(stall_json(st));
    j["stall_threshold_s"] = r.stall_threshold_s;
    j["incomplete"] = r.incomplete;
    j["incomplete_reason"] = r.incomplete_reason;
    j["verdict"] = to_string(r.verdict());
    return j;
}

namespace {
// "fail-nth create   pass  14 faults, N 1..15 (exhausted), ENOMEM 14; 0 leaks, 0 failures"
template <class Paint> std::string fault_sweep_text(const FaultSweep& f, Paint&& paint) {
    if (f.outcome == Outcome::skip)
        return fmt::format("             fail-nth {:<14} {} ({})\n", f.call, paint(f.outcome),
                           f.reason);
    std::vector<std::string> errs;
    for (const auto& [e, n] : f.errnos)
        errs.push_back(fmt::format("{} {}", e, n));
    if (f.succeeded_despite_fault)
        errs.push_back(fmt::format("succeeded {}", f.succeeded_despite_fault));
    std::string out = fmt::format(
        "             fail-nth {:<14} {} {} fault{} injected, N {}..{} ({}){}{}; {} leak{}, {} "
        "failure{}\n",
        f.call, paint(f.outcome), f.faults_injected, f.faults_injected == 1 ? "" : "s", f.first_n,
        f.last_n, f.exhausted ? "exhausted" : "bounded by " + f.bounded_by,
        errs.empty() ? "" : ": ", fmt::join(errs, ", "), f.leaks, f.leaks == 1 ? "" : "s",
        f.failures, f.failures == 1 ? "" : "s");
    for (const auto& l : f.first_leaks)
        out += fmt::format("               leak: {}\n", l);
    for (const auto& l : f.first_failures)
        out += fmt::format("               failure: {}\n", l);
    return out;
}
} // namespace

std::string to_text(const Report& r, bool color) {
    auto paint = [&](Outcome o) {
        std::string s = to_string(o);
        if (!color)
            return s;
        const char* code = o == Outcome::pass ? "32" : o == Outcome::skip ? "33" : "31";
        return fmt::format("\033[{}m{}\033[0m", code, s);
    };
    std::string out;
    out += fmt::format("gmemstress {} — profile {} (seed {}), {:.1f}s{}\n", r.tool_version,
                       r.profile.value("name", "?"), r.seed, r.duration_s,
                       r.interrupted ? fmt::format(", INTERRUPTED ({})", r.interrupt_reason) : "");
    // Where the results come from: this machine's KVM, or a lab guest's kernel.
    std::string kernel = r.host.value("kernel_release", std::string("?"));
    out += r.host.value("lab_guest", false)
               ? fmt::format("ran in: the QEMU lab (gmemstress lab), guest kernel {}\n", kernel)
               : fmt::format("ran on: this host's KVM, kernel {}\n", kernel);
    if (r.series) {
        out += fmt::format("series: {}\n", series_line(*r.series));
        for (const auto& n : r.series->notes)
            out += fmt::format("  series note: {}\n", n);
    }
    for (const auto& w : r.workloads) {
        uint64_t ops = 0;
        for (const auto& [_, s] : w.ops)
            ops += s.count;
        out += fmt::format("  {:<8} {:<22} {:>10} ops {:>8} pages verified", paint(w.outcome),
                           w.label.empty() ? w.name : w.label, ops, w.verification.pages_checked);
        if (w.verification.mismatches)
            out += fmt::format(", {} MISMATCHES", w.verification.mismatches);
        if (!w.reason.empty())
            out += fmt::format("  ({})", w.reason);
        out += "\n";
        for (const auto& m : w.verification.first_mismatches)
            out += fmt::format("             mismatch: {}\n", m);
        size_t pass = 0, skip = 0;
        for (const auto& c : w.checks) {
            pass += c.outcome == Outcome::pass;
            skip += c.outcome == Outcome::skip;
            if (c.outcome == Outcome::fail || c.outcome == Outcome::error)
                out += fmt::format("             {} {}: expected {}, observed {}{}\n",
                                   paint(c.outcome), c.name, c.expected, c.observed,
                                   c.reason.empty() ? "" : " (" + c.reason + ")");
        }
        if (!w.checks.empty())
            out += fmt::format("             checks: {} total, {} passed, {} skipped\n",
                               w.checks.size(), pass, skip);
        for (const auto& f : w.fault_sweeps)
            out += fault_sweep_text(f, paint);
        if (w.range_scaling)
            for (const auto& line : to_text_lines(*w.range_scaling, "             "))
                out += line + "\n";
        if (w.pin_convert)
            for (const auto& line : to_text_lines(*w.pin_convert, "             "))
                out += line + "\n";
    }
    for (const auto& i : r.invariants) {
        out += fmt::format("  invariant {:<22} {}{}{}\n", i.name, to_string(i.verdict),
                           i.backend.empty() ? "" : " [" + i.backend + "]",
                           i.reason.empty() ? "" : " (" + i.reason + ")");
        for (size_t k = 0; k < i.violations.size() && k < 5; ++k)
            out += fmt::format("             {}\n", i.violations[k]);
    }
    if (r.locks)
        for (const auto& l : text_lines(*r.locks))
            out += "  " + l + "\n";
    if (!r.kernel_log_available)
        out += fmt::format("  kernel log: not scanned ({})\n", r.kernel_log_reason);
    for (const auto& f : r.kernel_log) {
        out += fmt::format("  kernel log {}: {}\n", f.kind, f.line);
        if (!f.task.empty() || !f.operations.empty())
            out += fmt::format(
                "             by {} in {}; {} lines in the report\n", f.task.empty() ? "?" : f.task,
                f.operations.empty() ? "no guest_memfd operation"
                                     : fmt::format("{}", fmt::join(f.operations, ", ")),
                f.splat.size());
    }
    for (const auto& w : r.kernel_log_waived)
        out += fmt::format("  kernel log waived {}: {} (by /{}/, {})\n", w.finding.kind,
                           w.finding.line, r.waiver_of(w).regex, r.waiver_of(w).origin);
    if (!r.kernel_log_waived.empty()) {
        auto counts = r.waiver_counts();
        std::vector<std::string> per;
        for (size_t i = 0; i < counts.size(); ++i)
            if (counts[i])
                per.push_back(fmt::format("/{}/: {}", r.kernel_log_waivers[i].regex, counts[i]));
        out += fmt::format("  kernel log: {} finding{} waived ({})\n", r.kernel_log_waived.size(),
                           r.kernel_log_waived.size() == 1 ? "" : "s", fmt::join(per, ", "));
    }
    for (const auto& st : r.stalls) {
        out += fmt::format("  STALL {}\n", stall_line(st));
        if (!st.task_state.empty() || !st.wchan.empty())
            out += fmt::format("             state {}, wchan {}\n", st.task_state,
                               st.wchan.empty() ? "?" : st.wchan);
        for (size_t k = 0; k < st.kernel_stack.size() && k < 12; ++k)
            out += fmt::format("             {}\n", st.kernel_stack[k]);
        if (!st.stack_error.empty())
            out += fmt::format("             kernel stack unavailable: {}\n", st.stack_error);
        if (st.vcpu)
            out += fmt::format(
                "             vcpu{}: last exit {}; {}{}\n", st.vcpu->id, st.vcpu->last_exit,
                st.vcpu->guest_rip ? fmt::format("guest rip {:#x}; ", *st.vcpu->guest_rip)
                                   : std::string(),
                st.vcpu->note);
    }
    if (r.incomplete)
        out += fmt::format("  INCOMPLETE: {}\n", r.incomplete_reason);
    for (const auto& e : r.errors)
        out += fmt::format("  error: {}\n", e);
    out += fmt::format("verdict: {}\n", paint(r.verdict()));
    return out;
}

std::string to_junit(const Report& r) {
    struct Case {
        std::string classname, name;
        Outcome outcome;
        std::string message;
        double time = 0;
    };
    std::vector<Case> cases;
    for (const auto& w : r.workloads) {
        std::string label = w.label.empty() ? w.name : w.label;
        std::string msg = w.reason;
        for (const auto& m : w.verification.first_mismatches)
            msg += (msg.empty() ? "" : "; ") + m;
        cases.push_back({"gmemstress.workload", label, w.outcome, msg, w.duration_s});
        for (const auto& c : w.checks)
            cases.push_back({"gmemstress." + label, c.name, c.outcome,
                             fmt::format("expected {}, observed {}{}", c.expected, c.observed,
                                         c.reason.empty() ? "" : "; " + c.reason)});
    }
    for (const auto& c : r.conformance)
        cases.push_back({"gmemstress.conformance", c.name, c.outcome,
                         fmt::format("expected {}, observed {}", c.expected, c.observed)});
    for (const auto& i : r.invariants) {
        Outcome o = i.verdict == Verdict::verified   ? Outcome::pass
                    : i.verdict == Verdict::violated ? Outcome::fail
                                                     : Outcome::skip;
        std::string msg = to_string(i.verdict) + (i.reason.empty() ? "" : ": " + i.reason);
        for (const auto& v : i.violations)
            msg += "; " + v;
        cases.push_back({"gmemstress.invariant", i.name, o, msg});
    }
    Outcome klog = r.kernel_log.empty() ? (r.kernel_log_available ? Outcome::pass : Outcome::skip)
                                        : Outcome::fail;
    std::string kmsg = r.kernel_log_available ? "" : r.kernel_log_reason;
    for (const auto& f : r.kernel_log)
        kmsg += f.kind + ": " + f.line + "\n";
    cases.push_back({"gmemstress.kernel", "kernel_log", klog, kmsg});
    for (size_t k = 0; k < r.stalls.size(); ++k) {
        const auto& st = r.stalls[k];
        std::string msg = stall_line(st);
        for (const auto& l : st.kernel_stack)
            msg += "\n" + l;
        cases.push_back({"gmemstress.stall", fmt::format("{}.{}", st.operation, k + 1),
                         Outcome::fail, msg, st.duration_s});
    }
    // JUnit has no expected failure: a waived finding is a skipped case
    // naming the regex that waived it.
    for (size_t k = 0; k < r.kernel_log_waived.size(); ++k) {
        const auto& w = r.kernel_log_waived[k];
        cases.push_back({"gmemstress.kernel.waived", fmt::format("{}.{}", w.finding.kind, k + 1),
                         Outcome::skip,
                         fmt::format("waived by /{}/ ({}): {}", r.waiver_of(w).regex,
                                     r.waiver_of(w).origin, w.finding.line)});
    }

    size_t failures = 0, errors = 0, skipped = 0;
    for (const auto& c : cases) {
        failures += c.outcome == Outcome::fail;
        errors += c.outcome == Outcome::error;
        skipped += c.outcome == Outcome::skip;
    }
    std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    out += fmt::format("<testsuites name=\"gmemstress\" tests=\"{}\" failures=\"{}\" errors=\"{}\" "
                       "skipped=\"{}\" time=\"{:.3f}\">\n",
                       cases.size(), failures, errors, skipped, r.duration_s);
    out += fmt::format(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" "
        "timestamp=\"{}\">\n",
        xml_escape("gmemstress." + r.profile.value("name", std::string("run"))), cases.size(),
        failures, errors, skipped, xml_escape(r.timestamp));
    if (r.series)
        out += fmt::format("    <properties>\n      <property name=\"series\" value=\"{}\"/>\n    "
                           "</properties>\n",
                           xml_escape(series_line(*r.series)));
    for (const auto& c : cases) {
        out += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\"",
                           xml_escape(c.classname), xml_escape(c.name), c.time);
        switch (c.outcome) {
        case Outcome::pass:
            out += "/>\n";
            break;
        case Outcome::skip:
            out += fmt::format(">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                               xml_escape(c.message));
            break;
        case Outcome::fail:
            out += fmt::format(">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                               xml_escape(c.message));
            break;
        case Outcome::error:
            out += fmt::format(">\n      <error message=\"{}\"/>\n    </testcase>\n",
                               xml_escape(c.message));
            break;
        }
    }
    out += "  </testsuite>\n</testsuites>\n";
    return out;
}

void write_atomically(const std::string& path, const std::string& content) {
    std::string tmp = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        throw SysError("open", tmp, errno);
    size_t off = 0;
    while (off < content.size()) {
        ssize_t n = ::write(fd, content.data() + off, content.size() - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            throw SysError("write", tmp, e);
        }
        off += size_t(n);
    }
    if (::fsync(fd) < 0 || ::close(fd) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw SysError("fsync/close", tmp, e);
    }
    if (::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw SysError("rename", tmp + " -> " + path, e);
    }
}

} // namespace gms::report
