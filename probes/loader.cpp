#include "probes/loader.h"

#include "core/error.h"
#include "core/util.h"
#include "gmem.skel.h"
#include "probes/bpf_util.h"
#include "probes/events.h"
#include "probes/point_names.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace gms::probes {

namespace {
// Loads of the object when fentry links the kernel does not call are sent to
// their next variant (one more than the functions that can fail this way).
constexpr int kMaxAttachRounds = 3;
// Verifier rejections: each rules out one variant; more than this is a bug.
constexpr int kMaxLoadAttempts = 64;
constexpr size_t kMaxLoadFailuresKept = 16;
// How the programs read the arguments that changed across kernels: read-only
// data, set before load, so the verifier drops what this kernel does not need.
void set_decodings(gmem_bpf& skel, const std::vector<AttachedPoint>& points) {
    uint32_t dm_addr = 0, get_pfn_has_page = 1;
    for (const auto& p : points) {
        if (!p.chosen)
            continue;
        const std::string& n = p.def->name;
        if (p.form == ArgForm::address)
            dm_addr |= n == point::dm_invalid   ? GMS_DM_ADDR_INVALID
                       : n == point::dm_default ? GMS_DM_ADDR_DEFAULT
                       : n == point::dm_valid   ? GMS_DM_ADDR_VALID
                                                : 0;
        if (n == point::get_pfn)
            get_pfn_has_page = p.form == ArgForm::pfn_only ? 0 : 1;
    }
    skel.rodata->cfg_dm_addr = dm_addr;
    skel.rodata->cfg_get_pfn_has_page = get_pfn_has_page;
}

} // namespace

std::unique_ptr<ProbeObject> ProbeObject::load_and_attach(const KernelView& kernel,
                                                          LoadRequest req) {
    uint64_t rs = req.ringbuf_size;
    if (rs < 4096 || (rs & (rs - 1)) || rs > (1ull << 30))
        throw UsageError(fmt::format(
            "probes ring buffer size {}: must be a power of two between 4 KiB and 1 GiB", rs));
    std::unique_ptr<ProbeObject> o(new ProbeObject());
    o->req_ = std::move(req);
    for (o->attach_rounds_ = 1;; ++o->attach_rounds_) {
        o->load(kernel);
        if (o->req_.configure)
            o->req_.configure(*o->skel_);
        o->attach_all();
        auto unreached = o->unreached_fentry_points(kernel);
        if (unreached.empty())
            break;
        const bool last = o->attach_rounds_ == kMaxAttachRounds;
        for (auto& [p, why] : unreached) {
            if (last) { // no round left: the point is not observed, and says why
                for (auto* l : p->links)
                    bpf_link__destroy(l);
                p->links.clear();
                p->attached = false;
                p->reason = "fentry: " + why;
            } else {
                o->req_.plan.ruled_out[{p->def->name, Backend::fentry}] = why;
            }
        }
        if (last)
            break;
        o->destroy();
    }
    return o;
}

ProbeObject::~ProbeObject() {
    destroy();
}

void ProbeObject::destroy() noexcept {
    detach_all();
    if (skel_) {
        gmem_bpf__destroy(skel_);
        skel_ = nullptr;
    }
}

void ProbeObject::detach_all() noexcept {
    for (auto& p : points_) {
        for (auto* l : p.links)
            bpf_link__destroy(l);
        p.links.clear();
    }
}

const AttachedPoint* ProbeObject::point(const std::string& name) const {
    for (const auto& p : points_)
        if (p.def->name == name)
            return &p;
    return nullptr;
}

bool ProbeObject::attached(const std::string& name) const {
    auto* p = point(name);
    return p && p->attached;
}

// Returns 0 or the libbpf error; on error names the failing program.
int ProbeObject::try_load(std::string* failed_prog, std::string* log) {
    skel_ = gmem_bpf__open();
    if (!skel_)
        throw EnvError(
            fmt::format("BPF: cannot open the probes' BPF object: {}", errno_name(errno)));
    bpf_program* p;
    bpf_object__for_each_program(p, skel_->obj) bpf_program__set_autoload(p, false);
    for (const auto& ps : points_) {
        if (!ps.chosen)
            continue;
        for (const auto& name : ps.progs) {
            bpf_program* prog = bpf_object__find_program_by_name(skel_->obj, name.c_str());
            if (!prog)
                throw Error(fmt::format("probes: program {} missing from the BPF object", name));
            bpf_program__set_autoload(prog, true);
            if (*ps.chosen == Backend::fentry && ps.target != ps.def->functions.front())
                bpf_program__set_attach_target(prog, 0, ps.target.c_str());
        }
    }
    set_decodings(*skel_, points_);
    if (int r =
            bpf_map__set_max_entries(skel_->maps.events, static_cast<uint32_t>(req_.ringbuf_size));
        r)
        throw UsageError(
            fmt::format("probes: ring buffer size {}: {}", req_.ringbuf_size, errno_name(-r)));
    take_libbpf_log();
    int r = gmem_bpf__load(skel_);
    if (r == 0)
        return 0;
    *log = take_libbpf_log();
    static const std::regex prog_re("prog '([A-Za-z0-9_]+)'");
    std::istringstream in(*log);
    std::string line;
    while (std::getline(in, line)) {
        // Other programs' warnings also name them: only a load failure counts.
        bool failure = line.find("load failed") != std::string::npos ||
                       line.find("failed to load") != std::string::npos;
        std::smatch m;
        if (failure && std::regex_search(line, m, prog_re)) {
            *failed_prog = m[1];
            break;
        }
    }
    gmem_bpf__destroy(skel_);
    skel_ = nullptr;
    return r;
}

