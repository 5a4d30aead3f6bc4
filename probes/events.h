/* Event records shared by the BPF programs (probes/bpf/gmem.bpf.c) and the
 * C++ loader (probes/session.cpp). One header, plain C, fixed-width fields:
 * the ring buffer carries these records and the host switches on hdr.type.
 *
 * Layout rules: every record starts with struct gms_ev_hdr; fields are
 * naturally aligned so the BPF and x86-64 C++ layouts are identical
 * (checked by static_assert on the C++ side). Never reorder fields; add new
 * record types with new numbers instead.
 */
#ifndef GMS_PROBES_EVENTS_H
#define GMS_PROBES_EVENTS_H

#if defined(__bpf__)
/* Types come from probes/bpf/vmlinux_min.h, included first. */
#else
#include <linux/types.h>
#endif

#define GMS_EVENTS_ABI 1

/* Record types (gms_ev_hdr.type). */
enum gms_ev_type {
    GMS_EV_PC_ADD = 1,       /* folio inserted in a page cache (tracepoint) */
    GMS_EV_PC_DEL = 2,       /* folio deleted from a page cache (tracepoint) */
    /* 3, 4: no longer emitted (the function probes on filemap_add_folio,
     * __filemap_add_folio and __filemap_remove_folio were dropped: the
     * tracepoints carry every page-cache change); older recordings have them. */
    GMS_EV_ADD_FOLIO = 3,    /* filemap_add_folio / __filemap_add_folio returned */
    GMS_EV_REMOVE_FOLIO = 4, /* __filemap_remove_folio entered */
    GMS_EV_FREE_FOLIO = 5,   /* filemap_free_folio / kvm_gmem_free_folio returned
                                (NO_DIRECT_MAP files only) */
    GMS_EV_DIRECT_MAP = 6,   /* direct map change (set_direct_map_*, folio_zap/restore) */
    GMS_EV_GET_PFN = 7,      /* kvm_gmem_get_pfn returned (pfn handed to the guest) */
    GMS_EV_USER_FAULT = 8,   /* kvm_gmem_fault_user_mapping returned (page to userspace) */
    GMS_EV_FALLOCATE = 9,    /* kvm_gmem_fallocate returned */
    GMS_EV_POPULATE = 10,    /* kvm_gmem_populate returned */
    GMS_EV_RELEASE = 11,     /* kvm_gmem_release (the file's last reference) */
    GMS_EV_SPLIT = 12,       /* folio split entered (flags: GMS_F_RETURN on return) */
    GMS_EV_INVAL = 13,       /* KVM MMU invalidation in a guest_memfd operation (gms_ev_inval) */
    GMS_EV_PAGE_FREE = 14,   /* kmem:mm_page_free of a pfn that left a watched page cache */
    GMS_EV_TYPE_MAX = 15,
};

/* Which attach point produced a record (gms_ev_hdr.src). */
enum gms_src {
    GMS_SRC_UNKNOWN = 0,
    GMS_SRC_TP_PC_ADD = 1,
    GMS_SRC_TP_PC_DEL = 2,
    GMS_SRC_FILEMAP_ADD_FOLIO = 3,      /* 3-5: no longer emitted (older recordings) */
    GMS_SRC___FILEMAP_ADD_FOLIO = 4,
    GMS_SRC___FILEMAP_REMOVE_FOLIO = 5,
    GMS_SRC_FILEMAP_FREE_FOLIO = 6,
    GMS_SRC_KVM_GMEM_FREE_FOLIO = 7,
    GMS_SRC_SET_DM_INVALID = 8, /* set_direct_map_invalid_noflush(page or addr) */
    GMS_SRC_SET_DM_DEFAULT = 9, /* set_direct_map_default_noflush(page or addr) */
    GMS_SRC_SET_DM_VALID = 10,  /* set_direct_map_valid_noflush(page or addr, nr, valid) */
    GMS_SRC_FOLIO_ZAP = 11,     /* folio_zap_direct_map(folio) */
    GMS_SRC_FOLIO_RESTORE = 12, /* folio_restore_direct_map(folio) */
    GMS_SRC_KVM_GMEM_GET_PFN = 13,
    GMS_SRC_KVM_GMEM_FAULT_USER = 14,
    GMS_SRC_KVM_GMEM_FALLOCATE = 15,
    GMS_SRC_KVM_GMEM_POPULATE = 16,
    GMS_SRC_KVM_GMEM_RELEASE = 17,
    GMS_SRC_FOLIO_SPLIT = 18,
    GMS_SRC_TP_PAGE_FREE = 19,       /* kmem:mm_page_free */
    GMS_SRC_INVAL_PUNCH = 20,        /* kvm_gmem_fallocate(PUNCH_HOLE) entry/return */
    GMS_SRC_INVAL_RELEASE = 21,      /* kvm_gmem_release entry/return */
    GMS_SRC_INVAL_BIND = 22,         /* kvm_gmem_commit_memory_region / kvm_gmem_bind */
    GMS_SRC_INVAL_UNBIND = 23,       /* kvm_gmem_unbind */
    GMS_SRC_MMU_INVAL_START = 24,    /* kvm_mmu_invalidate_start / _begin */
    GMS_SRC_MMU_INVAL_END = 25,      /* kvm_mmu_invalidate_end */
    GMS_SRC_MMU_UNMAP = 26,          /* kvm_mmu_unmap_gfn_range */
    GMS_SRC_MAX = 27,
};

