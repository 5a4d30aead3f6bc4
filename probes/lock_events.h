/* Records of the invalidate_lock probes (probes/bpf/locks.bpf.c), shared by
 * BPF and the C++ side (probes/lock_probes.cpp, probes/lock_pairer.h). Plain
 * C, fixed-width, naturally aligned fields, like probes/events.h (checked by
 * static_assert on the C++ side). Never reorder fields.
 *
 * The BPF side only reports; the host pairs (LockPairer): per {task, lock},
 * ACQUIRE (entry of down_*) -> ACQUIRED (its return) -> RELEASE (entry of
 * up_*). wait = ACQUIRED - ACQUIRE, hold = RELEASE - ACQUIRED.
 */
#ifndef GMS_PROBES_LOCK_EVENTS_H
#define GMS_PROBES_LOCK_EVENTS_H

#if defined(__bpf__)
/* Types come from probes/bpf/vmlinux_min.h, included first. */
#else
#include <linux/types.h>
#endif

enum gms_lock_ev_type {
    GMS_LEV_ACQUIRE = 1,  /* down_write/down_read entered on a watched lock */
    GMS_LEV_ACQUIRED = 2, /* it returned: the lock is held (stack_id set) */
    GMS_LEV_RELEASE = 3,  /* up_write/up_read entered on a watched lock */
    GMS_LEV_OP_BEGIN = 4, /* a guest_memfd operation that takes the lock entered */
    GMS_LEV_OP_END = 5,   /* ... and returned (ret) */
    GMS_LEV_TYPE_MAX = 6,
};

enum gms_lock_mode {
    GMS_LOCK_WRITE = 0,
    GMS_LOCK_READ = 1,
};

/* The guest_memfd operation in flight on the task (GMS_LOCK_OP_NONE: none
 * known: the lock was taken outside the operations the probes enter, e.g. a
 * conversion of a series whose function is not probed). */
enum gms_lock_op {
    GMS_LOCK_OP_NONE = 0,
    GMS_LOCK_OP_PUNCH = 1,    /* kvm_gmem_fallocate(FALLOC_FL_PUNCH_HOLE) */
    GMS_LOCK_OP_ALLOCATE = 2, /* kvm_gmem_fallocate(allocate) */
    GMS_LOCK_OP_RELEASE = 3,  /* kvm_gmem_release */
    GMS_LOCK_OP_COMMIT = 4,   /* kvm_gmem_commit_memory_region (memslot bind, 7.3) */
    GMS_LOCK_OP_UNBIND = 5,   /* kvm_gmem_unbind */
    GMS_LOCK_OP_MAX = 6,
};

struct gms_lock_ev {
    __u32 type;  /* enum gms_lock_ev_type */
    __u16 mode;  /* enum gms_lock_mode (lock events) */
    __u16 op;    /* enum gms_lock_op in flight on the task */
    __u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    __u64 seq;   /* per-object submission counter (gaps = lost records) */
    __u64 lock;  /* rw_semaphore address */
    __u32 tid;
    __u32 tgid;
    __s64 ret;      /* OP_END: the operation's return value */
    __s32 stack_id; /* ACQUIRED: bpf_get_stackid() (< 0: -errno) */
    __u32 syscall;  /* the task's syscall number at the operation's entry (~0: none) */
    __u64 sys_arg1; /* its second argument (the ioctl request for ioctl) */
    __u64 ino;      /* the operation's guest_memfd inode */
    /* OP_END, CONFIG_DEBUG_LOCK_ALLOC: the lockdep class's name_version of
     * the lock ("mapping.invalidate_lock#N" in /proc/lock_stat; 1: no #N);
     * 0: unknown. */
    __s32 class_version;
    __u32 pad;
    char comm[16];
};

/* Per-CPU counters (array map "lock_counters"). */
enum gms_lock_counter {
    GMS_LCNT_RB_DROPS = 0,   /* bpf_ringbuf_reserve failed: a record lost */
    GMS_LCNT_EVENTS = 1,     /* records submitted */
    GMS_LCNT_LOCKS_FULL = 2, /* a lock address the watched map could not take */
    GMS_LCNT_MAX = 3,
};

#endif /* GMS_PROBES_LOCK_EVENTS_H */
