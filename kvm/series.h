// The series fingerprint: which in-flight guest_memfd patch series the running
// kernel carries, read from its BTF (and /proc/kallsyms where BTF cannot
// tell), and the ABI that follows from it: flag bits, the in-place conversion
// ioctl and its struct layout. Pure logic over BtfView, so a test hands it a
// fake kernel; kvm/btf_view.h reads the real one.
//
// Series recognised (their own symbols, never a kernel version):
//   NO_DIRECT_MAP (v12): folio_zap_direct_map()/folio_restore_direct_map(),
//     AS_NO_DIRECT_MAP in enum mapping_flags, set_direct_map_*_noflush()
//     taking a direct-map address instead of a struct page *.
//   WRITE (write() population, v7): kvm_gmem_write_begin/_end (guest_memfd's
//     address_space_operations).
//   In-place conversion (v8..v13): struct kvm_memory_attributes2.
//   HugeTLB guest_memfd: kvm_gmem_hugetlb_* functions, a page_order member in
//     struct kvm_create_guest_memfd.
#pragma once

#include "kvm/flags.h"
#include "kvm/uapi.h"

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace gms::kvm {

struct BtfMember {
    std::string name;    // members of anonymous unions/structs are listed flat
    uint32_t offset = 0; // bytes
    uint32_t size = 0;   // bytes (0: not a sized type)
};

struct BtfStruct {
    uint32_t size = 0;
    std::vector<BtfMember> members;
    const BtfMember* member(const std::string& name) const;
};

// What the fingerprint reads from a kernel.
class BtfView {
  public:
    virtual ~BtfView() = default;
    // vmlinux BTF loaded (module BTF, where KVM's types live when it is a
    // module, is searched too).
    virtual bool btf_available() const = 0;
    virtual std::string btf_source() const = 0; // "vmlinux + kvm, kvm_amd", ...
    virtual bool kallsyms_available() const = 0;
    // A BTF function (BTF_KIND_FUNC) of this name.
    virtual bool btf_has_function(const std::string& name) const = 0;
    // BTF functions whose name starts with `prefix`.
    virtual std::vector<std::string> btf_functions_with_prefix(const std::string& prefix) const = 0;
    // A text symbol in /proc/kallsyms.
    virtual bool kallsyms_has(const std::string& name) const = 0;
    virtual std::vector<std::string> kallsyms_with_prefix(const std::string& prefix) const = 0;
    // Value of `value` in `enum name`.
    virtual std::optional<int64_t> enum_value(const std::string& enum_name,
                                              const std::string& value) const = 0;
    virtual std::optional<BtfStruct> find_struct(const std::string& name) const = 0;
    // C types of a function's parameters ("struct page *", "const void *",
    // "kvm_pfn_t *", ...), nullopt if it is not in BTF.
    virtual std::optional<std::vector<std::string>> param_types(const std::string& fn) const = 0;
};

// Where a direct-map function's first argument points.
enum class DirectMapArg { unknown, page, address };
std::string to_string(DirectMapArg a);
// From the C type of set_direct_map_*_noflush's first parameter.
DirectMapArg direct_map_arg_of(const std::string& c_type);

// Offsets (bytes) of struct kvm_memory_attributes2's fields.
struct Attrs2Layout {
    uint32_t size = sizeof(uapi::kvm_memory_attributes2);
    uint32_t address = 0; // also `offset`
    uint32_t size_field = 8;
    uint32_t attributes = 16;
    uint32_t flags = 24;
    std::optional<uint32_t> error_offset = 32;
    bool operator==(const Attrs2Layout&) const = default;
};

struct SeriesPresence {
    bool present = false;
    std::vector<std::string> evidence; // what was found ("folio_zap_direct_map() in BTF")
};

struct SeriesFingerprint {
    // "BTF (vmlinux + kvm)", "kallsyms (no BTF)" or "none".
    std::string source = "none";
    bool btf = false;
    bool kallsyms = false;
    SeriesPresence no_direct_map, write, conversion, hugetlb;
    // NO_DIRECT_MAP details.
    std::optional<int64_t> as_no_direct_map; // enum mapping_flags value
    DirectMapArg set_direct_map_arg = DirectMapArg::unknown;
    std::string set_direct_map_arg_type; // the C type BTF gives
    // In-place conversion: the struct as BTF has it.
    std::optional<Attrs2Layout> attrs2;
    std::string attrs2_problem; // the struct exists but lacks a field gmemstress needs
    // HugeTLB: struct kvm_create_guest_memfd's page_order.
    std::optional<uint32_t> page_order_offset;
    std::optional<uint32_t> create_guest_memfd_size;

    // Series with a flag of their own, present, in a fixed order
    // ("no_direct_map", "write", "hugetlb"), and all present series joined
    // by '+' ("none" when there is none).
    std::vector<std::string> flag_series() const;
    std::string combination() const;
};

// Pure: reads `kernel`.
SeriesFingerprint fingerprint_series(const BtfView& kernel);

// Values given explicitly (profile [flag_bits]/[abi], --flag-bit, --set):
// they win over the fingerprint.
struct AbiOverrides {
    std::optional<unsigned> no_direct_map_bit, write_bit, hugetlb_bit;
    std::optional<unsigned> attrs2_nr;
    std::optional<unsigned> cap_attrs2;
};

// The ABI gmemstress uses on this kernel, with where each value came from.
struct SeriesAbi {
    FlagBits bits;
    // Flag name -> "profile", "fingerprint (...)", "default (...)".
    std::map<std::string, std::string> bit_source;
    // Flag names whose bit is not known here, with why: using one of them is
    // an error naming the override to set (never a guess).
    std::map<std::string, std::string> unknown_bits;
    unsigned attrs2_nr = uapi::kDefaultSetMemoryAttributes2Nr;
    Attrs2Layout attrs2;
    std::string attrs2_source; // "BTF" or "default layout (...)"
    unsigned cap_attrs2 = uapi::kCapMemoryAttributes2None;
    // _IOWR(KVMIO, attrs2_nr, attrs2.size): the size is part of the number.
    unsigned long attrs2_request() const;
};

// Pure. Flag bits: the override, else the bit the present series use
// together (the combinations in kvm/uapi.h), else, for a series the kernel
// does not carry, its named default; a combination of series no public tree
// has, or a kernel whose series cannot be told (no BTF and no kallsyms),
// leaves the bits unknown.
SeriesAbi resolve_series_abi(const SeriesFingerprint& fp, const AbiOverrides& ov);

// A KVM_SET_MEMORY_ATTRIBUTES2 argument laid out as `abi` says (at least
// abi.attrs2.size bytes).
struct Attrs2Buffer {
    std::vector<uint8_t> bytes;
    Attrs2Buffer(const SeriesAbi& abi, uint64_t offset, uint64_t size, uint64_t attributes,
                 uint64_t flags = 0);
    uint64_t error_offset(const SeriesAbi& abi) const; // 0 when the layout has none
    void* data() { return bytes.data(); }
};

// The fingerprint, the ABI taken from it, and what the kernel's advertised
// flags say about both: what caps and every report show.
struct SeriesInfo {
    SeriesFingerprint fingerprint;
    SeriesAbi abi;
    // Disagreements between the fingerprint and KVM_CAP_GUEST_MEMFD_FLAGS.
    std::vector<std::string> notes;
};

// Pure: a present series whose bit the kernel does not advertise, an
// advertised bit no present series explains. `advertised`: the flags
// KVM_CAP_GUEST_MEMFD_FLAGS reports on a default VM (nullopt: not known).
std::vector<std::string> check_advertised(const SeriesFingerprint& fp, const SeriesAbi& abi,
                                          std::optional<uint64_t> advertised);

// Issues KVM_SET_MEMORY_ATTRIBUTES2 on a guest_memfd; returns 0 or errno.
int try_set_memory_attributes2(int gmem_fd, const SeriesAbi& abi, uint64_t offset, uint64_t size,
                               uint64_t attributes, uint64_t* error_offset = nullptr);
// Whether the guest_memfd fd knows the ioctl: issued with size 0 (invalid
// for every version of the series), ENOTTY means no handler. Returns the
// errno it got (ENOTTY: unsupported).
int probe_set_memory_attributes2(int gmem_fd, const SeriesAbi& abi);

} // namespace gms::kvm
