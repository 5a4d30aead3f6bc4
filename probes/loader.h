// Loads the probes' BPF object with the planned variants and attaches them
// (retsnoop's plan -> load -> attach): a variant the verifier rejects, or a
// fentry link the kernel never calls, is ruled out and the object reloaded
// with the point's next variant. Owns the skeleton and every link.
#pragma once

#include "probes/planner.h"

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

struct gmem_bpf; // gmem.skel.h, generated from probes/bpf/gmem.bpf.c
struct bpf_link;

namespace gms::probes {

struct AttachedPoint : PlannedPoint {
    bool attached = false;
    std::vector<bpf_link*> links;
};

struct LoadRequest {
    PlanRequest plan;
    uint64_t ringbuf_size = 8ull << 20;
    std::string lockdown; // named in EPERM messages
    // After every load, before attaching: the .bss configuration.
    std::function<void(gmem_bpf&)> configure;
};

class ProbeObject {
  public:
    // Throws EnvError when nothing can be loaded, UsageError for a bad ring
    // buffer size.
    static std::unique_ptr<ProbeObject> load_and_attach(const KernelView& kernel, LoadRequest req);
    ~ProbeObject();
    ProbeObject(const ProbeObject&) = delete;
    ProbeObject& operator=(const ProbeObject&) = delete;

    gmem_bpf& skel() const { return *skel_; }
    const std::vector<AttachedPoint>& points() const { return points_; }
    const AttachedPoint* point(const std::string& name) const;
    bool attached(const std::string& name) const;
    // Destroys every link (no new records); the object stays loaded.
    void detach_all() noexcept;

    int load_attempts() const { return load_attempts_; }
    int attach_rounds() const { return attach_rounds_; }
    // What the trampoline check found ("N of N fentry/fexit points have ...").
    const std::string& attach_check() const { return attach_check_; }
    // libbpf logs of the loads that failed (bounded).
    const nlohmann::json& load_failures() const { return load_failures_; }

  private:
    ProbeObject() = default;
    int try_load(std::string* failed_prog, std::string* log);
    void load(const KernelView& kernel);
    void attach_all();
    std::vector<std::pair<AttachedPoint*, std::string>>
    unreached_fentry_points(const KernelView& kernel);
    void destroy() noexcept;

    LoadRequest req_;
    gmem_bpf* skel_ = nullptr;
    std::vector<AttachedPoint> points_;
    int load_attempts_ = 0;
    int attach_rounds_ = 0;
    std::string attach_check_;
    nlohmann::json load_failures_ = nlohmann::json::array();
};

} // namespace gms::probes