/* gms_ev_hdr.flags */
#define GMS_F_UPTODATE (1u << 0) /* folio had PG_uptodate when handed out */
#define GMS_F_VALID (1u << 1)    /* direct map: made valid (restore) */
#define GMS_F_RETURN (1u << 2)   /* record from the function's return */
#define GMS_F_NO_ORDER (1u << 3) /* the kernel does not expose the order */
#define GMS_F_NO_INODE (1u << 4) /* page without a mapping (dev/ino unknown) */
#define GMS_F_WATCHED (1u << 5)  /* inode was in the watched map (not only s_dev) */
#define GMS_F_PTR_PFN (1u << 6)  /* pfn derived from a struct page pointer (vmemmap) */
/* Hand-out records only: this hand-out is also counted in the per-CPU
 * GMS_CNT_*_JUDGED counters (the BPF side judged it); consumers must not
 * count it a second time. Records without it (older streams, hand-outs that
 * could not be judged in BPF) are counted from the records. */
#define GMS_F_COUNTED (1u << 7)
/* pfn derived from a direct-map address ((addr - page_offset_base) >> 12):
 * set_direct_map_*_noflush() of NO_DIRECT_MAP v12 take one. */
#define GMS_F_ADDR_PFN (1u << 8)
/* GMS_EV_INVAL: inside KVM's MMU notifier (an invalidation by host virtual
 * address, of pages host userspace maps), not guest_memfd's own. */
#define GMS_F_NOTIFIER (1u << 9)

/* Per-CPU counters (array map "counters", index = enum value). */
enum gms_counter {
    GMS_CNT_RB_DROPS = 0,            /* bpf_ringbuf_reserve failed: event lost */
    GMS_CNT_EVENTS = 1,              /* records submitted */
    GMS_CNT_KVM_PAGE_FAULT = 2,      /* kvm:kvm_page_fault */
    GMS_CNT_SPTE_SET = 3,            /* kvmmmu:kvm_mmu_set_spte */
    GMS_CNT_SPTE_CHANGED = 4,        /* kvmmmu:kvm_tdp_mmu_spte_changed */
    GMS_CNT_LOCK_CONTENDED = 5,      /* lock:contention_begin (filtered by tgid) */
    GMS_CNT_LOCK_WAIT_NS = 6,        /* summed begin->end time */
    GMS_CNT_GMEM_LOCK_CONTENDED = 7, /* ... on a watched filemap_invalidate_lock */
    GMS_CNT_GMEM_LOCK_WAIT_NS = 8,
    GMS_CNT_DM_FOREIGN = 9,       /* direct-map changes (all pages; checker filters) */
    GMS_CNT_SPLIT_CALLS = 10,     /* folio split entries on watched inodes */
    GMS_CNT_ARG_STASH_FULL = 11,  /* kprobe entry->return stash full: pair lost */
    GMS_CNT_PC_FILTERED_OUT = 12, /* page-cache events of other files (not emitted) */
    /* Hand-outs of watched files judged in BPF (uptodate or not). A record is
     * emitted only for a folio that was not uptodate, or when the file is
     * NO_DIRECT_MAP (the direct-map checker needs every such hand-out). */
    GMS_CNT_GET_PFN_JUDGED = 13,    /* kvm_gmem_get_pfn */
    GMS_CNT_USER_FAULT_JUDGED = 14, /* kvm_gmem_fault_user_mapping */
    /* A pfn that left a watched page cache could not be put in the
     * `departed` map (full): its free cannot be matched (a loss). */
    GMS_CNT_DEPARTED_FULL = 15,
    GMS_CNT_MAX = 16,
};

/* Bits of the BPF object's cfg_dm_addr: the direct-map function takes a
 * direct-map address (NO_DIRECT_MAP v12), not a struct page *. */
#define GMS_DM_ADDR_INVALID (1u << 0) /* set_direct_map_invalid_noflush */
#define GMS_DM_ADDR_DEFAULT (1u << 1) /* set_direct_map_default_noflush */
#define GMS_DM_ADDR_VALID (1u << 2)   /* set_direct_map_valid_noflush */

