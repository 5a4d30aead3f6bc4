// The series fingerprint (kvm/series.h) against fake kernels: which series a
// BTF view shows, the ABI taken from them, overrides, the combinations no
// public tree has, and a profile resolved with it. Pure: no BTF is read.
#include "core/error.h"
#include "core/profile.h"
#include "kvm/series.h"
#include "workloads/workload.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cstring>
#include <map>
#include <set>

using namespace gms;
using namespace gms::kvm;
using Catch::Matchers::ContainsSubstring;

namespace {

struct FakeBtf final : BtfView {
    bool btf = true, syms = true;
    std::set<std::string> functions; // in BTF
    std::set<std::string> kallsyms;
    std::map<std::pair<std::string, std::string>, int64_t> enums;
    std::map<std::string, BtfStruct> structs;
    std::map<std::string, std::vector<std::string>> params;

    bool btf_available() const override { return btf; }
    std::string btf_source() const override { return "vmlinux + kvm"; }
    bool kallsyms_available() const override { return syms; }
    bool btf_has_function(const std::string& n) const override { return btf && functions.count(n); }
    std::vector<std::string> btf_functions_with_prefix(const std::string& p) const override {
        std::vector<std::string> v;
        for (const auto& f : functions)
            if (btf && f.rfind(p, 0) == 0)
                v.push_back(f);
        return v;
    }
    bool kallsyms_has(const std::string& n) const override { return syms && kallsyms.count(n); }
    std::vector<std::string> kallsyms_with_prefix(const std::string& p) const override {
        std::vector<std::string> v;
        for (const auto& f : kallsyms)
            if (syms && f.rfind(p, 0) == 0)
                v.push_back(f);
        return v;
    }
    std::optional<int64_t> enum_value(const std::string& e, const std::string& v) const override {
        auto it = enums.find({e, v});
        if (!btf || it == enums.end())
            return std::nullopt;
        return it->second;
    }
    std::optional<BtfStruct> find_struct(const std::string& n) const override {
        auto it = structs.find(n);
        if (!btf || it == structs.end())
            return std::nullopt;
        return it->second;
    }
    std::optional<std::vector<std::string>> param_types(const std::string& fn) const override {
        auto it = params.find(fn);
        if (!btf || it == params.end())
            return std::nullopt;
        return it->second;
    }
    // A function in BTF and kallsyms, as a non-inlined function is.
    void fn(const std::string& n) {
        functions.insert(n);
        kallsyms.insert(n);
    }
};

// Linux 7.3 as Debian builds it: none of the series.
FakeBtf linux_7_3() {
    FakeBtf k;
    k.fn("set_direct_map_invalid_noflush");
    k.fn("kvm_gmem_get_pfn");
    k.params["set_direct_map_invalid_noflush"] = {"struct page *"};
    k.enums[{"mapping_flags", "AS_UNEVICTABLE"}] = 3;
    k.structs["kvm_create_guest_memfd"] = {64,
                                           {{"size", 0, 8}, {"flags", 8, 8}, {"reserved", 16, 48}}};
    return k;
}

// + NO_DIRECT_MAP v12 (mm and KVM parts).
void add_ndm_v12(FakeBtf& k) {
    k.fn("folio_zap_direct_map");
    k.fn("folio_restore_direct_map");
    k.enums[{"mapping_flags", "AS_NO_DIRECT_MAP"}] = 11;
    k.params["set_direct_map_invalid_noflush"] = {"const void *"};
}

void add_write(FakeBtf& k) {
    k.fn("kvm_gmem_write_begin");
    k.fn("kvm_gmem_write_end");
}

void add_hugetlb(FakeBtf& k) {
    k.fn("kvm_gmem_hugetlb_alloc_folio");
    k.structs["kvm_create_guest_memfd"] = {
        64, {{"size", 0, 8}, {"flags", 8, 8}, {"page_order", 16, 1}, {"reserved", 24, 40}}};
}

// The in-place conversion series' struct, as BTF shows it (union flattened).
void add_conversion(FakeBtf& k) {
    k.structs["kvm_memory_attributes2"] = {128,
                                           {{"address", 0, 8},
                                            {"offset", 0, 8},
                                            {"size", 8, 8},
                                            {"attributes", 16, 8},
                                            {"flags", 24, 8},
                                            {"error_offset", 32, 8},
                                            {"reserved", 40, 88}}};
}

} // namespace

