// One decoded probe event: a BPF record (probes/events.h) or a userspace
// marker the session inserts into the stream, with the names and JSON form
// recorded streams use. No BPF dependency.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace gms::probes {

// Kernel record types (values of enum gms_ev_type in probes/events.h, checked
// by static_assert in event.cpp) plus userspace markers (>= 100) the session
// inserts into the stream.
enum class EventType : uint32_t {
    pc_add = 1,
    pc_del = 2,
    add_folio = 3,
    remove_folio = 4,
    free_folio = 5,
    direct_map = 6,
    get_pfn = 7,
    user_fault = 8,
    fallocate = 9,
    populate = 10,
    release = 11,
    split = 12,
    inval = 13,          // KVM MMU invalidation in a guest_memfd operation, or a binding
    page_free = 14,      // final free of a pfn that left a watched page cache
    gmem_created = 100,  // a guest_memfd to watch (ours, or found in /proc)
    gmem_released = 101, // userspace dropped its last reference
    // The leak drain at the end of a session (Session::finish): per LRU
    // batches flushed, frees awaited. ret: 0, or the -errno of the drain;
    // nr: milliseconds waited.
    leak_drain = 102,
    // After the drain, a departed pfn still not freed: ret = its reference
    // count, or -errno when unreadable; mode: 1 read from /proc/kpagecount,
    // 2 struct page's _refcount read by BPF (kernels without kpagecount).
    folio_refcount = 103,
};
std::string to_string(EventType t);
std::optional<EventType> event_type_from_string(std::string_view s);

// Names of enum gms_src values ("tp_pc_add", "set_direct_map_invalid_noflush", ...).
std::string src_name(uint16_t src);
std::optional<uint16_t> src_from_name(std::string_view s);

struct Event {
    EventType type = EventType::pc_add;
    uint64_t seq = 0;
    uint64_t ts_ns = 0; // CLOCK_MONOTONIC
    uint16_t src = 0;   // enum gms_src
    uint16_t flags = 0; // GMS_F_*
    uint32_t cpu = 0;
    uint32_t tgid = 0;
    uint64_t pfn = 0;
    uint64_t ino = 0;
    uint32_t dev = 0; // kernel-internal dev_t (MAJOR << 20 | MINOR)
    uint64_t index = 0;
    uint32_t order = 0;
    uint64_t nr = 0; // direct map: pages changed
    int64_t ret = 0;
    uint32_t mode = 0;   // fallocate mode
    uint64_t offset = 0; // fallocate offset / populate gfn
    uint64_t len = 0;    // fallocate length / populate npages
    // inval only (index = start of the file page range):
    uint64_t kvm = 0;
    uint64_t end = 0; // end of the file page range (exclusive)
    uint32_t tid = 0;
    uint32_t kind = 0; // enum gms_inval_kind
    uint32_t op = 0;   // enum gms_inval_op
    // gmem_created only:
    uint64_t gmem_flags = 0;
    bool flags_known = true;    // false for files of other processes
    bool no_direct_map = false; // the file was created with NO_DIRECT_MAP
    bool preexisting = false;   // existed before observation began

    bool has(uint16_t f) const { return (flags & f) == f; }
    uint64_t pages() const { return uint64_t(1) << order; }
};

nlohmann::json to_json(const Event& e);
// Throws std::invalid_argument naming the bad field.
Event event_from_json(const nlohmann::json& j);

// "pfn=0x1234 dev=0:23 ino=42 index=7 order=0 seq=19"
std::string describe_folio(const Event& e);

} // namespace gms::probes
