// Names of the attach points: the keys of Coverage, the values of
// probes.exclude and the report's probes.attach_points[].name. Defined once
// here and used by the attach-point table (attach_points.cpp), the session
// and the checkers, so a misspelt name is a compile error instead of a point
// that silently never counts as attached.
#pragma once

#include <array>
#include <string_view>

namespace gms::probes::point {

inline constexpr char pc_add[] = "pc_add";
inline constexpr char pc_del[] = "pc_del";
inline constexpr char filemap_free_folio[] = "filemap_free_folio";
inline constexpr char kvm_gmem_free_folio[] = "kvm_gmem_free_folio";
inline constexpr char dm_invalid[] = "dm_invalid";
inline constexpr char dm_default[] = "dm_default";
inline constexpr char dm_valid[] = "dm_valid";
inline constexpr char folio_zap[] = "folio_zap";
inline constexpr char folio_restore[] = "folio_restore";
inline constexpr char get_pfn[] = "get_pfn";
inline constexpr char user_fault[] = "user_fault";
inline constexpr char fallocate[] = "fallocate";
inline constexpr char populate[] = "populate";
inline constexpr char release[] = "release";
inline constexpr char split[] = "split";
inline constexpr char kvm_page_fault[] = "kvm_page_fault";
inline constexpr char spte_set[] = "spte_set";
inline constexpr char spte_changed[] = "spte_changed";
inline constexpr char lock_contention_begin[] = "lock_contention_begin";
inline constexpr char lock_contention_end[] = "lock_contention_end";
inline constexpr char page_free[] = "page_free";
inline constexpr char inval_punch[] = "inval_punch";
inline constexpr char inval_release[] = "inval_release";
inline constexpr char inval_bind[] = "inval_bind";
inline constexpr char inval_unbind[] = "inval_unbind";
inline constexpr char mmu_inval_start[] = "mmu_inval_start";
inline constexpr char mmu_inval_end[] = "mmu_inval_end";
inline constexpr char mmu_unmap[] = "mmu_unmap";
inline constexpr char notifier_start[] = "notifier_start";
inline constexpr char notifier_end[] = "notifier_end";

// Every name above, in the order of attach_points() (a unit test compares).
inline constexpr std::array<std::string_view, 30> all = {pc_add,
                                                         pc_del,
                                                         filemap_free_folio,
                                                         kvm_gmem_free_folio,
                                                         dm_invalid,
                                                         dm_default,
                                                         dm_valid,
                                                         folio_zap,
                                                         folio_restore,
                                                         get_pfn,
                                                         user_fault,
                                                         fallocate,
                                                         populate,
                                                         release,
                                                         split,
                                                         kvm_page_fault,
                                                         spte_set,
                                                         spte_changed,
                                                         lock_contention_begin,
                                                         lock_contention_end,
                                                         page_free,
                                                         inval_punch,
                                                         inval_release,
                                                         inval_bind,
                                                         inval_unbind,
                                                         mmu_inval_start,
                                                         mmu_inval_end,
                                                         mmu_unmap,
                                                         notifier_start,
                                                         notifier_end};

} // namespace gms::probes::point