TEST_CASE("series: a kernel without any series", "[series]") {
    auto fp = fingerprint_series(linux_7_3());
    CHECK(fp.combination() == "none");
    CHECK(fp.flag_series().empty());
    CHECK(fp.set_direct_map_arg == DirectMapArg::page);
    CHECK_FALSE(fp.as_no_direct_map);
    CHECK_FALSE(fp.page_order_offset);
    CHECK(fp.create_guest_memfd_size == 64u);
    CHECK_THAT(fp.source, ContainsSubstring("BTF (vmlinux + kvm)"));
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.unknown_bits.empty());
    CHECK(abi.bits.no_direct_map == uapi::kDefaultNoDirectMapBit);
    CHECK(abi.bits.write == uapi::kDefaultWriteBit);
    CHECK(abi.bits.hugetlb == uapi::kDefaultHugetlbBit);
    CHECK_THAT(abi.bit_source.at("write"), ContainsSubstring("does not carry the WRITE series"));
    // KVM_SET_MEMORY_ATTRIBUTES2 = _IOWR(KVMIO, 0xd2, 128 bytes); no capability asked.
    CHECK(abi.attrs2.size == 128);
    CHECK(abi.attrs2_request() == 0xc080aed2ul);
    CHECK(abi.cap_attrs2 == uapi::kCapMemoryAttributes2None);
    CHECK(check_advertised(fp, abi, 0x3).empty());
}

TEST_CASE("series: NO_DIRECT_MAP v12", "[series]") {
    auto k = linux_7_3();
    add_ndm_v12(k);
    auto fp = fingerprint_series(k);
    CHECK(fp.combination() == "no_direct_map");
    CHECK(fp.no_direct_map.present);
    CHECK(fp.as_no_direct_map == 11);
    CHECK(fp.set_direct_map_arg == DirectMapArg::address);
    CHECK(fp.set_direct_map_arg_type == "const void *");
    CHECK(fp.no_direct_map.evidence.size() == 4);
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.bits.no_direct_map == 2);
    CHECK_THAT(abi.bit_source.at("no_direct_map"), ContainsSubstring("fingerprint"));
    CHECK(abi.bits.write == 3);   // absent: its name, apart from bit 2
    CHECK(abi.bits.hugetlb == 4); // likewise
    CHECK(abi.unknown_bits.empty());
    CHECK(check_advertised(fp, abi, 0x7).empty());
    auto notes = check_advertised(fp, abi, 0x3);
    REQUIRE(notes.size() == 1);
    CHECK_THAT(notes[0], ContainsSubstring("does not advertise its bit 2"));
}

TEST_CASE("series: NO_DIRECT_MAP and WRITE together (bit 3 for WRITE)", "[series]") {
    auto k = linux_7_3();
    add_ndm_v12(k);
    add_write(k);
    auto fp = fingerprint_series(k);
    CHECK(fp.combination() == "no_direct_map+write");
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.bits.no_direct_map == 2);
    CHECK(abi.bits.write == uapi::kWriteBitWithNoDirectMap);
    CHECK(check_advertised(fp, abi, 0xf).empty());
    // An advertised bit nothing explains is pointed out.
    auto notes = check_advertised(fp, abi, 0x1f);
    REQUIRE(notes.size() == 1);
    CHECK_THAT(notes[0], ContainsSubstring("advertises bit 4"));
}

TEST_CASE("series: WRITE alone takes bit 2, so NO_DIRECT_MAP has none", "[series]") {
    auto k = linux_7_3();
    add_write(k);
    auto fp = fingerprint_series(k);
    CHECK(fp.combination() == "write");
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.bits.write == uapi::kWriteBit);
    REQUIRE(abi.unknown_bits.count("no_direct_map"));
    CHECK_THAT(abi.unknown_bits.at("no_direct_map"), ContainsSubstring("bit 2 is WRITE here"));
    CHECK(abi.bits.hugetlb == 4);
    // An explicit bit is the user's.
    AbiOverrides ov;
    ov.no_direct_map_bit = 9;
    abi = resolve_series_abi(fp, ov);
    CHECK(abi.bits.no_direct_map == 9);
    CHECK(abi.bit_source.at("no_direct_map") == "profile");
    CHECK(abi.unknown_bits.empty());
}

