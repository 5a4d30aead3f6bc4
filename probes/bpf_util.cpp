#include "probes/bpf_util.h"

#include "core/util.h"
#include "detect.skel.h"
#include "probes/session.h"

#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <fmt/format.h>
#include <mutex>
#include <sstream>
#include <unistd.h>
#include <vector>

namespace gms::probes {

namespace {

std::mutex g_log_mu;
std::string g_log;
constexpr size_t kMaxLog = 256 * 1024;

int libbpf_print(enum libbpf_print_level level, const char* fmtstr, va_list args) {
    if (level == LIBBPF_DEBUG)
        return 0;
    char buf[4096];
    int n = std::vsnprintf(buf, sizeof(buf), fmtstr, args);
    std::lock_guard lk(g_log_mu);
    if (g_log.size() < kMaxLog)
        g_log.append(buf, n > 0 ? std::min<size_t>(n, sizeof(buf) - 1) : 0);
    return n;
}

} // namespace

void install_libbpf_log() {
    static std::once_flag once;
    std::call_once(once, [] { libbpf_set_print(libbpf_print); });
}

std::string take_libbpf_log() {
    std::lock_guard lk(g_log_mu);
    return std::exchange(g_log, std::string());
}

std::string log_tail(const std::string& log, size_t lines) {
    std::vector<std::string> v;
    std::istringstream in(log);
    std::string l;
    while (std::getline(in, l))
        if (!l.empty())
            v.push_back(l);
    std::string out;
    for (size_t i = v.size() > lines ? v.size() - lines : 0; i < v.size(); ++i)
        out += (out.empty() ? "" : " | ") + v[i];
    return out;
}

std::string verifier_error(const std::string& log, size_t lines) {
    auto b = log.find("-- BEGIN PROG LOAD LOG --");
    auto e = log.find("-- END PROG LOAD LOG --");
    if (b == std::string::npos || e == std::string::npos || e < b)
        return log_tail(log, lines);
    std::istringstream in(log.substr(b, e - b));
    std::vector<std::string> v;
    std::string l;
    std::getline(in, l); // the BEGIN marker
    while (std::getline(in, l)) {
        if (l.empty() || l.rfind("processed ", 0) == 0 || l.rfind("verification time", 0) == 0 ||
            l.rfind("stack depth", 0) == 0)
            continue;
        v.push_back(l);
    }
    std::string out;
    for (size_t i = v.size() > lines ? v.size() - lines : 0; i < v.size(); ++i)
        out += (out.empty() ? "" : " | ") + v[i];
    return out;
}

std::string lockdown_state() {
    auto s = read_file("/sys/kernel/security/lockdown");
    if (!s)
        return "unknown";
    auto b = s->find('['), e = s->find(']');
    if (b == std::string::npos || e == std::string::npos || e < b)
        return "unknown";
    return s->substr(b + 1, e - b - 1);
}

namespace {

bool exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
}

std::string explain(int err, const std::string& step, Backend b) {
    std::string lock = lockdown_state();
    std::string why = fmt::format("{} failed: {}", step, errno_name(err));
    if (err == EPERM && lock != "none" && lock != "unknown")
        why += fmt::format(" (kernel lockdown={})", lock);
    if (b == Backend::kprobe && !exists("/sys/bus/event_source/devices/kprobe") &&
        !exists("/sys/kernel/tracing/kprobe_events") &&
        !exists("/sys/kernel/debug/tracing/kprobe_events"))
        why += " (no kprobe PMU and no kprobe_events: kernel built without kprobe events)";
    return why;
}

// The libbpf line that names the failing program, if any.
std::string prog_failure_line(const std::string& log) {
    std::istringstream in(log);
    std::string l;
    while (std::getline(in, l))
        if (l.find("prog '") != std::string::npos && l.find("failed") != std::string::npos)
            return l;
    return "";
}

BackendStatus try_backend(Backend b) {
    BackendStatus st;
    take_libbpf_log();
    detect_bpf* skel = detect_bpf__open();
    if (!skel) {
        st.err = errno;
        st.step = "open";
        st.reason = explain(st.err, "open", b);
        return st;
    }
    std::vector<bpf_program*> progs;
    switch (b) {
    case Backend::fentry:
        progs = {skel->progs.detect_fentry, skel->progs.detect_fexit};
        break;
    case Backend::kprobe:
        progs = {skel->progs.detect_kprobe, skel->progs.detect_kretprobe};
        break;
    case Backend::tracepoint:
        progs = {skel->progs.detect_tracepoint};
        break;
    }
    bpf_program* p;
    bpf_object__for_each_program(p, skel->obj) bpf_program__set_autoload(p, false);
    for (auto* q : progs)
        bpf_program__set_autoload(q, true);
    std::vector<bpf_link*> links;
    if (int r = detect_bpf__load(skel); r) {
        st.err = -r;
        st.step = "load";
        st.reason = explain(st.err, "load", b);
        auto line = prog_failure_line(take_libbpf_log());
        if (!line.empty() && st.err != EPERM)
            st.reason += ": " + line;
    } else {
        for (auto* q : progs) {
            bpf_link* l = nullptr;
            if (b == Backend::kprobe)
                l = bpf_program__attach_kprobe(q, q == skel->progs.detect_kretprobe, "vfs_read");
            else
                l = bpf_program__attach(q);
            if (!l) {
                st.err = errno;
                st.step = "attach";
                st.reason = explain(st.err, fmt::format("attach {}", bpf_program__name(q)), b);
                break;
            }
            links.push_back(l);
        }
        st.usable = st.err == 0;
    }
    for (auto* l : links)
        bpf_link__destroy(l);
    detect_bpf__destroy(skel);
    take_libbpf_log();
    return st;
}

} // namespace

const std::map<Backend, BackendStatus>& probe_backends() {
    static std::once_flag once;
    static std::map<Backend, BackendStatus> result;
    std::call_once(once, [] {
        install_libbpf_log();
        std::string err;
        ensure_tracefs(&err);
        for (auto b : {Backend::fentry, Backend::kprobe, Backend::tracepoint})
            result[b] = try_backend(b);
    });
    return result;
}

nlohmann::json detect_backends() {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [b, st] : probe_backends()) {
        nlohmann::json e = {{"usable", st.usable}};
        if (!st.usable) {
            e["errno"] = errno_name(st.err);
            e["step"] = st.step;
            e["reason"] = st.reason;
        }
        j[to_string(b)] = e;
    }
    j["lockdown"] = lockdown_state();
    return j;
}

} // namespace gms::probes
