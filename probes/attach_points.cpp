#include "probes/attach_points.h"

#include "core/util.h"
#include "kvm/btf_view.h"
#include "probes/point_names.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gms::probes {

std::string to_string(Backend b) {
    switch (b) {
    case Backend::fentry:
        return "fentry";
    case Backend::kprobe:
        return "kprobe";
    case Backend::tracepoint:
        return "tracepoint";
    }
    return "?";
}

std::string to_string(ArgForm f) {
    switch (f) {
    case ArgForm::fixed:
        return "fixed";
    case ArgForm::page:
        return "struct page *";
    case ArgForm::address:
        return "direct-map address";
    case ArgForm::pfn_only:
        return "5 arguments: the page from *pfn";
    case ArgForm::pfn_and_page:
        return "6 arguments: *pfn and *page";
    }
    return "?";
}

const std::vector<AttachPointDef>& attach_points() {
    static const std::vector<AttachPointDef> points = [] {
        std::vector<AttachPointDef> p;
        auto tp = [&p](std::string name, std::string what, std::string tracepoint,
                       std::string prog) {
            AttachPointDef d;
            d.name = std::move(name);
            d.what = std::move(what);
            d.tracepoint = std::move(tracepoint);
            d.tp_prog = std::move(prog);
            p.push_back(std::move(d));
        };
        auto fn = [&p](std::string name, std::string what, std::vector<std::string> functions,
                       std::vector<std::string> fentry, std::string kp, std::string kr, int nargs,
                       bool where_present = false, ArgDecoding decoding = ArgDecoding::fixed) {
            AttachPointDef d;
            d.name = std::move(name);
            d.what = std::move(what);
            d.functions = std::move(functions);
            d.fentry_progs = std::move(fentry);
            d.kprobe_prog = std::move(kp);
            d.kretprobe_prog = std::move(kr);
            d.nargs = nargs;
            d.where_present = where_present;
            d.decoding = decoding;
            p.push_back(std::move(d));
        };
        tp(point::pc_add, "folio inserted in a watched page cache",
           "filemap/mm_filemap_add_to_page_cache", "tp_pc_add");
        tp(point::pc_del, "folio deleted from a watched page cache",
           "filemap/mm_filemap_delete_from_page_cache", "tp_pc_del");
        // One program per page-cache change: the two tracepoints above. No
        // function probe on filemap_add_folio/__filemap_add_folio/
        // __filemap_remove_folio (docs/PROBES.md, "One program per page-cache
        // change").
        fn(point::filemap_free_folio,
           "filemap_free_folio() returned (after a_ops->free_folio); NO_DIRECT_MAP files only",
           {"filemap_free_folio"}, {"fe_filemap_free"}, "kp_filemap_free", "kr_filemap_free", 2);
        fn(point::kvm_gmem_free_folio,
           "kvm_gmem_free_folio() returned (guest_memfd free_folio); once a NO_DIRECT_MAP file "
           "is watched",
           {"kvm_gmem_free_folio"}, {"fe_gmem_free"}, "kp_gmem_free", "kr_gmem_free", 1, true);
        fn(point::dm_invalid,
           "set_direct_map_invalid_noflush(page or address): page leaves the direct map",
           {"set_direct_map_invalid_noflush"}, {"fe_dm_invalid"}, "kp_dm_invalid", "", 1, false,
           ArgDecoding::direct_map);
        fn(point::dm_default, "set_direct_map_default_noflush(page or address): page restored",
           {"set_direct_map_default_noflush"}, {"fe_dm_default"}, "kp_dm_default", "", 1, false,
           ArgDecoding::direct_map);
        fn(point::dm_valid, "set_direct_map_valid_noflush(page or address, nr, valid)",
           {"set_direct_map_valid_noflush"}, {"fe_dm_valid"}, "kp_dm_valid", "", 3, true,
           ArgDecoding::direct_map);
        fn(point::folio_zap, "folio_zap_direct_map(folio) (NO_DIRECT_MAP series)",
           {"folio_zap_direct_map"}, {"fe_folio_zap"}, "kp_folio_zap", "", 1, true);
        fn(point::folio_restore, "folio_restore_direct_map(folio) (NO_DIRECT_MAP series)",
           {"folio_restore_direct_map"}, {"fe_folio_restore"}, "kp_folio_restore", "", 1, true);
        fn(point::get_pfn, "kvm_gmem_get_pfn() returned: pfn handed to the guest, folio uptodate?",
           {"kvm_gmem_get_pfn"}, {"fe_get_pfn"}, "kp_get_pfn", "kr_get_pfn", -1, false,
           ArgDecoding::get_pfn);
        fn(point::user_fault,
           "kvm_gmem_fault_user_mapping() returned: page mapped to host userspace",
           {"kvm_gmem_fault_user_mapping"}, {"fe_user_fault"}, "kp_user_fault", "kr_user_fault", 1);
        fn(point::fallocate, "kvm_gmem_fallocate() (allocate / punch hole)", {"kvm_gmem_fallocate"},
           {"fe_fallocate"}, "kp_fallocate", "kr_fallocate", 4);
        fn(point::populate, "kvm_gmem_populate() result (SNP/TDX only)", {"kvm_gmem_populate"},
           {"fe_populate"}, "", "kr_populate", -1, true);
        fn(point::release, "kvm_gmem_release(): the file's last reference", {"kvm_gmem_release"},
           {"fe_release"}, "kp_release", "", 2);
        fn(point::split, "folio split entry and return",
           {"__folio_split", "split_huge_page_to_list_to_order"},
           {"fe_split_enter", "fe_split_return"}, "kp_split_enter", "kr_split_return", -1, true);
        tp(point::kvm_page_fault, "kvm:kvm_page_fault (counted)", "kvm/kvm_page_fault",
           "tp_kvm_page_fault");
        tp(point::spte_set, "kvmmmu:kvm_mmu_set_spte (counted)", "kvmmmu/kvm_mmu_set_spte",
           "tp_spte_set");
        tp(point::spte_changed, "kvmmmu:kvm_tdp_mmu_spte_changed (counted)",
           "kvmmmu/kvm_tdp_mmu_spte_changed", "tp_spte_changed");
        tp(point::lock_contention_begin, "lock:contention_begin (counted, timed)",
           "lock/contention_begin", "tp_lock_begin");
        tp(point::lock_contention_end, "lock:contention_end", "lock/contention_end", "tp_lock_end");
        // folio_release: the final free of pfns that left a watched page cache.
        tp(point::page_free, "kmem:mm_page_free of pfns that left a watched guest_memfd",
           "kmem/mm_page_free", "tp_page_free");
        // invalidation_balance: guest_memfd operations, memslot bindings and
        // the KVM MMU invalidations made inside those operations.
        fn(point::inval_punch, "kvm_gmem_fallocate(PUNCH_HOLE) entry and return (invalidations)",
           {"kvm_gmem_fallocate"}, {"fe_inval_punch_in", "fe_inval_punch_out"}, "kp_inval_punch",
           "kr_inval_punch", 4);
        fn(point::inval_release, "kvm_gmem_release() entry and return (invalidations)",
           {"kvm_gmem_release"}, {"fe_inval_release_in", "fe_inval_release_out"},
           "kp_inval_release", "kr_inval_release", 2);
        fn(point::inval_bind, "a memslot bound to a guest_memfd range (commit/bind returned 0)",
           {"kvm_gmem_commit_memory_region", "kvm_gmem_bind"}, {"fe_inval_bind"}, "kp_inval_bind",
           "kr_inval_bind", -1);
        fn(point::inval_unbind, "kvm_gmem_unbind(slot): a memslot's binding removed",
           {"kvm_gmem_unbind"}, {"fe_inval_unbind"}, "kp_inval_unbind", "", 1);
        fn(point::mmu_inval_start, "kvm_mmu_invalidate_start(kvm) in a punch or release",
           {"kvm_mmu_invalidate_start", "kvm_mmu_invalidate_begin"}, {"fe_mmu_inval_start"},
           "kp_mmu_inval_start", "", 1);
        fn(point::mmu_inval_end, "kvm_mmu_invalidate_end(kvm) in a punch or release",
           {"kvm_mmu_invalidate_end"}, {"fe_mmu_inval_end"}, "kp_mmu_inval_end", "", 1);
        fn(point::mmu_unmap, "kvm_mmu_unmap_gfn_range(kvm, range) in a punch or release",
           {"kvm_mmu_unmap_gfn_range"}, {"fe_mmu_unmap"}, "kp_mmu_unmap", "", 2);
        fn(point::notifier_start, "KVM's MMU notifier range_start (invalidation by host address)",
           {"kvm_mmu_notifier_invalidate_range_start"},
           {"fe_notifier_start_in", "fe_notifier_start_out"}, "kp_notifier_start_in",
           "kr_notifier_start_out", 2);
        fn(point::notifier_end, "KVM's MMU notifier range_end",
           {"kvm_mmu_notifier_invalidate_range_end"}, {"fe_notifier_end_in", "fe_notifier_end_out"},
           "kp_notifier_end_in", "kr_notifier_end_out", 2);
        return p;
    }();
    return points;
}