TEST_CASE("series: HugeTLB (functions, page_order) takes bit 2", "[series]") {
    auto k = linux_7_3();
    add_hugetlb(k);
    auto fp = fingerprint_series(k);
    CHECK(fp.combination() == "hugetlb");
    CHECK(fp.page_order_offset == 16u);
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.bits.hugetlb == uapi::kHugetlbBit);
    CHECK(abi.unknown_bits.count("no_direct_map"));
    // page_order alone (the functions inlined) is enough.
    k.functions.erase("kvm_gmem_hugetlb_alloc_folio");
    k.kallsyms.erase("kvm_gmem_hugetlb_alloc_folio");
    CHECK(fingerprint_series(k).hugetlb.present);
}

TEST_CASE("series: a combination no public tree has is a message, never a guess", "[series]") {
    auto k = linux_7_3();
    add_ndm_v12(k);
    add_hugetlb(k);
    auto fp = fingerprint_series(k);
    CHECK(fp.combination() == "no_direct_map+hugetlb");
    auto abi = resolve_series_abi(fp, {});
    REQUIRE(abi.unknown_bits.count("no_direct_map"));
    REQUIRE(abi.unknown_bits.count("hugetlb"));
    CHECK_THAT(abi.unknown_bits.at("hugetlb"), ContainsSubstring("no public tree"));
    CHECK_THAT(abi.unknown_bits.at("hugetlb"), ContainsSubstring("flag_bits.hugetlb"));
    CHECK_FALSE(abi.unknown_bits.count("write")); // absent, bit 3 free
    // No note about bits whose meaning is unknown.
    CHECK(check_advertised(fp, abi, 0x7).size() == 1); // bit 2: unexplained
    AbiOverrides ov;
    ov.no_direct_map_bit = 2;
    ov.hugetlb_bit = 5;
    abi = resolve_series_abi(fp, ov);
    CHECK(abi.unknown_bits.empty());
    CHECK(abi.bits.hugetlb == 5);
}

TEST_CASE("series: in-place conversion's struct, its size in the request", "[series]") {
    auto k = linux_7_3();
    add_conversion(k);
    auto fp = fingerprint_series(k);
    CHECK(fp.conversion.present);
    REQUIRE(fp.attrs2);
    CHECK(fp.attrs2->error_offset == 32u);
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.attrs2_source == "BTF");
    CHECK(abi.attrs2_request() == 0xc080aed2ul);

    // An earlier version: 64 bytes, no error_offset. The request follows.
    k.structs["kvm_memory_attributes2"] = {64,
                                           {{"address", 0, 8},
                                            {"size", 8, 8},
                                            {"attributes", 16, 8},
                                            {"flags", 24, 8},
                                            {"reserved", 32, 32}}};
    fp = fingerprint_series(k);
    abi = resolve_series_abi(fp, {});
    CHECK(abi.attrs2.size == 64);
    CHECK_FALSE(abi.attrs2.error_offset);
    CHECK(abi.attrs2_request() == 0xc040aed2ul);
    // The number can be overridden; the size stays the kernel's.
    AbiOverrides ov;
    ov.attrs2_nr = 0xd6;
    ov.cap_attrs2 = 300;
    abi = resolve_series_abi(fp, ov);
    CHECK(abi.attrs2_request() == 0xc040aed6ul);
    CHECK(abi.cap_attrs2 == 300);

    // A struct without a field gmemstress writes: the default layout, and why.
    k.structs["kvm_memory_attributes2"] = {64, {{"address", 0, 8}, {"size", 8, 8}}};
    fp = fingerprint_series(k);
    CHECK_FALSE(fp.attrs2);
    CHECK_THAT(fp.attrs2_problem, ContainsSubstring("no attributes, flags"));
    abi = resolve_series_abi(fp, {});
    CHECK_THAT(abi.attrs2_source, ContainsSubstring("default layout"));
    CHECK(abi.attrs2.size == 128);
}

