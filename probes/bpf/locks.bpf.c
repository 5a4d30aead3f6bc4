// SPDX-License-Identifier: GPL-2.0
/* gmemstress: hold and wait times of guest_memfd's mapping->invalidate_lock.
 *
 * filemap_invalidate_lock()/_shared() and their unlocks are static inlines
 * around down_write/down_read/up_write/up_read (include/linux/fs.h, Linux
 * 7.3); the rwsem functions are out of line and fentry-able, also on
 * CONFIG_DEBUG_LOCK_ALLOC kernels (where klockstat moves to
 * down_write_nested, which filemap_invalidate_lock() never calls).
 *
 * These four functions run on every rwsem of the kernel (mmap_lock,
 * i_rwsem, ...): each program's first act is one hash lookup of the lock's
 * address in `locks`, filled when a guest_memfd operation that takes the lock
 * enters (fentry on kvm_gmem_fallocate/release/commit_memory_region/unbind
 * reads its mapping's invalidate_lock address with CO-RE). Only watched
 * locks produce records; the host pairs them per {task, lock}
 * (probes/lock_pairer.h). Loaded as its own object (probes/lock_probes.cpp)
 * so that the lock points can be left out without touching the rest.
 */
#include "vmlinux_min.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "../lock_events.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} lock_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GMS_LCNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lock_counters SEC(".maps");

/* invalidate_lock addresses of guest_memfd files an operation entered ->
 * the file's inode number. LRU: an address freed with its inode and reused
 * by another mapping ages out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} locks SEC(".maps");

/* The guest_memfd operation in flight per task (pid_tgid). */
struct op_state {
	__u64 lock;
	__u64 ino;
	__u64 sys_arg1;
	__u32 syscall;
	__u32 op;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct op_state);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__uint(value_size, 127 * sizeof(__u64));
} lock_stacks SEC(".maps");

volatile __u32 cfg_filter_tgid = 0; /* operations of this tgid only (0: every process) */
__u64 lock_seq = 0;

static __always_inline void lcount(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&lock_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline __u64 arg(void *ctx, __u32 n)
{
	__u64 v = 0;

	bpf_get_func_arg(ctx, n, &v);
	return v;
}

static __always_inline struct gms_lock_ev *lreserve(__u32 type, __u16 mode, __u64 lock)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct op_state *st = bpf_map_lookup_elem(&inflight, &id);
	struct gms_lock_ev *e = bpf_ringbuf_reserve(&lock_events, sizeof(*e), 0);

	if (!e) {
		lcount(GMS_LCNT_RB_DROPS);
		return 0;
	}
	e->type = type;
	e->mode = mode;
	e->op = st ? st->op : GMS_LOCK_OP_NONE;
	e->ts_ns = bpf_ktime_get_ns();
	e->seq = __sync_fetch_and_add(&lock_seq, 1);
	e->lock = lock;
	e->tid = (__u32)id;
	e->tgid = id >> 32;
	e->ret = 0;
	e->stack_id = -1;
	e->syscall = st ? st->syscall : ~0U;
	e->sys_arg1 = st ? st->sys_arg1 : 0;
	e->ino = st ? st->ino : 0;
	e->class_version = 0;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

static __always_inline void lsubmit(struct gms_lock_ev *e)
{
	bpf_ringbuf_submit(e, 0);
	lcount(GMS_LCNT_EVENTS);
}

/* ---- the rwsem functions: the hot path is the first lookup ------------ */
static __always_inline int lock_event(void *ctx, __u32 type, __u16 mode, bool stack)
{
	__u64 sem = arg(ctx, 0);
	struct gms_lock_ev *e;

	if (!bpf_map_lookup_elem(&locks, &sem))
		return 0;
	e = lreserve(type, mode, sem);
	if (!e)
		return 0;
	if (stack)
		e->stack_id = bpf_get_stackid(ctx, &lock_stacks, 0);
	lsubmit(e);
	return 0;
}

SEC("fentry/down_write")
int fe_down_write(void *ctx)
{
	return lock_event(ctx, GMS_LEV_ACQUIRE, GMS_LOCK_WRITE, false);
}

SEC("fexit/down_write")
int fx_down_write(void *ctx)
{
	return lock_event(ctx, GMS_LEV_ACQUIRED, GMS_LOCK_WRITE, true);
}

SEC("fentry/down_read")
int fe_down_read(void *ctx)
{
	return lock_event(ctx, GMS_LEV_ACQUIRE, GMS_LOCK_READ, false);
}

SEC("fexit/down_read")
int fx_down_read(void *ctx)
{
	return lock_event(ctx, GMS_LEV_ACQUIRED, GMS_LOCK_READ, true);
}

SEC("fentry/up_write")
int fe_up_write(void *ctx)
{
	return lock_event(ctx, GMS_LEV_RELEASE, GMS_LOCK_WRITE, false);
}

SEC("fentry/up_read")
int fe_up_read(void *ctx)
{
	return lock_event(ctx, GMS_LEV_RELEASE, GMS_LOCK_READ, false);
}

/* ---- the guest_memfd operations that take the lock -------------------- */
/* The task's syscall (and its second argument: the ioctl request) from its
 * user pt_regs, by direct loads through the BTF-typed pointer the helper
 * returns (x86-64's layout is ABI). */
static __always_inline void syscall_of(struct op_state *st)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());

	st->syscall = (__u32)regs->orig_ax;
	st->sys_arg1 = regs->si;
}