std::vector<std::string> attach_point_names() {
    std::vector<std::string> out;
    for (const auto& p : attach_points())
        out.push_back(p.name);
    return out;
}

const AttachPointDef* find_attach_point(const std::string& name) {
    for (const auto& p : attach_points())
        if (p.name == name)
            return &p;
    return nullptr;
}

std::set<std::string> functions_with_bpf_trampoline(std::istream& in) {
    std::set<std::string> out;
    std::string line, fn;
    while (std::getline(in, line)) {
        if (line.empty())
            continue;
        if (line[0] != ' ' && line[0] != '\t')
            fn = line.substr(0, line.find_first_of(" \t"));
        else if (line.find("direct") != std::string::npos && !fn.empty())
            out.insert(fn);
    }
    return out;
}

// ---------------------------------------------------------------------------
std::string ensure_tracefs(std::string* err) {
    for (const char* dir : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
        struct stat st {};
        if (::stat(fmt::format("{}/events", dir).c_str(), &st) == 0 && S_ISDIR(st.st_mode))
            return dir;
    }
    if (::mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) == 0)
        return "/sys/kernel/tracing";
    if (err)
        *err =
            fmt::format("tracefs not mounted and mount -t tracefs /sys/kernel/tracing failed: {}",
                        errno_name(errno));
    return "";
}

