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

// ---- Part 2: patch-series values (never facts; see kvm/series.h) --------
// Which of these apply is decided from the running kernel's BTF (the series
// fingerprint, kvm/series.h); a profile's [flag_bits] and [abi] override them.
//
// Flag bits, per series and per combination of series seen in public trees.
// Bit 2 is claimed by three series on their own:
inline constexpr unsigned kNoDirectMapBit = 2; // NO_DIRECT_MAP, v8..v12
inline constexpr unsigned kWriteBit = 2;       // WRITE (write() population), v7
inline constexpr unsigned kHugetlbBit = 2;     // HugeTLB guest_memfd (work in progress)
// The one public tree carrying NO_DIRECT_MAP and WRITE together (Firecracker's
// feature/secret-hiding) keeps NO_DIRECT_MAP at 2 and moves WRITE to 3.
inline constexpr unsigned kWriteBitWithNoDirectMap = 3;
// Bits named when the kernel carries none of the series (nothing is advertised
// then; the names only need to stay apart).
inline constexpr unsigned kDefaultNoDirectMapBit = kNoDirectMapBit;
inline constexpr unsigned kDefaultWriteBit = kWriteBitWithNoDirectMap;
inline constexpr unsigned kDefaultHugetlbBit = 4;

// In-place conversion (v8..v13): KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd
// fd, _IOWR(KVMIO, 0xd2, struct kvm_memory_attributes2). The struct's size is
// part of the request number: the size comes from BTF when the kernel has the
// struct, else this layout's.
inline constexpr unsigned kDefaultSetMemoryAttributes2Nr = 0xd2;
// Its capability number moved between versions (245, 248, ...), and both are
// merged capabilities of other features in Linux 7.3 (KVM_CAP_ARM_SEA_TO_USER,
// KVM_CAP_S390_VSIE_ESAMODE). By default no capability is asked: support is
// detected by issuing the ioctl with an invalid argument (kvm/series.h). A
// profile's abi.cap_memory_attributes2 names one to ask instead.
inline constexpr unsigned kCapMemoryAttributes2None = 0;
inline constexpr unsigned kDefaultCapMemoryAttributes2 = kCapMemoryAttributes2None;

struct kvm_memory_attributes2 {
    union {
        uint64_t address; // issued on a VM fd
        uint64_t offset;  // issued on a guest_memfd fd
    };
    uint64_t size;
    uint64_t attributes;
    uint64_t flags;
    uint64_t error_offset; // out: the page that had an unexpected reference (-EAGAIN)
    uint64_t reserved[11];
};
static_assert(sizeof(kvm_memory_attributes2) == 128);

} // namespace gms::uapi
