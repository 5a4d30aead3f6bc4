#include "workloads/workload.h"

#include <cctype>
#include <fmt/format.h>

namespace gms::workloads {

std::optional<std::string> kvm_skip_reason(const Caps& caps) {
    if (!caps.kvm_accessible)
        return "/dev/kvm is not usable: " +
               (caps.kvm_error.empty() ? std::string("unknown reason") : caps.kvm_error);
    if (!caps.guest_memfd)
        return std::string("KVM_CAP_GUEST_MEMFD is not supported by this kernel");
    return std::nullopt;
}

std::optional<std::string> gmem_skip_reason(const Caps& caps, const profile::Profile& p,
                                            uint64_t flags) {
    if (auto why = kvm_skip_reason(caps))
        return why;
    if (!caps.vm_type_supported(p.vm_type))
        return fmt::format(
            "VM type {} ({}) is not supported by this kernel (KVM_CAP_VM_TYPES={:#x})",
            p.vm_type_name, p.vm_type, caps.vm_types);
    if (uint64_t missing = flags & ~caps.guest_memfd_flags)
        return fmt::format(
            "guest_memfd flags {} not supported by this kernel (KVM_CAP_GUEST_MEMFD_FLAGS={:#x})",
            flag_names(missing, p.bits), caps.guest_memfd_flags);
    return std::nullopt;
}

std::string flag_names(uint64_t flags, const kvm::FlagBits& bits) {
    std::string s = kvm::flags_to_string(flags, bits);
    for (auto& c : s)
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

} // namespace gms::workloads
