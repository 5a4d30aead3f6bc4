// guest_memfd UAPI that the system's <linux/kvm.h> (linux-libc-dev 6.1) lacks.
//
// Part 1: values merged upstream, copied from include/uapi/linux/kvm.h.
// Part 2: values that exist only in patch series. They are *defaults*: every
//         use goes through FlagBits / Abi so a profile or a flag overrides them.
#pragma once

#include <cstdint>
#include <linux/kvm.h>

namespace gms::uapi {

// ---- Part 1: upstream include/uapi/linux/kvm.h ----------------------------
inline constexpr unsigned kCapUserMemory2 = 231;      // KVM_CAP_USER_MEMORY2
inline constexpr unsigned kCapMemoryAttributes = 233; // KVM_CAP_MEMORY_ATTRIBUTES
inline constexpr unsigned kCapGuestMemfd = 234;       // KVM_CAP_GUEST_MEMFD
inline constexpr unsigned kCapVmTypes = 235;          // KVM_CAP_VM_TYPES
inline constexpr unsigned kCapPreFaultMemory = 236;   // KVM_CAP_PRE_FAULT_MEMORY
inline constexpr unsigned kCapGuestMemfdFlags = 244;  // KVM_CAP_GUEST_MEMFD_FLAGS
inline constexpr unsigned kCapNrVcpus = 9;            // KVM_CAP_NR_VCPUS
inline constexpr unsigned kCapMaxVcpus = 66;          // KVM_CAP_MAX_VCPUS
inline constexpr unsigned kCapNrMemslots = 10;        // KVM_CAP_NR_MEMSLOTS
inline constexpr unsigned kCapExitHypercall = 201;    // KVM_CAP_EXIT_HYPERCALL

inline constexpr uint32_t kMemGuestMemfd = 1u << 2; // KVM_MEM_GUEST_MEMFD
inline constexpr uint64_t kMemoryAttributePrivate = 1ull << 3;

inline constexpr uint64_t kGuestMemfdFlagMmap = 1ull << 0;       // GUEST_MEMFD_FLAG_MMAP
inline constexpr uint64_t kGuestMemfdFlagInitShared = 1ull << 1; // GUEST_MEMFD_FLAG_INIT_SHARED

// x86 VM types (KVM_X86_*_VM).
inline constexpr unsigned long kX86DefaultVm = 0;
inline constexpr unsigned long kX86SwProtectedVm = 1;
inline constexpr unsigned long kX86SevVm = 2;
inline constexpr unsigned long kX86SevEsVm = 3;
inline constexpr unsigned long kX86SnpVm = 4;
inline constexpr unsigned long kX86TdxVm = 5;

inline constexpr uint32_t kExitMemoryFault = 39;             // KVM_EXIT_MEMORY_FAULT
inline constexpr uint64_t kHcMapGpaRange = 12;               // KVM_HC_MAP_GPA_RANGE
inline constexpr uint64_t kMapGpaRangeEncrypted = 1ull << 4; // KVM_MAP_GPA_RANGE_ENCRYPTED

struct kvm_userspace_memory_region2 {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t guest_memfd_offset;
    uint32_t guest_memfd;
    uint32_t pad1;
    uint64_t pad2[14];
};

struct kvm_memory_attributes {
    uint64_t address;
    uint64_t size;
    uint64_t attributes;
    uint64_t flags;
};

struct kvm_create_guest_memfd {
    uint64_t size;
    uint64_t flags;
    uint64_t reserved[6];
};

struct kvm_pre_fault_memory {
    uint64_t gpa;
    uint64_t size;
    uint64_t flags;
    uint64_t padding[5];
};

// Layout of kvm_run's union member for KVM_EXIT_MEMORY_FAULT.
struct kvm_memory_fault_exit {
    uint64_t flags; // KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3
    uint64_t gpa;
    uint64_t size;
};

inline constexpr unsigned long kSetUserMemoryRegion2 =
    _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2);
inline constexpr unsigned long kSetMemoryAttributes =
    _IOW(KVMIO, 0xd2, struct kvm_memory_attributes);
inline constexpr unsigned long kCreateGuestMemfd =
    _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd);
inline constexpr unsigned long kPreFaultMemory = _IOWR(KVMIO, 0xd5, struct kvm_pre_fault_memory);

// ---- Part 2: patch-series defaults (never facts; see FlagBits) -----------
// NO_DIRECT_MAP: bit 2 in the v8..v12 "direct map removal" series.
inline constexpr unsigned kDefaultNoDirectMapBit = 2;
// WRITE (write()/pwrite() population): posted as bit 2 upstream, bit 3 in one
// VMM's tests; we default to 3 so it does not collide with NO_DIRECT_MAP.
inline constexpr unsigned kDefaultWriteBit = 3;
// HugeTLB backing: bit 4 in the HugeTLB guest_memfd RFCs (with the page size
// encoded in bits 26.. as for memfd_create).
inline constexpr unsigned kDefaultHugetlbBit = 4;
// In-place conversion: KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd.
inline constexpr unsigned kDefaultSetMemoryAttributes2Nr = 0xd6;
inline constexpr unsigned kDefaultCapMemoryAttributes2 = 245;

struct kvm_memory_attributes2 {
    uint64_t address; // offset into the guest_memfd when issued on its fd
    uint64_t size;
    uint64_t attributes;
    uint64_t flags;
    uint64_t error_offset; // out: first offset that failed (-EAGAIN)
    uint64_t reserved[3];
};

} // namespace gms::uapi