static __always_inline int op_enter(__u32 op, struct address_space *m, struct inode *inode)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct op_state st = {};
	struct gms_lock_ev *e;
	__u32 want = cfg_filter_tgid;

	if (want && (id >> 32) != want)
		return 0;
	if (!m)
		return 0;
	st.op = op;
	st.lock = (__u64)&m->invalidate_lock; /* CO-RE relocated offset */
	st.ino = inode ? BPF_CORE_READ(inode, i_ino) : 0;
	syscall_of(&st);
	if (bpf_map_update_elem(&locks, &st.lock, &st.ino, BPF_ANY))
		lcount(GMS_LCNT_LOCKS_FULL);
	bpf_map_update_elem(&inflight, &id, &st, BPF_ANY);
	e = lreserve(GMS_LEV_OP_BEGIN, 0, st.lock);
	if (e)
		lsubmit(e);
	return 0;
}

static __always_inline int op_exit(__s64 ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct op_state *st = bpf_map_lookup_elem(&inflight, &id);
	struct gms_lock_ev *e;

	if (!st)
		return 0;
	e = lreserve(GMS_LEV_OP_END, 0, st->lock);
	if (e) {
		struct rw_semaphore___dbg *sem = (struct rw_semaphore___dbg *)st->lock;

		e->ret = ret;
		/* The lock's lockdep class (set once the lock was taken), so that
		 * /proc/lock_stat's row of guest_memfd's invalidate_lock is known
		 * among the other file systems' "mapping.invalidate_lock#N". */
		if (bpf_core_field_exists(sem->dep_map))
			e->class_version = BPF_CORE_READ(sem, dep_map.class_cache[0], name_version);
		lsubmit(e);
	}
	bpf_map_delete_elem(&inflight, &id);
	return 0;
}

/* kvm_gmem_fallocate(file, mode, offset, len) */
SEC("fentry/kvm_gmem_fallocate")
int fe_op_fallocate(void *ctx)
{
	struct file *file = (struct file *)arg(ctx, 0);
	int mode = (int)arg(ctx, 1);
	struct inode *inode = BPF_CORE_READ(file, f_inode);

	return op_enter((mode & 0x02 /* FALLOC_FL_PUNCH_HOLE */) ? GMS_LOCK_OP_PUNCH
								  : GMS_LOCK_OP_ALLOCATE,
			BPF_CORE_READ(file, f_mapping), inode);
}

/* kvm_gmem_release(inode, file) */
SEC("fentry/kvm_gmem_release")
int fe_op_release(void *ctx)
{
	struct inode *inode = (struct inode *)arg(ctx, 0);

	return op_enter(GMS_LOCK_OP_RELEASE, BPF_CORE_READ(inode, i_mapping), inode);
}

static __always_inline int op_enter_slot(__u32 op, struct kvm_memory_slot *slot)
{
	struct file *file = BPF_CORE_READ(slot, gmem.file);

	if (!file)
		return 0;
	return op_enter(op, BPF_CORE_READ(file, f_mapping), BPF_CORE_READ(file, f_inode));
}

/* kvm_gmem_commit_memory_region(kvm, slot) */
SEC("fentry/kvm_gmem_commit_memory_region")
int fe_op_commit(void *ctx)
{
	return op_enter_slot(GMS_LOCK_OP_COMMIT, (struct kvm_memory_slot *)arg(ctx, 1));
}

/* kvm_gmem_unbind(slot) */
SEC("fentry/kvm_gmem_unbind")
int fe_op_unbind(void *ctx)
{
	return op_enter_slot(GMS_LOCK_OP_UNBIND, (struct kvm_memory_slot *)arg(ctx, 0));
}

/* One exit program per operation (fexit programs are per function). */
SEC("fexit/kvm_gmem_fallocate")
int fx_op_fallocate(void *ctx)
{
	__u64 r = 0;

	bpf_get_func_ret(ctx, &r);
	return op_exit((__s64)r);
}

SEC("fexit/kvm_gmem_release")
int fx_op_release(void *ctx)
{
	__u64 r = 0;

	bpf_get_func_ret(ctx, &r);
	return op_exit((int)r);
}

SEC("fexit/kvm_gmem_commit_memory_region")
int fx_op_commit(void *ctx)
{
	__u64 r = 0;

	bpf_get_func_ret(ctx, &r);
	return op_exit((int)r);
}

SEC("fexit/kvm_gmem_unbind")
int fx_op_unbind(void *ctx)
{
	return op_exit(0);
}
