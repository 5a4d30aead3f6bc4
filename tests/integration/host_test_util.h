// Helpers for the host workload integration tests (host-fault, punch-hole,
// populate, lifecycle): real /dev/kvm, profiles parsed by the real parser, an
// observer that checks the on_created / on_released contract for real.
#pragma once

#include "core/caps.h"
#include "core/profile.h"
#include "core/run_control.h"
#include "kvm/kvm.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <cstring>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <utility>
#include <vector>

namespace host_test {

using namespace gms;

inline std::optional<std::string> kvm_missing() {
    kvm::Kvm k;
    if (int e = kvm::Kvm::try_open(k))
        return std::string("/dev/kvm not usable: ") + std::strerror(e);
    if (k.check_extension(uapi::kCapGuestMemfd) <= 0)
        return std::string("kernel has no guest_memfd (KVM_CAP_GUEST_MEMFD=0)");
    return std::nullopt;
}

// A one-workload profile: `workload` is the body of its [[workload]] table.
inline profile::Profile make_profile(const std::string& workload, const std::string& size = "4MiB",
                                     unsigned vm_count = 1, uint64_t seed = 1) {
    std::string text = fmt::format("name = \"test\"\nseed = {}\nduration = \"30s\"\n"
                                   "[vm]\ncount = {}\n[guest_memfd]\nsize = \"{}\"\n"
                                   "flags = [\"mmap\", \"init_shared\"]\n[[workload]]\n{}\n",
                                   seed, vm_count, size, workload);
    return profile::parse_profile(text, "test", {}, workloads::schemas());
}

// No fd and no mapping of the process may still refer to `id`.
inline std::vector<std::string> live_references(kvm::InodeId id) {
    std::vector<std::string> out;
    if (DIR* d = opendir("/proc/self/fd")) {
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.')
                continue;
            struct stat st {};
            std::string path = std::string("/proc/self/fd/") + e->d_name;
            if (stat(path.c_str(), &st) == 0 && uint64_t(st.st_dev) == id.dev &&
                uint64_t(st.st_ino) == id.ino)
                out.push_back("fd " + std::string(e->d_name));
        }
        closedir(d);
    }
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        std::istringstream ls(line);
        std::string range, perms, off, dev;
        uint64_t ino = 0;
        ls >> range >> perms >> off >> dev >> ino;
        unsigned maj = 0, min = 0;
        if (ino == id.ino && std::sscanf(dev.c_str(), "%x:%x", &maj, &min) == 2 &&
            uint64_t(makedev(maj, min)) == id.dev)
            out.push_back("mapping " + line);
    }
    return out;
}

// Checks the observer contract: every release follows a creation, and at
// release time nothing of ours refers to the file any more.
struct RecordingObserver : kvm::GmemObserver {
    std::mutex mu;
    std::map<std::pair<uint64_t, uint64_t>, int> live;
    int created = 0, released = 0;
    std::vector<std::string> violations;

    void on_created(const kvm::GuestMemfd& g) override {
        std::lock_guard lock(mu);
        ++created;
        ++live[{g.inode().dev, g.inode().ino}];
    }
    void on_released(kvm::InodeId id) override {
        std::lock_guard lock(mu);
        ++released;
        auto it = live.find({id.dev, id.ino});
        if (it == live.end())
            violations.push_back(fmt::format("released inode {} that was never created", id.ino));
        else if (--it->second == 0)
            live.erase(it);
        for (const auto& ref : live_references(id))
            violations.push_back(
                fmt::format("inode {} released while still referenced: {}", id.ino, ref));
    }
};

struct Outcome {
    report::WorkloadResult result;
    double wall_s = 0;
    uint64_t progress_ops = 0;
};

inline const Caps& caps() {
    static const Caps c = detect_caps();
    return c;
}

// Runs workload `idx` of `p` like the runner does (budget in seconds, 0 = none).
inline Outcome run(const profile::Profile& p, RecordingObserver& obs, double budget_s = 20,
                   size_t idx = 0, RunControl* control = nullptr) {
    static kvm::Kvm k = kvm::Kvm::open();
    RunControl local;
    RunControl& rc = control ? *control : local;
    const auto& spec = p.workloads.at(idx);
    const auto* info = workloads::find(spec.kind);
    REQUIRE(info != nullptr);
    workloads::Progress progress;
    workloads::Context ctx{k, caps(), p, spec, p.seed, rc, obs, progress, budget_s};
    ctx.started_ns = now_ns();
    Outcome o;
    o.result = info->run(ctx);
    o.wall_s = double(now_ns() - ctx.started_ns) / 1e9;
    o.progress_ops = progress.ops.load();
    return o;
}

inline std::optional<std::string> skip_reason(const profile::Profile& p, size_t idx = 0) {
    if (auto why = kvm_missing())
        return why;
    const auto& spec = p.workloads.at(idx);
    return workloads::find(spec.kind)->skip_reason(caps(), p, spec);
}

inline uint64_t op_count(const report::WorkloadResult& r, const std::string& op) {
    auto it = r.ops.find(op);
    return it == r.ops.end() ? 0 : it->second.count;
}

inline std::string summary(const report::WorkloadResult& r) {
    std::string s = fmt::format("{} [{}] {}\n", r.name, report::to_string(r.outcome), r.reason);
    for (const auto& [k, v] : r.ops) {
        s += fmt::format("  op {}: count {} bytes {} p50 {}ns", k, v.count, v.bytes,
                         v.latency_ns.percentile(0.5));
        for (const auto& [e, n] : v.errors)
            s += fmt::format(" {}x{}", e, n);
        s += "\n";
    }
    s += fmt::format("  verification: {} pages, {} mismatches\n", r.verification.pages_checked,
                     r.verification.mismatches);
    for (const auto& m : r.verification.first_mismatches)
        s += "    " + m + "\n";
    for (const auto& [k, v] : r.counters)
        s += fmt::format("  counter {} = {}\n", k, v);
    const auto& x = r.expect;
    for (const auto& [k, v] :
         {std::pair{"gmem_files", x.gmem_files}, std::pair{"pages_added", x.pages_added},
          std::pair{"pages_removed", x.pages_removed},
          std::pair{"min_handouts_to_user", x.min_handouts_to_user},
          std::pair{"min_handouts_to_guest", x.min_handouts_to_guest}})
        if (v)
            s += fmt::format("  expect {} = {}\n", k, *v);
    for (const auto& c : r.checks)
        s += fmt::format("  check {} [{}] expected: {} observed: {} reason: {}\n", c.name,
                         report::to_string(c.outcome), c.expected, c.observed, c.reason);
    return s;
}

} // namespace host_test
