#include "probes/decode.h"

#include "probes/events.h"

#include <cstring>
#include <sys/sysmacros.h>

namespace gms::probes {

// Both sides must agree on every layout (BPF is little-endian x86-64 here).
static_assert(sizeof(gms_ev_hdr) == 32);
static_assert(sizeof(gms_ev_folio) == 32 + 40);
static_assert(sizeof(gms_ev_direct_map) == 32 + 24);
static_assert(sizeof(gms_ev_handout) == 32 + 40);
static_assert(sizeof(gms_ev_file_op) == 32 + 40);
static_assert(sizeof(gms_ev_inval) == 32 + 56);
static_assert(sizeof(gms_inode_key) == 16);

namespace {

template <typename T> bool copy_rec(const void* data, size_t size, T& out) {
    if (size < sizeof(T))
        return false;
    std::memcpy(&out, data, sizeof(T));
    return true;
}

void fill_hdr(Event& e, const gms_ev_hdr& h) {
    e.type = static_cast<EventType>(h.type);
    e.seq = h.seq;
    e.ts_ns = h.ts_ns;
    e.src = h.src;
    e.flags = h.flags;
    e.cpu = h.cpu;
    e.tgid = h.tgid;
}

// Folio and hand-out records carry the same folio identity.
template <class Rec> void fill_folio(Event& e, const Rec& r) {
    e.pfn = r.pfn;
    e.ino = r.ino;
    e.index = r.index;
    e.dev = r.dev;
    e.order = r.order;
    e.ret = r.ret;
}
} // namespace

std::optional<Event> decode_record(const void* data, size_t size, DecodeError* err) {
    *err = DecodeError::none;
    gms_ev_hdr h;
    if (!copy_rec(data, size, h)) {
        *err = DecodeError::short_record;
        return std::nullopt;
    }
    Event e;
    fill_hdr(e, h);
    switch (h.type) {
    case GMS_EV_PC_ADD:
    case GMS_EV_PC_DEL:
    case GMS_EV_FREE_FOLIO:
    case GMS_EV_SPLIT:
    case GMS_EV_PAGE_FREE: {
        gms_ev_folio r;
        if (!copy_rec(data, size, r))
            break;
        fill_folio(e, r);
        return e;
    }
    case GMS_EV_DIRECT_MAP: {
        gms_ev_direct_map r;
        if (!copy_rec(data, size, r))
            break;
        e.pfn = r.pfn;
        e.nr = r.nr;
        e.ret = r.ret;
        return e;
    }
    case GMS_EV_GET_PFN:
    case GMS_EV_USER_FAULT: {
        gms_ev_handout r;
        if (!copy_rec(data, size, r))
            break;
        fill_folio(e, r);
        return e;
    }
    case GMS_EV_FALLOCATE:
    case GMS_EV_POPULATE:
    case GMS_EV_RELEASE: {
        gms_ev_file_op r;
        if (!copy_rec(data, size, r))
            break;
        e.ino = r.ino;
        e.dev = r.dev;
        e.mode = r.mode;
        e.offset = r.offset;
        e.len = r.len;
        e.ret = r.ret;
        return e;
    }
    case GMS_EV_INVAL: {
        gms_ev_inval r;
        if (!copy_rec(data, size, r))
            break;
        e.kvm = r.kvm;
        e.ino = r.ino;
        e.dev = r.dev;
        e.tid = r.tid;
        e.index = r.start;
        e.end = r.end;
        e.kind = r.kind;
        e.op = r.op;
        e.ret = r.ret;
        return e;
    }
    default:
        *err = DecodeError::unknown_type;
        return std::nullopt;
    }
    *err = DecodeError::short_record;
    return std::nullopt;
}

uint32_t kernel_dev(uint64_t st_dev) {
    return static_cast<uint32_t>((major(st_dev) << 20) | minor(st_dev));
}

} // namespace gms::probes
