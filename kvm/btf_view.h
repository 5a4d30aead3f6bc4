// The running kernel as kvm/series.h and the probes' planner read it: vmlinux
// BTF plus the BTF of the KVM modules (where guest_memfd's functions and
// types live when KVM is a module), and /proc/kallsyms' text symbols.
#pragma once

#include "kvm/series.h"

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace gms::kvm {

class KernelBtf final : public BtfView {
  public:
    KernelBtf(); // loads what it can; never throws for a missing BTF
    ~KernelBtf() override;
    KernelBtf(const KernelBtf&) = delete;
    KernelBtf& operator=(const KernelBtf&) = delete;

    bool btf_available() const override;
    std::string btf_source() const override;
    bool kallsyms_available() const override;
    bool btf_has_function(const std::string& name) const override;
    std::vector<std::string> btf_functions_with_prefix(const std::string& prefix) const override;
    bool kallsyms_has(const std::string& name) const override;
    std::vector<std::string> kallsyms_with_prefix(const std::string& prefix) const override;
    std::optional<int64_t> enum_value(const std::string& enum_name,
                                      const std::string& value) const override;
    std::optional<BtfStruct> find_struct(const std::string& name) const override;
    std::optional<std::vector<std::string>> param_types(const std::string& fn) const override;
    // Number of parameters of a BTF function.
    std::optional<int> func_args(const std::string& fn) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The fingerprint of the running kernel (reads BTF and kallsyms once).
SeriesFingerprint fingerprint_running_kernel();

} // namespace gms::kvm
