// What this machine offers: /dev/kvm, guest_memfd features, kernel facts.
// Detected at runtime (KVM_CHECK_EXTENSION on /dev/kvm and on a VM, then
// behaviour), never assumed.
#pragma once

#include "kvm/flags.h"
#include "kvm/series.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace gms {

inline constexpr const char* kFailNthPath = "/proc/thread-self/fail-nth";
inline constexpr const char* kDebugfsDir = "/sys/kernel/debug";

struct Caps {
    std::string kernel_release;
    bool lab_guest = false; // inside `gmemstress lab` (its init sets GMS_IN_LAB=1)
    std::string cpu_model;
    uint64_t mem_total = 0;
    uint64_t mem_available = 0;
    std::string lockdown; // none | integrity | confidentiality | unknown
    bool btf_vmlinux = false;

    bool kvm_accessible = false;
    std::string kvm_error; // why not
    int api_version = 0;
    uint64_t vm_types = 0; // bit mask from KVM_CAP_VM_TYPES (bit 0 = default)
    bool guest_memfd = false;
    uint64_t guest_memfd_flags = 0; // KVM_CAP_GUEST_MEMFD_FLAGS on a default VM
    uint64_t memory_attributes = 0; // KVM_CAP_MEMORY_ATTRIBUTES (VM)
    bool pre_fault_memory = false;
    bool user_memory2 = false;
    bool exit_hypercall = false;
    uint64_t exit_hypercall_mask = 0;
    int nr_vcpus = 0;
    int max_vcpus = 0;
    int nr_memslots = 0;
    // In-place conversion (KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd), and how
    // that was decided: the ioctl's answer to an invalid argument, or the
    // capability a profile named (abi.cap_memory_attributes2).
    bool memory_attributes2 = false;
    std::string memory_attributes2_how;

    // Fault injection, armed by the fault-inject workload: fail-nth
    // (CONFIG_FAULT_INJECTION) and the failslab / fail_page_alloc attributes
    // in debugfs (CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC,
    // CONFIG_FAULT_INJECTION_DEBUG_FS; debugfs mounted at kDebugfsDir).
    bool fail_nth = false;
    bool debugfs = false; // debugfs is mounted at kDebugfsDir
    bool failslab = false;
    bool fail_page_alloc = false;

    // The in-flight series this kernel carries, and the ABI taken from them
    // (kvm/series.h). `bits` is series.abi.bits.
    kvm::SeriesInfo series;
    kvm::FlagBits bits;
    bool has_gmem_flag(uint64_t f) const { return (guest_memfd_flags & f) == f; }
    bool vm_type_supported(unsigned long t) const {
        return t == 0 ? kvm_accessible : (vm_types >> t) & 1;
    }

    nlohmann::json bpf = nlohmann::json::object(); // filled by the probes' detection
    nlohmann::json to_json() const;
};

// Probes /dev/kvm and the kernel, and fingerprints its series. `overrides`:
// the ABI values a profile or the command line set explicitly (they win over
// the fingerprint). Never throws for a missing feature.
Caps detect_caps(const kvm::AbiOverrides& overrides = {});

} // namespace gms