/* Values of the "watched" map (bit set). NO_DIRECT_MAP: the file was created
 * with that flag, so every hand-out of it is recorded (not only bad ones). */
#define GMS_WATCH_GMEM (1u << 0)          /* a guest_memfd of this run */
#define GMS_WATCH_CALIBRATION (1u << 1)   /* secretmem file of the calibration */
#define GMS_WATCH_NO_DIRECT_MAP (1u << 2) /* created with NO_DIRECT_MAP */

struct gms_ev_hdr {
    __u32 type;  /* enum gms_ev_type */
    __u16 src;   /* enum gms_src */
    __u16 flags; /* GMS_F_* */
    __u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    __u64 seq;   /* global submission counter (gaps = lost records) */
    __u32 cpu;
    __u32 tgid;
};

/* GMS_EV_PC_ADD, PC_DEL, ADD_FOLIO, REMOVE_FOLIO, FREE_FOLIO, SPLIT */
struct gms_ev_folio {
    struct gms_ev_hdr hdr;
    __u64 pfn;
    __u64 ino;
    __u64 index;
    __u32 dev; /* kernel-internal dev_t: MAJOR << 20 | MINOR */
    __u32 order;
    __s64 ret; /* return value where there is one, else 0 */
};

/* GMS_EV_DIRECT_MAP */
struct gms_ev_direct_map {
    struct gms_ev_hdr hdr;
    __u64 pfn; /* first page */
    __u64 nr;  /* pages changed */
    __s64 ret; /* 0 on success (entry records: 0) */
};

/* GMS_EV_GET_PFN, GMS_EV_USER_FAULT */
struct gms_ev_handout {
    struct gms_ev_hdr hdr;
    __u64 pfn;
    __u64 ino;
    __u64 index; /* page index in the file (gfn-derived or vmf->pgoff) */
    __u32 dev;
    __u32 order; /* folio order */
    __s64 ret;   /* get_pfn: 0 or -errno; user fault: vm_fault_t */
};

/* GMS_EV_FALLOCATE, GMS_EV_POPULATE, GMS_EV_RELEASE */
struct gms_ev_file_op {
    struct gms_ev_hdr hdr;
    __u64 ino;
    __u32 dev;
    __u32 mode; /* fallocate mode */
    __u64 offset;
    __u64 len; /* fallocate length; populate: npages */
    __s64 ret;
};

/* GMS_EV_INVAL kinds (gms_ev_inval.kind) */
enum gms_inval_kind {
    GMS_INV_OP_BEGIN = 1,  /* a punch or release of a watched file entered */
    GMS_INV_OP_END = 2,    /* ... returned (ret) */
    GMS_INV_MMU_START = 3, /* kvm_mmu_invalidate_start(kvm) */
    GMS_INV_MMU_END = 4,   /* kvm_mmu_invalidate_end(kvm) */
    GMS_INV_UNMAP = 5,     /* kvm_mmu_unmap_gfn_range(kvm, range): start/end as file indices */
    GMS_INV_BIND = 6,      /* a memslot bound [start, end) of the file to kvm (ret 0) */
    GMS_INV_UNBIND = 7,    /* a memslot's binding of [start, end) removed */
};

/* gms_ev_inval.op */
enum gms_inval_op {
    GMS_OP_NONE = 0,
    GMS_OP_PUNCH = 1,
    GMS_OP_RELEASE = 2,
};

/* GMS_EV_INVAL. MMU_START/END/UNMAP are recorded only inside a punch or
 * release of a watched file, on the thread doing it (tid), and name that
 * operation's file. */
struct gms_ev_inval {
    struct gms_ev_hdr hdr;
    __u64 kvm; /* struct kvm * (identity only) */
    __u64 ino;
    __u32 dev;
    __u32 tid;
    __u64 start; /* file page index range [start, end) */
    __u64 end;
    __u32 kind; /* enum gms_inval_kind */
    __u32 op;   /* enum gms_inval_op */
    __s64 ret;
};

/* Values of the BPF map "departed" (key: pfn): a folio that left a watched
 * page cache and was not freed yet. refcount: filled on demand by
 * refcount.bpf.c (struct page's _refcount; -errno when unreadable). */
struct gms_departed {
    __u64 ino;
    __u64 index;
    __u32 dev;
    __u32 order;
    __s64 refcount;
};

/* Key of the "watched" hash map: one guest_memfd inode. */
struct gms_inode_key {
    __u32 dev; /* kernel-internal dev_t */
    __u32 pad;
    __u64 ino;
};

#endif /* GMS_PROBES_EVENTS_H */
