#include "kvm/series.h"

#include "core/call_scope.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/ioctl.h>

namespace gms::kvm {

const BtfMember* BtfStruct::member(const std::string& name) const {
    for (const auto& m : members)
        if (m.name == name)
            return &m;
    return nullptr;
}

std::string to_string(DirectMapArg a) {
    switch (a) {
    case DirectMapArg::page:
        return "page";
    case DirectMapArg::address:
        return "address";
    case DirectMapArg::unknown:
        break;
    }
    return "unknown";
}

DirectMapArg direct_map_arg_of(const std::string& c_type) {
    if (c_type == "struct page *" || c_type == "const struct page *")
        return DirectMapArg::page;
    if (c_type == "void *" || c_type == "const void *")
        return DirectMapArg::address;
    return DirectMapArg::unknown;
}

std::vector<std::string> SeriesFingerprint::flag_series() const {
    std::vector<std::string> v;
    if (no_direct_map.present)
        v.push_back("no_direct_map");
    if (write.present)
        v.push_back("write");
    if (hugetlb.present)
        v.push_back("hugetlb");
    return v;
}

std::string SeriesFingerprint::combination() const {
    std::vector<std::string> v;
    if (no_direct_map.present)
        v.push_back("no_direct_map");
    if (write.present)
        v.push_back("write");
    if (conversion.present)
        v.push_back("in_place_conversion");
    if (hugetlb.present)
        v.push_back("hugetlb");
    return v.empty() ? "none" : fmt::format("{}", fmt::join(v, "+"));
}

namespace {

// A function found in BTF, else in kallsyms: the evidence says which.
bool find_function(const BtfView& k, const std::string& fn, SeriesPresence& s) {
    if (k.btf_has_function(fn)) {
        s.evidence.push_back(fn + "() in BTF");
        return true;
    }
    if (k.kallsyms_has(fn)) {
        s.evidence.push_back(fn + "() in kallsyms");
        return true;
    }
    return false;
}

bool find_prefix(const BtfView& k, const std::string& prefix, SeriesPresence& s) {
    auto fns = k.btf_functions_with_prefix(prefix);
    std::string where = "BTF";
    if (fns.empty()) {
        fns = k.kallsyms_with_prefix(prefix);
        where = "kallsyms";
    }
    if (fns.empty())
        return false;
    std::sort(fns.begin(), fns.end());
    const size_t shown = std::min<size_t>(fns.size(), 3);
    s.evidence.push_back(fmt::format(
        "{}() in {}{}", fmt::join(fns.begin(), fns.begin() + long(shown), "(), "), where,
        fns.size() > shown ? fmt::format(" (and {} more)", fns.size() - shown) : std::string()));
    return true;
}

void detect_no_direct_map(const BtfView& k, SeriesFingerprint& fp) {
    auto& s = fp.no_direct_map;
    bool zap = find_function(k, "folio_zap_direct_map", s);
    bool restore = find_function(k, "folio_restore_direct_map", s);
    fp.as_no_direct_map = k.enum_value("mapping_flags", "AS_NO_DIRECT_MAP");
    if (fp.as_no_direct_map)
        s.evidence.push_back(
            fmt::format("AS_NO_DIRECT_MAP = {} in enum mapping_flags", *fp.as_no_direct_map));
    if (auto params = k.param_types("set_direct_map_invalid_noflush"); params && !params->empty()) {
        fp.set_direct_map_arg_type = params->front();
        fp.set_direct_map_arg = direct_map_arg_of(params->front());
        if (fp.set_direct_map_arg == DirectMapArg::address)
            s.evidence.push_back(fmt::format("set_direct_map_invalid_noflush({}) takes an address",
                                             params->front()));
    }
    s.present = zap || restore || fp.as_no_direct_map.has_value();
}

void detect_write(const BtfView& k, SeriesFingerprint& fp) {
    auto& s = fp.write;
    bool begin = find_function(k, "kvm_gmem_write_begin", s);
    bool end = find_function(k, "kvm_gmem_write_end", s);
    s.present = begin || end || find_prefix(k, "kvm_gmem_write", s);
}

// The in-place conversion struct: every field gmemstress writes or reads must
// be found by name, else the layout is not one it knows.
void detect_conversion(const BtfView& k, SeriesFingerprint& fp) {
    auto& s = fp.conversion;
    if (auto st = k.find_struct("kvm_memory_attributes2")) {
        s.present = true;
        s.evidence.push_back(
            fmt::format("struct kvm_memory_attributes2 ({} bytes) in BTF", st->size));
        Attrs2Layout l;
        l.size = st->size;
        const BtfMember* addr = st->member("offset");
        if (!addr)
            addr = st->member("address");
        const BtfMember* size = st->member("size");
        const BtfMember* attrs = st->member("attributes");
        const BtfMember* flags = st->member("flags");
        std::vector<std::string> missing;
        if (!addr)
            missing.push_back("offset/address");
        if (!size)
            missing.push_back("size");
        if (!attrs)
            missing.push_back("attributes");
        if (!flags)
            missing.push_back("flags");
        if (!missing.empty()) {
            fp.attrs2_problem = fmt::format("struct kvm_memory_attributes2 in BTF has no {}",
                                            fmt::join(missing, ", "));
            return;
        }
        l.address = addr->offset;
        l.size_field = size->offset;
        l.attributes = attrs->offset;
        l.flags = flags->offset;
        if (const BtfMember* eo = st->member("error_offset"))
            l.error_offset = eo->offset;
        else
            l.error_offset.reset();
        fp.attrs2 = l;
        return;
    }
    s.present = find_function(k, "kvm_gmem_set_attributes", s);
}

void detect_hugetlb(const BtfView& k, SeriesFingerprint& fp) {
    auto& s = fp.hugetlb;
    bool fns = find_prefix(k, "kvm_gmem_hugetlb_", s);
    if (auto st = k.find_struct("kvm_create_guest_memfd")) {
        fp.create_guest_memfd_size = st->size;
        if (const BtfMember* m = st->member("page_order")) {
            fp.page_order_offset = m->offset;
            s.evidence.push_back(
                fmt::format("struct kvm_create_guest_memfd has page_order (offset {})", m->offset));
        }
    }
    s.present = fns || fp.page_order_offset.has_value();
}

} // namespace

SeriesFingerprint fingerprint_series(const BtfView& k) {
    SeriesFingerprint fp;
    fp.btf = k.btf_available();
    fp.kallsyms = k.kallsyms_available();
    if (fp.btf)
        fp.source = "BTF (" + k.btf_source() + ")" + (fp.kallsyms ? " and kallsyms" : "");
    else if (fp.kallsyms)
        fp.source = "kallsyms (no BTF)";
    else
        return fp; // "none": nothing to read
    detect_no_direct_map(k, fp);
    detect_write(k, fp);
    detect_conversion(k, fp);
    detect_hugetlb(k, fp);
    return fp;
}

// ---------------------------------------------------------------------------
namespace {

// Bits the present flag series use together, as public trees have them;
// nullopt for a combination no tree has.
std::optional<std::map<std::string, unsigned>>
known_combination(const std::vector<std::string>& present) {
    using V = std::vector<std::string>;
    if (present.empty())
        return std::map<std::string, unsigned>{};
    if (present == V{"no_direct_map"})
        return std::map<std::string, unsigned>{{"no_direct_map", uapi::kNoDirectMapBit}};
    if (present == V{"write"})
        return std::map<std::string, unsigned>{{"write", uapi::kWriteBit}};
    if (present == V{"hugetlb"})
        return std::map<std::string, unsigned>{{"hugetlb", uapi::kHugetlbBit}};
    if (present == V{"no_direct_map", "write"})
        return std::map<std::string, unsigned>{{"no_direct_map", uapi::kNoDirectMapBit},
                                               {"write", uapi::kWriteBitWithNoDirectMap}};
    return std::nullopt;
}

unsigned& bit_of(FlagBits& b, const std::string& flag) {
    if (flag == "no_direct_map")
        return b.no_direct_map;
    if (flag == "write")
        return b.write;
    return b.hugetlb;
}

std::optional<unsigned> override_of(const AbiOverrides& ov, const std::string& flag) {
    if (flag == "no_direct_map")
        return ov.no_direct_map_bit;
    if (flag == "write")
        return ov.write_bit;
    return ov.hugetlb_bit;
}

std::string upper(const std::string& flag) {
    if (flag == "no_direct_map")
        return "NO_DIRECT_MAP";
    if (flag == "write")
        return "WRITE";
    return "HUGETLB";
}

void resolve_bits(const SeriesFingerprint& fp, const AbiOverrides& ov, SeriesAbi& abi) {
    const std::vector<std::string> all = {"no_direct_map", "write", "hugetlb"};
    const auto present = fp.flag_series();
    const bool told = fp.btf || fp.kallsyms;
    const auto combo = told ? known_combination(present) : std::nullopt;
    std::map<std::string, unsigned> taken; // bit -> flag, of the flags that have one
    // Overrides first, then the series present, then names for absent ones.
    for (const auto& f : all)
        if (auto v = override_of(ov, f)) {
            bit_of(abi.bits, f) = *v;
            abi.bit_source[f] = "profile";
            taken[f] = *v;
        }
    for (const auto& f : present) {
        if (abi.bit_source.count(f))
            continue;
        if (combo) {
            bit_of(abi.bits, f) = combo->at(f);
            abi.bit_source[f] = fmt::format("fingerprint ({})", fp.combination());
            taken[f] = combo->at(f);
        } else {
            abi.unknown_bits[f] = fmt::format(
                "this kernel carries {}: no public tree has these series together, so which bit "
                "GUEST_MEMFD_FLAG_{} has is not known; set flag_bits.{} (--flag-bit {}=N)",
                fmt::join(present, " + "), upper(f), f, f);
            abi.bit_source[f] = "unknown";
        }
    }
    for (const auto& f : all) {
        if (abi.bit_source.count(f))
            continue;
        if (!told) {
            abi.unknown_bits[f] = fmt::format(
                "which guest_memfd series this kernel carries cannot be told (no BTF, no "
                "kallsyms), so the bit of GUEST_MEMFD_FLAG_{} is not known; set flag_bits.{} "
                "(--flag-bit {}=N)",
                upper(f), f, f);
            abi.bit_source[f] = "unknown";
            continue;
        }
        const unsigned def = bit_of(abi.bits, f); // FlagBits' named default
        std::string holder;
        for (const auto& [g, b] : taken)
            if (b == def)
                holder = g;
        if (!holder.empty()) {
            // The default bit is another flag's here: naming this flag with it
            // would ask the kernel for the other one.
            abi.unknown_bits[f] =
                fmt::format("this kernel does not carry the {} series, and bit {} is {} here; set "
                            "flag_bits.{} (--flag-bit {}=N) to use a bit anyway",
                            upper(f), def, upper(holder), f, f);
            abi.bit_source[f] = "unknown";
            continue;
        }
        abi.bit_source[f] =
            fmt::format("default: the kernel does not carry the {} series", upper(f));
        taken[f] = def;
    }
}

} // namespace

unsigned long SeriesAbi::attrs2_request() const {
    return _IOC(_IOC_READ | _IOC_WRITE, KVMIO, attrs2_nr, attrs2.size);
}

SeriesAbi resolve_series_abi(const SeriesFingerprint& fp, const AbiOverrides& ov) {
    SeriesAbi abi;
    resolve_bits(fp, ov, abi);
    abi.attrs2_nr = ov.attrs2_nr.value_or(uapi::kDefaultSetMemoryAttributes2Nr);
    if (fp.attrs2) {
        abi.attrs2 = *fp.attrs2;
        abi.attrs2_source = "BTF";
    } else {
        abi.attrs2_source =
            fp.conversion.present
                ? fmt::format("default layout ({})",
                              fp.attrs2_problem.empty() ? "struct not in BTF" : fp.attrs2_problem)
                : "default layout (the kernel has no struct kvm_memory_attributes2)";
    }
    abi.cap_attrs2 = ov.cap_attrs2.value_or(uapi::kDefaultCapMemoryAttributes2);
    return abi;
}

std::vector<std::string> check_advertised(const SeriesFingerprint& fp, const SeriesAbi& abi,
                                          std::optional<uint64_t> advertised) {
    std::vector<std::string> notes;
    if (!advertised)
        return notes;
    uint64_t explained = uapi::kGuestMemfdFlagMmap | uapi::kGuestMemfdFlagInitShared;
    for (const auto& f : fp.flag_series()) {
        if (abi.unknown_bits.count(f))
            continue;
        const unsigned bit = f == "no_direct_map" ? abi.bits.no_direct_map
                             : f == "write"       ? abi.bits.write
                                                  : abi.bits.hugetlb;
        explained |= 1ull << bit;
        if (!((*advertised >> bit) & 1))
            notes.push_back(fmt::format(
                "the kernel carries the {} series but KVM_CAP_GUEST_MEMFD_FLAGS ({:#x}) does not "
                "advertise its bit {} on a default VM",
                upper(f), *advertised, bit));
    }
    for (unsigned b = 0; b < 64; ++b)
        if (((*advertised & ~explained) >> b) & 1)
            notes.push_back(fmt::format(
                "KVM_CAP_GUEST_MEMFD_FLAGS advertises bit {}, which no series in the fingerprint "
                "({}) explains",
                b, fp.combination()));
    return notes;
}

// ---------------------------------------------------------------------------
namespace {
void put64(std::vector<uint8_t>& b, uint32_t off, uint64_t v) {
    if (off + sizeof(v) <= b.size())
        std::memcpy(b.data() + off, &v, sizeof(v));
}
} // namespace

Attrs2Buffer::Attrs2Buffer(const SeriesAbi& abi, uint64_t offset, uint64_t size,
                           uint64_t attributes, uint64_t flags)
    : bytes(std::max<size_t>(abi.attrs2.size, sizeof(uapi::kvm_memory_attributes2)), 0) {
    put64(bytes, abi.attrs2.address, offset);
    put64(bytes, abi.attrs2.size_field, size);
    put64(bytes, abi.attrs2.attributes, attributes);
    put64(bytes, abi.attrs2.flags, flags);
}

uint64_t Attrs2Buffer::error_offset(const SeriesAbi& abi) const {
    uint64_t v = 0;
    if (abi.attrs2.error_offset && *abi.attrs2.error_offset + sizeof(v) <= bytes.size())
        std::memcpy(&v, bytes.data() + *abi.attrs2.error_offset, sizeof(v));
    return v;
}

int try_set_memory_attributes2(int gmem_fd, const SeriesAbi& abi, uint64_t offset, uint64_t size,
                               uint64_t attributes, uint64_t* error_offset) {
    Attrs2Buffer a(abi, offset, size, attributes);
    static const CallOp op{"KVM_SET_MEMORY_ATTRIBUTES2",
                           "guest_memfd fd={fd} offset={0:x} size={1:x} attributes={2:x}"};
    CallScope scope(op, gmem_fd, offset, size, attributes);
    int rc = ::ioctl(gmem_fd, abi.attrs2_request(), a.data());
    int e = rc < 0 ? errno : 0;
    if (error_offset)
        *error_offset = a.error_offset(abi);
    return e;
}

int probe_set_memory_attributes2(int gmem_fd, const SeriesAbi& abi) {
    Attrs2Buffer a(abi, 0, 0, 0); // size 0: refused by every version that has the ioctl
    int rc = ::ioctl(gmem_fd, abi.attrs2_request(), a.data());
    return rc < 0 ? errno : 0;
}

} // namespace gms::kvm
