// Shared pieces of the conformance checks (internal to workloads/conformance_*.cpp):
// the per-VM-type environment, the check runner, multi-case checks and the
// small helpers every group uses. The groups:
//   conformance_file.cpp     per (VM type, flag set): creation, sizes, mmap,
//                            fallocate, read/write (and the WRITE series), fstat
//   conformance_memslot.cpp  per VM type: flags, memslot binding (v1 and v2)
//   conformance_private.cpp  per VM type: memory attributes, KVM_EXIT_MEMORY_FAULT,
//                            KVM_PRE_FAULT_MEMORY; once: the default VM's flags
#pragma once

#include "core/caps.h"
#include "kvm/flag_names.h"
#include "kvm/kvm.h"
#include "kvm/observed_gmem.h"
#include "reports/model.h"
#include "workloads/conformance_checks.h"

#include <fmt/format.h>
#include <string>
#include <utility>
#include <vector>

namespace gms::workloads::conformance {

using report::Check;
using report::Outcome;

uint64_t page_size();
std::string result_str(int err); // "success" or the errno name
std::string hex(uint64_t v);
// A skipped check still says what it would have expected.
void set_skip(Check& c, std::string expected, std::string reason);
std::string errno_expectation(int want, const std::string& source);
void expect_errno(Check& c, int want, int got, const std::string& source);
std::string with_tag(bool version_dependent, const std::string& s);

// Several inputs that share one expectation; observed lists every case, or
// only the ones that differ when there are many.
class Cases {
  public:
    void add(const std::string& label, bool ok, const std::string& observed);
    void finish(Check& c, std::string expected, size_t list_all_up_to = 12);
    size_t bad() const { return bad_; }

  private:
    std::vector<std::pair<std::string, bool>> lines_;
    size_t total_ = 0, bad_ = 0;
};

// One VM type as the checks see it: what KVM advertises on a VM of that type.
struct Env {
    const kvm::Kvm& kvm;
    const Options& opt;
    unsigned long vm_type = 0;
    std::string vm_name;     // "default", "sw_protected": the first component of check names
    uint64_t supported = 0;  // KVM_CAP_GUEST_MEMFD_FLAGS on a VM of this type
    uint64_t attributes = 0; // KVM_CAP_MEMORY_ATTRIBUTES on that VM
    bool gmem = false;       // KVM_CAP_GUEST_MEMFD on that VM
    bool memory2 = false;    // KVM_CAP_USER_MEMORY2
    bool pre_fault = false;  // KVM_CAP_PRE_FAULT_MEMORY on that VM

    kvm::Vm new_vm() const { return kvm::Vm::create(kvm, vm_type); }
    bool has(uint64_t f) const { return (supported & f) == f; }
    bool private_attr() const { return attributes & uapi::kMemoryAttributePrivate; }
    uint64_t write_flag() const { return 1ull << opt.bits.write; }
    uint64_t no_direct_map_flag() const { return 1ull << opt.bits.no_direct_map; }
    std::string flags_str(uint64_t f) const { return kvm::flags_to_string(f, opt.bits); }
    std::string lacks(uint64_t f) const;
    // The kernel carries the write() series (fingerprint), or advertises WRITE.
    bool write_series() const;
    // Linux release of the running kernel is at least major.minor (false if unknown).
    bool release_at_least(int major, int minor) const;
    std::string release() const;

    kvm::GmemObserver& observer() const;
    // A guest_memfd on `vm`: 0 and `out` set, or errno.
    int try_create(kvm::Vm& vm, uint64_t size, uint64_t flags, kvm::ObservedGmem& out) const {
        return out.try_create_gmem(vm, size, flags, observer());
    }
    kvm::ObservedGmem create(kvm::Vm& vm, uint64_t size, uint64_t flags) const {
        kvm::ObservedGmem g;
        g.create_gmem(vm, size, flags, observer());
        return g;
    }
    // "default.memslot.bind_valid": check names start with the VM type.
    std::string name(const std::string& rest) const { return vm_name + "." + rest; }
};

class Runner {
  public:
    explicit Runner(std::vector<Check>& out) : out_(out) {}

    // Runs one check; a throw inside it makes it `error` with the message.
    template <class F> void run(const std::string& name, F&& body) {
        Check c;
        c.name = name;
        try {
            body(c);
        } catch (const std::exception& e) {
            c.outcome = Outcome::error;
            c.reason = e.what();
            if (c.observed.empty())
                c.observed = std::string("error: ") + e.what();
        }
        finish(std::move(c));
    }

  private:
    void finish(Check c);
    std::vector<Check>& out_;
};

// A stable name component for a flag set: "none", "mmap-init_shared", "bit5".
std::string flag_set_name(const Env& env, uint64_t flags);

// ---- the groups ----------------------------------------------------------------

// Per VM type.
void check_flags(Runner& r, const Env& env);
void check_memslots(Runner& r, const Env& env);
void check_attributes(Runner& r, const Env& env);
void check_memory_fault_exits(Runner& r, const Env& env);
void check_pre_fault(Runner& r, const Env& env);
// Per VM type and flag set: the selftest's __test_guest_memfd().
void check_file(Runner& r, const Env& env, uint64_t flags);
// Once: what the default VM type advertises.
void check_default_vm(Runner& r, const Env& default_env);

} // namespace gms::workloads::conformance