KernelTargets::KernelTargets() : btf_(std::make_unique<kvm::KernelBtf>()) {
    tracefs_ = ensure_tracefs(&tracefs_error_);
    // kprobe-able functions: ftrace's list is exact (no notrace, no inlined
    // copies); without it (lockdown), kallsyms' text symbols.
    if (!tracefs_.empty()) {
        std::ifstream in(tracefs_ + "/available_filter_functions");
        std::string line;
        while (in && std::getline(in, line)) {
            auto sp = line.find_first_of(" \t");
            ftrace_funcs_.insert(line.substr(0, sp));
        }
        if (!ftrace_funcs_.empty())
            kprobe_source_ = "available_filter_functions";
    }
    if (ftrace_funcs_.empty()) {
        std::ifstream in("/proc/kallsyms");
        std::string addr, type, name;
        while (in >> addr >> type) {
            std::getline(in, name);
            auto b = name.find_first_not_of(" \t");
            name = b == std::string::npos ? "" : name.substr(b);
            auto sp = name.find_first_of(" \t");
            if (sp != std::string::npos)
                name.resize(sp);
            if (type == "t" || type == "T")
                ftrace_funcs_.insert(name);
        }
        if (!ftrace_funcs_.empty())
            kprobe_source_ = "kallsyms";
    }
}

KernelTargets::~KernelTargets() = default;

std::optional<int> KernelTargets::btf_func_args(const std::string& fn) const {
    return btf_->func_args(fn);
}

std::optional<std::vector<std::string>>
KernelTargets::btf_param_types(const std::string& fn) const {
    return btf_->param_types(fn);
}

bool KernelTargets::kprobe_target(const std::string& fn) const {
    return ftrace_funcs_.count(fn) != 0;
}

bool KernelTargets::tracepoint_exists(const std::string& cat_name) const {
    if (tracefs_.empty())
        return false;
    struct stat st {};
    return ::stat(fmt::format("{}/events/{}", tracefs_, cat_name).c_str(), &st) == 0 &&
           S_ISDIR(st.st_mode);
}

} // namespace gms::probes
