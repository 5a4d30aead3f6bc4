// Event names and JSON (see event.h). The name tables are checked against
// the BPF enums of probes/events.h at compile time.
#include "probes/event.h"

#include "probes/events.h"

#include <array>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <type_traits>

namespace gms::probes {

namespace {

// Each kernel record type has the value of its enum gms_ev_type.
static_assert(static_cast<uint32_t>(EventType::pc_add) == GMS_EV_PC_ADD);
static_assert(static_cast<uint32_t>(EventType::pc_del) == GMS_EV_PC_DEL);
static_assert(static_cast<uint32_t>(EventType::add_folio) == GMS_EV_ADD_FOLIO);
static_assert(static_cast<uint32_t>(EventType::remove_folio) == GMS_EV_REMOVE_FOLIO);
static_assert(static_cast<uint32_t>(EventType::free_folio) == GMS_EV_FREE_FOLIO);
static_assert(static_cast<uint32_t>(EventType::direct_map) == GMS_EV_DIRECT_MAP);
static_assert(static_cast<uint32_t>(EventType::get_pfn) == GMS_EV_GET_PFN);
static_assert(static_cast<uint32_t>(EventType::user_fault) == GMS_EV_USER_FAULT);
static_assert(static_cast<uint32_t>(EventType::fallocate) == GMS_EV_FALLOCATE);
static_assert(static_cast<uint32_t>(EventType::populate) == GMS_EV_POPULATE);
static_assert(static_cast<uint32_t>(EventType::release) == GMS_EV_RELEASE);
static_assert(static_cast<uint32_t>(EventType::split) == GMS_EV_SPLIT);
static_assert(static_cast<uint32_t>(EventType::inval) == GMS_EV_INVAL);
static_assert(static_cast<uint32_t>(EventType::page_free) == GMS_EV_PAGE_FREE);
// Markers stay clear of the kernel's types.
static_assert(static_cast<uint32_t>(EventType::gmem_created) >= GMS_EV_TYPE_MAX);

struct TypeName {
    EventType type;
    std::string_view name;
};

constexpr auto kTypeNames = std::to_array<TypeName>({
    {EventType::pc_add, "pc_add"},
    {EventType::pc_del, "pc_del"},
    {EventType::add_folio, "add_folio"},
    {EventType::remove_folio, "remove_folio"},
    {EventType::free_folio, "free_folio"},
    {EventType::direct_map, "direct_map"},
    {EventType::get_pfn, "get_pfn"},
    {EventType::user_fault, "user_fault"},
    {EventType::fallocate, "fallocate"},
    {EventType::populate, "populate"},
    {EventType::release, "release"},
    {EventType::split, "split"},
    {EventType::gmem_created, "gmem_created"},
    {EventType::inval, "inval"},
    {EventType::page_free, "page_free"},
    {EventType::gmem_released, "gmem_released"},
    {EventType::leak_drain, "leak_drain"},
    {EventType::folio_refcount, "folio_refcount"},
});

constexpr size_t kMarkerTypes = 4; // gmem_created, gmem_released, leak_drain, folio_refcount

// Every kernel record type 1 .. GMS_EV_TYPE_MAX - 1 has exactly one name.
constexpr bool every_kernel_type_named_once() {
    for (uint32_t t = 1; t < GMS_EV_TYPE_MAX; ++t) {
        size_t n = 0;
        for (const auto& tn : kTypeNames)
            n += static_cast<uint32_t>(tn.type) == t;
        if (n != 1)
            return false;
    }
    return true;
}
static_assert(kTypeNames.size() == (GMS_EV_TYPE_MAX - 1) + kMarkerTypes,
              "one name per enum gms_ev_type value (probes/events.h) and per marker");
static_assert(every_kernel_type_named_once());

struct SrcName {
    gms_src src;
    std::string_view name;
};

// Index = enum gms_src.
constexpr auto kSrcNames = std::to_array<SrcName>({
    {GMS_SRC_UNKNOWN, "unknown"},
    {GMS_SRC_TP_PC_ADD, "tp_pc_add"},
    {GMS_SRC_TP_PC_DEL, "tp_pc_del"},
    {GMS_SRC_FILEMAP_ADD_FOLIO, "filemap_add_folio"},
    {GMS_SRC___FILEMAP_ADD_FOLIO, "__filemap_add_folio"},
    {GMS_SRC___FILEMAP_REMOVE_FOLIO, "__filemap_remove_folio"},
    {GMS_SRC_FILEMAP_FREE_FOLIO, "filemap_free_folio"},
    {GMS_SRC_KVM_GMEM_FREE_FOLIO, "kvm_gmem_free_folio"},
    {GMS_SRC_SET_DM_INVALID, "set_direct_map_invalid_noflush"},
    {GMS_SRC_SET_DM_DEFAULT, "set_direct_map_default_noflush"},
    {GMS_SRC_SET_DM_VALID, "set_direct_map_valid_noflush"},
    {GMS_SRC_FOLIO_ZAP, "folio_zap_direct_map"},
    {GMS_SRC_FOLIO_RESTORE, "folio_restore_direct_map"},
    {GMS_SRC_KVM_GMEM_GET_PFN, "kvm_gmem_get_pfn"},
    {GMS_SRC_KVM_GMEM_FAULT_USER, "kvm_gmem_fault_user_mapping"},
    {GMS_SRC_KVM_GMEM_FALLOCATE, "kvm_gmem_fallocate"},
    {GMS_SRC_KVM_GMEM_POPULATE, "kvm_gmem_populate"},
    {GMS_SRC_KVM_GMEM_RELEASE, "kvm_gmem_release"},
    {GMS_SRC_FOLIO_SPLIT, "folio_split"},
    {GMS_SRC_TP_PAGE_FREE, "tp_page_free"},
    {GMS_SRC_INVAL_PUNCH, "inval_punch"},
    {GMS_SRC_INVAL_RELEASE, "inval_release"},
    {GMS_SRC_INVAL_BIND, "inval_bind"},
    {GMS_SRC_INVAL_UNBIND, "inval_unbind"},
    {GMS_SRC_MMU_INVAL_START, "kvm_mmu_invalidate_start"},
    {GMS_SRC_MMU_INVAL_END, "kvm_mmu_invalidate_end"},
    {GMS_SRC_MMU_UNMAP, "kvm_mmu_unmap_gfn_range"},
});

constexpr bool src_names_in_enum_order() {
    for (size_t i = 0; i < kSrcNames.size(); ++i)
        if (static_cast<size_t>(kSrcNames[i].src) != i)
            return false;
    return true;
}
static_assert(kSrcNames.size() == GMS_SRC_MAX, "one name per enum gms_src value (probes/events.h)");
static_assert(src_names_in_enum_order(), "kSrcNames is indexed by enum gms_src");

std::string dev_str(uint32_t dev) {
    return fmt::format("{}:{}", dev >> 20, dev & 0xfffff);
}

} // namespace

std::string to_string(EventType t) {
    for (const auto& [v, n] : kTypeNames)
        if (v == t)
            return std::string(n);
    return fmt::format("type#{}", static_cast<uint32_t>(t));
}

std::optional<EventType> event_type_from_string(std::string_view s) {
    for (const auto& [v, n] : kTypeNames)
        if (n == s)
            return v;
    return std::nullopt;
}

std::string src_name(uint16_t src) {
    return src < kSrcNames.size() ? std::string(kSrcNames[src].name) : fmt::format("src#{}", src);
}

std::optional<uint16_t> src_from_name(std::string_view s) {
    for (size_t i = 0; i < kSrcNames.size(); ++i)
        if (kSrcNames[i].name == s)
            return static_cast<uint16_t>(i);
    return std::nullopt;
}

std::string describe_folio(const Event& e) {
    return fmt::format("pfn={:#x} dev={} ino={} index={} order={} seq={}", e.pfn, dev_str(e.dev),
                       e.ino, e.index, e.order, e.seq);
}

// ---------------------------------------------------------------------------
// JSON (recorded streams)
// ---------------------------------------------------------------------------
nlohmann::json to_json(const Event& e) {
    nlohmann::json j;
    j["type"] = to_string(e.type);
    j["seq"] = e.seq;
    j["ts"] = e.ts_ns;
    if (e.src)
        j["src"] = src_name(e.src);
    if (e.flags)
        j["flags"] = e.flags;
    if (e.cpu)
        j["cpu"] = e.cpu;
    if (e.tgid)
        j["tgid"] = e.tgid;
    auto put = [&j](const char* k, auto v) {
        if (v)
            j[k] = v;
    };
    put("pfn", e.pfn);
    put("dev", e.dev);
    put("ino", e.ino);
    put("index", e.index);
    put("order", e.order);
    put("nr", e.nr);
    put("ret", e.ret);
    put("mode", e.mode);
    put("offset", e.offset);
    put("len", e.len);
    put("kvm", e.kvm);
    put("end", e.end);
    put("tid", e.tid);
    put("kind", e.kind);
    put("op", e.op);
    if (e.type == EventType::gmem_created) {
        j["gmem_flags"] = e.gmem_flags;
        j["flags_known"] = e.flags_known;
        j["no_direct_map"] = e.no_direct_map;
        j["preexisting"] = e.preexisting;
    }
    return j;
}

Event event_from_json(const nlohmann::json& j) {
    if (!j.is_object())
        throw std::invalid_argument("event is not a JSON object");
    Event e;
    auto type = j.value("type", std::string());
    auto t = event_type_from_string(type);
    if (!t)
        throw std::invalid_argument(fmt::format("unknown event type '{}'", type));
    e.type = *t;
    auto get_u = [&j](const char* k, auto& out) {
        auto it = j.find(k);
        if (it == j.end())
            return;
        if (!it->is_number_integer())
            throw std::invalid_argument(fmt::format("field '{}' is not an integer", k));
        out = it->get<std::remove_reference_t<decltype(out)>>();
    };
    get_u("seq", e.seq);
    get_u("ts", e.ts_ns);
    if (auto it = j.find("src"); it != j.end()) {
        auto s = src_from_name(it->get<std::string>());
        if (!s)
            throw std::invalid_argument(fmt::format("unknown src '{}'", it->get<std::string>()));
        e.src = *s;
    }
    get_u("flags", e.flags);
    get_u("cpu", e.cpu);
    get_u("tgid", e.tgid);
    get_u("pfn", e.pfn);
    get_u("dev", e.dev);
    get_u("ino", e.ino);
    get_u("index", e.index);
    get_u("order", e.order);
    get_u("nr", e.nr);
    get_u("ret", e.ret);
    get_u("mode", e.mode);
    get_u("offset", e.offset);
    get_u("len", e.len);
    get_u("kvm", e.kvm);
    get_u("end", e.end);
    get_u("tid", e.tid);
    get_u("kind", e.kind);
    get_u("op", e.op);
    get_u("gmem_flags", e.gmem_flags);
    e.flags_known = j.value("flags_known", true);
    e.no_direct_map = j.value("no_direct_map", false);
    e.preexisting = j.value("preexisting", false);
    return e;
}

} // namespace gms::probes