void ProbeObject::load(const KernelView& kernel) {
    for (load_attempts_ = 1; load_attempts_ <= kMaxLoadAttempts; ++load_attempts_) {
        points_.clear();
        for (auto& p : plan_attach_points(attach_points(), kernel, req_.plan))
            points_.push_back(AttachedPoint{std::move(p)});
        std::string failed, log;
        int r = try_load(&failed, &log);
        if (r == 0)
            return;
        AttachedPoint* culprit = nullptr;
        for (auto& ps : points_)
            for (const auto& n : ps.progs)
                if (ps.chosen && n == failed)
                    culprit = &ps;
        if (load_failures_.size() < kMaxLoadFailuresKept)
            load_failures_.push_back(
                {{"program", failed},
                 {"error", errno_name(-r)},
                 {"log", log.size() > 3000 ? log.substr(log.size() - 3000) : log}});
        if (!culprit)
            throw EnvError(fmt::format("BPF: loading the probes failed ({}): {}", errno_name(-r),
                                       log_tail(log, 4)));
        req_.plan.ruled_out[{culprit->def->name, *culprit->chosen}] = fmt::format(
            "load of {} failed: {}: {}", failed, errno_name(-r), verifier_error(log, 2));
    }
    throw EnvError("BPF: loading the probes failed after too many attempts");
}

void ProbeObject::attach_all() {
    for (auto& ps : points_) {
        if (!ps.chosen)
            continue;
        bool ok = true;
        for (const auto& name : ps.progs) {
            bpf_program* prog = bpf_object__find_program_by_name(skel_->obj, name.c_str());
            bpf_link* l = nullptr;
            switch (*ps.chosen) {
            case Backend::fentry:
                l = bpf_program__attach(prog);
                break;
            case Backend::kprobe:
                l = bpf_program__attach_kprobe(prog, name == ps.def->kretprobe_prog,
                                               ps.target.c_str());
                break;
            case Backend::tracepoint: {
                auto slash = ps.target.find('/');
                l = bpf_program__attach_tracepoint(prog, ps.target.substr(0, slash).c_str(),
                                                   ps.target.substr(slash + 1).c_str());
                break;
            }
            }
            if (!l) {
                int err = errno;
                ps.reason = fmt::format("{} {} attach failed: {}{}", to_string(*ps.chosen),
                                        ps.target, errno_name(err),
                                        err == EPERM && req_.lockdown != "none"
                                            ? fmt::format(" (kernel lockdown={})", req_.lockdown)
                                            : std::string());
                ok = false;
                break;
            }
            ps.links.push_back(l);
        }
        if (!ok) {
            for (auto* l : ps.links)
                bpf_link__destroy(l);
            ps.links.clear();
        }
        ps.attached = ok;
    }
    take_libbpf_log();
}

// Points attached with fentry/fexit whose function has no BPF trampoline
// in <tracefs>/enabled_functions: the link was created but the kernel
// never runs the program. Seen with Debian's 7.3.4 under TCG for
// kvm_gmem_get_pfn in about 4 boots of 10, for the whole boot (every
// later fentry/fexit attach to it as well; a kprobe on it works). Only
// functions ftrace manages (those in available_filter_functions) are
// checked; the others are patched without ftrace.
std::vector<std::pair<AttachedPoint*, std::string>>
ProbeObject::unreached_fentry_points(const KernelView& kernel) {
    std::vector<std::pair<AttachedPoint*, std::string>> out;
    std::vector<AttachedPoint*> check;
    size_t fentry_points = 0;
    for (auto& ps : points_) {
        if (!ps.attached || ps.chosen != Backend::fentry)
            continue;
        ++fentry_points;
        if (kernel.ftrace_managed(ps.target))
            check.push_back(&ps);
    }
    if (fentry_points == 0) {
        attach_check_ = "no fentry/fexit point attached";
        return out;
    }
    if (check.empty()) {
        attach_check_ = "not checked: which functions ftrace patches is unknown (no "
                        "available_filter_functions)";
        return out;
    }
    const std::string path = kernel.tracefs() + "/enabled_functions";
    std::ifstream in(path);
    if (kernel.tracefs().empty() || !in) {
        attach_check_ = fmt::format("not checked: cannot read {}", path);
        return out;
    }
    const std::set<std::string> direct = functions_with_bpf_trampoline(in);
    for (auto* ps : check)
        if (!direct.count(ps->target))
            out.emplace_back(ps, fmt::format("the link was created but {} has no BPF trampoline "
                                             "in {} (the kernel would never run the program)",
                                             ps->target, path));
    attach_check_ = fmt::format("{} of {} fentry/fexit points have their BPF trampoline in {}",
                                check.size() - out.size(), check.size(), path);
    return out;
}

} // namespace gms::probes
