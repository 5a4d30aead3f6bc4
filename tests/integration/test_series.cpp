// The series fingerprint against this machine's real BTF (/sys/kernel/btf)
// and /proc/kallsyms. Positive controls first (things every kernel with
// guest_memfd has must be found, so "no series" cannot come from reading
// nothing), then the verdict, cross-checked with kallsyms read here.
#include "core/caps.h"
#include "kvm/btf_view.h"
#include "reports/render.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <fstream>
#include <set>
#include <unistd.h>

using namespace gms;
using Catch::Matchers::ContainsSubstring;

namespace {

// Text symbols of /proc/kallsyms, read independently of kvm/btf_view.cpp.
std::set<std::string> kallsyms() {
    std::set<std::string> out;
    std::ifstream in("/proc/kallsyms");
    std::string addr, type, name, rest;
    while (in >> addr >> type >> name) {
        std::getline(in, rest);
        if (type == "t" || type == "T")
            out.insert(name);
    }
    return out;
}

bool has_prefix(const std::set<std::string>& syms, const std::string& prefix) {
    auto it = syms.lower_bound(prefix);
    return it != syms.end() && it->rfind(prefix, 0) == 0;
}

} // namespace

TEST_CASE("series: this kernel's BTF is read, and carries no series", "[series]") {
    if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0)
        SKIP("no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF)");
    kvm::KernelBtf k;
    REQUIRE(k.btf_available());

    // Positive controls: the view finds what every such kernel has.
    CHECK(k.enum_value("mapping_flags", "AS_UNEVICTABLE").has_value());
    auto dm = k.param_types("set_direct_map_invalid_noflush");
    REQUIRE(dm);
    REQUIRE(dm->size() == 1);
    auto syms = kallsyms();
    REQUIRE_FALSE(syms.empty());
    const bool ndm_in_kallsyms = syms.count("folio_zap_direct_map") != 0;
    // Without NO_DIRECT_MAP the parameter is a struct page *; with it an address.
    CHECK(kvm::direct_map_arg_of(dm->front()) ==
          (ndm_in_kallsyms ? kvm::DirectMapArg::address : kvm::DirectMapArg::page));
    if (k.btf_has_function("kvm_gmem_get_pfn")) {
        // KVM's BTF is there (built in or a loaded module): its uapi struct too.
        auto s = k.find_struct("kvm_create_guest_memfd");
        REQUIRE(s);
        CHECK(s->size == sizeof(uapi::kvm_create_guest_memfd));
        REQUIRE(s->member("flags"));
        CHECK(s->member("flags")->offset == 8);
        auto gp = k.param_types("kvm_gmem_get_pfn");
        REQUIRE(gp);
        CHECK((gp->size() == 5 || gp->size() == 6));
        CHECK(gp->at(3) == "kvm_pfn_t *");
    }

    auto fp = kvm::fingerprint_series(k);
    INFO("fingerprint: " << fp.combination() << " from " << fp.source);
    CHECK(fp.btf);
    CHECK_THAT(fp.source, ContainsSubstring("vmlinux"));
    // The kernels this suite runs on (the host, Debian's in the lab) carry
    // none of the series; where kallsyms disagrees, the fingerprint must too.
    CHECK(fp.no_direct_map.present == ndm_in_kallsyms);
    CHECK(fp.write.present == (syms.count("kvm_gmem_write_begin") != 0));
    if (!ndm_in_kallsyms && !syms.count("kvm_gmem_write_begin") &&
        !syms.count("kvm_gmem_set_attributes") && !has_prefix(syms, "kvm_gmem_hugetlb_")) {
        CHECK(fp.combination() == "none");
        CHECK_FALSE(fp.attrs2);
        CHECK_FALSE(fp.page_order_offset);
    }

    // caps says the same, and renders it.
    Caps c = detect_caps();
    CHECK(c.series.fingerprint.combination() == fp.combination());
    auto j = report::series_json(c.series);
    CHECK(j.at("combination") == fp.combination());
    CHECK(j.at("abi").at("set_memory_attributes2").at("size") == 128);
    CHECK_THAT(report::series_line(c.series), ContainsSubstring("from BTF"));
}