TEST_CASE("series: the argument of KVM_SET_MEMORY_ATTRIBUTES2 laid out by the layout", "[series]") {
    SeriesAbi abi;
    abi.attrs2.size = 128;
    Attrs2Buffer b(abi, 0x3000, 0x2000, uapi::kMemoryAttributePrivate);
    REQUIRE(b.bytes.size() == 128);
    uapi::kvm_memory_attributes2 a;
    std::memcpy(&a, b.bytes.data(), sizeof(a));
    CHECK(a.offset == 0x3000);
    CHECK(a.size == 0x2000);
    CHECK(a.attributes == uapi::kMemoryAttributePrivate);
    CHECK(a.flags == 0);
    a.error_offset = 0x5000; // as the kernel writes it back
    std::memcpy(b.bytes.data(), &a, sizeof(a));
    CHECK(b.error_offset(abi) == 0x5000);
    abi.attrs2.error_offset.reset();
    CHECK(b.error_offset(abi) == 0);
}

TEST_CASE("series: kallsyms where BTF cannot tell, nothing where neither can", "[series]") {
    FakeBtf k;
    k.btf = false;
    k.kallsyms = {"folio_zap_direct_map", "kvm_gmem_write_begin"};
    auto fp = fingerprint_series(k);
    CHECK(fp.source == "kallsyms (no BTF)");
    CHECK(fp.combination() == "no_direct_map+write");
    CHECK_THAT(fp.no_direct_map.evidence.at(0), ContainsSubstring("in kallsyms"));
    CHECK(fp.set_direct_map_arg == DirectMapArg::unknown);
    auto abi = resolve_series_abi(fp, {});
    CHECK(abi.bits.write == 3);

    k.syms = false;
    fp = fingerprint_series(k);
    CHECK(fp.source == "none");
    abi = resolve_series_abi(fp, {});
    CHECK(abi.unknown_bits.size() == 3);
    CHECK_THAT(abi.unknown_bits.at("write"), ContainsSubstring("cannot be told"));
}

TEST_CASE("series: a profile takes its flag bits from the fingerprint", "[series]") {
    std::vector<profile::ParamSpec> common = {
        {"label", profile::ParamType::string, std::string(), ""}};
    profile::WorkloadSchemas schemas = {{"lifecycle", common}};
    const std::string text = "[guest_memfd]\nflags = [\"mmap\", \"write\"]\n"
                             "[[workload]]\nkind = \"lifecycle\"\n";
    auto p = profile::parse_profile(text, "p.toml", {}, schemas);
    CHECK_FALSE(p.abi_overrides.write_bit);

    auto k = linux_7_3();
    add_write(k);
    auto abi = resolve_series_abi(fingerprint_series(k), p.abi_overrides);
    profile::apply_series_abi(p, abi);
    CHECK(p.bits.write == 2);
    CHECK(p.gmem_flags == (uapi::kGuestMemfdFlagMmap | (1ull << 2)));

    // NO_DIRECT_MAP named on a kernel where bit 2 is WRITE: an error naming
    // the override, never bit 2.
    auto q = profile::parse_profile(
        "[guest_memfd]\nflags = [\"no_direct_map\"]\n[[workload]]\nkind = \"lifecycle\"\n",
        "q.toml", {}, schemas);
    try {
        profile::apply_series_abi(q, abi);
        FAIL("no_direct_map resolved to a bit");
    } catch (const UsageError& e) {
        CHECK_THAT(e.what(), ContainsSubstring("q.toml"));
        CHECK_THAT(e.what(), ContainsSubstring("flag_bits.no_direct_map"));
    }
    // --flag-bit no_direct_map=6 wins.
    auto r = profile::parse_profile(
        "[guest_memfd]\nflags = [\"no_direct_map\"]\n[[workload]]\nkind = \"lifecycle\"\n",
        "r.toml", {{"flag_bits.no_direct_map", "6", "--flag-bit no_direct_map=6"}}, schemas);
    REQUIRE(r.abi_overrides.no_direct_map_bit == 6u);
    abi = resolve_series_abi(fingerprint_series(k), r.abi_overrides);
    profile::apply_series_abi(r, abi);
    CHECK(r.gmem_flags == (1ull << 6));
}
